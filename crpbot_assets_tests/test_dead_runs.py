"""Runs with no process left: found from their recorded pids, marked failed with what they committed, their pool
slots freed when another run's claim is blocked; runs with a live process are left alone. On the instance the
repo's dagster.yaml configures (its storage and the `coinbase` pool's limit of 1), with real processes as
holders (`sleep`) and Dagster's own claim API, as the executor calls it."""

import os
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, EngineEventData, StepMaterializationData

from crpbot_assets.common.dead_runs import dead_run_reason, run_processes
from crpbot_assets.common.instance_storage import CrpbotSqliteEventLogStorage
from crpbot_assets.common.processes import alive_since, process_alive, started_at
from crpbot_assets.common.run_launcher import MonitoredRunLauncher

REPO = Path(__file__).resolve().parents[1]
POOL = "coinbase"


@pytest.fixture(scope="module")
def local_instance(tmp_path_factory):
    """A fresh DAGSTER_HOME with the repo's dagster.yaml, shared by the module's tests (each uses its own runs
    and pool)."""
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance


@pytest.fixture
def sleeper():
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


def started_run(instance: dg.DagsterInstance, pid: int | None) -> dg.DagsterRun:
    """A STARTED run whose worker is `pid`, recorded as Dagster records it (None: no worker recorded yet)."""
    run = instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED))
    if pid is not None:
        instance.report_engine_event(
            f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
        )
    return run


def committed(instance: dg.DagsterInstance, run: dg.DagsterRun, partition: str) -> None:
    materialization = dg.AssetMaterialization("candles", partition=partition)
    instance.report_dagster_event(
        DagsterEvent(
            dg.DagsterEventType.ASSET_MATERIALIZATION.value,
            job_name=run.job_name,
            event_specific_data=StepMaterializationData(materialization),
        ),
        run_id=run.run_id,
    )


def claim(instance: dg.DagsterInstance, run: dg.DagsterRun, pool: str = POOL) -> bool:
    return instance.event_log_storage.claim_concurrency_slot(pool, run.run_id, "candles").is_claimed


def holders(instance: dg.DagsterInstance) -> set[str]:
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}


def test_a_blocked_claim_frees_the_slot_of_a_run_with_no_process_left_and_only_then(local_instance, sleeper):
    instance = local_instance
    assert isinstance(instance.event_log_storage, CrpbotSqliteEventLogStorage)
    instance.event_log_storage.initialize_concurrency_limit_to_default(POOL)  # as the executor does: limit 1
    holder = started_run(instance, sleeper.pid)
    committed(instance, holder, "2019-01-01|BTC-USD")
    assert claim(instance, holder)
    starting = started_run(instance, None)  # no pid recorded yet: never taken for dead
    waiting = started_run(instance, os.getpid())

    assert not claim(instance, waiting) and holders(instance) == {
        holder.run_id
    }  # a live holder keeps its slot
    assert dead_run_reason(instance, holder.run_id) is None
    launcher = MonitoredRunLauncher()
    launcher.register_instance(instance)
    assert launcher.check_run_worker_health(holder).status.value == "RUNNING"

    sleeper.kill()
    sleeper.wait()
    health = launcher.check_run_worker_health(holder)  # what the run-monitoring daemon would be told
    assert health.status.value == "FAILED" and f"pids {sleeper.pid} are gone" in health.msg
    assert claim(instance, waiting) and holders(instance) == {waiting.run_id}  # freed at the next claim

    failed = instance.get_run_by_id(holder.run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(holder.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"no process of the run is left (pids {sleeper.pid} are gone)" in failure.message
    assert "committed candles: 1 partition(s) (2019-01-01|BTC-USD)" in failure.message
    assert f"slots in pool(s) {POOL} were freed" in failure.message
    notes = [e.message for e in instance.all_logs(waiting.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
    assert any(f"freed the slots of dead run {holder.run_id}" in note for note in notes), notes
    assert instance.get_run_by_id(starting.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_finished_run_with_no_process_left_is_freed_without_a_second_failure(local_instance):
    """A run marked failed (by run monitoring) whose slot the daemon has not freed yet."""
    instance = local_instance
    instance.event_log_storage.initialize_concurrency_limit_to_default("reddit")  # limit 1 as well
    gone = subprocess.Popen(["true"])
    gone.wait()
    holder = started_run(instance, gone.pid)
    assert claim(instance, holder, "reddit")
    instance.report_run_failed(holder, "run worker gone")
    waiting = started_run(instance, os.getpid())
    assert claim(instance, waiting, "reddit")
    assert len(instance.all_logs(holder.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)) == 1


def test_every_recorded_process_of_a_run_counts(local_instance, sleeper):
    """The CLI gone but a step process alive (an orphaned step finishing its work): the run is not dead."""
    instance = local_instance
    gone = subprocess.Popen(["true"])
    gone.wait()
    run = started_run(instance, gone.pid)
    instance.report_engine_event(
        f'Executing step "candles" in subprocess (pid: {sleeper.pid}).',
        run,
        EngineEventData.in_process(sleeper.pid),
    )
    assert set(run_processes(instance, run.run_id)) == {gone.pid, sleeper.pid}
    assert dead_run_reason(instance, run.run_id) is None
    assert dead_run_reason(instance, run.run_id, exclude_pid=sleeper.pid) is not None


def test_a_pid_reused_by_a_later_process_is_not_the_recorded_process(sleeper):
    start = started_at(sleeper.pid)
    assert start is not None and abs(start - time.time()) < 60
    assert process_alive(sleeper.pid) and alive_since(sleeper.pid, time.time())
    assert not alive_since(sleeper.pid, start - 60)  # recorded a minute before this process started
    sleeper.kill()
    sleeper.wait()
    assert not process_alive(sleeper.pid) and not alive_since(sleeper.pid, time.time())
