"""Reddit posts: the raw post table, append with de-duplication, and hourly sentiment aggregates per symbol."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

POST_SCHEMA = {
    "id": pl.String,
    "created_utc": pl.Float64,
    "subreddit": pl.String,
    "title": pl.String,
    "score": pl.Int64,
    "num_comments": pl.Int64,
    "retrieved_utc": pl.Float64,
    # created_utc of the oldest post the listing that first saw this post reached: it observed every post
    # from there on (null for posts stored before this column existed).
    "listed_back_to_utc": pl.Float64,
}
DEFAULT_SUBREDDITS = {
    "BTC-USD": ["bitcoin", "cryptocurrency"],
    "ETH-USD": ["ethereum", "cryptocurrency"],
    "SOL-USD": ["solana", "cryptocurrency"],
}
HOURLY_COLUMNS = ("reddit_sentiment_1h", "reddit_volume_1h", "reddit_engagement_1h", "reddit_comments_1h")


class RedditPayloadError(ValueError):
    """A listing item without the fields a post needs."""


def posts_frame(rows: list[dict], source: str = "reddit listing") -> pl.DataFrame:
    """Validated raw posts (POST_SCHEMA) from dicts with those keys; errors name the post."""
    clean = []
    for row in rows:
        try:
            clean.append(
                {
                    "id": str(row["id"]),
                    "created_utc": float(row["created_utc"]),
                    "subreddit": str(row["subreddit"]).lower(),
                    "title": str(row["title"]),
                    "score": int(row["score"]),
                    "num_comments": int(row["num_comments"]),
                    "retrieved_utc": float(row["retrieved_utc"]),
                    "listed_back_to_utc": (
                        None if row.get("listed_back_to_utc") is None else float(row["listed_back_to_utc"])
                    ),
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RedditPayloadError(
                f"{source}: post {row.get('id', '?')!r} is malformed ({type(exc).__name__}: {exc})"
            ) from None
    return pl.DataFrame(clean, schema=POST_SCHEMA)


def with_post_schema(posts: pl.DataFrame) -> pl.DataFrame:
    """`posts` in POST_SCHEMA; columns added since a partition was stored read as null."""
    if not posts.width:
        return pl.DataFrame(schema=POST_SCHEMA)
    missing = [
        pl.lit(None, dtype).alias(name) for name, dtype in POST_SCHEMA.items() if name not in posts.columns
    ]
    return posts.with_columns(missing).select(list(POST_SCHEMA)).cast(POST_SCHEMA)


def append_posts(stored: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Stored posts plus unseen new ones, one row per id; the first observation of a post wins."""
    merged = pl.concat([with_post_schema(stored), with_post_schema(new)])
    return merged.unique(subset="id", keep="first", maintain_order=True).sort("created_utc", "id")


def in_window(posts: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Posts created in [start, end)."""
    return posts.filter(pl.col("created_utc").is_between(start.timestamp(), end.timestamp(), closed="left"))


def hourly_aggregates(
    posts: pl.DataFrame, scores: list[float], subreddits: list[str], start: datetime, end: datetime
) -> pl.DataFrame:
    """Hourly rows (`ts` = hour end) of mean VADER compound, post count, score sum and comment sum.

    `scores` are the compound scores of `posts` in row order. An hour is covered when every subreddit was
    observed through all of it: from the latest of the subreddits' observation starts to the earliest of their
    last retrievals (a subreddit without posts covers nothing). A subreddit's observation starts at `start`
    when a listing reached back past it, else at the first hour that begins at or after the oldest post a
    listing reached (`listed_back_to_utc`, else its oldest post): the hour holding that post was seen only
    from the post on, so it is not covered. Covered hours without posts get count 0 and a
    null sentiment; other hours are null throughout: nothing is invented where no listing reached.
    Engagement and comments sum only posts retrieved by the hour's end (a later observation would carry
    votes cast after it); an hour whose posts were all first seen later has them null.
    """
    hours = pl.datetime_range(start, end, "1h", closed="right", time_zone="UTC", eager=True).alias("ts")
    frame = pl.DataFrame({"ts": hours}).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    wanted = sorted({s.lower() for s in subreddits})
    scored = (
        with_post_schema(posts)
        .with_columns(pl.Series("compound", scores, dtype=pl.Float64))
        .filter(pl.col("subreddit").is_in(wanted))
    )
    scored = scored.with_columns(
        (
            pl.from_epoch(pl.col("created_utc").cast(pl.Int64), time_unit="s")
            .dt.replace_time_zone("UTC")
            .dt.truncate("1h")
            .dt.cast_time_unit("us")
            + pl.duration(hours=1)
        ).alias("ts")
    )
    spans = scored.group_by("subreddit").agg(
        pl.coalesce(pl.col("listed_back_to_utc").min(), pl.col("created_utc").min()).alias("reach"),
        pl.col("retrieved_utc").max().alias("last"),
    )
    if spans.height < len(wanted):
        return frame.with_columns([pl.lit(None, pl.Float64).alias(c) for c in HOURLY_COLUMNS])
    reach = spans["reach"].max()  # the subreddit observed from the latest point on decides
    first_hour_start = (
        start
        if reach < start.timestamp()
        else datetime.fromtimestamp(-(-reach // 3600) * 3600, tz=start.tzinfo)
    )
    first_hour_end = first_hour_start + timedelta(hours=1)
    observed_until = datetime.fromtimestamp(spans["last"].min(), tz=start.tzinfo)
    # Scores and comment counts grow after posting: only observations made by the hour's end may count.
    seen_in_time = pl.col("retrieved_utc") <= pl.col("ts").dt.epoch("s")
    agg = scored.group_by("ts").agg(
        pl.col("compound").mean().alias("reddit_sentiment_1h"),
        pl.len().cast(pl.Float64).alias("reddit_volume_1h"),
        *[
            pl.when(seen_in_time.any())
            .then(pl.col(source).filter(seen_in_time).sum().cast(pl.Float64))
            .alias(name)
            for source, name in (("score", "reddit_engagement_1h"), ("num_comments", "reddit_comments_1h"))
        ],
    )
    covered = pl.col("ts").is_between(first_hour_end, observed_until)
    no_posts = pl.col("reddit_volume_1h").is_null()
    counts = ("reddit_volume_1h", "reddit_engagement_1h", "reddit_comments_1h")
    return (
        frame.join(agg, on="ts", how="left", maintain_order="left")
        .with_columns(
            [
                pl.when(covered & no_posts).then(0.0).when(covered).then(pl.col(c)).otherwise(None).alias(c)
                for c in counts
            ]
            + [
                pl.when(covered)
                .then(pl.col("reddit_sentiment_1h"))
                .otherwise(None)
                .alias("reddit_sentiment_1h")
            ]
        )
        .select("ts", *HOURLY_COLUMNS)
    )
