"""Windows, learning vs baselines, shuffled labels, determinism, artifact round trip, backtest arithmetic."""

import numpy as np
import polars as pl
import pytest
import torch

from crpbot_assets.training.artifacts import build_model, load_artifact, save_artifact, variant_record
from crpbot_assets.training.dataset import build_dataset
from crpbot_assets.training.evaluation import (
    backtest,
    classification_metrics,
    evaluate_artifact,
    evaluate_variant,
)
from crpbot_assets.training.train import (
    TrainConfig,
    make_windows,
    pick_device,
    predict,
    train_model,
    window_ends,
)
from crpbot_assets_tests.training.helpers import SMALL_CONFIG, hand_backtest, hourly_sentiment, planted

TINY = TrainConfig(
    hidden_size=16,
    num_layers=1,
    dropout=0.0,
    sequence_length=16,
    batch_size=256,
    epochs=4,
    patience=2,
    max_train_windows_per_epoch=20_000,
)


@pytest.fixture(scope="module")
def dataset():
    candles, features = planted(40_000, seed=7)
    return build_dataset(features, hourly_sentiment(40_000), candles, SMALL_CONFIG, "BTC-USD")


def _train_and_evaluate(data, config=TINY):
    windows = make_windows(
        data, data.feature_columns, config.sequence_length, pick_device("cpu", cpu_threads=1)
    )
    result = train_model(windows, config)
    artifact = {"with_sentiment": variant_record(result, config, data, data.feature_columns)}
    return result, evaluate_artifact(data, {"variants": artifact})["with_sentiment"]


def test_window_ends_match_a_naive_scan():
    rng = np.random.default_rng(0)
    valid = rng.random(300) > 0.05
    labelled = rng.random(300) > 0.1
    split = np.repeat([0, -1, 1, -1, 2], 60)
    got = window_ends(valid, labelled, split, 8)
    for name, code in (("train", 0), ("val", 1), ("test", 2)):
        naive = [
            e
            for e in range(7, 300)
            if valid[e - 7 : e + 1].all() and labelled[e] and (split[e - 7 : e + 1] == code).all()
        ]
        assert got[name].tolist() == naive


def test_batches_are_the_rows_of_each_window(dataset):
    windows = make_windows(dataset, dataset.feature_columns, 16)
    ends = windows.ends["val"][:5]
    xb, yb = windows.batch(ends)
    assert xb.shape == (5, 16, len(dataset.feature_columns)) and xb.is_contiguous()
    for i, end in enumerate(ends.tolist()):
        assert torch.equal(xb[i], windows.x[end - 15 : end + 1])
        assert yb[i] == dataset.frame["label"][end]


def test_sequence_longer_than_the_purge_allows_is_refused(dataset):
    with pytest.raises(ValueError, match="exceeds the dataset's max_sequence_length 32"):
        make_windows(dataset, dataset.feature_columns, 64)


def test_planted_pattern_is_learned_and_beats_baselines(dataset):
    result, evaluation = _train_and_evaluate(dataset)
    model, majority, persistence = (
        evaluation[k] for k in ("model", "majority_baseline", "persistence_baseline")
    )
    assert model["accuracy"] > max(majority["accuracy"], persistence["accuracy"]) + 0.04, evaluation
    assert model["balanced_accuracy"] > persistence["balanced_accuracy"] + 0.04
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    # Without fees the signal makes money on the test segment.
    assert evaluation["backtest_gross"]["long_short"]["total_return"] > 0


def test_shuffled_labels_give_chance_accuracy(dataset):
    labels = dataset.frame["label"]
    shuffled = labels.gather(np.random.default_rng(1).permutation(len(labels)))
    data = type(dataset)(**{**dataset.__dict__, "frame": dataset.frame.with_columns(shuffled.alias("label"))})
    _, evaluation = _train_and_evaluate(data)
    model, majority = evaluation["model"], evaluation["majority_baseline"]
    assert abs(model["balanced_accuracy"] - 1 / 3) < 0.04, evaluation
    assert model["accuracy"] < majority["accuracy"] + 0.02


def test_training_is_deterministic_and_early_stops(dataset):
    config = TrainConfig(**{**TINY.__dict__, "epochs": 2, "max_train_windows_per_epoch": 4_000})
    windows = make_windows(dataset, dataset.feature_columns, config.sequence_length)
    a, b = train_model(windows, config), train_model(windows, config)
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key])
    stopped = train_model(
        windows, TrainConfig(**{**config.__dict__, "epochs": 30, "patience": 1, "learning_rate": 0.5})
    )
    assert (
        len(stopped.history) < 30
        and stopped.best_epoch == min(stopped.history, key=lambda h: h["val_loss"])["epoch"]
    )


