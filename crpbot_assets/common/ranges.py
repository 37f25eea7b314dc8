"""Range runs: one asset computation over every partition of a run, the same way for every asset.

A single-run backfill (`BackfillPolicy.single_run()`) hands an asset a key range; a normal run one key.
`run_partitions` computes each partition on its own, in key order, and logs progress.

Crash safety: a range run commits per partition, not as a whole. As soon as a partition is computed its file is
written atomically and its materialization is recorded (`context.log_event`, which writes the event to the
instance at once; tag `crpbot/commit`), so a failure or a kill at month 80 keeps the 79 months before it. The
frame is then dropped: a range run holds one partition at a time. Dagster still records every partition of the
run at step end (`execute_step._store_output`), so a partition of a successful range run has two records: the
commit record, and the step-end record that carries the data version and links the checks; both hold the same
metadata. A killed run keeps its commit records. What the IO manager receives is `CommittedPartitions`
(partition -> path), nothing to write. See `common/commits.py` for the rule that makes a file without its record
count as absent.

Resume: an asset that passes `resume_if` skips, in range runs only, each partition that is already committed, was
recorded after its month had ended, and whose recorded metadata satisfies `resume_if` (candles: the window was
complete). Skipped partitions log a line and carry `resumed_from_run` (plus their previous metadata) on the
step-end record. A one-partition run (e.g. from the UI) always recomputes; so does a range run tagged
`crpbot/recompute=true`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

import dagster as dg

from crpbot_assets.common.checks import PartitionCheck, problems_by_check
from crpbot_assets.common.commits import COMMIT_TAG, RECOMPUTE_TAG, latest_records, record_metadata
from crpbot_assets.common.io_manager import CommittedPartitions, PartitionedFileIOManager

T = TypeVar("T")
PROGRESS_LINES = 10  # progress lines per range run, at most (about)


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
    committed = CommittedPartitions()
    resumed = 0
    for i, key in enumerate(keys):
        record = records.get(key)
        if resume and _resumable(context, manager, key, record, resume_if):
            resumed += 1
            context.add_asset_metadata(
                {**record.asset_materialization.metadata, "resumed_from_run": record.run_id},
                partition_key=key,
            )
            context.log.info(f"{name} {key}: already stored and complete (run {record.run_id[:8]}); skipped")
            relative = manager.stored_file(context.asset_key, key)[0]
            committed[key] = manager.files.uri(relative)
            if checks:
                committed.problems[key] = problems_by_check(checks, key, manager.files.read_parquet(relative))
            continue
        value = _logged(context, compute_one, keys, i)
        if value is not None:
            if checks:
                committed.problems[key] = problems_by_check(checks, key, value)
            context.add_asset_metadata(
                manager.write_partition(context.asset_key, key, value), partition_key=key
            )
        del value
        metadata = context.get_step_execution_context().get_asset_metadata(
            asset_key=context.asset_key, partition_key=key
        )
        context.log_event(
            dg.AssetMaterialization(
                context.asset_key, partition=key, metadata=metadata, tags={COMMIT_TAG: context.run_id}
            )
        )
        committed[key] = str(metadata["path"].value)
    context.log.info(
        f"{name}: {len(keys) - resumed} partitions committed, {resumed} resumed from earlier runs"
    )
    return committed


def _logged(context: dg.AssetExecutionContext, compute_one: Callable[[str], T], keys: list[str], i: int) -> T:
    """`compute_one(keys[i])`, with a progress line about every len(keys) / PROGRESS_LINES partitions."""
    value = compute_one(keys[i])
    done = i + 1
    if done == len(keys) or done % max(1, len(keys) // PROGRESS_LINES) == 0:
        name = context.asset_key.to_user_string()
        context.log.info(f"{name}: {done}/{len(keys)} partitions done (last {keys[i]})")
    return value
