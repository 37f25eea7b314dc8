"""The decision rule (score, fit on validation, sequential positions, costs) and the verdict's trading comparison,
checked against hand computations (pure functions)."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crpbot_assets.training import decisions as dc
from crpbot_assets.training import verdict as vd
from crpbot_assets.training import walk_forward as wf


def rule(enter, exit_, mode="long_short"):
    return {"format": dc.RULE_FORMAT, "kind": "threshold", "mode": mode, "enter": enter, "exit": exit_}


def test_positions_follow_the_thresholds_with_hysteresis():
    s = np.array([0.1, 0.5, 0.3, -0.1, 0.6, -0.55, np.nan, -0.2, 0.0])
    # enter 0.5: long at 0.5; held while >= exit
    assert dc.positions(s, rule(0.5, 0.5)).tolist() == [0, 1, 0, 0, 1, -1, -1, 0, 0]
    assert dc.positions(s, rule(0.5, 0.0)).tolist() == [0, 1, 1, 0, 1, -1, -1, -1, -1]  # kept at 0.0
    assert dc.positions(s, rule(0.5, -0.5)).tolist() == [0, 1, 1, 1, 1, -1, -1, -1, -1]
    assert dc.positions(s, rule(0.5, 0.0, "long_flat")).tolist() == [0, 1, 1, 0, 1, 0, 0, 0, 0]
    # the state carries from the previous decision: a held short stays short while the score is below -exit
    assert dc.positions(s[:1], rule(0.5, 0.0), previous=-1.0).tolist() == [0]
    assert dc.positions(np.array([-0.05]), rule(0.5, 0.0), previous=-1.0).tolist() == [-1]
    assert dc.positions(s, dc.flat_rule()).tolist() == [0] * 9
    assert dc.positions(s, dc.hold_rule()).tolist() == [1] * 9
    with pytest.raises(ValueError, match="not a decision rule"):
        dc.positions(s, {"enter": 0.5})


def test_simulate_charges_fee_and_fill_spread_per_unit_traded():
    position = np.array([1.0, 1.0, -1.0, 0.0])
    result = dc.simulate(position, np.array([0.01, -0.02, 0.03, 0.05]), np.array([2.0, 3.0, 4.0, 5.0]), 10.0)
    assert result["turnover"].tolist() == [1, 0, 2, 1]
    expected = [0.01 - 12e-4, -0.02, -0.03 - 2 * 14e-4, -15e-4]
    assert result["net"] == pytest.approx(expected)
    # buy and hold: one entry, nothing more, whatever the gaps between decisions
    hold = dc.simulate(np.ones(4), np.zeros(4), np.full(4, 5.0), 60.0)
    assert hold["turnover"].tolist() == [1, 0, 0, 0] and hold["net"].sum() == pytest.approx(-65e-4)


def _validation(n_days: int, informative: bool, seed: int = 0, edge: float = 1.0):
    """Minute rows: fwd return = edge x score x 20 bps + noise; every 15th row a decision whose trade return
    is the next 15 minutes' (score persists for an hour)."""
    rng = np.random.default_rng(seed)
    n = n_days * 1440
    hourly = rng.normal(0, 0.3, n // 60 + 1)
    score_values = np.clip(np.repeat(hourly, 60)[:n] + rng.normal(0, 0.02, n), -1, 1)
    fwd = (edge * score_values * 20e-4 if informative else 0.0) + rng.normal(0, 2e-3, n)
    trade = np.full(n, np.nan)
    trade[::15] = fwd[::15]
    day = np.arange(n) // 1440
    return score_values, fwd, day, trade, np.full(n, 3.0)


def test_fit_rule_trades_only_an_informative_score_that_beats_its_costs():
    flat = dc.fit_rule(*_validation(14, informative=False))
    assert flat["enter"] is None and "not shown to be informative" in flat["reason"]
    assert flat["fit"]["val_days"] == 14
    fitted = dc.fit_rule(*_validation(14, informative=True))
    assert fitted["enter"] is not None and fitted["fit"]["val_ic_t"] > 3
    assert (
        fitted["fit"]["val_gross_per_unit_bps"]
        > fitted["fit"]["val_cost_per_unit_bps"]
        == pytest.approx(63.0)
    )
    # the fitted rule is the best candidate on validation: none of the grid nets more there
    s, fwd, day, trade, spread = _validation(14, informative=True)
    grid = np.isfinite(trade)
    nets = [
        dc.simulate(dc.positions(s[grid], c), trade[grid], spread[grid], 60.0)["net"].sum()
        for c in dc.candidates(s[grid], "long_short", dc.DecisionConfig())
    ]
    assert max(nets) == pytest.approx(fitted["fit"]["val_net"])
    # an informative score whose moves are smaller than the costs: flat
    small = dc.fit_rule(*_validation(14, informative=True, edge=0.05), dc.DecisionConfig(min_ic_t=0.5))
    assert small["enter"] is None and "no threshold earns its costs" in small["reason"]
    # the rule is JSON-able (stored in the fold artifact, read by the live service)
    assert json.loads(json.dumps(fitted)) == fitted


def _month_frame(
    start: datetime, days: int, positions: dict[str, list[int]], returns, spread=2.0
) -> pl.DataFrame:
    n = days * 96
    ts = pl.datetime_range(start, start + timedelta(minutes=15 * (n - 1)), "15m", time_zone="UTC", eager=True)
    probabilities = np.full((n, 3), 1 / 3)
    return pl.DataFrame(
        {
            "ts": ts,
            "label": np.ones(n, np.int8),
            "fwd_return": np.asarray(returns, dtype=np.float64),
            "trade_return": np.asarray(returns, dtype=np.float64),
            "half_spread_bps": np.full(n, spread, np.float32),
            **{
                f"{m}_{c}": probabilities[:, i]
                for m in ("lstm", "logit", "lgbm")
                for i, c in enumerate(("down", "flat", "up"))
            },
            "majority": np.ones(n, np.int8),
            "persist": np.ones(n, np.int8),
            "horizon_minutes": np.full(n, 15, np.int16),
            **{f"pos_{m}": np.asarray(p, dtype=np.int8) for m, p in positions.items()},
        }
    )


def test_trading_comparison_matches_hand_computed_money():
    rng = np.random.default_rng(3)
    months = {}
    expected = {m: [] for m in wf.TRADED_MODELS}
    for start in (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)):
        n = 10 * 96
        returns = rng.normal(0, 0.004, n)
        positions = {
            m: rng.choice([-1, 0, 1], n, p=[0.1, 0.8, 0.1]) for m in ("lstm", "logit", "lgbm", "persist")
        }
        positions["buy_and_hold"] = np.ones(n, int)
        months[f"{start:%Y-%m}"] = _month_frame(start, 10, positions, returns)
        for m in wf.TRADED_MODELS:
            expected[m].append((positions[m], returns))
    report = vd.trading(months, vd.VerdictConfig(fee_bps=60.0, resamples=300))
    for m in wf.TRADED_MODELS:
        position = np.concatenate([p for p, _ in expected[m]]).astype(float)
        returns = np.concatenate([r for _, r in expected[m]])
        held = 0.0
        nets = []
        for p, r in zip(position, returns):  # carried across the month boundary, as the ledger holds it
            nets.append(p * r - abs(p - held) * 62e-4)
            held = p
        got = report["models"][m]
        assert got["net_return"] == pytest.approx(np.prod(1 + np.array(nets)) - 1)
        equity = np.cumprod(np.concatenate([[1.0], 1 + np.array(nets)]))
        assert got["max_drawdown"] == pytest.approx(np.min(equity / np.maximum.accumulate(equity) - 1))
    # buy and hold is bought once: one unit of costs over both months, gaps or not
    assert report["models"]["buy_and_hold"]["cost"] == pytest.approx(62e-4)
    assert report["models"]["buy_and_hold"]["turnover_per_day"] == pytest.approx(1 / 20)
    low, high = report["lstm_minus_best_net"]["ci"]
    assert low < report["lstm_minus_best_net"]["mean"] < high


