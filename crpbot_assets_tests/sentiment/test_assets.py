"""Materializing the sentiment assets against the replay server: posts appended, features for a month."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest

from crpbot_assets.common.io_manager import partition_path
from crpbot_assets.replay import fear_greed as replay_fg
from crpbot_assets.replay import reddit as replay_reddit
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.replay.trends import true_interest
from crpbot_assets.sentiment.assets import (
    fear_greed_index,
    google_trends_hourly,
    reddit_hourly,
    reddit_posts,
    sentiment_features,
)
from crpbot_assets.sentiment.features import FEATURE_COLUMNS
from crpbot_assets.sentiment.reddit import posts_frame
from crpbot_assets.sentiment.vader import compound_scores

from .conftest import reddit_resource

UTC = UTC
ALL = [
    fear_greed_index,
    reddit_posts,
    reddit_hourly,
    google_trends_hourly,
    sentiment_features,
]
FROZEN_NOW = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)


def _materialize(selection, resources, instance, partition_key=None, tags=None):
    result = dg.materialize(
        ALL,
        selection=selection,
        resources=resources,
        instance=instance,
        partition_key=partition_key,
        tags=tags,
    )
    assert result.success
    return result


@pytest.fixture(scope="module")
def frozen_reddit():
    with ReplayServer([replay_reddit.service(clock=FROZEN_NOW.timestamp)]) as server:
        yield server


@pytest.mark.slow  # a month of Google Trends windows at the production pace (4.5/s): ~15 s
def test_sentiment_features_for_a_month(
    sentiment_resources, storage_resources, memory_instance, replay_server
):
    reddit = reddit_resource(
        replay_server.url,
        max_posts=100,
        subreddits={s: ["bitcoin"] for s in ("BTC-USD", "ETH-USD", "SOL-USD")},
    )
    resources = {**sentiment_resources, "reddit": reddit, **storage_resources}
    storage = storage_resources["storage"].storage
    # The previous month's trends, stored on a known scale (0.37 x true): March must continue it.
    tail = pl.datetime_range(
        datetime(2024, 2, 28, tzinfo=UTC),
        datetime(2024, 2, 29, 23, tzinfo=UTC),
        "1h",
        time_zone="UTC",
        eager=True,
    )
    seconds = np.array([int(t.timestamp()) for t in tail.to_list()])
    storage_resources["io_manager"].commit_outside_run(
        memory_instance,
        "google_trends_hourly",
        "2024-02-01",
        pl.DataFrame(
            {
                "ts": tail,
                **{
                    f"search_interest_{s}": 0.37 * true_interest(k, seconds)
                    for s, k in (("btc", "Bitcoin"), ("eth", "Ethereum"), ("sol", "Solana"))
                },
            }
        ),
    )

    _materialize([fear_greed_index], resources, memory_instance)
    result = _materialize([reddit_posts, google_trends_hourly], resources, memory_instance, "2024-03-01")
    posts_meta = result.asset_materializations_for_node("reddit_posts")[0].metadata
    assert (
        posts_meta["served"].value is False and "can no longer be fetched" in posts_meta["explanation"].value
    )
    trends_meta = result.asset_materializations_for_node("google_trends_hourly")[0].metadata
    assert trends_meta["anchored_to_previous_month"].value == {
        "Bitcoin": True,
        "Ethereum": True,
        "Solana": True,
    }

    # Every symbol of the month in one run (a single-run backfill range, as the demo does).
    keys = [str(dg.MultiPartitionKey({"symbol": s, "month": "2024-03-01"})) for s in ("BTC-USD", "SOL-USD")]
    result = _materialize(
        [reddit_hourly, sentiment_features],
        resources,
        memory_instance,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]},
    )
    assert all(check.passed for check in result.get_asset_check_evaluations())
    catalogue = result.asset_materializations_for_node("sentiment_features")[0].metadata["column_catalogue"]
    assert (
        tuple(catalogue.value) == FEATURE_COLUMNS
        and "Hourly points only" in catalogue.value["search_interest_sol"]
    )
    done = {str(m.partition) for m in result.asset_materializations_for_node("sentiment_features")}
    assert done == {
        str(dg.MultiPartitionKey({"symbol": s, "month": "2024-03-01"}))
        for s in ("BTC-USD", "ETH-USD", "SOL-USD")
    }
    frame = storage.read_parquet("sentiment_features/symbol=BTC-USD/month=2024-03-01.parquet")
    # Reddit is null for 2024 and the other sources are market-wide: every symbol sees the same rows.
    assert frame.equals(storage.read_parquet("sentiment_features/symbol=SOL-USD/month=2024-03-01.parquet"))

    assert frame.columns == ["ts", *FEATURE_COLUMNS]
    assert all(frame[c].dtype == pl.Float64 for c in FEATURE_COLUMNS)
    assert frame.height == 31 * 24
    assert frame["ts"][0] == datetime(2024, 3, 1, 1, tzinfo=UTC) and frame["ts"][-1] == datetime(
        2024, 4, 1, tzinfo=UTC
    )
    # Reddit cannot serve 2024: null, never zero.
    assert frame["reddit_volume_1h"].null_count() == frame.height
    # Fear & Greed: each hour end sees the latest value published (00:00 UTC + 1 h) by then.
    published = {day + timedelta(hours=1): float(v) for day, v in replay_fg.history()}
    for ts, value in zip(frame["ts"].to_list(), frame["fear_greed_index"].to_list()):
        latest = max(p for p in published if p <= ts)
        assert value == published[latest]
    # Trends: the value at hour end ts is the hour [ts-1h, ts), on the anchored 0.37 scale.
    starts = np.array([int((t - timedelta(hours=1)).timestamp()) for t in frame["ts"].to_list()])
    ratio = frame["search_interest_sol"].to_numpy() / true_interest("Solana", starts)
    assert np.all(np.abs(ratio / 0.37 - 1) < 0.05)


def test_reddit_posts_append_to_what_is_stored(
    frozen_reddit, sentiment_resources, storage_resources, memory_instance
):
    resource = reddit_resource(
        frozen_reddit.url, max_posts=1000, subreddits={"SOL-USD": ["solana"], "ETH-USD": ["ethereum"]}
    )
    resources = {**sentiment_resources, "reddit": resource, **storage_resources}
    storage = storage_resources["storage"].storage
    relative = partition_path(dg.AssetKey("reddit_posts"), "2026-03-01") + ".parquet"
    month_start = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    listed = [
        p
        for sub in ("ethereum", "solana")
        for p in replay_reddit.newest_posts(sub, FROZEN_NOW.timestamp())
        if p["created_utc"] >= month_start
    ]
    early = {**listed[-1], "id": "zzold1", "score": 7, "retrieved_utc": month_start + 60}  # no longer listed
    stale = {
        **listed[0],
        "score": -5,
        "retrieved_utc": month_start + 120,
    }  # seen before: first observation wins
    storage.write_parquet(relative, posts_frame([early, stale]))

    _materialize([reddit_posts], resources, memory_instance, "2026-03-01")
    posts = storage.read_parquet(relative)
    assert posts["id"].n_unique() == posts.height == len(listed) + 1
    assert posts.filter(pl.col("id") == "zzold1").height == 1
    assert posts.filter(pl.col("id") == stale["id"])["score"].item() == -5
    _materialize([reddit_posts], resources, memory_instance, "2026-03-01")  # polling again adds nothing twice
    assert storage.read_parquet(relative).height == posts.height

    key = dg.MultiPartitionKey({"symbol": "SOL-USD", "month": "2026-03-01"})
    _materialize([reddit_hourly], resources, memory_instance, key)
    hourly = storage.read_parquet("reddit_hourly/symbol=SOL-USD/month=2026-03-01.parquet")
    sol = [p for p in listed if p["subreddit"] == "solana"] + [early] * (early["subreddit"] == "solana")
    listed_sol = [p for p in replay_reddit.newest_posts("solana", FROZEN_NOW.timestamp())]
    assert min(p["created_utc"] for p in listed_sol) < month_start  # so the whole month so far is covered
    engagement_seen = []
    for hour in range(1, 11):
        end = datetime(2026, 3, 1, hour, tzinfo=UTC).timestamp()
        row = hourly.filter(pl.col("ts") == datetime.fromtimestamp(end, UTC)).row(0, named=True)
        in_hour = [p for p in sol if end - 3600 <= p["created_utc"] < end]
        assert row["reddit_volume_1h"] == len(in_hour)  # a covered hour without posts is a real 0
        if not in_hour:
            assert row["reddit_sentiment_1h"] is None and row["reddit_engagement_1h"] == 0
            continue
        assert row["reddit_sentiment_1h"] == pytest.approx(
            np.mean(compound_scores([p["title"] for p in in_hour]))
        )
        # Posts listed by this run were retrieved after every hour checked; only `early` was seen in time.
        seen_by_hour_end = [p["score"] for p in in_hour if p.get("retrieved_utc", float("inf")) <= end]
        assert row["reddit_engagement_1h"] == (sum(seen_by_hour_end) if seen_by_hour_end else None)
        engagement_seen.append(row["reddit_engagement_1h"])
    assert any(value is not None for value in engagement_seen) == (early["subreddit"] == "solana")


def test_reddit_posts_fail_naming_missing_variables(sentiment_resources, storage_resources, memory_instance):
    from crpbot_assets.sentiment.resources import RedditResource

    resource = RedditResource(
        client_id_env="CRPBOT_TEST_NO_ID",
        client_secret_env="CRPBOT_TEST_NO_SECRET",
        user_agent="crpbot-tests",
    )
    result = dg.materialize(
        ALL,
        selection=[reddit_posts],
        resources={**sentiment_resources, "reddit": resource, **storage_resources},
        instance=memory_instance,
        partition_key="2026-03-01",
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "CRPBOT_TEST_NO_ID, CRPBOT_TEST_NO_SECRET" in str(failure.step_failure_data.error)
