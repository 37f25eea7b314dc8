"""The promotion gate on walk-forward records (the alert conditions: test_alerts.py)."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crpbot_assets.signals.promotion import PromotionRule, judge


def month_frame(label: str, lstm: np.ndarray, baseline: np.ndarray, returns: np.ndarray) -> pl.DataFrame:
    """A month of 15-minute decisions: the LSTM and logit trade the given positions, the other baselines
    stay flat, buy and hold holds; fill returns `returns`, 2 bps half-spread."""
    start = datetime.strptime(label, "%Y-%m").replace(tzinfo=UTC)
    n = len(returns)
    ts = pl.datetime_range(start, start + timedelta(minutes=15 * (n - 1)), "15m", time_zone="UTC", eager=True)
    return pl.DataFrame(
        {
            "ts": ts,
            "fwd_return": returns,
            "trade_return": returns,
            "half_spread_bps": np.full(n, 2.0),
            "horizon_minutes": np.full(n, 15, np.int16),
            "pos_lstm": lstm.astype(np.int8),
            "pos_logit": baseline.astype(np.int8),
            "pos_lgbm": np.zeros(n, np.int8),
            "pos_persist": np.zeros(n, np.int8),
            "pos_buy_and_hold": np.ones(n, np.int8),
        }
    )


def record(lstm_edge: float, same_as_logit: bool = False, months=("2024-01", "2024-02", "2024-03")) -> dict:
    """Three months (20 days each) where the LSTM holds the sign of each hour's drift `lstm_edge` ahead of it
    (4 decisions per hour) and logit trades at random; `same_as_logit`: logit trades exactly the LSTM."""
    rng = np.random.default_rng(7)
    out = {}
    for label in months:
        hours = 20 * 24
        drift = rng.choice([-1.0, 1.0], hours)
        returns = np.repeat(drift * lstm_edge, 4) + rng.normal(0, 0.003, 4 * hours)
        lstm = np.repeat(drift, 4)
        logit = lstm if same_as_logit else np.repeat(rng.choice([-1.0, 1.0], hours), 4)
        out[label] = month_frame(label, lstm, logit, returns)
    return out


def test_the_gate_promotes_an_lstm_that_beats_every_baseline_after_costs():
    decision = judge(record(0.004), "2024-04")
    assert decision.passed, decision.reason
    assert decision.details["judged_months"] == ["2024-01", "2024-02", "2024-03"]
    assert decision.details["lower_bound"] > 0 and "beat the best baseline" in decision.reason
    assert judge(record(0.004), "2024-04") == decision  # a fixed rule and generator: reproducible


def test_a_tie_never_passes():
    # the LSTM trades exactly as logit (both earn a lot): zero excess in every draw
    tie = judge(record(0.004, same_as_logit=True), "2024-04")
    assert not tie.passed and tie.details["excess"] == 0.0 and tie.details["lower_bound"] == 0.0
    # every model flat but buy and hold, and buy and hold flat too: nothing to choose
    flat = record(0.004)
    flat = {
        k: f.with_columns(pl.lit(0, pl.Int8).alias(c) for c in f.columns if c.startswith("pos_"))
        for k, f in flat.items()
    }
    decision = judge(flat, "2024-04")
    assert not decision.passed and decision.details["lower_bound"] == 0.0


def test_the_gate_judges_the_months_strictly_before_the_month_and_needs_all_of_them():
    good = record(0.004)
    assert not judge(good, "2024-03").passed  # 2023-12 is missing from the record
    assert "lacks test month(s) ['2023-12']" in judge(good, "2024-03").reason
    # the month itself (and later ones) are never judged: a losing April changes nothing for April
    losing = record(-0.004, months=("2024-04",))
    assert judge({**good, **losing}, "2024-04") == judge(good, "2024-04")
    assert not judge(record(-0.004), "2024-04").passed
    with pytest.raises(ValueError, match="alpha"):
        PromotionRule(alpha=0.6)
