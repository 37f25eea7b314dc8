"""The training dataset: causal sentiment join, labels, purge gaps, train-only scaling, storage round trip."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crpbot_assets.common.storage import Storage
from crpbot_assets.training.dataset import (
    PURGED,
    SENTIMENT_COLUMNS,
    SPLITS,
    DatasetConfig,
    DatasetError,
    build_dataset,
    from_parquet_bytes,
    join_relative_sentiment,
    join_sentiment,
    label_rows,
    relative_sentiment,
    scale,
    to_parquet_bytes,
    write_parquet,
)
from crpbot_assets_tests.training.helpers import SMALL_CONFIG, START, hourly_sentiment, minutes, planted


def test_minute_sees_only_completed_hours():
    n = 3 * 60
    sentiment = hourly_sentiment(n).with_columns(
        pl.int_range(1, pl.len() + 1).cast(pl.Float64).alias("fear_greed_index")
    )
    frame = join_sentiment(pl.DataFrame({"ts": minutes(n)}), sentiment)
    value = dict(zip(frame["ts"], frame["fear_greed_index"]))
    # The hour 00:00-01:00 is usable from 01:00 (fear_greed_index=1): minute 00:58 closes at 00:59 -> nothing yet;
    # minute 00:59 closes at 01:00 -> that hour; minute 01:59 closes at 02:00 -> the next hour (value 2).
    assert value[START + timedelta(minutes=58)] is None
    assert value[START + timedelta(minutes=59)] == 1.0
    assert value[START + timedelta(minutes=118)] == 1.0
    assert value[START + timedelta(minutes=119)] == 2.0
    # A missing hour row is not papered over with the previous hour's values.
    gappy = join_sentiment(
        pl.DataFrame({"ts": minutes(n)}), sentiment.filter(pl.col("fear_greed_index") != 2.0)
    )
    value = dict(zip(gappy["ts"], gappy["fear_greed_index"]))
    assert value[START + timedelta(minutes=118)] == 1.0
    assert value[START + timedelta(minutes=119)] is None and value[START + timedelta(minutes=178)] is None
    assert value[START + timedelta(minutes=179)] == 3.0


def test_sentiment_is_relative_to_its_trailing_week():
    raw = hourly_sentiment(20 * 1440, seed=4)
    x = raw["fear_greed_index"].to_numpy()
    relative = relative_sentiment(raw)["fear_greed_index"].to_numpy()
    # hour end k: (x[k] - mean) / std over the 168 hour ends before it (k - 168 .. k - 1), itself excluded
    for k in (30, 167, 168, 300, len(x) - 1):
        week = x[max(0, k - 168) : k]
        assert relative[k] == pytest.approx((x[k] - week.mean()) / week.std())
    assert np.isnan(relative[:24]).all() and np.isfinite(relative[24:]).all()  # fewer than 24 hours: null
    # Stationary: a level shift and a rescaling of the raw series change nothing once a week has passed.
    regime = raw.with_columns((pl.col("fear_greed_index") * 3 + 1000).alias("fear_greed_index"))
    shifted = relative_sentiment(regime)["fear_greed_index"].to_numpy()
    np.testing.assert_allclose(shifted[168:], relative[168:], rtol=1e-6)
    # Causal: hours after a cut do not change any value up to it.
    cut = raw["ts"][400]
    truncated = relative_sentiment(raw.filter(pl.col("ts") <= cut))
    np.testing.assert_array_equal(truncated["fear_greed_index"].to_numpy(), relative[:401])
    # A week without variation (Reddit silent: volume 0 every hour) has no relative value; nulls are skipped.
    silent = raw.with_columns(
        pl.when(pl.int_range(0, pl.len()) < 200)
        .then(0.0)
        .otherwise(pl.col("reddit_volume_1h"))
        .alias("reddit_volume_1h"),
        pl.when(pl.int_range(0, pl.len()) % 2 == 0)
        .then(None)
        .otherwise(pl.col("fear_greed_index"))
        .alias("fear_greed_index"),
    )
    out = relative_sentiment(silent)
    assert out["reddit_volume_1h"][100:200].is_null().all() and out["reddit_volume_1h"][201] is not None
    odd = x[1:300:2]
    assert out["fear_greed_index"][301] == pytest.approx((x[301] - odd[-84:].mean()) / odd[-84:].std())
    # Training and serving join the same relative values.
    minute_ts = pl.DataFrame({"ts": minutes(3 * 1440, START + timedelta(days=10))})
    joined = join_relative_sentiment(minute_ts, raw)
    assert joined.equals(join_sentiment(minute_ts, relative_sentiment(raw)))
    assert joined["fear_greed_index"].drop_nulls().len() == 3 * 1440


def test_labels_dead_zone_missing_target_and_trailing_rows():
    closes = [100.0, 100.2, 100.0, 99.0, 99.0, 99.0, 99.5]
    ts = minutes(len(closes))
    candles = pl.DataFrame({"ts": ts, "close": closes}).filter(~pl.Series(range(7)).is_in([3, 6]))
    features = pl.DataFrame({"ts": ts, "f": np.arange(7.0)})
    frame = label_rows(features, candles, DatasetConfig(horizon_minutes=1, dead_zone_bps=10))
    # The last candle is minute 5 (minute 6 has no trade): minutes 5 and 6 would need data past it -> dropped.
    assert frame["ts"].to_list() == ts[:5].to_list()
    # 0->1: +20 bps up; 1->2: -20 bps down; 2->3: target minute has no candle -> no label (row kept as input);
    # 3: no close of its own -> no label; 4->5: 0 bps flat.
    assert frame["label"].to_list() == [2, 0, None, None, 1]
    assert frame["fwd_return"][0] == pytest.approx(0.002)
    assert frame["past_return"].to_list()[:3] == [
        None,
        pytest.approx(0.002),
        pytest.approx(100.0 / 100.2 - 1),
    ]
    wide = label_rows(features, candles, DatasetConfig(horizon_minutes=2, dead_zone_bps=150))
    assert wide["label"].to_list() == [
        1,
        None,
        1,
        None,
    ]  # 0->2 flat (0 bps), 2->4: -1 % is inside a 150 bps zone


def test_splits_respect_purge_gap_and_scaler_uses_training_rows_only():
    candles, features = planted(20_000, seed=3)
    sentiment = hourly_sentiment(20_000, null_before_hours=30)
    config = SMALL_CONFIG
    dataset = build_dataset(features, sentiment, candles, config)
    frame = dataset.frame
    gap = timedelta(minutes=config.purge_minutes)
    assert (
        config.purge_minutes
        >= config.horizon_minutes + config.max_sequence_length + config.feature_lookback_minutes
    )
    ranges = {name: frame.filter(pl.col("split") == code)["ts"] for name, code in SPLITS.items()}
    assert ranges["val"].min() - ranges["train"].max() >= gap
    assert ranges["test"].min() - ranges["val"].max() >= gap
    assert frame.filter(pl.col("split") == PURGED).height > 0
    # rows stay in time order (windows are runs of rows) and splits are contiguous: split codes never go back
    assert frame["ts"].is_sorted()
    order = frame.filter(pl.col("split") != PURGED)["split"].to_numpy()
    assert np.all(np.diff(order) >= 0)

    train = frame.filter((pl.col("split") == 0) & pl.col("row_valid"))
    for column in ("signal", "noise_0", "fear_greed_index"):
        i = dataset.feature_columns.index(column)
        assert dataset.mean[i] == pytest.approx(train[column].mean(), rel=1e-6)
        assert dataset.std[i] == pytest.approx(train[column].std(ddof=0), rel=1e-6)

    # Changing every non-training row leaves the scaler unchanged.
    later = features["ts"] >= ranges["train"].max() + timedelta(minutes=1)
    shifted = features.with_columns(
        pl.when(later).then(pl.col("signal") * 100 + 7).otherwise(pl.col("signal")).alias("signal")
    )
    again = build_dataset(shifted, sentiment, candles, config)
    np.testing.assert_array_equal(again.mean, dataset.mean)
    np.testing.assert_array_equal(again.std, dataset.std)


def test_null_sentiment_is_imputed_with_training_mean():
    candles, features = planted(6_000)
    sentiment = hourly_sentiment(6_000, null_before_hours=20)
    dataset = build_dataset(features, sentiment, candles, SMALL_CONFIG)
    x = scale(dataset.frame, dataset.feature_columns, dataset.mean, dataset.std, dataset.config.clip)
    nulls = dataset.frame["reddit_sentiment_1h"].is_null().to_numpy()
    assert nulls.sum() > 0
    assert np.all(x[nulls, dataset.feature_columns.index("reddit_sentiment_1h")] == 0.0)
    assert np.isfinite(x).all()
    # No sentiment materialized at all: every sentiment column becomes constant 0 after scaling.
    empty = build_dataset(features, pl.DataFrame(), candles, SMALL_CONFIG)
    x = scale(empty.frame, empty.feature_columns, empty.mean, empty.std, empty.config.clip)
    assert np.all(x[:, [empty.feature_columns.index(c) for c in SENTIMENT_COLUMNS]] == 0.0)


def test_bad_inputs_fail_with_named_problem():
    candles, features = planted(6_000)
    with pytest.raises(DatasetError, match="features for BTC-USD: no rows"):
        build_dataset(features.clear(), pl.DataFrame(), candles, SMALL_CONFIG, "BTC-USD")
    with pytest.raises(DatasetError, match="fear_greed_index"):
        build_dataset(features, hourly_sentiment(6_000).drop("fear_greed_index"), candles, SMALL_CONFIG)
    with pytest.raises(DatasetError, match="segment is empty after a purge gap"):
        build_dataset(features, pl.DataFrame(), candles, DatasetConfig(feature_lookback_minutes=3 * 1440))
    with pytest.raises(DatasetError, match="duplicate timestamps"):
        build_dataset(pl.concat([features, features.head(1)]), pl.DataFrame(), candles, SMALL_CONFIG)
    with pytest.raises(DatasetError, match="not a crpbot training dataset"):
        from_parquet_bytes(b"not parquet", "s3://bucket/x.parquet")


def test_parquet_round_trip_keeps_frame_scaler_and_config():
    candles, features = planted(6_000)
    dataset = build_dataset(features, hourly_sentiment(6_000), candles, SMALL_CONFIG, "ETH-USD")
    back = from_parquet_bytes(to_parquet_bytes(dataset))
    assert back.frame.equals(dataset.frame)
    assert back.feature_columns == dataset.feature_columns and back.symbol == "ETH-USD"
    np.testing.assert_array_equal(back.mean, dataset.mean)
    np.testing.assert_array_equal(back.std, dataset.std)
    assert back.config == dataset.config
    assert datetime(2019, 1, 1, tzinfo=UTC) == back.frame["ts"][0]


def test_a_dataset_streamed_to_storage_is_the_same_file_as_its_bytes(tmp_path):
    candles, features = planted(6_000)
    dataset = build_dataset(features, hourly_sentiment(6_000), candles, SMALL_CONFIG, "ETH-USD")
    storage = Storage(str(tmp_path))
    storage.write_with("training_dataset/ETH-USD.parquet", lambda out: write_parquet(dataset, out))
    data = storage.read_bytes("training_dataset/ETH-USD.parquet")
    assert data == to_parquet_bytes(dataset) and storage.size("training_dataset/ETH-USD.parquet") == len(data)
    assert from_parquet_bytes(data).frame.equals(dataset.frame)


def test_unsorted_or_integer_features_give_the_same_dataset_as_sorted_float():
    """Rows in any order build the same dataset (the wide columns are attached beside the narrow joins, so their
    order must follow `ts`); an integer feature is valid where it is not null, like a float one where finite."""
    candles, features = planted(30_000, seed=5)
    sentiment = hourly_sentiment(30_000)
    expected = build_dataset(features, sentiment, candles, SMALL_CONFIG)
    shuffled = build_dataset(
        features.sample(fraction=1.0, shuffle=True, seed=1), sentiment, candles, SMALL_CONFIG
    )
    assert shuffled.frame.equals(expected.frame)
    assert np.array_equal(shuffled.mean, expected.mean) and np.array_equal(shuffled.std, expected.std)
    as_int = build_dataset(
        features.with_columns(pl.col("noise_0").round().cast(pl.Int64)), sentiment, candles, SMALL_CONFIG
    )
    assert as_int.frame["row_valid"].equals(expected.frame["row_valid"])
    assert as_int.frame["noise_0"].equals(expected.frame["noise_0"].round())


def test_monthly_chunks_give_the_dataset_of_one_frame():
    """Features concatenated from partitions (many chunks, kept as they are) give the same rows, scaler and file."""
    candles, features = planted(6_000)
    sentiment = hourly_sentiment(6_000)
    chunked = pl.concat([features.slice(i, 1_000) for i in range(0, features.height, 1_000)], rechunk=False)
    assert chunked["ts"].n_chunks() == 6
    whole = build_dataset(features, sentiment, candles, SMALL_CONFIG, "BTC-USD")
    parts = build_dataset(chunked, sentiment, candles, SMALL_CONFIG, "BTC-USD")
    assert parts.frame.equals(whole.frame)
    np.testing.assert_array_equal(parts.mean, whole.mean)
    np.testing.assert_array_equal(parts.std, whole.std)
    assert to_parquet_bytes(parts) == to_parquet_bytes(whole)
