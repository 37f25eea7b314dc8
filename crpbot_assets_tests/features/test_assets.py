"""The `features` asset and its checks through Dagster, on candle partitions seeded into the IO manager's storage."""

from datetime import UTC, datetime

import dagster as dg
import numpy as np
import polars as pl
import pytest

from crpbot_assets.common.io_manager import partition_path
from crpbot_assets.common.months import month_end
from crpbot_assets.common.partitions import split_key, symbol_month_partitions
from crpbot_assets.features.assets import COLUMN_SCHEMA, features
from crpbot_assets.features.catalogue import FEATURE_NAMES
from crpbot_assets.features.checks import FEATURES_CHECKS
from crpbot_assets.features.compute import FEATURES_SCHEMA, features_for_month, warmup_start
from crpbot_assets.features.definitions import defs
from crpbot_assets.replay import synthetic
from crpbot_assets_tests.planted import planted_asset

UTC = UTC
CANDLES = dg.AssetSpec("candles", partitions_def=symbol_month_partitions)  # stands in for the candles domain
MONTHS = ["2021-04-01", "2021-05-01", "2021-06-01"]
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]


@dg.asset(partitions_def=symbol_month_partitions)
def downstream(features: dict[str, pl.DataFrame]) -> None:
    """A stand-in consumer: it runs only if the blocking checks pass."""


def month_candles(key: str) -> pl.DataFrame:
    symbol, month = split_key(key)
    return synthetic.candles(symbol, month, month_end(month))


def seed(resources, instance, keys, tamper=None) -> dict[str, pl.DataFrame]:
    """Write and record candle partitions where the IO manager reads them; returns what was written."""
    written = {}
    for key in keys:
        frame = month_candles(key)
        written[key] = tamper(frame) if tamper else frame
        resources["io_manager"].commit_outside_run(instance, "candles", key, written[key])
    return written


def assert_known_columns(frame: pl.DataFrame, candles: pl.DataFrame, month: datetime) -> None:
    """Independent of the feature code: the stored rows are the month's candle minutes (from the first kept one),
    and the 1-minute log return and gap are computed here from the candles, the month's first row from the
    warm-up month's last candle."""
    ts = candles["ts"]
    rows = np.flatnonzero(((ts >= frame["ts"][0]) & (ts < month_end(month))).to_numpy())
    assert rows[0] > 0 and frame["ts"].equals(ts.gather(rows))  # every kept row has a previous candle
    closes = candles["close"].to_numpy()
    minutes = ts.dt.epoch("s").to_numpy() // 60
    np.testing.assert_allclose(  # stored Float32: within one Float32 step of the Float64 value
        frame["m1_logret_1"].to_numpy(), np.log(closes[rows] / closes[rows - 1]), rtol=2.0**-23
    )
    np.testing.assert_array_equal(frame["m1_gap_minutes"].to_numpy(), minutes[rows] - minutes[rows - 1] - 1)


def stored(resources, key: str, asset: str = "features") -> pl.DataFrame:
    return resources["storage"].storage.read_parquet(partition_path(dg.AssetKey(asset), key) + ".parquet")


