"""The fold model: made from what is known before its month, only inputs that varied in training, the same rows
scored the same way by the walk-forward and by serving; an input the fold never trained on cannot move a
decision (pure functions, a tiny model trained in this process)."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crpbot_assets.sentiment.features import FEATURE_COLUMNS as SENTIMENT_COLUMNS
from crpbot_assets.signals import scoring
from crpbot_assets.training import baselines as bl
from crpbot_assets.training import decisions as dc
from crpbot_assets.training import procedure
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.dataset import DatasetConfig
from crpbot_assets_tests.training.helpers import hourly_sentiment, planted

JAN, FEB, MARCH = (datetime(2019, m, 1, tzinfo=UTC) for m in (1, 2, 3))
REDDIT = [c for c in SENTIMENT_COLUMNS if c.startswith("reddit_")]
CONFIG = procedure.ProcedureConfig(
    window=wf.WalkForwardConfig(window_months=1, val_fraction=0.25),
    dataset=DatasetConfig(feature_lookback_minutes=60, max_sequence_length=16),
    model={
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
        "sequence_length": 8,
        "batch_size": 256,
        "epochs": 4,
        "max_train_windows_per_epoch": 8_000,
        "cpu_threads": 1,
        "sentiment_ablation": False,
    },
    baselines=bl.BaselineConfig(lgbm_rounds=10, max_train_rows=5_000),
    # the planted signal is strong: a low fee so that the rules trade (what the Reddit test needs)
    decisions=dc.DecisionConfig(fee_bps=1.0),
)


@pytest.fixture(scope="module")
def world():
    """January and February of planted minutes; Reddit null in January (history), filled in February (live)."""
    n = 59 * 1440
    candles, features = planted(n, seed=5, strength=2.0)
    sentiment = hourly_sentiment(n, seed=2)
    live = sentiment.with_columns(
        [pl.when(pl.col("ts") >= FEB).then(pl.col(c)).otherwise(None).alias(c) for c in REDDIT]
    )
    return candles, features, live


@pytest.fixture(scope="module")
def fold(world):
    candles, features, sentiment = world
    return procedure.fold_model(features, sentiment, candles, FEB, CONFIG, "BTC-USD")


def test_inputs_that_never_varied_in_training_are_dropped_and_recorded(world, fold):
    candles, features, sentiment = world
    constant = features.with_columns(pl.lit(3.0).alias("noise_0"))
    plan = wf.plan_fold(FEB, CONFIG.window, CONFIG.dataset)
    dataset, dropped = wf.fold_training_data(constant, sentiment, candles, plan, CONFIG.dataset, "BTC-USD")
    assert set(dropped) == {"noise_0", *REDDIT}
    assert not set(dropped) & set(dataset.feature_columns) and dataset.mean.shape == (
        len(dataset.feature_columns),
    )
    assert set(fold["dropped_inputs"]) == set(REDDIT) and not set(REDDIT) & set(fold["inputs"])
    assert fold["lstm"][0]["with_sentiment"]["feature_columns"] == fold["inputs"]


def test_the_fold_model_depends_only_on_what_is_known_before_its_month(world):
    candles, features, sentiment = world
    plan = wf.plan_fold(FEB, CONFIG.window, CONFIG.dataset)
    before = [f.filter(pl.col("ts") < FEB) for f in (features, sentiment, candles)]
    early, _ = wf.fold_training_data(*before, plan, CONFIG.dataset, "BTC-USD")
    late, _ = wf.fold_training_data(features, sentiment, candles, plan, CONFIG.dataset, "BTC-USD")
    assert wf.model_fingerprint(wf.training_part(early), {}) == wf.model_fingerprint(
        wf.training_part(late), {}
    )


def test_live_reddit_values_cannot_change_a_decision_of_a_model_trained_without_them(world, fold):
    candles, features, sentiment = world
    assert fold["rules"]["lstm"]["enter"] is not None  # the fold trades: decisions are there to change
    without = sentiment.with_columns([pl.lit(None, pl.Float64).alias(c) for c in REDDIT])
    loud = sentiment.with_columns([(pl.col(c) * 50.0).alias(c) for c in REDDIT])  # extreme live values
    signals = [scoring.score(features, s, fold, "v", FEB, MARCH) for s in (sentiment, without, loud)]
    assert signals[0].height > 20_000 and signals[0]["position"].abs().sum() > 0
    assert signals[0].equals(signals[1]) and signals[0].equals(signals[2])


def test_the_walk_forward_month_is_scored_as_serving_scores_it(world, fold):
    candles, features, sentiment = world
    plan = wf.plan_fold(FEB, CONFIG.window, CONFIG.dataset)
    dataset = wf.fold_dataset(features, sentiment, candles, plan, CONFIG.dataset, "BTC-USD")
    from_dataset, _ = wf.score_fold(dataset, fold, candles)
    served = procedure.scored_month(features, sentiment, candles, FEB, fold)
    assert from_dataset.height > 35_000 and served.columns == from_dataset.columns
    assert served["ts"].equals(from_dataset["ts"])
    for column in served.columns:
        if served[column].dtype.is_float():
            np.testing.assert_allclose(served[column].to_numpy(), from_dataset[column].to_numpy(), atol=1e-6)
        else:
            assert served[column].equals(from_dataset[column]), column
    # and `signals` takes the same decisions on the same minutes
    live = scoring.score(features, sentiment, fold, "v", FEB, MARCH).filter(pl.col("decision"))
    verdict = served.filter(pl.col("pos_lstm").is_not_null()).select("ts", "pos_lstm")
    joined = verdict.join(live.select("ts", "position"), on="ts", how="inner")
    assert joined.height == verdict.height and (joined["pos_lstm"] == joined["position"]).all()
    assert (served["ts"] - served["ts"].shift(1)).drop_nulls().min() == timedelta(minutes=1)
