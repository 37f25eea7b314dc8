"""Asset checks on `candles`: blocking invariants (timestamps, OHLC sanity) and a coverage warning.

The checks are partitioned like the asset: a one-partition run records a per-partition result. A
single-run backfill over many partitions records one result for the run (Dagster 1.13 evaluates a
check once per step), which validates every partition separately and names the failing ones.
"""

import dagster as dg
import polars as pl

from crpbot_assets.candles.assets import candles
from crpbot_assets.candles.validation import coverage, expected_window, ohlc_problems, timestamp_problems
from crpbot_assets.common.checks import partition_check_result
from crpbot_assets.common.partitions import split_key, symbol_month_partitions

COVERAGE_WARN_BELOW = 0.95


@dg.asset_check(asset=candles, blocking=True, partitions_def=symbol_month_partitions)
def candles_timestamps_valid(candles: dict[str, pl.DataFrame]) -> dg.AssetCheckResult:
    """Timestamps strictly increasing (so unique), minute-aligned and inside the partition's month."""
    return partition_check_result(candles, lambda key, frame: timestamp_problems(frame, split_key(key)[1]))


@dg.asset_check(asset=candles, blocking=True, partitions_def=symbol_month_partitions)
def candles_ohlc_valid(candles: dict[str, pl.DataFrame]) -> dg.AssetCheckResult:
    """low <= min(open, close), max(open, close) <= high, prices > 0, volume >= 0, no null/NaN/inf."""
    return partition_check_result(candles, lambda key, frame: ohlc_problems(frame))


def _coverage_problems(key: str, frame: pl.DataFrame) -> list[str]:
    start, end = expected_window(*split_key(key))
    present, expected, share = coverage(frame, start, end)
    return [f"coverage {share:.2%} ({expected - present} of {expected} minutes missing)"] if share < COVERAGE_WARN_BELOW else []


@dg.asset_check(asset=candles, partitions_def=symbol_month_partitions)
def candles_coverage(candles: dict[str, pl.DataFrame]) -> dg.AssetCheckResult:
    """Share of the month's tradable minutes present; warns below COVERAGE_WARN_BELOW (gaps are never filled)."""
    return partition_check_result(candles, _coverage_problems, severity=dg.AssetCheckSeverity.WARN)


candles_checks = [candles_timestamps_valid, candles_ohlc_valid, candles_coverage]
