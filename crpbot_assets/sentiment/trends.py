"""Google Trends: window planning and overlap stitching of per-window 0-100 scales onto one scale.

Google scales every window so its own maximum is 100, i.e. a window's values are `true x c_w` with an
unknown constant c_w per window. Consecutive windows overlap (default 24 hourly points); the ratio of
the sums of the already-stitched series and of the new window over the overlap points where both are
non-zero estimates c_prev / c_new, and the new window is multiplied by it. After chaining, every value
is `true x c_first`: one scale, fixed by the first window (or by the `anchor`, the previous month's
stitched series, so consecutive months share a scale). Overlap points average both windows. Because the
chain only ever rescales later windows onto earlier ones, the only way a later value can influence an
earlier one is the integer rounding of Google's scale.
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
SERIES_SCHEMA = {"ts": pl.Datetime("us", "UTC"), "value": pl.Float64}


class StitchError(ValueError):
    """Two consecutive windows share no usable overlap, so their scales cannot be linked."""


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
    """One series (`ts`, `value`) on a single scale from overlapping windows, oldest window first.

    With an `anchor` (an already-stitched earlier series overlapping the first window) the result is on
    the anchor's scale; otherwise on the first window's.
    """
    windows = [w.select("ts", pl.col("value").cast(pl.Float64)) for w in windows if w.height]
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
    return pl.concat(parts).group_by("ts").agg(pl.col("value").mean()).sort("ts").cast(SERIES_SCHEMA)