def test_diverged_training_fails_with_a_clear_error(dataset):
    config = TrainConfig(
        **{**TINY.__dict__, "epochs": 2, "max_train_windows_per_epoch": 512, "learning_rate": float("inf")}
    )
    windows = make_windows(dataset, dataset.feature_columns, config.sequence_length)
    with pytest.raises(
        RuntimeError, match="training diverged: the validation loss was never finite in 2 epoch"
    ):
        train_model(windows, config)


def test_artifact_round_trip_reproduces_predictions_exactly(dataset):
    config = TrainConfig(**{**TINY.__dict__, "epochs": 1, "max_train_windows_per_epoch": 2_000})
    columns = dataset.technical_columns
    windows = make_windows(dataset, columns, config.sequence_length)
    result = train_model(windows, config)
    data = save_artifact({"without_sentiment": variant_record(result, config, dataset, columns)}, "BTC-USD")
    variant = load_artifact(data)["variants"]["without_sentiment"]  # weights_only=True inside
    assert variant["feature_columns"] == columns and variant["config"]["sequence_length"] == 16
    before = predict(result.model, windows, windows.ends["test"])
    after = predict(build_model(variant), windows, windows.ends["test"])
    np.testing.assert_array_equal(before, after)
    with pytest.raises(ValueError, match="not a loadable crpbot model artifact"):
        load_artifact(b"garbage")


def test_metrics_and_backtest_arithmetic():
    metrics = classification_metrics(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 2, 1, 2, 2, 0]))
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert metrics["confusion_matrix"] == [[1, 0, 1], [0, 1, 0], [1, 0, 2]]
    # long/short: +1, +1, -1, 0 -> turnover 1, 0, 2, 1 units at 10 bps each.
    bt = backtest(np.array([2, 2, 0, 1]), np.array([0.01, -0.02, -0.01, 0.05]), 10.0, 15, "long_short")
    net = np.array([0.01 - 0.001, -0.02, 0.01 - 0.002, -0.001])
    assert bt["total_return"] == pytest.approx(np.prod(1 + net) - 1)
    assert bt["trades"] == 3 and bt["periods"] == 4
    equity = np.cumprod(1 + net)
    assert bt["max_drawdown"] == pytest.approx((equity / np.maximum.accumulate(equity) - 1).min())
    flat = backtest(np.array([2, 2, 0, 1]), np.array([0.01, -0.02, -0.01, 0.05]), 10.0, 15, "long_flat")
    assert flat["trades"] == 2 and flat["exposure"] == 0.5
    # A skipped grid period before the 2nd period: flat in between, so leaving and re-entering the long costs 2 units.
    gap = backtest(np.array([2, 2]), np.array([0.01, 0.02]), 10.0, 15, "long_flat", np.array([True, False]))
    assert gap["total_return"] == pytest.approx((1 + 0.01 - 0.001) * (1 + 0.02 - 0.002) - 1)


def test_evaluation_uses_only_test_rows(dataset):
    result, evaluation = _train_and_evaluate(
        dataset, TrainConfig(**{**TINY.__dict__, "epochs": 1, "max_train_windows_per_epoch": 2_000})
    )
    test = dataset.frame.filter(pl.col("split") == 2)
    assert evaluation["test_first_ts"] >= str(test["ts"].min())
    assert evaluation["model"]["samples"] <= test["label"].drop_nulls().len()


def test_evaluate_variant_charges_the_fee_it_is_given(dataset):
    config = TrainConfig(**{**TINY.__dict__, "epochs": 1, "max_train_windows_per_epoch": 2_000})
    windows = make_windows(dataset, dataset.feature_columns, config.sequence_length)
    variant = variant_record(train_model(windows, config), config, dataset, dataset.feature_columns)
    variant = load_artifact(save_artifact({"v": variant}, "BTC-USD"))["variants"]["v"]
    for fee in (0.0, 37.0):
        result = evaluate_variant(dataset, variant, fee)
        expected = hand_backtest(dataset, variant, fee)
        for mode in ("long_short", "long_flat"):
            assert result["backtest"][mode]["total_return"] == pytest.approx(
                expected[mode], rel=1e-9, abs=1e-12
            )
    assert result["backtest"]["long_short"]["trades"] > 0  # so the fee really bites
