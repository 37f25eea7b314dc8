"""Crypto Fear & Greed Index: parse alternative.me payloads and align daily values to hourly rows causally."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

DAILY_SCHEMA = {"day": pl.Datetime("us", "UTC"), "fear_greed_index": pl.Float64, "classification": pl.String}


class FearGreedPayloadError(ValueError):
    """An alternative.me response that is not a valid Fear & Greed history."""


def parse_payload(payload, source: str = "alternative.me /fng/") -> pl.DataFrame:
    """Daily frame (`day` = 00:00 UTC, index 0-100, classification), oldest first, one row per day present.

    Every entry must carry a numeric `value` in 0..100 and a `timestamp` at 00:00 UTC; duplicates, an API
    error or a missing `data` list raise FearGreedPayloadError naming `source` and the offending entry.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise FearGreedPayloadError(
            f"{source}: expected an object with a `data` list, got {str(payload)[:200]!r}"
        )
    error = (payload.get("metadata") or {}).get("error")
    if error:
        raise FearGreedPayloadError(f"{source}: the API reported an error: {error}")
    days, values, labels = [], [], []
    for i, entry in enumerate(payload["data"]):
        try:
            value = int(entry["value"])
            stamp = int(entry["timestamp"])
            label = str(entry["value_classification"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FearGreedPayloadError(
                f"{source}: entry {i} is malformed ({type(exc).__name__}: {exc}): {entry!r}"
            ) from None
        if not 0 <= value <= 100:
            raise FearGreedPayloadError(f"{source}: entry {i} has value {value} outside 0..100: {entry!r}")
        if stamp % 86400:
            raise FearGreedPayloadError(f"{source}: entry {i} timestamp {stamp} is not 00:00 UTC: {entry!r}")
        days.append(datetime.fromtimestamp(stamp, UTC))
        values.append(float(value))
        labels.append(label)
    frame = pl.DataFrame(
        {"day": days, "fear_greed_index": values, "classification": labels}, schema=DAILY_SCHEMA
    )
    duplicated = frame.filter(pl.col("day").is_duplicated())["day"].unique().to_list()
    if duplicated:
        raise FearGreedPayloadError(
            f"{source}: duplicate days {[d.date().isoformat() for d in duplicated[:5]]}"
        )
    return frame.sort("day")


def missing_days(daily: pl.DataFrame) -> list[str]:
    """ISO dates between the first and last day that have no value (the series has real gaps)."""
    if daily.height < 2:
        return []
    expected = pl.datetime_range(daily["day"].min(), daily["day"].max(), "1d", time_zone="UTC", eager=True)
    present = set(daily["day"].to_list())
    return [d.date().isoformat() for d in expected.to_list() if d not in present]


def hourly_index(
    daily: pl.DataFrame, hour_ends: pl.Series, publication_lag: timedelta, max_staleness: timedelta
) -> pl.DataFrame:
    """`fear_greed_index` as known at each hour end: the latest value published at or before it.

    A day's value is published at its 00:00 UTC timestamp + `publication_lag` and only from then on
    usable. Missing days carry the last published value for at most `max_staleness`, then null.
    """
    published = daily.select(
        (pl.col("day") + pl.duration(seconds=publication_lag.total_seconds())).alias("published_at"),
        "fear_greed_index",
    ).sort("published_at")
    rows = pl.DataFrame({"ts": hour_ends}).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    return (
        rows.sort("ts")
        .join_asof(
            published, left_on="ts", right_on="published_at", strategy="backward", tolerance=max_staleness
        )
        .select("ts", "fear_greed_index")
    )
