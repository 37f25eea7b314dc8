"""Google Trends: window planning and overlap stitching of per-window 0-100 scales onto one scale.

Google scales every window so its own maximum is 100, i.e. a window's values are `true x c_w` with an
unknown constant c_w per window. Consecutive windows overlap (default 24 hourly points); the ratio of
the sums of the already-stitched series and of the new window over the overlap points where both are
non-zero estimates c_prev / c_new, and the new window is multiplied by it. After chaining, every value
is `true x c_first`: one scale, fixed by the first window (or by the `anchor`, the previous month's
stitched series, so consecutive months share a scale). Overlap points average both windows. Because the
chain only ever rescales later windows onto earlier ones, the only way a later value can influence an
earlier one is the integer rounding of Google's scale.

Resolution: Google picks it from the window's length (hourly up to 7 days, then daily, weekly, monthly) and
stamps each point at its period's start, so a point is final only at its period's end. `detect_resolution`
reads it from the timestamps, `period_end` maps each point to the end of its period; the hourly pipeline
requires hourly points (a clear error otherwise), so no daily or weekly value can pass as an hour's.

As of a time: values of recent periods are revised between fetches, so each value keeps `retrieved_at`.
For the month in progress a value counts only from its retrieval on (`usable_at`); a month fetched after it
ended is final, each hour usable at its end (see `as_of_hour_ends`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

KEYWORDS = {"BTC-USD": "Bitcoin", "ETH-USD": "Ethereum", "SOL-USD": "Solana"}
COLUMNS = {
    "BTC-USD": "search_interest_btc",
    "ETH-USD": "search_interest_eth",
    "SOL-USD": "search_interest_sol",
}
TS = pl.Datetime("us", "UTC")
SERIES_SCHEMA = {"ts": TS, "value": pl.Float64, "retrieved_at": TS}
WINDOW_SCHEMA = {"ts": TS, "period_end": TS, "value": pl.Float64, "retrieved_at": TS}
STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}


class StitchError(ValueError):
    """Two consecutive windows share no usable overlap, so their scales cannot be linked."""


def detect_resolution(ts: pl.Series, span: timedelta) -> str:
    """ "hour", "day", "week" or "month" from the points' spacing (Google's rule for the window's `span` when
    there is a single point); irregular spacing is a ValueError."""
    if ts.len() < 2:
        days = span / timedelta(days=1)
        return "hour" if days <= 7 else "day" if days <= 269 else "week" if days <= 5 * 365.25 else "month"
    steps = set(ts.sort().diff().drop_nulls().to_list())
    for name, step in STEPS.items():
        if steps == {step}:
            return name
    if all(timedelta(days=28) <= s <= timedelta(days=31) for s in steps) and set(ts.dt.day()) == {1}:
        return "month"
    raise ValueError(
        f"points are not evenly spaced by an hour, day, week or month: steps {sorted(steps)[:5]}"
    )


def period_end(ts: pl.Expr, resolution: str) -> pl.Expr:
    """The end of the period starting at `ts` (when its value becomes final)."""
    if resolution == "month":
        return ts.dt.offset_by("1mo")
    return ts + STEPS[resolution]


def plan_windows(
    start: datetime, end: datetime, window: timedelta, overlap: timedelta
) -> list[tuple[datetime, datetime]]:
    """Windows [a, b] of length `window` covering [start, end], each overlapping the previous by `overlap`."""
    if overlap >= window:
        raise ValueError(f"overlap {overlap} must be shorter than the window {window}")
    out, a = [], start
    while True:
        b = min(a + window, end)
        out.append((a, b))
        if b >= end:
            return out
        a = b - overlap


def _link_ratio(chain: pl.DataFrame, window: pl.DataFrame, label: str) -> float:
    both = chain.join(window, on="ts", suffix="_new").filter(
        (pl.col("value") > 0) & (pl.col("value_new") > 0)
    )
    if both.is_empty():
        raise StitchError(
            f"{label}: no overlapping non-zero points with the series before it; cannot link scales"
        )
    return float(both["value"].sum() / both["value_new"].sum())


def stitch(
    windows: list[pl.DataFrame], anchor: pl.DataFrame | None = None, label: str = "trends"
) -> pl.DataFrame:
    """One series (`ts`, `value`, `retrieved_at`) on a single scale from overlapping windows, oldest first.

    With an `anchor` (an already-stitched earlier series overlapping the first window) the result is on
    the anchor's scale; otherwise on the first window's. An hour's `retrieved_at` is the latest of the
    windows it averages.
    """
    windows = [
        w.select(
            "ts",
            pl.col("value").cast(pl.Float64),
            (pl.col("retrieved_at") if "retrieved_at" in w.columns else pl.lit(None))
            .cast(TS)
            .alias("retrieved_at"),
        )
        for w in windows
        if w.height
    ]
    if not windows:
        return pl.DataFrame(schema=SERIES_SCHEMA)
    chain = (
        anchor.select("ts", pl.col("value").cast(pl.Float64))
        if anchor is not None and anchor.height
        else None
    )
    parts = []
    for i, window in enumerate(windows):
        if chain is not None:
            ratio = _link_ratio(
                chain, window, f"{label} window {i} ({window['ts'].min()} .. {window['ts'].max()})"
            )
            window = window.with_columns(pl.col("value") * ratio)
        parts.append(window)
        chain = window
    return (
        pl.concat(parts)
        .group_by("ts")
        .agg(pl.col("value").mean(), pl.col("retrieved_at").max())
        .sort("ts")
        .cast(SERIES_SCHEMA)
    )


def revisions(stored: pl.DataFrame, refetched: pl.DataFrame) -> pl.DataFrame:
    """Relative change `refetched / stored - 1` of the hours both hold with a non-zero stored value (`ts`,
    `revision`); both on one scale, e.g. a stored tail and the stitched series anchored on it."""
    both = stored.select("ts", "value").join(refetched.select("ts", "value"), on="ts", suffix="_new")
    return both.filter(pl.col("value") > 0).select(
        "ts", (pl.col("value_new") / pl.col("value") - 1).alias("revision")
    )


def usable_at(trends: pl.DataFrame, month_stop: datetime) -> pl.Expr:
    """When each hourly row (`ts` = hour start) may be used: its hour's end, or, for a value retrieved while
    its month was in progress, the later of that and its retrieval. Rows without `retrieved_at` count as
    final (fetched after their month)."""
    hour_end = pl.col("ts").cast(TS) + pl.duration(hours=1)
    if "retrieved_at" not in trends.columns:
        return hour_end
    preliminary = pl.col("retrieved_at").is_not_null() & (pl.col("retrieved_at") < month_stop)
    return pl.when(preliminary).then(pl.max_horizontal(hour_end, pl.col("retrieved_at"))).otherwise(hour_end)


def as_of_hour_ends(
    trends: pl.DataFrame, hours: pl.Series, month_stop: datetime, columns: list[str], max_staleness: timedelta
) -> pl.DataFrame:
    """`columns` as known at each hour end in `hours`: the latest hour whose value was usable by then
    (`usable_at`), for at most `max_staleness`; null before anything was usable. In a final month each
    hour end sees exactly the hour just ended."""
    rows = pl.DataFrame({"ts": hours}).with_columns(pl.col("ts").cast(TS))
    present = [c for c in columns if c in trends.columns]
    if not present or trends.is_empty():
        return rows.with_columns([pl.lit(None, pl.Float64).alias(c) for c in columns])
    known = (
        trends.with_columns(usable_at(trends, month_stop).alias("usable_at"))
        .sort("ts")
        .group_by("usable_at", maintain_order=True)
        .last()  # several hours retrieved at once become usable together: the latest of them is current
        .select("usable_at", *present)
        .sort("usable_at")
    )
    joined = rows.sort("ts").join_asof(
        known, left_on="ts", right_on="usable_at", strategy="backward", tolerance=max_staleness
    )
    return joined.select(
        "ts",
        *[pl.col(c).cast(pl.Float64) if c in present else pl.lit(None, pl.Float64).alias(c) for c in columns],
    )
