"""Live scoring: causal (truncation test), incremental, train/serve parity with the training windows, positions
by the fold's decision rule."""

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crpbot_assets.signals import scoring
from crpbot_assets.training import decisions as dc
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.artifacts import build_model
from crpbot_assets.training.dataset import scale
from crpbot_assets_tests.signals.conftest import APRIL, MARCH, march_features
from crpbot_assets_tests.training.helpers import hourly_sentiment


@pytest.fixture(scope="module")
def sentiment(features):
    frame = hourly_sentiment(40 * 1440, seed=3)
    start = frame["ts"].min()
    return frame.with_columns(pl.col("ts") - start + (MARCH - timedelta(days=5)))


@pytest.fixture(scope="module")
def full(features, sentiment, fold):
    return scoring.score(features, sentiment, fold, "v1", MARCH, APRIL)


def test_every_complete_window_is_scored_like_the_training_model(features, sentiment, fold, full):
    variant = fold["lstm"][0]["with_sentiment"]
    assert full.height == features.height - (fold["sequence_length"] - 1)
    assert full["ts"].is_sorted() and full["ts"].min() >= MARCH
    probabilities = full.select(scoring.PROBABILITY_COLUMNS).to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert probabilities.std(axis=0).min() > 0  # the inputs move the model
    # one window by hand: the 10 rows ending at a chosen minute, scaled with the artifact's scaler
    i = 5000
    rows = wf.serving_rows(features, sentiment, fold["inputs"])
    end = rows["ts"].to_list().index(full["ts"][i])
    x = scale(
        rows.slice(end - 9, 10),
        variant["feature_columns"],
        variant["scaler_mean"].numpy(),
        variant["scaler_std"].numpy(),
        10.0,
    )
    with torch.no_grad():
        expected = torch.softmax(build_model(variant)(torch.from_numpy(x)[None]), dim=1)[0].numpy()
    np.testing.assert_allclose(probabilities[i], expected, atol=1e-5)


def test_positions_follow_the_fold_rule_on_the_decision_grid(fold, full):
    decided = full.filter(pl.col("decision"))
    assert (decided["ts"].dt.minute() % 15 == 0).all() and decided.height == full.filter(
        pl.col("ts").dt.minute() % 15 == 0
    ).height
    score = (full["p_up"] - full["p_down"]).to_numpy()
    np.testing.assert_allclose(full["score"].to_numpy(), score, atol=1e-6)
    expected = dc.positions(decided["score"].to_numpy(), fold["rules"]["lstm"])
    assert decided["position"].to_list() == expected.astype(int).tolist()
    assert set(expected) == {-1.0, 0.0, 1.0}  # the rule trades both ways on these inputs
    # off the grid a minute shows the last decision's position (flat before the first)
    carried = full.with_columns(
        pl.when(pl.col("decision"))
        .then(pl.col("position"))
        .otherwise(None)
        .forward_fill()
        .fill_null(0)
        .alias("held")
    )
    assert carried["held"].cast(pl.Int8).equals(carried["position"], check_names=False)


def test_incremental_scoring_scores_only_new_minutes_and_matches(features, sentiment, fold, full):
    cut = full["ts"][20_000]
    first = full.filter(pl.col("ts") <= cut)
    rest = scoring.score(
        features, sentiment, fold, "v1", MARCH, APRIL, after=cut, previous=scoring.previous_position(first)
    )
    assert rest["ts"].min() > cut
    assert pl.concat([first, rest]).equals(full)
    again = scoring.score(features, sentiment, fold, "v1", MARCH, APRIL, after=full["ts"].max())
    assert again.height == 0


@settings(max_examples=6, deadline=None)
@given(minutes=st.integers(min_value=60, max_value=30 * 1440))
def test_a_signal_uses_only_data_known_at_its_close(candles, sentiment, fold, full, minutes):
    """Truncation: candles up to the cut -> features -> signals equal the full run's for every minute <= cut,
    with sentiment hours ending after the cut's close removed too."""
    cut = MARCH + timedelta(minutes=minutes)
    features = march_features(candles.filter(pl.col("ts") <= cut))
    known = sentiment.filter(pl.col("ts") <= cut + timedelta(minutes=1))
    truncated = scoring.score(features, known, fold, "v1", MARCH, APRIL)
    expected = full.filter(pl.col("ts") <= cut)
    assert truncated.equals(expected)


def test_a_model_needing_a_missing_feature_is_a_clear_error(features, sentiment, fold):
    with pytest.raises(ValueError, match="m1_ret"):
        scoring.score(features.drop("m1_ret_1"), sentiment, fold, "v1", MARCH, APRIL)
