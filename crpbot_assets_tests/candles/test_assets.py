"""The `candles` asset, its checks, storage and schedule, run through Dagster against the replay server."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest

from crpbot_assets.candles.assets import candles
from crpbot_assets.candles.checks import CANDLES_CHECKS
from crpbot_assets.candles.client import PROD_URL, SCHEMA
from crpbot_assets.candles.definitions import defs
from crpbot_assets.candles.schedules import candles_current_month_schedule
from crpbot_assets.common.io_manager import PartitionedFileIOManager, partition_path
from crpbot_assets.common.partitions import split_key, symbol_month_partitions
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import CorruptFileError
from crpbot_assets.replay import synthetic
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.resources import local_resources, prod_resources
from crpbot_assets_tests.candles.conftest import fast_coinbase, tampered_service
from crpbot_assets_tests.planted import planted_asset

UTC = UTC
FEB_BTC = "2019-02-01|BTC-USD"


@dg.asset(partitions_def=symbol_month_partitions)
def downstream(candles: dict[str, pl.DataFrame]) -> None:
    """A stand-in consumer: runs only if the blocking checks let it."""


def run(resources, instance, key=None, first=None, last=None, extra=(), selection=None):
    tags = (
        {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
        if first
        else None
    )
    return dg.materialize(
        [candles, *extra],
        partition_key=key,
        tags=tags,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        selection=selection,
    )


def stored(resources, key: str) -> str:
    return os.path.join(
        resources["storage"].base_uri, partition_path(dg.AssetKey("candles"), key) + ".parquet"
    )


def checks_by_name(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def month_of(key: str) -> pl.DataFrame:
    symbol, month = split_key(key)
    return synthetic.candles(symbol, month, month.replace(month=month.month + 1))


def test_partition_range_materializes_in_one_run(fast, memory_instance, storage_resources):
    resources = {**storage_resources, "coinbase": fast_coinbase(fast)}
    result = run(resources, memory_instance, first="2019-01-01|BTC-USD", last=FEB_BTC.replace("BTC", "ETH"))
    assert result.success
    assert len(memory_instance.get_run_records()) == 1  # 2 months x 2 symbols, one run, one process
    events = {
        e.materialization.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    keys = ["2019-01-01|BTC-USD", "2019-01-01|ETH-USD", FEB_BTC, "2019-02-01|ETH-USD"]
    assert sorted(events) == keys
    for key in keys:
        on_disk = pl.read_parquet(stored(resources, key))
        assert on_disk.equals(month_of(key))  # each partition's own month, identical to the served series
        meta = events[key]
        assert meta["rows"].value == on_disk.height and meta["listed"].value is True
        assert (
            meta["missing_minutes"].value == (31 if key.startswith("2019-01") else 28) * 1440 - on_disk.height
        )
        assert (
            meta["requests"].value == (149 if key.startswith("2019-01") else 135)
            and meta["retries"].value == 0
            and meta["empty_pages"].value == 0
        )
        assert meta["first_ts"].value == str(on_disk["ts"][0])
    assert fast.stats["coinbase"]["requests"] == 2 * (149 + 135)
    logs = [r.user_message for r in memory_instance.all_logs(result.run_id)]
    assert "2019-02-01|ETH-USD: 135/135 pages fetched" in logs and any(
        m.endswith("/149 pages fetched") for m in logs
    )
    checks = checks_by_name(result)
    assert set(checks) == {"candles_timestamps_valid", "candles_ohlc_valid", "candles_coverage"}
    assert all(e.passed and e.metadata["partitions_checked"].value == 4 for e in checks.values())
    # each month also gets its own result, on its own materialization: what the UI shows per partition
    per_partition = [e for e in result.get_asset_check_evaluations() if e.partition]
    assert sorted((e.check_name, e.partition) for e in per_partition) == sorted(
        (name, key) for name in checks for key in keys
    )
    assert all(e.passed for e in per_partition)
    infos = memory_instance.event_log_storage.get_asset_check_partition_info(
        [dg.AssetCheckKey(dg.AssetKey("candles"), name) for name in checks]
    )
    infos = [i for i in infos if i.partition_key]  # the range's summary has no partition
    assert sorted((i.check_key.name, i.partition_key) for i in infos if i.is_current) == sorted(
        (name, key) for name in checks for key in keys
    )
    assert {i.latest_execution_status.value for i in infos} == {"SUCCEEDED"}


def test_sol_before_listing_is_an_empty_not_listed_partition(fast, memory_instance, storage_resources):
    resources = {**storage_resources, "coinbase": fast_coinbase(fast)}
    result = run(resources, memory_instance, key="2019-02-01|SOL-USD")
    assert result.success and fast.stats["coinbase"].get("requests", 0) == 0
    frame = pl.read_parquet(stored(resources, "2019-02-01|SOL-USD"))
    assert frame.is_empty() and dict(frame.schema) == SCHEMA
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert (
        meta["listed"].value is False
        and "not listed" in meta["explanation"].value
        and "2021-06-01" in meta["explanation"].value
    )
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_malformed_payload_fails_the_run_and_writes_nothing(fast, memory_instance, storage_resources):
    resources = {**storage_resources, "coinbase": fast_coinbase(fast)}
    fast.inject("coinbase", "malformed", 1)
    result = run(resources, memory_instance, first=FEB_BTC, last="2019-02-01|ETH-USD")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "/products/" in str(failure.step_failure_data.error) and "non-numeric" in str(
        failure.step_failure_data.error
    )
    assert not any(os.path.exists(stored(resources, k)) for k in (FEB_BTC, "2019-02-01|ETH-USD"))


@pytest.mark.parametrize(
    "keys", [[FEB_BTC], [FEB_BTC, "2019-02-01|ETH-USD"]], ids=["one partition", "range run"]
)
def test_failed_blocking_check_stops_downstream(memory_instance, storage_resources, keys):
    def low_above_high(rows):  # the newest candle of every page gets low > high
        if rows:
            rows[0][1], rows[0][2] = rows[0][2] * 1.01, rows[0][1]
        return rows

    with ReplayServer([tampered_service(low_above_high)]) as server:
        resources = {**storage_resources, "coinbase": fast_coinbase(server)}
        if len(keys) == 1:
            result = run(resources, memory_instance, key=keys[0], extra=[downstream])
        else:
            result = run(resources, memory_instance, first=keys[0], last=keys[-1], extra=[downstream])
    assert not result.success
    check = checks_by_name(result)["candles_ohlc_valid"]
    # A one-partition run records the result on its partition; a range run records one result for the run.
    assert not check.passed and check.partition == (keys[0] if len(keys) == 1 else None)
    assert check.metadata["partitions_failed"].value == len(keys)
    for key in keys:
        assert f"{key}: low > min(open, close): 135 rows" in check.description
    per_partition = {
        e.partition: e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "candles_ohlc_valid" and e.partition
    }
    assert set(per_partition) == set(keys)  # one failed result per month (and the run's own result)
    assert not any(e.passed for e in per_partition.values())
    assert checks_by_name(result)["candles_timestamps_valid"].passed
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {dg.AssetKey("candles")}
    assert "downstream" not in {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}


def test_timestamp_check_catches_planted_data(memory_instance, storage_resources):
    """Data the client would never produce (it sorts and rejects repeated times), planted by a stand-in `candles`."""
    good = month_of(FEB_BTC).head(5)
    bad = pl.concat(
        [
            good,
            good.tail(1),
            good.tail(1).with_columns(pl.col("ts") + pl.duration(seconds=30)),
            good.head(1).with_columns(pl.col("ts") - pl.duration(days=40)),
        ]
    )

    result = dg.materialize(
        [planted_asset("candles", bad, CANDLES_CHECKS), downstream],
        partition_key=FEB_BTC,
        instance=memory_instance,
        resources=storage_resources,
        raise_on_error=False,
    )
    check = checks_by_name(result)["candles_timestamps_valid"]
    assert not check.passed and not result.success
    for problem in (
        "1 duplicate timestamps",
        "not strictly increasing",
        "not minute-aligned: 1 rows",
        "outside the month 2019-02: 1 rows",
    ):
        assert problem in check.description
    assert dg.AssetKey("downstream") not in {e.asset_key for e in result.get_asset_materialization_events()}


def test_low_coverage_warns_without_blocking(memory_instance, storage_resources):
    cut = int(datetime(2019, 2, 4, tzinfo=UTC).timestamp())  # drop the first 3 days: ~89% coverage
    with ReplayServer([tampered_service(lambda rows: [r for r in rows if r[0] >= cut])]) as server:
        resources = {**storage_resources, "coinbase": fast_coinbase(server)}
        result = run(resources, memory_instance, key=FEB_BTC, extra=[downstream])
    assert result.success  # a warning, not a failure: downstream ran
    check = checks_by_name(result)["candles_coverage"]
    assert (
        not check.passed
        and check.severity == dg.AssetCheckSeverity.WARN
        and "coverage 88.9" in check.description
    )
    assert dg.AssetKey("downstream") in {e.asset_key for e in result.get_asset_materialization_events()}
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["missing_minutes"].value == 28 * 1440 - meta["rows"].value and meta["coverage"].value < 0.9
    assert "daily_coverage" in meta


def test_corrupt_partition_file_names_the_partition(tmp_path):
    manager = PartitionedFileIOManager(storage=StorageResource(base_uri=str(tmp_path)))
    path = tmp_path / (partition_path(dg.AssetKey("candles"), FEB_BTC) + ".parquet")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 truncated")
    with (  # `with`: the context closes here, not when the kept traceback is collected during a later test
        dg.build_input_context(
            asset_key=dg.AssetKey("candles"),
            partition_key=FEB_BTC,
            asset_partitions_def=symbol_month_partitions,
        ) as context,
        pytest.raises(
            CorruptFileError, match=r"partition '2019-02-01\|BTC-USD' of asset candles: corrupt parquet"
        ),
    ):
        manager.load_input(context)


WRITER = """
import sys, dagster as dg, numpy as np, polars as pl
from crpbot_assets.common.io_manager import PartitionedFileIOManager
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.partitions import symbol_month_partitions
frame = pl.DataFrame({"ts": np.arange(4_000_000), "open": np.random.default_rng(0).random(4_000_000)})
manager = PartitionedFileIOManager(storage=StorageResource(base_uri=sys.argv[1]))
context = dg.build_output_context(asset_key=dg.AssetKey("candles"), partition_key=sys.argv[2],
                                  asset_partitions_def=symbol_month_partitions)