def run(resources, instance, key=None, first=None, last=None, extra=()):
    tags = (
        {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
        if first
        else None
    )
    return dg.materialize(
        [CANDLES, features, *extra],
        partition_key=key,
        tags=tags,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        selection=dg.AssetSelection.assets(features, *extra),
    )


def run_planted(resources, instance, key, frame):
    """A stand-in `features` returning `frame`, checked by the real checks as the asset checks itself."""
    return dg.materialize(
        [planted_asset("features", frame, FEATURES_CHECKS)],
        partition_key=key,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_month_materializes_with_previous_month_warmup(memory_instance, storage_resources):
    candles = seed(storage_resources, memory_instance, ["2021-04-01|ETH-USD", "2021-05-01|ETH-USD"])
    result = run(storage_resources, memory_instance, key="2021-05-01|ETH-USD")
    assert result.success
    expected = features_for_month(
        pl.concat(candles.values()), datetime(2021, 5, 1, tzinfo=UTC), datetime(2021, 6, 1, tzinfo=UTC)
    ).frame
    frame = stored(storage_resources, "2021-05-01|ETH-USD")
    assert frame.equals(expected) and frame.height == candles["2021-05-01|ETH-USD"].height  # no row lost
    assert_known_columns(frame, pl.concat(candles.values()), datetime(2021, 5, 1, tzinfo=UTC))
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["warmup_partition"].value == "2021-04-01|ETH-USD"
    tail = candles["2021-04-01|ETH-USD"].filter(
        pl.col("ts") >= warmup_start(datetime(2021, 5, 1, tzinfo=UTC))
    )
    assert metadata["warmup_rows"].value == tail.height  # the previous month's tail only
    assert metadata["rows_dropped_before_lookback"].value == 0 and metadata["features"].value == len(
        FEATURE_NAMES
    )
    assert "daily_volatility" in metadata
    assert all(e.passed for e in checks(result).values()) and set(checks(result)) == {
        "features_finite",
        "features_schema",
    }


def test_catalogue_is_definition_metadata():
    spec = next(iter(features.specs))
    assert "h1_macd_signal" in spec.metadata["feature_catalogue"].value
    assert [c.name for c in COLUMN_SCHEMA.columns] == ["ts", *FEATURE_NAMES]
    assert spec.metadata["dagster/column_schema"] == COLUMN_SCHEMA


def test_range_runs_once_and_writes_each_month_like_a_single_partition_run(
    memory_instance, storage_resources
):
    """A single-run backfill over 2 months x 3 symbols: one run, one file per partition, each equal to the
    month computed alone; SOL before listing is an empty frame with the schema."""
    candles = seed(storage_resources, memory_instance, [f"{m}|{s}" for m in MONTHS for s in SYMBOLS])
    result = run(storage_resources, memory_instance, first="2021-05-01|BTC-USD", last="2021-06-01|SOL-USD")
    assert result.success and len(memory_instance.get_run_records()) == 1
    events = {
        e.materialization.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert sorted(events) == sorted(f"{m}|{s}" for m in MONTHS[1:] for s in SYMBOLS)
    for key in events:
        symbol, month = split_key(key)
        frame = stored(storage_resources, key)
        assert dict(frame.schema) == FEATURES_SCHEMA
        previous = f"{month.replace(month=month.month - 1):%Y-%m-%d}|{symbol}"
        expected = features_for_month(
            pl.concat([candles[previous], candles[key]]), month, month_end(month)
        ).frame
        assert frame.equals(expected), key
        if frame.height:
            assert_known_columns(frame, pl.concat([candles[previous], candles[key]]), month)
    assert (
        events["2021-05-01|SOL-USD"]["listed"].value is False
        and stored(storage_resources, "2021-05-01|SOL-USD").height == 0
    )
    assert events["2021-06-01|SOL-USD"]["rows_dropped_before_lookback"].value > 0  # listing month: no warm-up
    assert events["2021-06-01|BTC-USD"]["rows_dropped_before_lookback"].value == 0
    (finite,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "features_finite" and e.partition is None  # the range run's summary
    ]
    assert finite.passed and finite.metadata["partitions_checked"].value == 6


def test_missing_month_candles_fail_naming_the_partition(memory_instance, storage_resources):
    seed(storage_resources, memory_instance, ["2021-04-01|BTC-USD"])
    result = run(storage_resources, memory_instance, key="2021-05-01|BTC-USD")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "candles partition 2021-05-01|BTC-USD is not materialized" in str(failure.cause or failure)


def test_first_month_without_warmup_drops_rows_and_says_so(memory_instance, storage_resources):
    seed(storage_resources, memory_instance, ["2018-11-01|BTC-USD"])
    result = run(storage_resources, memory_instance, key="2018-11-01|BTC-USD")
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["warmup_partition"].value == "none" and metadata["rows_dropped_before_lookback"].value > 0
    assert stored(storage_resources, "2018-11-01|BTC-USD").null_count().sum_horizontal().item() == 0


def test_corrupt_candle_fails_the_blocking_check_and_stops_downstream(memory_instance, storage_resources):
    """A zero price turns log returns into -inf: the finiteness check fails, names the column, blocks consumers."""
    seed(storage_resources, memory_instance, ["2021-04-01|BTC-USD"])
    seed(
        storage_resources,
        memory_instance,
        ["2021-05-01|BTC-USD"],
        tamper=lambda f: f.with_columns(
            pl.when(pl.int_range(pl.len()) == 20_000).then(0.0).otherwise(pl.col("close")).alias("close")
        ),
    )
    result = run(storage_resources, memory_instance, key="2021-05-01|BTC-USD", extra=[downstream])
    finite = checks(result)["features_finite"]
    assert (
        not finite.passed
        and "m1_logret_1" in finite.description
        and "2021-05-01|BTC-USD" in finite.description
    )
    assert checks(result)["features_schema"].passed
    assert not any(
        e.asset_key == dg.AssetKey("downstream") for e in result.get_asset_materialization_events()
    )


@pytest.fixture(scope="module")
def good_features() -> pl.DataFrame:
    """What `features` stores for ETH 2021-05 (the month-materialization test proves the equality)."""
    candles = pl.concat([month_candles("2021-04-01|ETH-USD"), month_candles("2021-05-01|ETH-USD")])
    return features_for_month(
        candles, datetime(2021, 5, 1, tzinfo=UTC), datetime(2021, 6, 1, tzinfo=UTC)
    ).frame


def test_checks_pass_on_good_features(memory_instance, storage_resources, good_features):
    found = checks(run_planted(storage_resources, memory_instance, "2021-05-01|ETH-USD", good_features))
    assert set(found) == {"features_finite", "features_schema"} and all(e.passed for e in found.values())


@pytest.mark.parametrize(
    "plant, failing, words",
    [
        (
            lambda f: f.with_columns(
                pl.when(pl.int_range(pl.len()) == 7)
                .then(float("nan"))
                .otherwise(pl.col("h1_rsi_14"))
                .alias("h1_rsi_14")
            ),
            "features_finite",
            "h1_rsi_14: 1 null/NaN/inf",
        ),
        (
            lambda f: f.with_columns(
                pl.when(pl.int_range(pl.len()) < 3)
                .then(None)
                .otherwise(pl.col("m1_rsi_14"))
                .alias("m1_rsi_14")
            ),
            "features_finite",
            "m1_rsi_14: 3 null/NaN/inf",
        ),
        (lambda f: f.with_columns(pl.col("m15_macd") / 0.0), "features_finite", "m15_macd: "),
        (
            lambda f: f.with_columns(pl.col("m5_macd").cast(pl.Float64)),
            "features_schema",
            "wrong dtypes {'m5_macd': 'Float64'}",
        ),
        (lambda f: f.drop("m1_vol_60"), "features_schema", "missing columns ['m1_vol_60']"),
        (lambda f: f.with_columns(extra=pl.lit(1.0)), "features_schema", "unexpected columns ['extra']"),
    ],
)
def test_checks_catch_planted_problems_in_features(
    memory_instance, storage_resources, good_features, plant, failing, words
):
    key = "2021-05-01|ETH-USD"
    result = run_planted(storage_resources, memory_instance, key, plant(good_features))
    found = checks(result)
    assert set(found) == {"features_finite", "features_schema"} and not result.success
    assert (
        not found[failing].passed
        and words in found[failing].description
        and key in found[failing].description
    )
    assert all(e.passed for name, e in found.items() if name != failing)


def test_definitions_load_with_a_candles_source():
    merged = dg.Definitions.merge(defs, dg.Definitions(assets=[CANDLES]))
    graph = merged.resolve_asset_graph()
    node = graph.get(dg.AssetKey("features"))
    assert node.backfill_policy == dg.BackfillPolicy.single_run()
    assert {k.name for k in graph.get_check_keys_for_assets({dg.AssetKey("features")})} == {
        "features_finite",
        "features_schema",
    }
    assert graph.get(dg.AssetKey("features")).parent_keys == {dg.AssetKey("candles")}
    assert len(FEATURE_NAMES) >= 50
