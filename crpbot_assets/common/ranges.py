"""Range runs: one asset computation over every partition of a run, the same way for every asset.

A single-run backfill (`BackfillPolicy.single_run()`) hands an asset a key range; a normal run one key.
`run_partitions` computes each partition on its own, in key order, and logs progress.

Crash safety: a range run commits per partition, not as a whole. As soon as a partition is computed its file is
written atomically and its materialization is recorded (`context.log_event`, which writes the event to the
instance at once; tag `crpbot/commit`), so a failure or a kill at month 80 keeps the months before it. The
writing and recording happen on one background thread (`_Committer`), in key order, while the next partition is
computed: the event log's commits wait on the disk (an fsync per transaction on sqlite), and computing meanwhile
hides that wait. At most two computed partitions wait to be committed, so a range run holds at most three at a
time, and a failure in the computation still commits every partition computed before it. Dagster still records
every partition of the run at step end (`execute_step._store_output`), so a partition of a successful range run
has two records: the commit record, and the step-end record that carries the data version and links the checks;
both hold the same metadata. A killed run keeps its commit records. What the IO manager receives is
`CommittedPartitions` (partition -> path), nothing to write. See `common/commits.py` for the rule that makes a file
without its record count as absent. The run's last log line says where its time went (compute, file writes,
commit records), and `CommittedPartitions.timings` holds the same seconds.

Resume: an asset that passes `resume_if` skips, in range runs only, each partition that is already committed, was
recorded after its month had ended, and whose recorded metadata satisfies `resume_if` (candles: the window was
complete). Skipped partitions log a line and carry `resumed_from_run` (plus their previous metadata) on the
step-end record. A one-partition run (e.g. from the UI) always recomputes; so does a range run tagged
`crpbot/recompute=true`.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (  # not exported by dagster
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)

from crpbot_assets.common.checks import PartitionCheck, problems_by_check
from crpbot_assets.common.commits import COMMIT_TAG, RECOMPUTE_TAG, latest_records, record_metadata
from crpbot_assets.common.io_manager import CommittedPartitions, PartitionedFileIOManager

T = TypeVar("T")
PROGRESS_LINES = 10  # progress lines per range run, at most (about)


@contextmanager
def event_log_kept_open(context: dg.AssetExecutionContext) -> Iterator[None]:
    """Hold one idle connection to the run's and the index's sqlite event-log files while inside.

    Dagster's sqlite event log opens and closes a connection per transaction; closing the last connection to a
    WAL database checkpoints it and removes the WAL, so every event pays for that. An idle connection held
    meanwhile makes those closes cheap (measured here: about a fifth less wall time per event). It holds no
    lock and no transaction; other storages are left alone.
    """
    storage = context.instance.event_log_storage
    paths = []
    if isinstance(storage, SqliteEventLogStorage):
        paths = [storage.path_for_shard(context.run_id), storage.path_for_shard(INDEX_SHARD_NAME)]
    connections = [sqlite3.connect(path) for path in paths if os.path.exists(path)]
    try:
        yield
    finally:
        for connection in connections:
            connection.close()


def _file_io_manager(context: dg.AssetExecutionContext) -> PartitionedFileIOManager | None:
    """The asset's IO manager when it is crpbot's file IO manager (the only one range runs commit through)."""
    assets_def = context.assets_def
    output_name = assets_def.get_output_name_for_asset_key(context.asset_key)
    io_manager_key = assets_def.node_def.output_def_named(output_name).io_manager_key
    manager = getattr(context.resources, io_manager_key, None)
    return manager if isinstance(manager, PartitionedFileIOManager) else None


def _window_end(context: dg.AssetExecutionContext, key: str) -> datetime | None:
    partitions_def = context.assets_def.partitions_def
    try:
        return partitions_def.time_window_for_partition_key(key).end
    except (AttributeError, dg.DagsterInvariantViolationError, ValueError):
        return None  # no time dimension: never "complete", never resumed


def _resumable(
    context: dg.AssetExecutionContext,
    manager: PartitionedFileIOManager,
    key: str,
    record: dg.EventLogRecord | None,
    resume_if: Callable[[dict], bool],
) -> bool:
    """True when partition `key` is committed, was recorded after its window ended and passes `resume_if`."""
    end = _window_end(context, key)
    if record is None or end is None or record.timestamp < end.timestamp():
        return False
    return manager.is_committed(context.asset_key, key, record) and resume_if(record_metadata(record))


class _Committer:
    """The background thread of a range run that writes and records each computed partition, in order.

    `submit` hands over one partition (blocking while two wait already) and re-raises a failure of the thread;
    `close` commits what is left and returns {partition_key: (write metadata, check problems)}. Only the file
    write, the checks on the frame and `context.log_event` run on the thread; the step context's metadata is
    updated by the caller after `close`.
    """

    def __init__(self, context, manager: PartitionedFileIOManager, checks: Sequence[PartitionCheck]):
        self._context, self._manager, self._checks = context, manager, checks
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._failure: BaseException | None = None
        self.done: dict[str, tuple[dict, dict | None]] = {}  # key -> (write metadata, problems or None)
        self.seconds = {"writes": 0.0, "checks": 0.0, "commit records": 0.0}
        self._thread = threading.Thread(target=self._work, name="crpbot-commits", daemon=True)
        self._thread.start()

    def submit(self, key: str, value, metadata: dict) -> None:
        self._raise_failure()
        self._queue.put((key, value, metadata))
        self._raise_failure()

    def close(self) -> dict[str, tuple[dict, dict | None]]:
        self._queue.put(None)
        self._thread.join()
        self._raise_failure()
        return self.done

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._failure is None:  # after a failure, nothing more is committed: drain to the end
                try:
                    self._commit(*item)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
                    self._failure = exc

    def _commit(self, key: str, value, metadata: dict) -> None:
        context, timed = self._context, time.perf_counter
        started = timed()
        problems = problems_by_check(self._checks, key, value) if self._checks and value is not None else None
        checked = timed()
        written = {} if value is None else self._manager.write_partition(context.asset_key, key, value)
        wrote = timed()
        context.log_event(
            dg.AssetMaterialization(
                context.asset_key,
                partition=key,
                metadata={**metadata, **written},
                tags={COMMIT_TAG: context.run_id},
            )
        )
        self.seconds["checks"] += checked - started
        self.seconds["writes"] += wrote - checked
        self.seconds["commit records"] += timed() - wrote
        self.done[key] = (written, problems)


def run_partitions(
    context: dg.AssetExecutionContext,
    compute_one: Callable[[str], T],
    resume_if: Callable[[dict], bool] | None = None,
    checks: Sequence[PartitionCheck] = (),
) -> T | CommittedPartitions | dict[str, T]:
    """`compute_one(partition_key)` for every partition of the run, keys sorted (month keys, and the
    "month|symbol" keys of symbol x month, sort chronologically). A one-partition run returns the value; a
    range run commits each partition as it goes (module docstring) and returns `CommittedPartitions`.
    `resume_if(recorded metadata)`: opt in to skipping partitions already stored and complete. `checks` are run
    on each committed frame before it is dropped (`CommittedPartitions.problems`, for `common/checks.evaluate`);
    a resumed partition's stored frame is read back for them. `compute_one` may return None when it wrote and
    described the partition itself (its metadata then carries `path`)."""
    keys = sorted(map(str, context.partition_keys))
    if context.has_partition_key:
        return compute_one(keys[0])
    name = context.asset_key.to_user_string()
    manager = _file_io_manager(context)
    if manager is None:  # another IO manager (tests): it writes the whole range at step end
        return {key: _logged(context, compute_one, keys, i) for i, key in enumerate(keys)}
    resume = resume_if is not None and context.run.tags.get(RECOMPUTE_TAG) != "true"
    records = latest_records(context.instance, context.asset_key, keys) if resume else {}
    step = context.get_step_execution_context()
    committer = _Committer(context, manager, checks)
    resumed: dict[str, tuple[str, dict]] = {}
    compute_s = 0.0
    try:
        for i, key in enumerate(keys):
            record = records.get(key)
            if resume and _resumable(context, manager, key, record, resume_if):
                resumed[key] = _resumed(context, manager, key, record, checks)
                continue
            started = time.perf_counter()
            value = _logged(context, compute_one, keys, i)
            compute_s += time.perf_counter() - started
            committer.submit(key, value, dict(step.get_asset_metadata(context.asset_key, key) or {}))
            del value
    except BaseException:
        try:  # what was computed before the failure is still committed
            committer.close()
        except BaseException as exc:  # noqa: BLE001 - the run's own error stays the error
            context.log.warning(
                f"{name}: committing the partitions computed before the failure failed: {exc}"
            )
        raise
    done = committer.close()
    committed = CommittedPartitions()
    for key in keys:
        if key in resumed:
            committed[key], problems = resumed[key]
        else:
            written, problems = done[key]
            if written:
                context.add_asset_metadata(written, partition_key=key)  # the step-end record carries them too
            committed[key] = str(step.get_asset_metadata(context.asset_key, key)["path"].value)
        if checks and problems is not None:
            committed.problems[key] = problems
    committed.timings = {
        "compute": round(compute_s, 2),
        **{k: round(v, 2) for k, v in committer.seconds.items()},
    }
    context.log.info(f"{name}: {len(done)} partitions committed, {len(resumed)} resumed from earlier runs")
    context.log.info(
        f"{name}: seconds spent "
        + ", ".join(f"{k} {v:.1f}" for k, v in committed.timings.items())
        + " (writes, checks and records on a second thread, overlapping the computation)"
    )
    return committed


def _resumed(
    context: dg.AssetExecutionContext,
    manager: PartitionedFileIOManager,
    key: str,
    record: dg.EventLogRecord,
    checks: Sequence[PartitionCheck],
) -> tuple[str, dict]:
    """(uri, check problems) of a partition skipped because it is already stored and complete."""
    context.add_asset_metadata(
        {**record.asset_materialization.metadata, "resumed_from_run": record.run_id}, partition_key=key
    )
    name = context.asset_key.to_user_string()
    context.log.info(f"{name} {key}: already stored and complete (run {record.run_id[:8]}); skipped")
    relative = manager.stored_file(context.asset_key, key)[0]
    problems = problems_by_check(checks, key, manager.files.read_parquet(relative)) if checks else {}
    return manager.files.uri(relative), problems


def _logged(context: dg.AssetExecutionContext, compute_one: Callable[[str], T], keys: list[str], i: int) -> T:
    """`compute_one(keys[i])`, with a progress line about every len(keys) / PROGRESS_LINES partitions."""
    value = compute_one(keys[i])
    done = i + 1
    if done == len(keys) or done % max(1, len(keys) // PROGRESS_LINES) == 0:
        name = context.asset_key.to_user_string()
        context.log.info(f"{name}: {done}/{len(keys)} partitions done (last {keys[i]})")
    return value