print("writing", flush=True)
while True:
    manager.handle_output(context, frame)
"""


@pytest.mark.slow
def test_io_manager_survives_a_writer_killed_mid_write(tmp_path):
    manager = PartitionedFileIOManager(storage=StorageResource(base_uri=str(tmp_path)))
    old = month_of(FEB_BTC).head(100)
    context = dg.build_output_context(
        asset_key=dg.AssetKey("candles"), partition_key=FEB_BTC, asset_partitions_def=symbol_month_partitions
    )
    manager.handle_output(context, old)
    folder = (tmp_path / partition_path(dg.AssetKey("candles"), FEB_BTC)).parent
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), FEB_BTC],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert child.stdout.readline().strip() == b"writing"
        deadline = time.monotonic() + 60
        while not any(".tmp-" in name for name in os.listdir(folder)):  # the child is inside a write
            assert time.monotonic() < deadline and child.poll() is None
        child.kill()
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -9
    load = dg.build_input_context(
        asset_key=dg.AssetKey("candles"), partition_key=FEB_BTC, asset_partitions_def=symbol_month_partitions
    )
    loaded = manager.load_input(load)[FEB_BTC]
    assert (
        loaded.equals(old) or loaded.height == 4_000_000
    )  # the old file or a complete new one, never partial
    assert all(".tmp-" in name for name in os.listdir(folder) if not name.endswith(".parquet"))


@pytest.mark.parametrize(
    "when, keys",
    [
        (datetime(2021, 5, 31, 23, 5, tzinfo=UTC), ["2021-05-01|BTC-USD", "2021-05-01|ETH-USD"]),
        # the month's first run also completes May's last hour (its last run fetched up to 23:04)
        (
            datetime(2021, 6, 1, 0, 5, tzinfo=UTC),
            [
                "2021-05-01|BTC-USD",
                "2021-05-01|ETH-USD",
                "2021-06-01|BTC-USD",
                "2021-06-01|ETH-USD",
                "2021-06-01|SOL-USD",
            ],
        ),
        (
            datetime(2021, 6, 1, 1, 5, tzinfo=UTC),
            ["2021-06-01|BTC-USD", "2021-06-01|ETH-USD", "2021-06-01|SOL-USD"],
        ),
        (
            datetime(2018, 11, 1, 0, 5, tzinfo=UTC),
            ["2018-11-01|BTC-USD", "2018-11-01|ETH-USD"],
        ),  # no month before history
    ],
)
def test_schedule_refreshes_the_month_in_progress(memory_instance, when, keys):
    requests = candles_current_month_schedule(
        dg.build_schedule_context(instance=memory_instance, scheduled_execution_time=when)
    )
    assert [r.partition_key for r in requests] == keys
    assert len({r.run_key for r in requests}) == len(keys)
    for key in (r.partition_key for r in requests):
        assert symbol_month_partitions.has_partition_key(key)


def test_definitions_load_and_pick_the_endpoint_by_environment(storage_resources):
    merged = dg.Definitions.merge(defs, dg.Definitions(resources={**local_resources(), **storage_resources}))
    dg.Definitions.validate_loadable(merged)
    assert merged.resolve_job_def("candles_job") is not None
    assert prod_resources()["coinbase"].base_url == PROD_URL
    assert local_resources()["coinbase"].base_url.startswith("http://127.0.0.1")
