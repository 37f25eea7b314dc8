"""Live scoring: causal (truncation test), incremental, train/serve parity with the training windows."""

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crpbot_assets.signals import scoring
from crpbot_assets.training.artifacts import build_model, load_artifact
from crpbot_assets.training.dataset import scale
from crpbot_assets_tests.signals.conftest import APRIL, MARCH, march_features
from crpbot_assets_tests.training.helpers import hourly_sentiment


def _variant(artifact: bytes) -> dict:
    return load_artifact(artifact)["variants"]["with_sentiment"]


@pytest.fixture(scope="module")
def sentiment(features):
    frame = hourly_sentiment(40 * 1440, seed=3)
    start = frame["ts"].min()
    return frame.with_columns(pl.col("ts") - start + (MARCH - timedelta(days=5)))


@pytest.fixture(scope="module")
def full(features, sentiment, artifact):
    return scoring.score(features, sentiment, _variant(artifact), "v1", MARCH, APRIL)


def test_every_complete_window_is_scored_like_the_training_model(features, sentiment, artifact, full):
    variant = _variant(artifact)
    assert full.height == features.height - (variant["config"]["sequence_length"] - 1)
    assert full["ts"].is_sorted() and full["ts"].min() >= MARCH
    probabilities = full.select(scoring.PROBABILITY_COLUMNS).to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert probabilities.std(axis=0).min() > 0  # the inputs move the model
    assert set(full["position"].unique()) <= {-1, 0, 1}
    # one window by hand: the 10 rows ending at a chosen minute, scaled with the artifact's scaler
    i = 5000
    rows = scoring.serving_rows(features, sentiment, variant["feature_columns"])
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


def test_incremental_scoring_scores_only_new_minutes_and_matches(features, sentiment, artifact, full):
    cut = full["ts"][20_000]
    first = scoring.score(features, sentiment, _variant(artifact), "v1", MARCH, APRIL)
    first = first.filter(pl.col("ts") <= cut)
    rest = scoring.score(features, sentiment, _variant(artifact), "v1", MARCH, APRIL, after=cut)
    assert rest["ts"].min() > cut
    assert pl.concat([first, rest]).equals(full)
    again = scoring.score(features, sentiment, _variant(artifact), "v1", MARCH, APRIL, after=full["ts"].max())
    assert again.height == 0


@settings(max_examples=6, deadline=None)
@given(minutes=st.integers(min_value=60, max_value=30 * 1440))
def test_a_signal_uses_only_data_known_at_its_close(candles, sentiment, artifact, full, minutes):
    """Truncation: candles up to the cut -> features -> signals equal the full run's for every minute <= cut,
    with sentiment hours ending after the cut's close removed too."""
    cut = MARCH + timedelta(minutes=minutes)
    features = march_features(candles.filter(pl.col("ts") <= cut))
    known = sentiment.filter(pl.col("ts") <= cut + timedelta(minutes=1))
    truncated = scoring.score(features, known, _variant(artifact), "v1", MARCH, APRIL)
    expected = full.filter(pl.col("ts") <= cut)
    assert truncated["ts"].equals(expected["ts"])
    np.testing.assert_array_equal(
        truncated.select(scoring.PROBABILITY_COLUMNS).to_numpy(),
        expected.select(scoring.PROBABILITY_COLUMNS).to_numpy(),
    )


def test_a_model_needing_a_missing_feature_is_a_clear_error(features, sentiment, artifact):
    with pytest.raises(ValueError, match="m1_ret"):
        scoring.score(features.drop("m1_ret_1"), sentiment, _variant(artifact), "v1", MARCH, APRIL)
