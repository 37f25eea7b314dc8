"""The hourly `sentiment_features` frame: every source aligned to hour ends, the instant a row becomes usable."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

FEATURE_COLUMNS = (
    "reddit_sentiment_1h",
    "reddit_volume_1h",
    "reddit_engagement_1h",
    "fear_greed_index",
    "search_interest_btc",
    "search_interest_eth",
    "search_interest_sol",
)
TS = pl.Datetime("us", "UTC")


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
