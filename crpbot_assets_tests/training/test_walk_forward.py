"""Walk-forward folds, baselines, the cost model and the verdict, on planted data (pure functions, no Dagster)."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crpbot_assets.training import costs
from crpbot_assets.training import verdict as vd
from crpbot_assets.training import verdict_words as vw
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.artifacts import load_artifact, read_uri
from crpbot_assets.training.dataset import SPLITS, Dataset, DatasetConfig, DatasetError, to_parquet_bytes
from crpbot_assets.training.pipes_main import run_training
from crpbot_assets_tests.training.helpers import hourly_sentiment, planted

CONFIG = DatasetConfig(feature_lookback_minutes=60, max_sequence_length=16)
WINDOW = wf.WalkForwardConfig(window_months=2)
TINY = {
    "hidden_size": 8,
    "num_layers": 1,
    "dropout": 0.0,
    "sequence_length": 8,
    "batch_size": 256,
    "epochs": 3,
    "patience": 2,
    "max_train_windows_per_epoch": 10_000,
    "cpu_threads": 1,
}
START = datetime(2019, 1, 1, tzinfo=UTC)
PATTERN_FROM = datetime(2019, 4, 1, tzinfo=UTC)


def month(m: int) -> datetime:
    return datetime(2019, m, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def world():
    """Six months of minutes; the planted signal drives returns from April on (before: pure noise)."""
    n = 181 * 1440
    candles, features = planted(n, seed=3, start=START, pattern_from=PATTERN_FROM)
    return candles, features, hourly_sentiment(n)


def _train(dataset: Dataset, tmp_path, name: str) -> dict:
    data = tmp_path / f"{name}.parquet"
    data.write_bytes(to_parquet_bytes(wf.training_part(dataset)))
    model = tmp_path / f"{name}.pt"
    extras = {"symbol": "BTC-USD", "dataset_uri": str(data), "model_uri": str(model), "config": TINY}
    run_training(extras, lambda message: None)
    return load_artifact(read_uri(str(model)))


def _fold(world, test_month: datetime, config=WINDOW):
    candles, features, sentiment = world
    fold = wf.plan_fold(test_month, config, CONFIG)
    return fold, wf.fold_dataset(features, sentiment, candles, fold, CONFIG, "BTC-USD")


def _assert_purged(dataset: Dataset, fold: wf.Fold) -> None:
    frame = dataset.frame
    fitted = frame.filter(pl.col("split").is_in([SPLITS["train"], SPLITS["val"]]))
    tested = frame.filter(pl.col("split") == SPLITS["test"])
    purge = timedelta(minutes=CONFIG.purge_minutes)
    assert (
        fitted["ts"].max() + purge <= fold.test_start
    )  # no fitted label, window or lookback reaches the month
    assert fitted["ts"].min() >= fold.window_start
    assert tested["ts"].min() >= fold.test_start and tested["ts"].max() < fold.test_end
    assert wf.training_part(dataset).frame["ts"].max() < fold.test_start - purge


def test_fold_plans_monthly_and_quarterly():
    purge = timedelta(minutes=CONFIG.purge_minutes)
    monthly = wf.plan_fold(month(5), wf.WalkForwardConfig(window_months=12), CONFIG)
    assert monthly.model_month == month(5) and monthly.window_start == datetime(2018, 5, 1, tzinfo=UTC)
    assert monthly.val_end == month(5) - purge and monthly.test_end == month(6)
    quarterly = wf.WalkForwardConfig(window_months=3, retrain="quarterly")
    folds = [wf.plan_fold(month(m), quarterly, CONFIG) for m in (4, 5, 6)]
    assert {f.model_month for f in folds} == {month(4)}  # one model serves the quarter
    assert {f.window_start for f in folds} == {month(1)} and quarterly.months_before == 5
    cuts = folds[2].cuts(month(1))
    assert cuts.test_start == month(6) and cuts.val_end == month(4) - purge
    val_minutes = (cuts.val_end - month(1)).total_seconds() / 60 * quarterly.val_fraction
    assert cuts.train_end == cuts.val_end - timedelta(minutes=round(val_minutes)) - purge
    with pytest.raises(DatasetError, match="too short"):
        wf.plan_fold(month(5), WINDOW, CONFIG).cuts(month(4) + timedelta(days=30))
    with pytest.raises(ValueError, match="retrain"):
        wf.WalkForwardConfig(retrain="weekly")


def _bacc(frame: pl.DataFrame) -> dict[str, float]:
    scores = vd.month_scores(frame)
    return {k.split("/")[1]: v for k, v in scores.items() if k.startswith("bacc/")}


def test_planted_pattern_is_found_only_by_models_trained_after_it_starts(world, tmp_path):
    before, before_data = _fold(world, month(4))  # trained Feb-Mar: no pattern yet
    after, after_data = _fold(world, month(6))  # trained Apr-May
    for fold, dataset in ((before, before_data), (after, after_data)):
        _assert_purged(dataset, fold)
    early, _ = wf.predict_fold(before_data, _train(before_data, tmp_path, "apr"), world[0])
    late, info = wf.predict_fold(after_data, _train(after_data, tmp_path, "jun"), world[0])
    assert info["test_rows"] == late.height > 40_000  # nearly every minute of June
    for scores, beats in ((_bacc(early), False), (_bacc(late), True)):
        naive = max(scores["majority"], scores["persist"])
        for model in ("lstm", "nosent", "logit", "lgbm"):
            if beats:
                assert scores[model] > naive + 0.03, (model, scores)
            else:
                assert scores[model] < naive + 0.01, (model, scores)
    # the same rows for every model: one frame, no nulls but off the decision grid (positions, trade returns)
    grid = late["ts"].dt.minute() % 15 == 0
    on_grid = late.filter(grid).drop("trade_return")  # the month's last decision may lack a later fill
    assert on_grid.select(pl.all().is_null().any()).row(0) == (False,) * on_grid.width
    off = late.filter(~grid).drop([c for c in late.columns if c.startswith("pos_") or c == "trade_return"])
    assert off.select(pl.all().is_null().any()).row(0) == (False,) * off.width
    # a decision trades from the next minute's open to the next decision's fill, as the ledger fills it
    candles = world[0].filter(pl.col("ts") >= month(6))
    first = late.filter(grid).row(0, named=True)
    fill = candles.filter(pl.col("ts") > first["ts"]).row(0, named=True)
    assert first["fill_open"] == fill["open"]
    assert first["half_spread_bps"] == pytest.approx(
        25 * (fill["high"] - fill["low"]) / fill["close"] * 1e2, rel=1e-5
    )


def test_shuffled_labels_leave_every_model_at_chance(world, tmp_path):
    _, dataset = _fold(world, month(6))
    rng = np.random.default_rng(0)
    labels = dataset.frame["label"].fill_null(-1).to_numpy().copy()
    known = labels >= 0
    labels[known] = rng.permutation(labels[known])
    frame = dataset.frame.with_columns(
        pl.Series("label", labels, dtype=pl.Int8).replace(-1, None)  # nulls stay where they were
    )
    shuffled = Dataset(
        frame, dataset.feature_columns, dataset.sentiment_columns, dataset.mean, dataset.std, CONFIG
    )
    predictions, _ = wf.predict_fold(shuffled, _train(shuffled, tmp_path, "shuffled"), world[0])
    for model, value in _bacc(predictions).items():
        assert abs(value - 1 / 3) < 0.015, (model, value)


def test_test_windows_may_start_in_the_purge_gap_but_never_in_fitted_rows():
    ts = pl.datetime_range(START, START + timedelta(minutes=29), "1m", time_zone="UTC", eager=True)
    split = [0] * 8 + [-1] * 4 + [1] * 6 + [-1] * 4 + [2] * 8
    frame = pl.DataFrame(
        {"ts": ts, "split": split, "label": [1] * 30, "row_valid": [True] * 30},
        schema_overrides={"label": pl.Int8},
    )
    dataset = Dataset(frame, [], [], np.zeros(0), np.zeros(0), CONFIG)
    # length 5: the first test row (22) needs rows 18..22, all gap rows after the last validation row (17)
    assert wf.test_window_ends(dataset, 5).tolist() == list(range(22, 30))
    assert wf.test_window_ends(dataset, 6).tolist() == list(range(23, 30))  # 17 is a fitted (val) row


def test_cost_model_matches_hand_computed_pnl():
    probabilities = np.array(
        [
            [0.1, 0.2, 0.7],
            [0.2, 0.3, 0.5],
            [0.6, 0.3, 0.1],
            [0.45, 0.1, 0.45],
            [0.1, 0.8, 0.1],
            [0.2, 0.2, 0.6],
        ]
    )
    fwd = np.array([0.004, -0.002, -0.003, 0.001, 0.002, 0.005])
    follows = np.array([True, True, True, True, True, False])
    position = costs.positions_from_probabilities(probabilities, "long_short", threshold=0.55)
    # 0.7 up -> +1; 0.5 < 0.55 -> flat; 0.6 down -> -1; 0.45 -> flat; flat argmax -> 0; 0.6 up -> +1
    assert position.tolist() == [1, 0, -1, 0, 0, 1]
    spread = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    result = costs.simulate(position, fwd, 10.0, spread, follows)
    traded = [1, 1, 1, 1, 0, 1]  # the last period follows a skipped one, from flat: only the entry
    assert result["turnover"].tolist() == traded
    gross = [0.004, 0.0, 0.003, 0.0, 0.0, 0.005]
    cost = [(10 + 1) / 1e4, (10 + 2) / 1e4, (10 + 3) / 1e4, (10 + 4) / 1e4, 0.0, (10 + 6) / 1e4]
    assert result["net"] == pytest.approx(np.array(gross) - np.array(cost))
    # break-even: (120 bps gross - (1+2+3+4+6) bps spread) / 5 units = 20.8 bps
    assert costs.break_even_fee_bps(result["gross"], result["spread"], result["turnover"]) == pytest.approx(
        20.8
    )
    sweep = costs.fee_sweep(result["gross"], result["spread"], result["turnover"], (0.0, 20.8))
    at_zero = np.prod(1 + np.array(gross) - np.array([1, 2, 3, 4, 0, 6]) / 1e4) - 1
    assert sweep[0.0] == pytest.approx(at_zero)
    assert abs(sweep[20.8]) < 2e-5  # compounding only: the summed net return is exactly zero there
    long_flat = costs.positions_from_probabilities(probabilities, "long_flat", threshold=0.0)
    assert long_flat.tolist() == [1, 1, 0, 0, 0, 1]  # a 0.45/0.45 tie goes to the first class (down)
    assert costs.half_spread_bps(np.array([101.0]), np.array([99.0]), np.array([100.0])) == pytest.approx(
        [50.0]
    )
    with pytest.raises(ValueError, match="threshold"):
        costs.CostModel(threshold=1.5)


def _predictions(days: int, seed: int, start: datetime, edge: float = 0.0) -> pl.DataFrame:
    """Minute predictions every 15 minutes for `days` days: the LSTM is right with probability 1/3 + edge."""
    rng = np.random.default_rng(seed)
    n = days * 96
    ts = pl.datetime_range(start, start + timedelta(minutes=15 * (n - 1)), "15m", time_zone="UTC", eager=True)
    label = rng.integers(0, 3, n)
    right = rng.random(n) < 1 / 3 + edge
    pred = np.where(right, label, (label + rng.integers(1, 3, n)) % 3)
    columns = {}
    guessing = rng.integers(0, 3, n)  # without sentiment: at random
    models = (("lstm", pred), ("lstm_s0", pred), ("nosent", guessing), ("nosent_s0", guessing))
    for model, guess in (*models, ("logit", rng.integers(0, 3, n))):
        probabilities = np.full((n, 3), 0.25)
        probabilities[np.arange(n), guess] = 0.5
        columns.update({f"{model}_{c}": probabilities[:, i] for i, c in enumerate(("down", "flat", "up"))})
    return pl.DataFrame(
        {
            "ts": ts,
            "label": label,
            "fwd_return": np.where(label == 2, 0.001, np.where(label == 0, -0.001, 0.0)),
            **columns,
            "majority": np.ones(n, np.int8),
            "persist": rng.integers(0, 3, n).astype(np.int8),
            "half_spread_bps": np.full(n, 1.0),
            "trade_return": np.where(label == 2, 0.001, np.where(label == 0, -0.001, 0.0)),
            "horizon_minutes": np.full(n, 15, np.int16),
            "pos_lstm": (pred - 1).astype(np.int8),  # the argmax direction
            "pos_buy_and_hold": np.ones(n, np.int8),
        }
    )


def test_verdict_metrics_intervals_trading_and_ablation():
    months = {
        "2019-01": _predictions(31, 1, month(1), edge=0.15),
        "2019-02": _predictions(28, 2, month(2), edge=0.15),
    }
    report = vd.verdict(months, vd.VerdictConfig(metric="acc", fee_bps=2.0, resamples=400))
    for key, frame in months.items():
        y = frame["label"].to_numpy()
        hits = (vd.probabilities(frame, "lstm").argmax(axis=1) == y).mean()
        assert report["months"][key]["acc/lstm"] == pytest.approx(hits)
        assert report["months"][key]["ll/lstm"] == pytest.approx(
            -np.mean(np.log(vd.probabilities(frame, "lstm")[np.arange(len(y)), y]))
        )
    acc = report["mean"]["acc/lstm"]
    assert acc["ci"][0] < acc["mean"] < acc["ci"][1] and acc["ci"][0] > 0.4  # ~0.48 expected, 59 days
    assert report["best_baseline"] in vd.BASELINES and report["months_beating_baselines"] == 1.0
    ablation = report["ablation"]["acc"]
    assert ablation["ci"][0] > 0 and ablation["months_won"] == 2  # nosent guesses at random
    # trading: every row is on the 15-minute grid; the stored positions, 2 bps fee + 1 bps spread
    both = pl.concat(list(months.values()))
    position = both["pos_lstm"].to_numpy().astype(float)
    traded = np.abs(np.diff(np.concatenate([[0.0], position])))
    net = position * both["trade_return"].to_numpy() - traded * 3.0 / 1e4
    trading = report["trading"]["models"]["lstm"]
    assert trading["net_return"] == pytest.approx(np.prod(1 + net) - 1)
    daily = net.reshape(59, 96).sum(axis=1)
    assert trading["sharpe_daily_ann"] == pytest.approx(daily.mean() / daily.std() * np.sqrt(365))
    assert trading["turnover_per_day"] == pytest.approx(traded.sum() / 59)
    assert report["trading"]["best_trading_baseline"] == "buy_and_hold"
    assert "break-even fee" in vw.verdict(report)
    with pytest.raises(ValueError, match="no walk-forward predictions"):
        vd.verdict({})
