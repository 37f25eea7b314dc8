"""Crash-safe, resumable backfills: per-partition commits, the commit rule, resume, temp files, schema on read.

The slow tests kill real `dagster asset materialize --partition-range` processes (sqlite DAGSTER_HOME, the
replay server on loopback), deterministically through the storage test hook (`common/storage.py`), then run the
same backfill again and check the stored files against the instance's records.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from crpbot_assets.candles.assets import candles
from crpbot_assets.candles.resources import CoinbaseResource
from crpbot_assets.common.commits import COMMIT_TAG, RECOMPUTE_TAG, describes, latest_records
from crpbot_assets.common.io_manager import PartitionedFileIOManager, SchemaMismatchError, partition_path
from crpbot_assets.common.months import month_end, month_window
from crpbot_assets.common.partitions import split_key, symbol_month_partitions
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import TEST_HOOK_ENV, TEST_SIGNAL_ENV, TMP_MARK, Storage, process_alive
from crpbot_assets.features.assets import features
from crpbot_assets.replay import coinbase, synthetic
from crpbot_assets.replay.server import ReplayServer

JAN, FEB, MAR = "2019-01-01|BTC-USD", "2019-02-01|BTC-USD", "2019-03-01|BTC-USD"
KEYS = [JAN, FEB, MAR]
PAGES = {JAN: 149, FEB: 135, MAR: 149}  # 300-minute pages per month
CANDLES = dg.AssetKey("candles")
REPO = Path(__file__).resolve().parents[1]
RANGE_TAGS = {"dagster/asset_partition_range_start": JAN, "dagster/asset_partition_range_end": MAR}


@pytest.fixture(scope="module")
def fast_server():
    with ReplayServer([coinbase.service(rate_per_s=2000.0, burst=200)], hang_s=3.0) as server:
        yield server


@pytest.fixture
def fast(fast_server):
    fast_server.clear()
    return fast_server


def fast_coinbase(server: ReplayServer) -> CoinbaseResource:
    return CoinbaseResource(base_url=server.url, requests_per_second=400.0, max_workers=16, timeout_s=5.0)


def stored_state(base: Path, instance: dg.DagsterInstance) -> dict:
    """What is on disk and in the instance for the candles of KEYS."""
    manager = PartitionedFileIOManager(storage=StorageResource(base_uri=str(base)))
    records = latest_records(instance, CANDLES, KEYS)
    files = {key: manager.stored_file(CANDLES, key) for key in KEYS}
    folder = base / "candles" / "symbol=BTC-USD"
    return {
        "files": {key for key, stored in files.items() if stored},
        "records": set(records),
        "described": {key for key in KEYS if files[key] and describes(records.get(key), files[key][1])},
        "temps": sorted(p.name for p in folder.iterdir() if TMP_MARK in p.name) if folder.exists() else [],
    }


def assert_consistent(base: Path, instance: dg.DagsterInstance, keys=KEYS) -> None:
    """Every file has a record describing it, every record has its file, no temporary file."""
    state = stored_state(base, instance)
    assert state == {"files": set(keys), "records": set(keys), "described": set(keys), "temps": []}
    for key in keys:
        symbol, month = split_key(key)
        frame = pl.read_parquet(base / (partition_path(CANDLES, key) + ".parquet"))
        assert frame.equals(synthetic.candles(symbol, month, month_end(month)))  # complete, not half a month


# --- in process (fast tier) -------------------------------------------------------------------------------


def materialize_range(resources, instance, tags=RANGE_TAGS):
    return dg.materialize([candles], instance=instance, resources=resources, tags=tags, raise_on_error=False)


def test_full_disk_mid_range_keeps_earlier_months_and_the_rerun_resumes(
    fast, memory_instance, tmp_path, storage_resources, monkeypatch
):
    resources = {**storage_resources, "coinbase": fast_coinbase(fast)}
    base = tmp_path / "data"
    monkeypatch.setenv(TEST_HOOK_ENV, "mid-write:enospc:month=2019-02-01")  # the disk fills writing February
    failed = materialize_range(resources, memory_instance)
    assert not failed.success
    errors = [e.event_specific_data.error.to_string() for e in failed.get_step_failure_events()]
    file = str(base / "candles" / "symbol=BTC-USD" / "month=2019-02-01.parquet")  # the OS's error names none
    assert any(f"No space left on device writing {file}" in e for e in errors), errors
    # January was committed before February failed: file and record; February left nothing, not even a temp
    assert stored_state(base, memory_instance) == {
        "files": {JAN},
        "records": {JAN},
        "described": {JAN},
        "temps": [],
    }
    # written to the instance at once
    (commit,) = memory_instance.fetch_materializations(CANDLES, limit=10).records
    assert commit.partition_key == JAN and commit.asset_materialization.tags[COMMIT_TAG] == failed.run_id

    monkeypatch.delenv(TEST_HOOK_ENV)
    fast.clear()
    rerun = materialize_range(resources, memory_instance)
    assert rerun.success
    assert fast.stats["coinbase"]["requests"] == PAGES[FEB] + PAGES[MAR]  # January is not fetched again
    logs = [r.user_message for r in memory_instance.all_logs(rerun.run_id)]
    assert any(m.startswith(f"candles {JAN}: already stored and complete") for m in logs)
    assert "candles: 2 partitions committed, 1 resumed from earlier runs" in logs
    step_end = {
        e.materialization.partition: e.materialization.metadata
        for e in rerun.get_asset_materialization_events()
        if COMMIT_TAG not in (e.materialization.tags or {})
    }
    assert step_end[JAN]["resumed_from_run"].value == failed.run_id
    assert step_end[JAN]["rows"].value > 40_000 and "resumed_from_run" not in step_end[FEB]
    assert_consistent(base, memory_instance)


@pytest.mark.slow  # 1,160 pages fetched in process: ~8 s
def test_complete_months_are_fetched_again_by_a_one_partition_run_or_a_tagged_range_run(
    fast, memory_instance, tmp_path, storage_resources
):
    """A range run resumes complete months; a one-partition run recomputes its complete month (the UI's
    "materialize"), and so does a range run tagged to recompute."""
    resources = {**storage_resources, "coinbase": fast_coinbase(fast)}
    assert materialize_range(resources, memory_instance).success
    fast.clear()
    assert materialize_range(resources, memory_instance).success
    assert fast.stats["coinbase"].get("requests", 0) == 0
    fast.clear()
    assert dg.materialize([candles], instance=memory_instance, resources=resources, partition_key=JAN).success
    assert fast.stats["coinbase"]["requests"] == PAGES[JAN]
    fast.clear()
    assert materialize_range(resources, memory_instance, {**RANGE_TAGS, RECOMPUTE_TAG: "true"}).success
    assert fast.stats["coinbase"]["requests"] == sum(PAGES.values())
    assert_consistent(tmp_path / "data", memory_instance)


def test_a_file_without_a_describing_record_counts_as_absent(tmp_path, memory_instance):
    manager = PartitionedFileIOManager(storage=StorageResource(base_uri=str(tmp_path)))
    frame = pl.DataFrame({"v": [1.0]})
    relative = partition_path(CANDLES, JAN) + ".parquet"
    Storage(str(tmp_path)).write_parquet(relative, frame)  # a killed run: written, never recorded

    def load(allow_missing=False):
        # `with`: the context's resources (an ephemeral instance) close here, even when the load raises, not
        # whenever a kept traceback is collected (that would reset Dagster's current instance in a later test)
        with dg.build_input_context(
            asset_key=CANDLES,
            partition_key=JAN,
            asset_partitions_def=symbol_month_partitions,
            definition_metadata={"allow_missing_partitions": allow_missing},
            instance=memory_instance,
        ) as context:
            return manager.load_input(context)

    with pytest.raises(FileNotFoundError, match="has no materialization record describing it"):
        load()
    assert load(allow_missing=True) == {}
    manager.commit_outside_run(memory_instance, CANDLES, JAN, frame)
    assert load()[JAN].equals(frame)
    Storage(str(tmp_path)).write_parquet(relative, pl.DataFrame({"v": [2.0]}))  # rewritten, record not
    with pytest.raises(FileNotFoundError, match=r"2019-01-01\|BTC-USD.*no materialization record") as error:
        load()
    assert "written by a run killed before it recorded it, or replaced outside crpbot" in str(error.value)
    (tmp_path / relative).unlink()  # a record whose file is gone
    with pytest.raises(FileNotFoundError, match="is not materialized"):
        load()


def test_a_truncated_file_is_called_damaged_and_not_blamed_on_a_killed_run(tmp_path, memory_instance):
    """Nothing was killed: the file was cut short after its run recorded it (a disk fault, a careless copy)."""
    manager = PartitionedFileIOManager(storage=StorageResource(base_uri=str(tmp_path)))
    manager.commit_outside_run(
        memory_instance, CANDLES, JAN, synthetic.candles("BTC-USD", *month_window(JAN[:10]))
    )
    path = tmp_path / (partition_path(CANDLES, JAN) + ".parquet")
    size = path.stat().st_size
    os.truncate(path, size // 2)
    with (  # `with`: as in `load` above
        dg.build_input_context(
            asset_key=CANDLES,
            partition_key=JAN,
            asset_partitions_def=symbol_month_partitions,
            instance=memory_instance,
        ) as context,
        pytest.raises(FileNotFoundError) as error,
    ):
        manager.load_input(context)
    text = str(error.value)
    assert f"partition '{JAN}' of asset candles is not materialized: {path} has no materialization" in text
    assert f"recorded {size} bytes" in text and f"the file is {size // 2} bytes" in text
    assert "it is damaged (cannot be decoded): changed outside crpbot (truncated" in text
    assert "killed before" not in text


def test_a_stored_partition_missing_a_column_names_the_partition_and_the_column(
    memory_instance, storage_resources
):
    """Without the check this failed inside pl.concat with a bare ShapeError."""
    manager = storage_resources["io_manager"]
    for key in (JAN, FEB):
        symbol, month = split_key(key)
        frame = synthetic.candles(symbol, month, month_end(month))
        manager.commit_outside_run(
            memory_instance, CANDLES, key, frame.drop("volume") if key == JAN else frame
        )
    result = dg.materialize(
        [candles, features],
        selection=[features],
        partition_key=FEB,
        instance=memory_instance,
        resources={**storage_resources, "coinbase": CoinbaseResource(base_url="http://127.0.0.1:9")},
        raise_on_error=False,
    )
    assert not result.success
    (error,) = [e.event_specific_data.error for e in result.get_step_failure_events()]
    text = error.to_string()
    assert SchemaMismatchError.__name__ in text and "ShapeError" not in text
    assert "partition '2019-01-01|BTC-USD' of asset candles" in text
    assert "column 'volume' missing (expected float64)" in text


# --- real processes (slow tier) -----------------------------------------------------------------------------


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Backfill:
    """`dagster asset materialize --partition-range JAN...MAR` of candles in its own process group."""

    def __init__(self, home: Path, server: ReplayServer):
        self.home = home
        self.server = server
        (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())  # real pools
        self.runs = 0

    def start(self, hook: str | None = None) -> subprocess.Popen:
        self.runs += 1
        env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "CRPBOT_STORAGE_URI": str(self.home / "data"),
            "CRPBOT_REPLAY_URL": self.server.url,
            "PYTHONPATH": os.getcwd(),
            TEST_SIGNAL_ENV: str(self.signal),
        }
        env.pop(TEST_HOOK_ENV, None)
        if hook:
            env[TEST_HOOK_ENV] = hook
        self.log = self.home / f"cli-{self.runs}.log"
        command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize"]
        command += ["-m", "crpbot_assets_tests.crash_defs", "-a", "defs", "--select", "candles"]
        command += ["--partition-range", f"{JAN}...{MAR}"]
        with open(self.log, "w") as log:
            return subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def signal(self) -> Path:
        return self.home / "hook-reached"

    def paused_pid(self) -> int:
        return int(self.signal.read_text().split()[-1])

    def run_to_end(self) -> str:
        process = self.start()
        assert process.wait(timeout=300) == 0, self.log.read_text()[-3000:]
        return self.log.read_text()


@pytest.fixture
def backfill(fast, tmp_path, monkeypatch) -> Backfill:
    """A backfill on its own DAGSTER_HOME (the repo's dagster.yaml, whose storage reads DAGSTER_HOME: the test
    opens the same instance)."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return Backfill(tmp_path, fast)


def kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def runs(home: Path) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [r.dagster_run for r in reversed(instance.get_run_records())]  # oldest first


def failure_message(home: Path, run_id: str) -> str:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (failure,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        return failure.message


def slot_holders(home: Path, pool: str = "coinbase") -> set[str]:
    """Runs holding a slot of `pool` or with a step waiting for one."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        info = instance.event_log_storage.get_concurrency_info(pool)
        return {s.run_id for s in info.claimed_slots} | {p.run_id for p in info.pending_steps}


def killed_run_holding_the_slot(home: Path) -> str:
    """The stuck state after a kill: the run is still STARTED and holds the `coinbase` pool's only slot (the
    repo's dagster.yaml: one step per API pool), which no process will ever free."""
    (killed,) = runs(home)
    assert killed.status == dg.DagsterRunStatus.STARTED
    assert slot_holders(home) == {killed.run_id}
    return killed.run_id


def assert_rerun_completes(backfill: Backfill, server: ReplayServer, fetched: list[str], killed: str) -> None:
    """The same backfill again: not blocked by the killed run's slot (its step frees the slot of a run whose
    processes are gone, with no daemon running, and says so), fetches exactly `fetched`, leaves every file with
    its record. The killed run ends FAILURE, its message naming what it committed."""
    server.clear()
    output = backfill.run_to_end()
    assert server.stats["coinbase"]["requests"] == sum(PAGES[k] for k in fetched)
    for key in set(KEYS) - set(fetched):
        assert f"candles {key}: already stored and complete" in output
    with dg.DagsterInstance.from_config(str(backfill.home)) as instance:
        assert_consistent(backfill.home / "data", instance)
    assert [(r.run_id == killed, r.status) for r in runs(backfill.home)] == [
        (True, dg.DagsterRunStatus.FAILURE),
        (False, dg.DagsterRunStatus.SUCCESS),
    ]
    assert slot_holders(backfill.home) == set()
    committed = set(KEYS) - set(fetched)
    message = failure_message(backfill.home, killed)
    assert "no process of the run is left" in message
    assert f"committed candles: {len(committed)} partition(s) ({', '.join(sorted(committed))})" in message


@pytest.mark.slow
def test_sigkill_of_the_run_while_a_partition_is_written(fast, tmp_path, backfill):
    process = backfill.start(hook="mid-write:pause:month=2019-02-01")
    wait_until(backfill.signal.exists, 180, "February's write")
    writer = backfill.paused_pid()
    kill_group(process)
    wait_until(lambda: not process_alive(writer), 30, "the step process to die")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        state = stored_state(tmp_path / "data", instance)
    assert state["files"] == state["records"] == state["described"] == {JAN}
    assert len(state["temps"]) == 1 and state["temps"][0].startswith("month=2019-02-01.parquet.tmp-")
    killed = killed_run_holding_the_slot(tmp_path)
    assert_rerun_completes(
        backfill, fast, fetched=[FEB, MAR], killed=killed
    )  # the dead writer's temp is swept
    assert f"freed the slots of dead run {killed}" in backfill.log.read_text()


@pytest.mark.slow
def test_sigkill_right_after_a_partition_is_written(fast, tmp_path, backfill):
    process = backfill.start(hook="after-write:pause:month=2019-02-01")
    wait_until(backfill.signal.exists, 180, "February's file")
    kill_group(process)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        state = stored_state(tmp_path / "data", instance)
        assert state == {"files": {JAN, FEB}, "records": {JAN}, "described": {JAN}, "temps": []}
        manager = PartitionedFileIOManager(storage=StorageResource(base_uri=str(tmp_path / "data")))
        context = dg.build_input_context(
            asset_key=CANDLES,
            partition_key=FEB,
            asset_partitions_def=symbol_month_partitions,
            instance=instance,
        )
        with pytest.raises(FileNotFoundError, match="no materialization record"):  # the file counts as absent
            manager.load_input(context)
    killed = killed_run_holding_the_slot(tmp_path)
    assert_rerun_completes(backfill, fast, fetched=[FEB, MAR], killed=killed)


def step_processes(parent: int) -> list[int]:
    """Children of `parent` running a multiprocess executor step (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, NotADirectoryError, PermissionError, ProcessLookupError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_sigkill_of_only_the_cli_parent_lets_the_step_finish_then_exit(fast, tmp_path, backfill):
    """The orphaned step process commits every month, then exits by itself (it used to wait for good on its dead
    parent's queue); it frees its slot and marks the run failed, saying what was committed and why."""
    process = backfill.start()
    january = tmp_path / "data" / (partition_path(CANDLES, JAN) + ".parquet")
    wait_until(january.exists, 180, "January's file")
    (step,) = step_processes(process.pid)
    os.kill(process.pid, signal.SIGKILL)  # only the CLI: its step process lives on and finishes the range
    process.wait(timeout=30)
    try:
        wait_until(lambda: not process_alive(step), 180, "the orphaned step to finish its work and exit")
    finally:  # never leave the orphan behind, even when it did not exit
        if process_alive(step):
            os.kill(step, signal.SIGKILL)
    (run,) = runs(tmp_path)
    assert run.status == dg.DagsterRunStatus.FAILURE
    message = failure_message(tmp_path, run.run_id)
    assert f"the process that launched step candles (pid {process.pid}) died" in message
    assert f"in process {step}, which then exited" in message
    assert f"committed candles: 3 partition(s) ({', '.join(KEYS)})" in message
    assert "Steps that finished: candles." in message
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert_consistent(tmp_path / "data", instance)  # it committed every month on its own
    assert slot_holders(tmp_path) == set()
    fast.clear()
    output = backfill.run_to_end()  # nothing left to do: every month is stored and complete
    assert fast.stats["coinbase"]["requests"] == 0 and "freed the slots" not in output
    for key in KEYS:
        assert f"candles {key}: already stored and complete" in output


WRITER = """
import sys
from crpbot_assets.common.storage import Storage
Storage(sys.argv[1]).write_bytes(sys.argv[2], b"x" * 1_000_000)
"""


@pytest.mark.slow
def test_the_next_write_removes_dead_writers_temp_files_not_a_live_ones(tmp_path):
    folder = tmp_path / "asset"

    def writer(name: str) -> subprocess.Popen:
        signal_file = tmp_path / f"{name}.paused"
        env = {
            **os.environ,
            "PYTHONPATH": os.getcwd(),
            TEST_HOOK_ENV: f"mid-write:pause:{name}",
            TEST_SIGNAL_ENV: str(signal_file),
        }
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"asset/{name}"], env=env)
        wait_until(signal_file.exists, 60, f"{name} to be half written")
        return process

    live = writer("live.bin")
    dead = writer("dead.bin")
    dead.kill()
    dead.wait()
    old = folder / "foreign.bin.tmp-otherhost-7-0f0f"  # another host's writer: only its age tells
    old.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    young = folder / "young.bin.tmp-otherhost-8-0f0f"
    young.write_bytes(b"partial")
    try:
        Storage(str(tmp_path)).write_bytes("asset/other.bin", b"done")
        names = sorted(p.name for p in folder.iterdir())
        assert [n for n in names if n.startswith("dead.bin")] == []
        assert "foreign.bin.tmp-otherhost-7-0f0f" not in names
        assert "young.bin.tmp-otherhost-8-0f0f" in names
        assert (
            len([n for n in names if n.startswith("live.bin.tmp-")]) == 1
        )  # the live writer's file survives
    finally:
        live.kill()
        live.wait()
