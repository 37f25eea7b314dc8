"""The whole procedure on replay worlds, as benchmarks/bench_gate.py measures it (20+ worlds there, two here):
fold models trained on the trailing window, decision rules fitted on validation, three test months scored,
the gate for the month after them.

Lead off: nothing to find; the gate does not promote and the strategy's costs stay under 1 % a month (its rule
stays flat unless validation shows an edge that beats the fee). Lead on (the memory world: the news of an hour
drifts prices two hours later, L = 4): the LSTM finds the lead and its rule trades in every month, its trades
earning more than the spread; its net result after the 60 bps fee is printed, and whether it is promoted is the
gate's call against the baselines (in the benchmark's worlds LightGBM and logistic regression earned more: see
README)."""

from datetime import UTC, datetime

import numpy as np
import pytest

from crpbot_assets.replay import synthetic
from crpbot_assets.replay.world import world
from crpbot_assets.signals.promotion import PromotionRule, judge
from crpbot_assets.training import procedure
from crpbot_assets.training import verdict as vd

DATA = (datetime(2018, 12, 15, tzinfo=UTC), datetime(2019, 6, 1, tzinfo=UTC))
TEST_MONTHS = [datetime(2019, m, 1, tzinfo=UTC) for m in (3, 4, 5)]


def _run(seed: int, lead: float, delay: int, monkeypatch):
    monkeypatch.setenv(synthetic.SENTIMENT_LEAD_ENV, str(lead))
    monkeypatch.setenv(synthetic.SENTIMENT_LEAD_DELAY_ENV, str(delay))
    candles, features, sentiment = world("BTC-USD", *DATA, seed)
    frames, folds = procedure.record(
        features, sentiment, candles, TEST_MONTHS, procedure.CPU_SIZED, "BTC-USD"
    )
    decision = judge(frames, "2019-06", PromotionRule())
    lstm = vd.trading(frames, vd.VerdictConfig(resamples=200))["models"]["lstm"]
    print(f"world {seed}, lead {lead} (delay {delay} h): {decision.reason}; LSTM {lstm}")
    return decision, lstm, folds


@pytest.mark.slow
def test_without_a_lead_the_gate_does_not_promote_and_costs_stay_under_one_percent_a_month(monkeypatch):
    decision, lstm, folds = _run(1100, 0.0, 0, monkeypatch)
    assert not decision.passed
    assert lstm["cost"] / len(TEST_MONTHS) <= 0.01
    assert set(folds["2019-03"]["dropped_inputs"]) >= {"reddit_sentiment_1h", "search_interest_eth"}


@pytest.mark.slow
def test_with_a_lead_the_lstm_trades_it_after_costs_and_the_gate_judges_it(monkeypatch):
    decision, lstm, folds = _run(1100, 4.0, 1, monkeypatch)
    for fold in folds.values():
        assert fold["rules"]["lstm"]["fit"]["val_ic_t"] >= 3  # the LSTM found the lead on validation
    assert lstm["exposure"] > 0.1 and lstm["gross_return"] > 0  # and its trades earn before costs
    summed = decision.details["summed_net"]
    best = max(v for m, v in summed.items() if m != "lstm")
    assert decision.details["excess"] == pytest.approx(summed["lstm"] - best, abs=1e-5)
    assert decision.passed == (decision.details["lower_bound"] > 0 and decision.details["excess"] > 0)
    assert np.isfinite(lstm["break_even_fee_bps"]) and lstm["break_even_fee_bps"] > 0  # beyond the spread
