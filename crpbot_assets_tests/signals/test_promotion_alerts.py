"""The promotion rule on walk-forward reports, and the alert conditions."""

from datetime import UTC, datetime, timedelta

import pytest

from crpbot_assets.signals.alerts import AlertConfig, SymbolFacts, evaluate
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


NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


def facts(signal_lag: int | None = 0, version="v1", drawdown: float | None = -0.01, candle_later: int = 0):
    return {
        "BTC-USD": SymbolFacts(
            newest_candle=NOW + timedelta(minutes=candle_later),
            newest_signal=None if signal_lag is None else NOW - timedelta(minutes=signal_lag),
            model_version=version,
            drawdown=drawdown,
        )
    }


def test_alerts_once_per_episode():
    config = AlertConfig(stall_minutes=30, max_drawdown=0.1)
    alerts, cursor = evaluate(facts(), {}, config)
    assert alerts == []  # first sight: nothing changed, nothing stalled
    alerts, cursor = evaluate(facts(signal_lag=45), cursor, config)
    assert [a.kind for a in alerts] == ["stalled"] and "45 minutes" in alerts[0].message
    alerts, cursor = evaluate(facts(signal_lag=45, candle_later=5), cursor, config)
    assert alerts == []  # candles move on, the newest signal does not: the same stall, reported once
    alerts, cursor = evaluate(facts(signal_lag=5, version="v2", drawdown=-0.15), cursor, config)
    assert sorted(a.kind for a in alerts) == ["drawdown", "model_changed"]
    assert "from v1 to v2" in next(a.message for a in alerts if a.kind == "model_changed")
    alerts, cursor = evaluate(facts(signal_lag=5, version="v2", drawdown=-0.2), cursor, config)
    assert alerts == []  # still in the same drawdown episode
    alerts, cursor = evaluate(facts(signal_lag=5, version=None, drawdown=-0.01), cursor, config)
    assert [a.kind for a in alerts] == ["model_changed"] and "demoted" in alerts[0].message
    alerts, _ = evaluate(facts(signal_lag=500, version=None), cursor, config)
    assert alerts == []  # nothing promoted: no signals are expected
