"""The real `dagster-daemon` on a sqlite instance (the repo's dagster.yaml) with the replay server: the
month in progress is kept fresh with no toggling, and range runs record per-partition check results."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from crpbot_assets.common.months import month_key, month_start, previous_month
from crpbot_assets.common.run_launcher import MonitoredRunLauncher

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def wait_for(
    what: str, found: Callable[[], object], timeout_s: float, process: subprocess.Popen | None = None
):
    """Poll `found` (every second) until it returns something truthy; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not (value := found()):
        assert process is None or process.poll() is None, f"dagster-daemon exited while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f}s"
        time.sleep(1)
    return value


def latest(instance: dg.DagsterInstance, asset: str, partition: str):
    """The latest materialization record of one partition, or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return records[0] if records else None


def automation_ticks(instance: dg.DagsterInstance) -> int:
    for state in instance.all_instigator_state():
        if state.name == "crpbot_automation":
            return len(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5))
    return 0


@pytest.fixture
def home(tmp_path, replay_server, monkeypatch):
    """A DAGSTER_HOME with the repo's dagster.yaml, this test's data folder and short polling intervals."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    env = {
        "DAGSTER_HOME": str(home),
        "CRPBOT_ENV": "local",
        "CRPBOT_REPLAY_URL": replay_server.url,
        "CRPBOT_STORAGE_URI": str(tmp_path / "data"),
        "CRPBOT_REDDIT_POLL_S": "5",
        "CRPBOT_AUTOMATION_INTERVAL_S": "5",
        "PYTHONPATH": str(REPO),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return home


@pytest.fixture
def daemon(home):
    process = subprocess.Popen(
        [BIN / "dagster-daemon", "run", "-w", "workspace.yaml"],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=open(home / "daemon.log", "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its code server and run workers share its process group
    )
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture
def home_instance(home):
    """The instance of `home`, entered: Dagster's current defs-state storage is then this instance's, not one
    left behind by an earlier test of the session."""
    with dg.DagsterInstance.get() as instance:
        yield instance


def test_daemon_keeps_the_month_in_progress_fresh_and_records_checks_per_partition(
    home, daemon, home_instance
):
    now = datetime.now(UTC)
    month = month_key(now)
    before = month_key(previous_month(month_start(now)))
    btc = f"{month}|BTC-USD"
    instance = home_instance

    # The other inputs of sentiment_features, as their schedules would have left them.
    # Resources are built here, from this test's environment: a `defs` imported earlier in the session keeps the
    # replay URL and storage of the moment it was imported.
    from crpbot_assets.definitions import defs
    from crpbot_assets.resources import resources_for

    resources = resources_for("local")
    assert dg.materialize(
        [defs.get_assets_def("google_trends_hourly")],
        partition_key=month,
        instance=instance,
        resources=resources,
    ).success
    assert dg.materialize(
        [defs.get_assets_def("fear_greed_index")], instance=instance, resources=resources
    ).success
    wait_for("first automation tick", lambda: automation_ticks(instance), 180, daemon)

    # A range run of candles (previous month + the month in progress) from the CLI, as a user would.
    backfill = subprocess.run(
        [BIN / "dagster", "asset", "materialize", "-m", "crpbot_assets.definitions", "-a", "defs"]
        + ["--select", "candles", "--partition-range", f"{before}|BTC-USD...{btc}"],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert backfill.returncode == 0, backfill.stdout[-3000:] + backfill.stderr[-3000:]
    check_keys = [
        dg.AssetCheckKey(dg.AssetKey("candles"), name)
        for name in ("candles_timestamps_valid", "candles_ohlc_valid", "candles_coverage")
    ]
    infos = instance.event_log_storage.get_asset_check_partition_info(check_keys)
    per_partition = {(i.check_key.name, i.partition_key): i for i in infos if i.partition_key}
    assert set(per_partition) == {(k.name, p) for k in check_keys for p in (f"{before}|BTC-USD", btc)}
    for (name, partition), info in per_partition.items():
        assert info.is_current, (name, partition)  # each result points at that month's own materialization
        ok = info.latest_execution_status.value == "SUCCEEDED"
        assert ok or (name == "candles_coverage" and partition == btc), (name, partition)

    # The automation follows: features of the month in progress (its warm-up month is there) ...
    features = wait_for("features materialization", lambda: latest(instance, "features", btc), 300, daemon)
    run = instance.get_run_by_id(features.run_id)
    assert run.tags.get("dagster/from_automation_condition") == "true" or any(
        "automation" in key for key in run.tags
    ), run.tags
    # ... and the Reddit sensor's posts flow through reddit_hourly to sentiment_features of the month.
    sentiment = wait_for(
        "sentiment_features materialization", lambda: latest(instance, "sentiment_features", btc), 420, daemon
    )
    posts = latest(instance, "reddit_posts", month)
    assert posts is not None and posts.storage_id < sentiment.storage_id
    sensor_runs = instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": "reddit_new_posts"}))
    assert sensor_runs and posts.run_id in {r.run_id for r in sensor_runs}
    assert latest(instance, "features", f"{before}|BTC-USD") is None  # its own warm-up month is missing
    failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert not failed, [(r.job_name, r.tags) for r in failed]


def test_run_monitoring_sees_a_killed_run_worker(instance):
    """The launcher's health check reads the run worker's pid from the run's events: alive -> RUNNING,
    killed -> FAILED (the run-monitoring daemon then marks the run failed)."""
    launcher = MonitoredRunLauncher()
    launcher.register_instance(instance)
    run = instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED))
    assert launcher.check_run_worker_health(run).status.value == "UNKNOWN"  # no worker yet
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    from dagster._core.events import EngineEventData

    instance.report_engine_event(
        f"Started process for run (pid: {worker.pid}).", run, EngineEventData.in_process(worker.pid)
    )
    assert launcher.check_run_worker_health(run).status.value == "RUNNING"
    worker.kill()
    worker.wait(timeout=30)
    health = launcher.check_run_worker_health(run)
    assert health.status.value == "FAILED" and str(worker.pid) in health.msg
