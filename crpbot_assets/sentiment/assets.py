"""Sentiment assets: Fear & Greed (daily), Reddit posts and hourly aggregates, Google Trends, and the joined
hourly `sentiment_features` per symbol-month."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl

from crpbot_assets.common import checks
from crpbot_assets.common.automation import (
    SENTIMENT_FRESHNESS,
    on_input_update,
    on_input_update_latest_only_for,
)
from crpbot_assets.common.commits import STAMP_KEY
from crpbot_assets.common.http import RequestStats
from crpbot_assets.common.io_manager import concat_partitions, partition_path
from crpbot_assets.common.locks import exclusive
from crpbot_assets.common.months import month_end, month_key, month_window, previous_month
from crpbot_assets.common.partitions import month_partitions, split_key, symbol_month_partitions
from crpbot_assets.common.plots import line_plot
from crpbot_assets.common.ranges import run_partitions
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.sentiment.checks import SENTIMENT_CHECKS
from crpbot_assets.sentiment.fear_greed import hourly_index, missing_days
from crpbot_assets.sentiment.features import CATALOGUE, FEATURE_COLUMNS, TS, assemble, hour_ends, utc_hour
from crpbot_assets.sentiment.reddit import POST_SCHEMA, append_posts, hourly_aggregates, in_window
from crpbot_assets.sentiment.resources import FearGreedResource, GoogleTrendsResource, RedditResource
from crpbot_assets.sentiment.trends import COLUMNS, KEYWORDS, SERIES_SCHEMA, as_of_hour_ends, revisions
from crpbot_assets.sentiment.trends_client import TrendsClient
from crpbot_assets.sentiment.vader import compound_scores

GROUP = "sentiment"
by_month = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="month")


@dg.asset(group_name=GROUP, kinds={"polars", "parquet"}, pool="alternative_me")
def fear_greed_index(context: dg.AssetExecutionContext, fear_greed: FearGreedResource) -> pl.DataFrame:
    """alternative.me Crypto Fear & Greed Index, one row per published day: `day` (00:00 UTC),
    `fear_greed_index` (0-100), `classification`. The whole history, refreshed daily by `fear_greed_daily`.
    Days the source lacks stay absent (listed in metadata).
    """
    # Kept whole rather than partitioned: the API serves only "the last N days" (no date range), so one
    # request returns the full ~3,000-day history; per-month partitions would each re-download all of it.
    daily, stats = fear_greed.client().history(log=context.log.warning)
    gaps = missing_days(daily)
    recent = daily.tail(365)
    context.add_output_metadata(
        {
            "rows": daily.height,
            "first_day": str(daily["day"].min().date()) if daily.height else "none",
            "last_day": str(daily["day"].max().date()) if daily.height else "none",
            "latest_value": daily["fear_greed_index"][-1] if daily.height else None,
            "missing_days": len(gaps),
            "missing_days_sample": ", ".join(gaps[:20]) or "none",
            "requests": stats.requests,
            "retries": stats.retries,
            "last_365_days": line_plot(
                {"index": recent["fear_greed_index"].to_list()},
                "Fear & Greed, last 365 days",
                "day",
                "index (0-100)",
            ),
        }
    )
    context.log.info(f"fear & greed: {daily.height} days, {len(gaps)} missing days")
    return daily


@dg.asset(
    partitions_def=month_partitions,
    group_name=GROUP,
    kinds={"reddit", "parquet"},
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="reddit",
)
def reddit_posts(
    context: dg.AssetExecutionContext, reddit: RedditResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Raw Reddit posts created in the month, from every configured subreddit: `id, created_utc, subreddit,
    title, score, num_comments, retrieved_utc` (first observation; later polls never overwrite it).
    Posts accumulate over materializations (triggered by the `reddit_new_posts` sensor), because Reddit
    listings hold only the newest ~1000 posts. A month the listings no longer reach and nothing was stored
    for is an empty frame with `served: False` and the reason.
    """
    # Each materialization reads the partition's stored posts, appends the unseen ones (de-duplicated by id)
    # and rewrites the file atomically itself (at the IO manager's path, where downstream assets load it),
    # all under the partition's lock: two runs of one month (sensor ticks, a backfill) take turns, so a slow
    # writer never overwrites posts another run stored meanwhile. The lock lives with the storage
    # (`Storage.lock_folder`): on local disk every process sharing the data folder shares it, whichever Dagster
    # instance runs it. S3 has no file lock: there the lock covers one instance's processes on one machine
    # ($DAGSTER_HOME/locks), and writers on several hosts are serialized only by the `reddit` pool (one step
    # at a time) of the one instance they share; two instances writing one S3 store are not protected.
    client = reddit.client()
    files = storage.storage
    stats = RequestStats()
    earliest = min(month_window(str(k))[0] for k in context.partition_keys)
    subreddits = reddit.all_subreddits()
    listings = {}
    for i, sub in enumerate(subreddits, 1):  # one pass over the listings serves every month of the run
        listings[sub] = client.newest_posts(
            sub, stop_before=earliest.timestamp(), stats=stats, log=context.log.warning
        )
        context.log.info(f"r/{sub}: {listings[sub].height} posts listed ({i}/{len(subreddits)} subreddits)")

    def build(key: str) -> None:
        relative = partition_path(context.asset_key, key) + ".parquet"
        lock = f"reddit_posts-{relative}"
        with exclusive(lock, log=context.log.info, folder=files.lock_folder()) as waited:
            stored = (
                files.read_parquet(relative) if files.exists(relative) else pl.DataFrame(schema=POST_SCHEMA)
            )
            merged, metadata = _merge_month(key, listings, stored, stats)
            uri = files.write_parquet(relative, merged)
            stamp = files.stamp(relative)
        # The record carries the file's stamp, as the IO manager's writes do (common/commits.py).
        metadata.update(
            {"path": dg.MetadataValue.path(uri), STAMP_KEY: dg.MetadataValue.text(stamp)},
            lock_wait_s=round(waited, 3),
        )
        context.log.info(f"{key}: {merged.height} posts ({merged.height - stored.height} new)")
        context.add_asset_metadata(metadata, partition_key=key)

    run_partitions(context, build)
    return dg.MaterializeResult()


