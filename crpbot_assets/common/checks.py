"""Asset checks evaluated inside the asset, on the frames it just computed: one result per partition.

An asset declares `check_specs=specs(...)` and, after yielding its `Output`, `yield from evaluate(...)`.
A one-partition run records that partition's result. A range run (single-run backfill) logs one
`AssetCheckEvaluation` per partition, each pointing at that partition's materialization of this run (so the
UI shows every month's own pass/fail), then yields the range-level summary naming the failing partitions.
Nothing is re-read from storage. A failed blocking check fails the step after the files are written, and
stops downstream assets, as a separate blocking check would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import dagster as dg
import polars as pl
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # not exported by dagster
    AssetCheckEvaluationTargetMaterializationData,
)

from crpbot_assets.common.io_manager import CommittedPartitions


@dataclass(frozen=True)
class PartitionCheck:
    """A check of one partition's frame: `problems_of(partition_key, frame)` lists what is wrong."""

    name: str
    description: str
    problems_of: Callable[[str, pl.DataFrame], list[str]]
    blocking: bool = True
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


def specs(
    asset: str, checks: list[PartitionCheck], partitions_def: dg.PartitionsDefinition
) -> list[dg.AssetCheckSpec]:
    """The AssetCheckSpecs of `checks` on `asset`, partitioned like it."""
    return [
        dg.AssetCheckSpec(
            c.name, asset=asset, description=c.description, blocking=c.blocking, partitions_def=partitions_def
        )
        for c in checks
    ]


def problems_by_check(
    checks: Sequence[PartitionCheck], key: str, frame: pl.DataFrame
) -> dict[str, list[str]]:
    """{check name: problems} of one partition's frame."""
    return {check.name: check.problems_of(key, frame) for check in checks}


def _result(check_name, severity, checked: int, failures) -> dg.AssetCheckResult:
    """The range-level result: passed when no partition failed; each failing partition's problems in the
    description (first 2000 characters) and in full in metadata `failures`."""
    description = "; ".join(f"{key}: {', '.join(found)}" for key, found in failures.items())
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not failures,
        severity=severity,
        description=description[:2000] or None,
        metadata={
            "partitions_checked": checked,
            "partitions_failed": len(failures),
            "failures": dg.MetadataValue.json(failures),
        },
    )


def _materializations_of_run(
    context: dg.AssetExecutionContext, keys: list[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest materialization of each partition in `keys` made by this run (one query)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=keys), limit=len(keys)
    ).records
    found = {}
    for record in records:  # newest first
        if record.run_id == context.run_id and record.partition_key not in found:
            found[record.partition_key] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
            )
    return found


def evaluate(
    context: dg.AssetExecutionContext, value, checks: Sequence[PartitionCheck]
) -> Iterator[dg.AssetCheckResult]:
    """Evaluate `checks` on the asset's just-written `value` (a frame, {partition_key: frame}, or a range run's
    `CommittedPartitions` whose problems were found before each frame was dropped); call after yielding the
    asset's Output. Range runs also log one evaluation per partition."""
    if isinstance(value, CommittedPartitions):
        problems = value.problems
    else:
        frames = value if isinstance(value, dict) else {str(context.partition_key): value}
        problems = {key: problems_by_check(checks, key, frame) for key, frame in frames.items()}
    keys = sorted(problems)
    targets = {} if context.has_partition_key else _materializations_of_run(context, keys)
    for check in checks:
        failures = {}
        for key in keys:
            found = problems[key][check.name]
            if found:
                failures[key] = found
            if context.has_partition_key:
                continue
            context.log_event(
                dg.AssetCheckEvaluation(
                    asset_key=context.asset_key,
                    check_name=check.name,
                    passed=not found,
                    severity=check.severity,
                    blocking=check.blocking,
                    description="; ".join(found)[:2000] or None,
                    metadata={"problems": dg.MetadataValue.json(found)},
                    target_materialization_data=targets.get(key),
                    partition=key,
                )
            )
        if failures:
            context.log.warning(f"{check.name}: {len(failures)}/{len(keys)} partitions failed")
        yield _result(check.name, check.severity, len(keys), failures)
