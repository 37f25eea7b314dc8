"""One asset check result over every partition a run covers, naming the failing partitions."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg
import polars as pl


def partition_check_result(
    frames: dict[str, pl.DataFrame],
    problems_of: Callable[[str, pl.DataFrame], list[str]],
    *,
    check_name: str | None = None,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
    """Passed when `problems_of(partition_key, frame)` finds nothing in any partition; otherwise each failing
    partition's problems, in the description (first 2000 characters) and in full in metadata `failures`."""
    failures = {key: found for key in sorted(frames) if (found := problems_of(key, frames[key]))}
    description = "; ".join(f"{key}: {', '.join(found)}" for key, found in failures.items())
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not failures,
        severity=severity,
        description=description[:2000] or None,
        metadata={
            "partitions_checked": len(frames),
            "partitions_failed": len(failures),
            "failures": dg.MetadataValue.json(failures),
        },
    )
