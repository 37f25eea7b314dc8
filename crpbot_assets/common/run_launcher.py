"""The local instance's run launcher: Dagster's default, plus a run-worker health check for run monitoring.

`DefaultRunLauncher` cannot tell whether a run's process is alive, so a run whose process was killed stays
STARTED for good. This launcher answers from the pids Dagster records on the run's events (its worker, the
executor, each step process; `common/dead_runs.py`): with `run_monitoring` enabled in dagster.yaml, the daemon
marks a run failed once none of them is left, with what the run committed before. Local only: the run workers
are processes of this machine.
"""

from __future__ import annotations

from dagster import DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

from crpbot_assets.common.dead_runs import committed_summary, dead_run_reason, run_processes


class MonitoredRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers the run-monitoring daemon can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        processes = run_processes(self._instance, run.run_id)
        if (
            not processes
        ):  # not started yet: run monitoring's start timeout covers a worker that never comes up
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no run worker pid recorded yet")
        worker = str(min(processes, key=processes.get))
        reason = dead_run_reason(self._instance, run.run_id)
        if reason is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=worker)
        message = f"crpbot: {reason}. {committed_summary(self._instance, run.run_id)}"
        return CheckRunHealthResult(WorkerStatus.FAILED, message, run_worker_id=worker)