def test_buy_and_hold_holds_across_a_data_gap():
    start = datetime(2024, 1, 1, tzinfo=UTC)
    frame = _month_frame(start, 2, {m: [1] * 192 for m in wf.TRADED_MODELS}, np.full(192, 0.001))
    gappy = frame.filter(
        (pl.col("ts") < start + timedelta(hours=10)) | (pl.col("ts") >= start + timedelta(hours=14))
    )
    report = vd.trading({"2024-01": gappy}, vd.VerdictConfig(resamples=100))
    assert report["models"]["buy_and_hold"]["cost"] == pytest.approx(62e-4)  # no re-entry at the gap


def test_information_coefficients_are_pearson_and_spearman_of_the_score():
    rng = np.random.default_rng(1)
    n = 500
    probabilities = rng.dirichlet([1, 1, 1], n)
    fwd = 0.01 * (probabilities[:, 2] - probabilities[:, 0]) + rng.normal(0, 0.01, n)
    frame = pl.DataFrame(
        {
            "fwd_return": fwd,
            **{f"lstm_{c}": probabilities[:, i] for i, c in enumerate(("down", "flat", "up"))},
            "persist": rng.integers(0, 3, n).astype(np.int8),
        }
    )
    values = vd.information_coefficients(frame)
    score_values = probabilities[:, 2] - probabilities[:, 0]
    assert values["ic/lstm"] == pytest.approx(np.corrcoef(score_values, fwd)[0, 1])
    ranks = pl.Series(score_values).rank().to_numpy(), pl.Series(fwd).rank().to_numpy()
    assert values["rank_ic/lstm"] == pytest.approx(np.corrcoef(*ranks)[0, 1])
    assert "ic/persist" in values


def test_bootstrap_weights_resample_months_then_day_blocks():
    month_of_day = np.array([0] * 5 + [1] * 3)
    weights = vd.bootstrap_weights(month_of_day, 400, 2, np.random.default_rng(0))
    # each drawn month contributes exactly its length; two months drawn per draw
    per_month = weights[:, :5].sum(axis=1) / 5 + weights[:, 5:].sum(axis=1) / 3
    assert np.allclose(per_month, 2.0)
    assert (weights[:, :5].sum(axis=1) == 10).any() and (weights[:, 5:].sum(axis=1) == 6).any()
