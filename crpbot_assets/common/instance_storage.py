"""The local instance's storage (`storage: custom:` in dagster_home/dagster.yaml): Dagster's sqlite storage,
unchanged on disk, with three additions for a machine where any process can be killed at any instant.

1. It is created under a file lock (`<base_dir>/locks/storage-init.lock`). Several processes opening a new
   DAGSTER_HOME at once (a first backfill and the daemon) otherwise each create the sqlite tables and stamp
   alembic's version table: `UNIQUE constraint failed: alembic_version`, then `Version table 'alembic_version'
   has more than one head present` for every later command on that home.
2. A step whose pool claim is blocked first frees the slots of runs none of whose processes is left
   (`common/dead_runs.py`; an unfinished one is marked failed with what it committed), then claims again. A
   killed run's slot goes to the next run at once, without the daemon; the waiting run's events name each run
   freed. Slots of runs that still have a live process are left alone.
3. A step process whose launching process died (the CLI killed, not its process group) runs its step to the
   end, then exits instead of waiting for good to hand its last events to the dead parent (a multiprocessing
   queue's feeder thread, joined at exit). It frees its own slot and, when no other process of the run is left,
   marks the run failed with what it committed (`dead_runs.free_dead_run`).

Production (Postgres, deploy/dagster.yaml) runs the daemon, whose run monitoring marks dead runs failed and frees
their slots (`free_slots_after_run_end_seconds`); pids there belong to other containers, so none of this applies.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.util
import os
import sys
from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.base import ConcurrencyClaimStatus
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster._core.storage.sqlite_storage import (  # private helpers: the same folders as `storage: sqlite:`
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData

from crpbot_assets.common.dead_runs import dead_run_reason, free_dead_run, free_slots_of_dead_runs
from crpbot_assets.common.locks import exclusive

logger = logging.getLogger("crpbot.instance")


class CrpbotSqliteEventLogStorage(SqliteEventLogStorage):
    """Sqlite event log whose blocked pool claims free dead runs' slots, and whose step processes exit when
    orphaned (module docstring, points 2 and 3)."""

    lock_folder: Path | None = None  # where the storage's locks live (set by CrpbotSqliteStorage)

    def claim_concurrency_slot(
        self, concurrency_key: str, run_id: str, step_key: str, priority: int | None = None
    ) -> ConcurrencyClaimStatus:
        status = super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)
        if status.is_claimed or not self.has_instance:
            return status
        instance = self._instance
        try:
            with exclusive("dead-runs", folder=self.lock_folder):  # one process frees (and marks) a dead run
                freed = free_slots_of_dead_runs(instance, concurrency_key, run_id)
        except Exception:  # never let the clean-up break a live run's claim: it waits, as without it
            logger.exception(f"could not check the holders of pool {concurrency_key} for dead runs")
            return status
        if not freed:
            return status
        run = instance.get_run_by_id(run_id)
        for message in freed:
            text = f"step {step_key} waits for pool {concurrency_key}; freed the slots of dead {message}"
            logger.warning(text)
            if run is not None:
                instance.report_engine_event(text, run)
        return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)

    def store_event(self, event) -> None:
        super().store_event(event)
        if (
            event.dagster_event_type == dg.DagsterEventType.STEP_WORKER_STARTED
            and event.step_key
            and event.dagster_event.pid == os.getpid()  # this process is the step's
            and multiprocessing.parent_process() is not None
            and self.has_instance
        ):
            _exit_when_orphaned(self._instance.get_ref(), event.run_id, event.step_key)


_watched: set[tuple[str, str]] = set()


def _exit_when_orphaned(ref, run_id: str, step_key: str) -> None:
    """At this step process's exit: if its parent died, report and exit at once (module docstring, point 3).
    Runs before multiprocessing joins its queues' feeder threads (a finalizer of higher priority)."""
    if (run_id, step_key) in _watched:
        return
    _watched.add((run_id, step_key))

    def on_exit() -> None:
        parent = multiprocessing.parent_process()
        if parent is None or parent.is_alive():
            return
        try:
            note = (
                f"the process that launched step {step_key} (pid {parent.pid}) died; the step ran to its end "
                f"in process {os.getpid()}, which then exited"
            )
            with dg.DagsterInstance.from_ref(ref) as instance:
                instance.event_log_storage.free_concurrency_slot_for_step(run_id, step_key)
                reason = dead_run_reason(instance, run_id, exclude_pid=os.getpid())
                if reason:
                    free_dead_run(instance, run_id, f"{note}, and {reason}")
                else:
                    run = instance.get_run_by_id(run_id)
                    instance.report_engine_event(f"{note}; other processes of the run still run", run)
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):  # a closed or broken stream must not keep the process alive
                    pass
            os._exit(0)

    multiprocessing.util.Finalize(None, on_exit, exitpriority=100)


class CrpbotSqliteStorage(DagsterSqliteStorage):
    """Dagster's sqlite storage (same files under `base_dir`), created under a lock, with the event log above."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self.base_dir = base_dir
        locks = Path(base_dir) / "locks"
        with exclusive("storage-init", folder=locks):
            self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
            self._event_log_storage = CrpbotSqliteEventLogStorage(_event_logs_directory(base_dir))
            self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._event_log_storage.lock_folder = locks
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()  # what DagsterSqliteStorage.__init__ ends with

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> CrpbotSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
