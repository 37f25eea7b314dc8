"""Asset checks on `candles`: blocking invariants (timestamps, OHLC sanity) and a coverage warning.

The checks are partitioned like the asset and evaluated by one check op, so the stored partitions are read
once. A one-partition run records a per-partition result. A single-run backfill over many partitions records
one result per check for the run (Dagster 1.13 evaluates a check once per step), which validates every
partition separately and names the failing ones.
"""

import dagster as dg
import polars as pl

from crpbot_assets.candles.assets import candles
from crpbot_assets.candles.validation import coverage, expected_window, ohlc_problems, timestamp_problems
from crpbot_assets.common.checks import partition_check_result
from crpbot_assets.common.partitions import split_key, symbol_month_partitions

COVERAGE_WARN_BELOW = 0.95

# name -> (blocking, description)
CHECKS = {
    "candles_timestamps_valid": (
        True,
        "Timestamps strictly increasing (so unique), minute-aligned and inside the partition's month.",
    ),
    "candles_ohlc_valid": (
        True,
        "low <= min(open, close), max(open, close) <= high, prices > 0, volume >= 0, no null/NaN/inf.",
    ),
    "candles_coverage": (
        False,
        f"Share of the month's tradable minutes present; warns below {COVERAGE_WARN_BELOW:.0%} "
        "(gaps are never filled).",
    ),
}


def _coverage_problems(key: str, frame: pl.DataFrame) -> list[str]:
    start, end = expected_window(*split_key(key))
    present, expected, share = coverage(frame, start, end)
    if share >= COVERAGE_WARN_BELOW:
        return []
    return [f"coverage {share:.2%} ({expected - present} of {expected} minutes missing)"]


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            name, asset=candles, description=text, blocking=blocking, partitions_def=symbol_month_partitions
        )
        for name, (blocking, text) in CHECKS.items()
    ],
    ins={"candles": dg.AssetIn("candles")},
)
def candles_quality(candles: dict[str, pl.DataFrame]):
    """The three checks from one read of the stored partitions (a backfill range is read once, not once per check)."""
    yield partition_check_result(
        candles,
        lambda key, frame: timestamp_problems(frame, split_key(key)[1]),
        check_name="candles_timestamps_valid",
    )
    yield partition_check_result(
        candles, lambda key, frame: ohlc_problems(frame), check_name="candles_ohlc_valid"
    )
    yield partition_check_result(
        candles, _coverage_problems, check_name="candles_coverage", severity=dg.AssetCheckSeverity.WARN
    )


candles_checks = [candles_quality]
