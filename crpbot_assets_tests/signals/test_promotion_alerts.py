"""The promotion rule on walk-forward reports (the alert conditions: test_alerts.py)."""

import pytest

from crpbot_assets.signals.promotion import PromotionRule, decide


def report(margins: list[float], net: float = 0.05, break_even: float = 12.0) -> dict:
    months = {
        f"2024-{i + 1:02d}": {"bacc/lstm": 0.40 + m, "bacc/lgbm": 0.40, "bacc/logit": 0.35}
        for i, m in enumerate(margins)
    }
    return {
        "months": months,
        "metric": "bacc",
        "best_baseline": "lgbm",
        "trading": {"total_return": net, "break_even_fee_bps": break_even},
    }


def test_passes_when_the_lstm_beats_the_best_baseline_in_most_recent_months():
    decision = decide(report([-0.1, -0.1, 0.02, -0.01, 0.03]))  # latest 3: won 2
    assert decision.passed and "2/3" in decision.reason
    assert decision.details["judged_months"] == ["2024-03", "2024-04", "2024-05"]


def test_fails_with_every_reason_named():
    decision = decide(
        report([0.1, 0.1, -0.02, -0.01, 0.03], net=-0.2, break_even=3.0),
        PromotionRule(min_break_even_fee_bps=10.0),
    )
    assert not decision.passed
    assert "1 of the latest 3" in decision.reason
    assert "net return after costs -20.00%" in decision.reason
    assert "break-even fee 3.00 bps is below 10 bps" in decision.reason


def test_too_few_months_and_bad_inputs():
    assert "has 2 test month(s)" in decide(report([0.1, 0.1])).reason
    assert decide(report([0.1, 0.1]), PromotionRule(recent_months=2, min_net_return=None)).passed
    with pytest.raises(ValueError, match="min_months_won"):
        PromotionRule(recent_months=2, min_months_won=3)
    with pytest.raises(ValueError, match="not a walk-forward report"):
        decide({"months": {}})
