"""The hourly `sentiment_features` frame: every source aligned to hour ends, the instant a row becomes usable."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

TS = pl.Datetime("us", "UTC")
_TRENDS = (
    "Google search interest for {}, stitched hourly scale. Hourly points only: a window Google answers daily or "
    "coarser is rejected, never stamped as hours. The hour's value is usable from its end; in the month in "
    "progress only from its retrieval (latest retrieved hour, at most 8 h old); finished months hold final values"
)
# What each column is and from when a value may be used: emitted as the asset's `column_catalogue` metadata.
CATALOGUE = {
    "reddit_sentiment_1h": "Mean VADER compound of the hour's post titles; null without posts or coverage",
    "reddit_volume_1h": "Posts created in the hour; 0 when observed without posts, null when not fully observed",
    "reddit_engagement_1h": "Score sum of the hour's posts as observed by the hour's end (later votes excluded)",
    "fear_greed_index": "alternative.me index of the day, usable from 01:00 UTC; null after 26 h without one",
    "search_interest_btc": _TRENDS.format("Bitcoin"),
    "search_interest_eth": _TRENDS.format("Ethereum"),
    "search_interest_sol": _TRENDS.format("Solana"),
}
FEATURE_COLUMNS = tuple(CATALOGUE)


def utc_hour(now: datetime | None = None) -> datetime:
    """The start of the current UTC hour (the end of the last completed one)."""
    return (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)


def hour_ends(start: datetime, end: datetime, now: datetime | None = None) -> pl.Series:
    """Ends of the completed hours of [start, end): start+1h .. min(end, now floored to the hour)."""
    last = min(end, utc_hour(now))
    if last <= start:
        return pl.Series("ts", [], dtype=TS)
    return (
        pl.datetime_range(start, last, "1h", closed="right", time_zone="UTC", eager=True).cast(TS).alias("ts")
    )


def assemble(
    hours: pl.Series,
    reddit_hourly: pl.DataFrame,
    fear_greed_hourly: pl.DataFrame,
    trends_hourly: pl.DataFrame,
) -> pl.DataFrame:
    """`ts` + exactly FEATURE_COLUMNS (Float64, null where a source has no coverage), one row per hour end.
    Every source frame is already keyed by the hour end at which its values are known."""
    frame = pl.DataFrame({"ts": hours.cast(TS)})
    for source in (reddit_hourly, fear_greed_hourly, trends_hourly):
        present = [c for c in FEATURE_COLUMNS if c in source.columns]
        if present and source.height:
            frame = frame.join(source.select(pl.col("ts").cast(TS), *present), on="ts", how="left")
    missing = [pl.lit(None, pl.Float64).alias(c) for c in FEATURE_COLUMNS if c not in frame.columns]
    return (
        frame.with_columns(missing)
        .select("ts", *[pl.col(c).cast(pl.Float64) for c in FEATURE_COLUMNS])
        .sort("ts")
    )
