"""Shared building blocks: atomic storage, the IO manager's errors, request pacing and retries."""

import contextlib
import io
import os
import resource
import signal
import time

import dagster as dg
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import requests

from crpbot_assets.common.http import ApiError, RateLimiter, RequestStats, RetryPolicy, get_json
from crpbot_assets.common.io_manager import PartitionedFileIOManager, concat_partitions, partition_path
from crpbot_assets.common.partitions import symbol_month_partitions
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import CorruptFileError, Storage


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Files cannot grow past `limit` bytes while inside: the OS fails the write that would cross it (EFBIG),
    after the bytes up to the limit were written - a disk filling up halfway through a write, deterministically."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not the default kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def big() -> pl.DataFrame:
    return pl.DataFrame({"x": np.random.default_rng(0).random(200_000)})  # ~1.6 MB of parquet: crosses LIMIT


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _through_the_io_manager(base: str, frame: pl.DataFrame) -> None:
    context = dg.build_output_context(
        asset_key=dg.AssetKey("asset"),
        partition_key="part",
        asset_partitions_def=dg.StaticPartitionsDefinition(["part"]),
    )
    PartitionedFileIOManager(storage=StorageResource(base_uri=base)).handle_output(context, frame)


@pytest.mark.parametrize(
    "write",
    [
        lambda base, frame: Storage(base).write_parquet("asset/part.parquet", frame),
        lambda base, frame: Storage(base).write_bytes("asset/part.parquet", _parquet_bytes(frame)),
        lambda base, frame: Storage(base).write_json("asset/part.parquet", {"x": frame["x"].to_list()}),
        lambda base, frame: Storage(base).write_with(  # as training datasets are written
            "asset/part.parquet", lambda out: pq.write_table(frame.to_arrow(), out)
        ),
        _through_the_io_manager,
    ],
    ids=["write_parquet", "write_bytes", "write_json", "write_with (streamed)", "io_manager"],
)
def test_write_failing_halfway_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, big, write):
    storage = Storage(str(tmp_path))
    old = pl.DataFrame({"x": [1.0, 2.0, 3.0]})
    storage.write_parquet("asset/part.parquet", old)
    before = (tmp_path / "asset" / "part.parquet").read_bytes()
    with file_size_limit(LIMIT), pytest.raises(OSError, match=r"too large.* writing \S*asset/part\.parquet"):
        write(str(tmp_path), big)
    assert (tmp_path / "asset" / "part.parquet").read_bytes() == before  # the old file, byte for byte
    assert storage.read_parquet("asset/part.parquet").equals(old)
    assert os.listdir(tmp_path / "asset") == ["part.parquet"]  # no temporary file left behind
    write(str(tmp_path), big)  # without the limit the same write succeeds: the limit was the only problem
    assert (tmp_path / "asset" / "part.parquet").stat().st_size > LIMIT


