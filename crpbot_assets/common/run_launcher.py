"""The local instance's run launcher: Dagster's default, plus a run-worker health check for run monitoring.

`DefaultRunLauncher` cannot tell whether a run's process is alive, so a run whose process was killed stays
STARTED for good. This launcher answers from the run worker's pid (recorded by Dagster in the run's
"Started process for run (pid: N)" engine event): with `run_monitoring` enabled in dagster.yaml, the daemon
marks such a run failed. Local only: the run workers are processes of this machine.
"""

from __future__ import annotations

import os

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process of this machine (a zombie, exited but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no procfs (macOS): the signal answered
        return True


class MonitoredRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers the run-monitoring daemon can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False
        ).records
        for record in records:
            event = record.event_log_entry.dagster_event
            pid = event.engine_event_data.metadata.get("pid") if event and event.engine_event_data else None
            if pid is not None:
                if process_alive(int(pid.value)):
                    return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid.value))
                return CheckRunHealthResult(
                    WorkerStatus.FAILED,
                    f"run worker process {pid.value} is gone",
                    run_worker_id=str(pid.value),
                )
        # not started yet: run monitoring's start timeout covers a worker that never comes up
        return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run worker pid recorded yet")