def _merge_month(
    key: str, listings: dict[str, pl.DataFrame], stored: pl.DataFrame, stats: RequestStats
) -> tuple[pl.DataFrame, dict]:
    """The month's stored posts plus the listed ones created in it, and the partition's metadata."""
    start, end = month_window(key)
    reach = {}
    for sub, posts in listings.items():
        oldest = posts["created_utc"].min() if posts.height else None
        reach[sub] = (
            "month start"
            if oldest is not None and oldest < start.timestamp()
            else (datetime.fromtimestamp(oldest, UTC).isoformat() if oldest is not None else "nothing listed")
        )
    merged = append_posts(stored, in_window(pl.concat(list(listings.values())), start, end))
    served = merged.height > 0 or datetime.now(UTC) < start
    metadata = {
        "posts": merged.height,
        "new_posts": merged.height - stored.height,
        "previously_stored": stored.height,
        "listings_reach_back_to": dg.MetadataValue.json(reach),
        "requests_in_run": stats.requests,
        "retries_in_run": stats.retries,
        "served": served,
    }
    if not served:
        metadata["explanation"] = (
            f"Reddit listings keep only the newest ~1000 posts per subreddit and reach "
            f"back only to {reach}; posts of {key[:7]} can no longer be fetched and none "
            "were accumulated earlier"
        )
    return merged, metadata


@dg.asset(
    partitions_def=symbol_month_partitions,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={"reddit_posts": dg.AssetIn(partition_mapping=by_month, metadata={"allow_missing_partitions": True})},
    automation_condition=on_input_update(),
)
def reddit_hourly(
    context: dg.AssetExecutionContext, reddit: RedditResource, reddit_posts: dict[str, pl.DataFrame]
):
    """Hourly Reddit aggregates of the symbol's subreddits: `ts` (hour end), mean VADER compound of titles,
    post count, score sum, comment count. Null outside the span the listings covered; 0 posts in a
    covered hour is a real zero (sentiment null)."""
    all_posts = concat_partitions(reddit_posts, empty=pl.DataFrame(schema=POST_SCHEMA))

    def build(key: str):
        symbol, start = split_key(key)
        subreddits = reddit.subreddits_of(symbol)
        posts = in_window(all_posts, start, month_end(start)).filter(
            pl.col("subreddit").is_in([s.lower() for s in subreddits])
        )
        hourly = hourly_aggregates(
            posts, compound_scores(posts["title"].to_list()), subreddits, start, month_end(start)
        )
        covered = hourly.filter(pl.col("reddit_volume_1h").is_not_null())
        metadata = {
            "posts": posts.height,
            "subreddits": ", ".join(subreddits),
            "covered_hours": covered.height,
            "mean_sentiment": covered["reddit_sentiment_1h"].mean() if covered.height else None,
        }
        if covered.height > 1:
            metadata["sentiment"] = line_plot(
                {"VADER compound": covered["reddit_sentiment_1h"].fill_null(0.0).to_list()},
                f"{symbol} Reddit sentiment per hour",
                "hour",
                "compound",
            )
        context.add_asset_metadata(metadata, partition_key=key)
        return hourly

    return run_partitions(context, build)


