"""Shared building blocks: atomic storage, the IO manager's errors, request pacing and retries."""

import multiprocessing
import os
import time

import dagster as dg
import polars as pl
import pytest
import requests

from crpbot_assets.common.http import ApiError, RateLimiter, RetryPolicy, RequestStats, get_json
from crpbot_assets.common.io_manager import PartitionedFileIOManager, partition_path
from crpbot_assets.common.partitions import symbol_month_partitions
from crpbot_assets.common.storage import CorruptFileError, Storage


def _write_forever(base: str) -> None:
    """Child process: keep rewriting one large file until killed."""
    frame = pl.DataFrame({"x": range(3_000_000)})
    storage = Storage(base)
    while True:
        storage.write_parquet("asset/part.parquet", frame)


def test_killed_writer_leaves_old_file_intact_and_no_partial_file(tmp_path):
    storage = Storage(str(tmp_path))
    storage.write_parquet("asset/part.parquet", pl.DataFrame({"x": [1, 2, 3]}))
    child = multiprocessing.get_context("spawn").Process(target=_write_forever, args=(str(tmp_path),))
    child.start()
    time.sleep(2.5)
    child.kill()
    child.join()
    frame = storage.read_parquet("asset/part.parquet")  # old or fully new, never partial
    assert frame.height in (3, 3_000_000)
    leftovers = [name for name in os.listdir(tmp_path / "asset") if name != "part.parquet"]
    assert all(".tmp-" in name for name in leftovers)  # only an orphaned temp file, never read as data


def test_corrupt_parquet_names_the_file(tmp_path):
    storage = Storage(str(tmp_path))
    (tmp_path / "asset").mkdir()
    (tmp_path / "asset" / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(CorruptFileError, match="bad.parquet"):
        storage.read_parquet("asset/bad.parquet")


def test_io_manager_reports_missing_partition(tmp_path):
    manager = PartitionedFileIOManager(base_uri=str(tmp_path))
    context = dg.build_input_context(asset_key=dg.AssetKey("candles"), partition_key="2019-01-01|BTC-USD",
                                     asset_partitions_def=symbol_month_partitions)
    with pytest.raises(FileNotFoundError, match="2019-01-01|BTC-USD"):
        manager.load_input(context)
    assert partition_path(dg.AssetKey("candles"), "2019-01-01|BTC-USD") == "candles/symbol=BTC-USD/month=2019-01-01"


def test_rate_limiter_paces_to_rate():
    limiter = RateLimiter(rate=50, burst=1)
    started = time.monotonic()
    for _ in range(26):
        limiter.acquire()
    assert time.monotonic() - started >= 0.5 * 0.95  # 25 intervals of 20 ms after the first token


def test_get_json_retries_then_succeeds(replay_server):
    replay_server.inject("coinbase", "500", 2)
    stats = RequestStats()
    url = f"{replay_server.url}/products/BTC-USD/candles"
    params = {"granularity": 60, "start": "2019-01-01T00:00:00Z", "end": "2019-01-01T00:09:00Z"}
    rows = get_json(requests.Session(), url, params=params, policy=RetryPolicy(base_delay_s=0.01), stats=stats)
    assert len(rows) >= 9 and stats.requests == 3 and stats.retries == 2


def test_get_json_gives_up_with_clear_error(replay_server):
    replay_server.inject("coinbase", "503", 3)
    url = f"{replay_server.url}/products/BTC-USD/candles"
    with pytest.raises(ApiError, match=r"gave up after 3 attempts; last problem: HTTP 503"):
        get_json(requests.Session(), url, params={"granularity": 60}, policy=RetryPolicy(max_attempts=3, base_delay_s=0.01))


def test_get_json_survives_timeout(replay_server):
    replay_server.inject("coinbase", "timeout", 1)
    url = f"{replay_server.url}/products/BTC-USD/candles"
    params = {"granularity": 60, "start": "2019-01-01T00:00:00Z", "end": "2019-01-01T00:09:00Z"}
    stats = RequestStats()
    get_json(requests.Session(), url, params=params, policy=RetryPolicy(timeout_s=0.5, base_delay_s=0.01), stats=stats)
    assert stats.retries == 1
