"""Checks on `candles`: blocking invariants (timestamps, OHLC sanity) and a coverage warning.

Evaluated by the asset itself on the frames it fetched (`common/checks.py`): one result per partition,
also in a range run, and nothing re-read.
"""

import dagster as dg
import polars as pl

from crpbot_assets.candles.validation import coverage, expected_window, ohlc_problems, timestamp_problems
from crpbot_assets.common.checks import PartitionCheck
from crpbot_assets.common.partitions import split_key

COVERAGE_WARN_BELOW = 0.95


def _coverage_problems(key: str, frame: pl.DataFrame) -> list[str]:
    start, end = expected_window(*split_key(key))
    present, expected, share = coverage(frame, start, end)
    if share >= COVERAGE_WARN_BELOW:
        return []
    return [f"coverage {share:.2%} ({expected - present} of {expected} minutes missing)"]


CANDLES_CHECKS = [
    PartitionCheck(
        "candles_timestamps_valid",
        "Timestamps strictly increasing (so unique), minute-aligned and inside the partition's month.",
        lambda key, frame: timestamp_problems(frame, split_key(key)[1]),
    ),
    PartitionCheck(
        "candles_ohlc_valid",
        "low <= min(open, close), max(open, close) <= high, prices > 0, volume >= 0, no null/NaN/inf.",
        lambda key, frame: ohlc_problems(frame),
    ),
    PartitionCheck(
        "candles_coverage",
        f"Share of the month's tradable minutes present; warns below {COVERAGE_WARN_BELOW:.0%} "
        "(gaps are never filled).",
        _coverage_problems,
        blocking=False,
        severity=dg.AssetCheckSeverity.WARN,
    ),
]