@dg.asset(
    partitions_def=month_partitions,
    group_name=GROUP,
    kinds={"pytrends", "parquet"},
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="google_trends",
    ins={
        "previous": dg.AssetIn(
            "google_trends_hourly",
            metadata={"allow_missing_partitions": True},
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        )
    },
)
def google_trends_hourly(
    context: dg.AssetExecutionContext,
    google_trends: GoogleTrendsResource,
    storage: StorageResource,
    previous: dict,
):
    """Hourly Google search interest for Bitcoin, Ethereum and Solana: `ts` (hour start; the value is final
    at the hour's end), `search_interest_btc/eth/sol` on one stitched scale (overlapping 7-day windows, see
    `sentiment.trends`), and `retrieved_at`, when the hour's value was fetched.

    Hours already stored keep their first observation: a refresh of the month in progress fetches only the
    hours since, linked to the stored ones, so a value once served never changes. For the month in progress
    a value counts only from `retrieved_at` on; a month fetched after it ended is final. When the previous
    month is materialized its last day anchors the scale, so consecutive months share it. Metadata
    `revision_*` is how much the re-fetched overlap hours moved against their stored values."""
    built: dict[str, pl.DataFrame] = {}
    client = google_trends.client()  # one pace for every keyword and month of the run
    files = storage.storage

    def build(key: str):
        start, month_stop = month_window(key)
        before = month_key(previous_month(start))
        relative = partition_path(context.asset_key, key) + ".parquet"
        stored = files.read_parquet(relative) if files.exists(relative) else None
        frame, metadata = _trends_month(
            context, client, start, month_stop, built.get(before, previous.get(before)), stored
        )
        built[key] = frame
        context.add_asset_metadata(metadata, partition_key=key)
        return frame

    return run_partitions(context, build)


def _keyword_series(frame: pl.DataFrame | None, column: str) -> pl.DataFrame:
    """(`ts`, `value`, `retrieved_at`) of one keyword's column in a stored partition, non-null values only."""
    if frame is None or column not in frame.columns:
        return pl.DataFrame(schema=SERIES_SCHEMA)
    retrieved = pl.col("retrieved_at") if "retrieved_at" in frame.columns else pl.lit(None)
    return (
        frame.select("ts", pl.col(column).alias("value"), retrieved.alias("retrieved_at"))
        .drop_nulls("value")
        .cast(SERIES_SCHEMA)
    )


def _trends_month(
    context: dg.AssetExecutionContext,
    client: TrendsClient,
    start: datetime,
    month_stop: datetime,
    prior: pl.DataFrame | None,
    stored: pl.DataFrame | None,
) -> tuple[pl.DataFrame, dict]:
    """One month of hourly interest for every keyword: the `stored` hours as they are, the hours after them
    fetched and linked to them (or to `prior`, the month before, when it covers the overlap)."""
    end = min(month_stop, utc_hour(client.now()))
    overlap = timedelta(hours=client.overlap_hours)
    stats = RequestStats()
    anchored = {}
    hours_by_keyword = {}
    moved = []
    hours = pl.datetime_range(start, month_stop, "1h", closed="left", time_zone="UTC", eager=True).cast(TS)
    frame = pl.DataFrame({"ts": hours.filter(hours < end)})
    for i, (symbol, keyword) in enumerate(KEYWORDS.items(), 1):
        column = COLUMNS[symbol]
        kept = _keyword_series(stored, column).filter(pl.col("ts").is_between(start, end, closed="left"))
        before = _keyword_series(prior, column).filter(pl.col("ts") >= start - overlap)
        if before.height < client.overlap_hours // 2:
            before = before.clear()
        anchor = pl.concat([before, kept]) if before.height or kept.height else None
        anchored[keyword] = before.height > 0
        fetch_from = kept["ts"].max() + timedelta(hours=1) if kept.height else start
        fresh = pl.DataFrame(schema=SERIES_SCHEMA)
        if fetch_from < end:
            series = client.hourly_interest(
                keyword, fetch_from, end, anchor=anchor, stats=stats, log=context.log.info
            )
            if anchor is not None:
                moved.append(revisions(anchor, series))
            fresh = series.filter(pl.col("ts").is_between(fetch_from, end, closed="left"))
        hours_by_keyword[keyword] = {"kept": kept.height, "fetched": fresh.height}
        frame = frame.join(
            pl.concat([kept, fresh]).rename({"value": column, "retrieved_at": f"retrieved_{column}"}),
            on="ts",
            how="left",
            maintain_order="left",
        )
        context.log.info(
            f"{start:%Y-%m}: {keyword} {kept.height} hours kept, {fresh.height} fetched ({i}/{len(KEYWORDS)})"
        )
    retrieved = [f"retrieved_{c}" for c in COLUMNS.values()]
    frame = frame.with_columns(pl.max_horizontal(retrieved).alias("retrieved_at")).drop(retrieved)
    for column in COLUMNS.values():
        if column not in frame.columns:  # a month that has not started yet
            frame = frame.with_columns(pl.lit(None, pl.Float64).alias(column))
    frame = frame.select("ts", *COLUMNS.values(), pl.col("retrieved_at").cast(TS))
    changes = pl.concat(moved)["revision"].abs() if moved else pl.Series([], dtype=pl.Float64)
    metadata = {
        "rows": frame.height,
        "anchored_to_previous_month": dg.MetadataValue.json(anchored),
        "hours": dg.MetadataValue.json(hours_by_keyword),
        # Values fetched while the month was in progress: usable only from their retrieval on.
        "preliminary_hours": frame.filter(pl.col("retrieved_at") < month_stop).height,
        "revision_hours": changes.len(),
        "revision_median_abs_pct": round(100 * changes.median(), 3) if changes.len() else None,
        "revision_max_abs_pct": round(100 * changes.max(), 3) if changes.len() else None,
        "requests": stats.requests,
        "retries": stats.retries,
    }
    if frame.height > 1:
        metadata["interest"] = line_plot(
            {c: frame[c].fill_null(0.0).to_list() for c in COLUMNS.values()},
            "Search interest (stitched scale)",
            "hour of month",
            "interest",
        )
    return frame, metadata


