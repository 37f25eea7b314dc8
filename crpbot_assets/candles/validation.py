"""Candle invariants and coverage of one symbol-month, on polars frames. No Dagster.

Each `*_problems` function returns human-readable violations (empty list = valid).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from crpbot_assets.candles.client import SCHEMA
from crpbot_assets.common.months import month_end
from crpbot_assets.common.symbols import listed_at

MAX_EXAMPLES = 3


def expected_window(
    symbol: str, month_start: datetime, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """Minutes [start, end) the month can hold: from listing, up to the last completed minute before `now`.

    start >= end means the month holds nothing (before listing, or in the future).
    """
    now = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    start = max(month_start, listed_at(symbol))
    end = min(month_end(month_start), now)
    return start, max(start, end)


def expected_minutes(start: datetime, end: datetime) -> int:
    return max(0, int((end - start) / timedelta(minutes=1)))


def _examples(frame: pl.DataFrame, mask: pl.Expr) -> str:
    bad = frame.filter(mask)
    shown = ", ".join(str(ts) for ts in bad["ts"].head(MAX_EXAMPLES).to_list())
    return f"{bad.height} rows (e.g. {shown})"


def schema_problems(frame: pl.DataFrame) -> list[str]:
    got = dict(frame.schema)
    return [] if got == SCHEMA else [f"schema {got} differs from the contract {SCHEMA}"]


def timestamp_problems(frame: pl.DataFrame, month_start: datetime) -> list[str]:
    """ts strictly increasing (hence unique), minute-aligned, inside [month_start, next month)."""
    problems = schema_problems(frame)
    if problems or frame.is_empty():
        return problems
    ts = pl.col("ts")
    if frame["ts"].null_count():
        problems.append(f"{frame['ts'].null_count()} null timestamps")
    duplicates = frame.height - frame["ts"].n_unique()
    if duplicates:
        problems.append(f"{duplicates} duplicate timestamps")
    not_increasing = frame.filter(ts.diff() <= pl.duration(seconds=0)).height
    if not_increasing:
        problems.append(f"timestamps not strictly increasing at {not_increasing} rows")
    misaligned = ts.dt.truncate("1m") != ts
    if frame.select(misaligned.any()).item():
        problems.append(f"not minute-aligned: {_examples(frame, misaligned)}")
    outside = (ts < month_start) | (ts >= month_end(month_start))
    if frame.select(outside.any()).item():
        problems.append(f"outside the month {month_start:%Y-%m}: {_examples(frame, outside)}")
    return problems


def ohlc_problems(frame: pl.DataFrame) -> list[str]:
    """low <= min(open, close), max(open, close) <= high, prices > 0, volume >= 0, all finite."""
    problems = schema_problems(frame)
    if problems or frame.is_empty():
        return problems
    o, h, l, c, v = (pl.col(name) for name in ("open", "high", "low", "close", "volume"))
    rules = {
        "null or non-finite values": pl.any_horizontal(
            [pl.col(n).is_null() | ~pl.col(n).is_finite() for n in ("open", "high", "low", "close", "volume")]
        ),
        "low > min(open, close)": l > pl.min_horizontal(o, c),
        "max(open, close) > high": pl.max_horizontal(o, c) > h,
        "non-positive price": pl.min_horizontal(o, h, l, c) <= 0,
        "negative volume": v < 0,
    }
    return [
        f"{name}: {_examples(frame, mask)}"
        for name, mask in rules.items()
        if frame.select(mask.fill_null(True).any()).item()
    ]


def coverage(frame: pl.DataFrame, start: datetime, end: datetime) -> tuple[int, int, float]:
    """(rows present, minutes expected, share present; 1.0 when nothing is expected)."""
    expected = expected_minutes(start, end)
    present = frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).height
    return present, expected, present / expected if expected else 1.0


def daily_coverage(frame: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Share of each UTC day's minutes inside [start, end) that are present (a day with no rows shows 0; a
    partial first or last day, e.g. today in the month in progress, is measured against its minutes in the window)."""
    days = []
    minutes = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        days.append(day)
        minutes.append(expected_minutes(max(day, start), min(day + timedelta(days=1), end)))
        day += timedelta(days=1)
    counts = frame.group_by(pl.col("ts").dt.truncate("1d").alias("day")).len()
    return (
        pl.DataFrame({"day": pl.Series(days).cast(frame.schema["ts"]), "minutes": minutes})
        .join(counts, on="day", how="left")
        .with_columns((pl.col("len").fill_null(0) / pl.col("minutes")).alias("coverage"))
        .select("day", "coverage")
    )