def test_corrupt_parquet_names_the_file(tmp_path):
    storage = Storage(str(tmp_path))
    (tmp_path / "asset").mkdir()
    (tmp_path / "asset" / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(CorruptFileError, match="bad.parquet"):
        storage.read_parquet("asset/bad.parquet")


def test_io_manager_reports_missing_partition(tmp_path):
    manager = PartitionedFileIOManager(storage=StorageResource(base_uri=str(tmp_path)))
    with (  # `with`: the context closes here, not when the kept traceback is collected during a later test
        dg.build_input_context(
            asset_key=dg.AssetKey("candles"),
            partition_key="2019-01-01|BTC-USD",
            asset_partitions_def=symbol_month_partitions,
        ) as context,
        pytest.raises(FileNotFoundError, match="2019-01-01|BTC-USD"),
    ):
        manager.load_input(context)
    assert (
        partition_path(dg.AssetKey("candles"), "2019-01-01|BTC-USD")
        == "candles/symbol=BTC-USD/month=2019-01-01"
    )


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
    rows = get_json(
        requests.Session(), url, params=params, policy=RetryPolicy(base_delay_s=0.01), stats=stats
    )
    assert len(rows) >= 9 and stats.requests == 3 and stats.retries == 2


def test_get_json_gives_up_with_clear_error(replay_server):
    replay_server.inject("coinbase", "503", 3)
    url = f"{replay_server.url}/products/BTC-USD/candles"
    with pytest.raises(ApiError, match=r"gave up after 3 attempts; last problem: HTTP 503"):
        get_json(
            requests.Session(),
            url,
            params={"granularity": 60},
            policy=RetryPolicy(max_attempts=3, base_delay_s=0.01),
        )


def test_get_json_survives_timeout(replay_server):
    replay_server.inject("coinbase", "timeout", 1)
    url = f"{replay_server.url}/products/BTC-USD/candles"
    params = {"granularity": 60, "start": "2019-01-01T00:00:00Z", "end": "2019-01-01T00:09:00Z"}
    stats = RequestStats()
    get_json(
        requests.Session(),
        url,
        params=params,
        policy=RetryPolicy(timeout_s=0.5, base_delay_s=0.01),
        stats=stats,
    )
    assert stats.retries == 1


@pytest.mark.slow
def test_io_manager_on_s3_round_trips_partitions(monkeypatch):
    """Production storage is configuration only: the same IO manager against moto's S3 server on loopback."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }.items():
            monkeypatch.setenv(name, value)
        boto3.client("s3").create_bucket(Bucket="crpbot-data")
        manager = PartitionedFileIOManager(storage=StorageResource(base_uri="s3://crpbot-data/prod"))
        keys = ["2019-01-01|BTC-USD", "2019-02-01|BTC-USD"]
        for month, key in enumerate(keys):
            output = dg.build_output_context(asset_key=dg.AssetKey("candles"), partition_key=key)
            manager.handle_output(output, pl.DataFrame({"month": [month] * 3}))
        listed = boto3.client("s3").list_objects_v2(Bucket="crpbot-data")["Contents"]
        assert {o["Key"] for o in listed} == {
            "prod/candles/symbol=BTC-USD/month=2019-01-01.parquet",
            "prod/candles/symbol=BTC-USD/month=2019-02-01.parquet",
        }
        context = dg.build_input_context(
            asset_key=dg.AssetKey("candles"),
            asset_partitions_def=symbol_month_partitions,
            asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[1]),
        )
        assert concat_partitions(manager.load_input(context))["month"].to_list() == [0, 0, 0, 1, 1, 1]
    finally:
        server.stop()


@pytest.mark.slow
def test_replay_console_script_serves_and_takes_faults_over_http():
    """`crpbot-replay` as users start it: a separate process, faults queued through its control endpoint."""
    import json
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [Path(sys.executable).parent / "crpbot-replay", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        queued = requests.post(
            f"{url}/_replay/faults", data=json.dumps({"service": "coinbase", "fault": "503"})
        )
        assert queued.status_code == 200
        for bad in (
            "not json",
            json.dumps(["coinbase"]),
            json.dumps({"service": "coinbase", "fault": "418"}),
        ):
            refused = requests.post(f"{url}/_replay/faults", data=bad)
            assert refused.status_code == 400 and "bad fault spec" in refused.json()["message"]
        params = {"granularity": 60, "start": "2019-01-01T00:00:00Z", "end": "2019-01-01T00:04:00Z"}
        assert requests.get(f"{url}/products/BTC-USD/candles", params=params).status_code == 503
        rows = requests.get(f"{url}/products/BTC-USD/candles", params=params).json()
        assert [row[0] for row in rows] == sorted((row[0] for row in rows), reverse=True) and len(rows) == 5
        assert requests.get(f"{url}/_replay/stats").json()["coinbase"]["fault_503"] == 1
    finally:
        process.terminate()
        process.wait(timeout=10)