class SentimentFeaturesConfig(dg.Config):
    fear_greed_publication_lag_hours: float = 1.0
    """A day's index (stamped 00:00 UTC) is treated as published this long after midnight."""
    fear_greed_max_staleness_hours: float = 26.0
    """The latest published index is used for at most this long; a missing day then reads null."""
    trends_max_staleness_hours: float = 8.0
    """In the month in progress, the latest search interest retrieved (refreshed every 6 hours) is used for at
    most this long after its retrieval; a final month gives each hour end exactly the hour just ended."""


@dg.asset(
    partitions_def=symbol_month_partitions,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={"google_trends_hourly": dg.AssetIn(partition_mapping=by_month)},
    automation_condition=on_input_update_latest_only_for("fear_greed_index"),
    freshness_policy=SENTIMENT_FRESHNESS,
    check_specs=checks.specs("sentiment_features", SENTIMENT_CHECKS, symbol_month_partitions),
)
def sentiment_features(
    context: dg.AssetExecutionContext,
    config: SentimentFeaturesConfig,
    reddit_hourly: dict[str, pl.DataFrame],
    fear_greed_index: pl.DataFrame,
    google_trends_hourly: dict[str, pl.DataFrame],
):
    """Hourly sentiment per symbol-month: `ts` = end of the hour (the instant the row becomes usable) and
    exactly reddit_sentiment_1h, reddit_volume_1h, reddit_engagement_1h, fear_greed_index,
    search_interest_btc/eth/sol (Float64, null without coverage). Search interest is the latest hour retrieved
    by the row's end (in a finished, backfilled month: the hour just ended). Join 1-minute rows with
    `join_asof(on="ts", strategy="backward")` after shifting each minute to its close."""
    lag = timedelta(hours=config.fear_greed_publication_lag_hours)
    staleness = timedelta(hours=config.fear_greed_max_staleness_hours)
    trends_staleness = timedelta(hours=config.trends_max_staleness_hours)

    def build(key: str):
        symbol, start = split_key(key)
        hours = hour_ends(start, month_end(start))
        trends = as_of_hour_ends(
            google_trends_hourly[month_key(start)],
            hours,
            month_end(start),
            list(COLUMNS.values()),
            trends_staleness,
        )
        frame = assemble(
            hours, reddit_hourly[key], hourly_index(fear_greed_index, hours, lag, staleness), trends
        )
        nulls = {
            c: round(frame[c].null_count() / frame.height, 4) if frame.height else 1.0
            for c in FEATURE_COLUMNS
        }
        metadata = {
            "rows": frame.height,
            "null_share": dg.MetadataValue.json(nulls),
            "first_ts": str(frame["ts"].min()) if frame.height else "none",
            "last_ts": str(frame["ts"].max()) if frame.height else "none",
            "column_catalogue": dg.MetadataValue.json(CATALOGUE),
        }
        if frame.height > 1:
            metadata["fear_greed_and_search"] = line_plot(
                {
                    "fear & greed": frame["fear_greed_index"].fill_null(float("nan")).to_list(),
                    "search interest": frame[COLUMNS[symbol]].fill_null(float("nan")).to_list(),
                },
                f"{symbol} hourly sentiment",
                "hour of month",
                "value",
            )
        context.add_asset_metadata(metadata, partition_key=key)
        return frame

    value = run_partitions(context, build, checks=SENTIMENT_CHECKS)
    yield dg.Output(value)
    yield from checks.evaluate(context, value, SENTIMENT_CHECKS)
