"""Reddit: praw for real against the replayed OAuth + listing endpoints, append/dedup, hourly aggregates, sensor."""

import json
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from crpbot_assets.common.http import ApiError, RequestStats
from crpbot_assets.replay import reddit
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.sentiment.reddit import POST_SCHEMA, append_posts, hourly_aggregates, posts_frame
from crpbot_assets.sentiment.resources import MissingCredentialsError, RedditResource
from crpbot_assets.sentiment.sensors import fresh_posts, reddit_new_posts

from .conftest import reddit_resource

UTC = UTC


FROZEN_NOW = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def frozen_reddit():
    """A Reddit replay whose clock stands still, so no post can appear between two sensor ticks."""
    with ReplayServer([reddit.service(clock=FROZEN_NOW.timestamp)]) as server:
        yield server


def test_praw_pages_the_listing_newest_first(replay_server):
    stats = RequestStats()
    posts = reddit_resource(replay_server.url).client().newest_posts("bitcoin", limit=250, stats=stats)
    assert posts.height == 250 and posts["id"].n_unique() == 250 and stats.requests == 3
    assert posts["created_utc"].is_sorted(descending=True)
    assert set(posts["subreddit"]) == {"bitcoin"} and posts["created_utc"].max() <= time.time()

    assert posts.schema == pl.Schema(POST_SCHEMA)
    paths = [path for _, path, _, _ in replay_server.request_log]
    assert paths.count("/api/v1/access_token") == 1 and paths.count("/r/bitcoin/new") == 3


def test_the_replayed_listing_opens_with_old_stickies_beyond_the_limit(replay_server):
    client = reddit_resource(replay_server.url).client()
    raw = list(client.praw.get("r/solana/new", params={"limit": 5}))
    assert len(raw) == 7 and [p.stickied for p in raw[:2]] == [True, True]
    assert raw[0].created_utc < raw[1].created_utc < time.time() - 40 * 86400 < raw[2].created_utc
    assert client.newest_posts("solana", limit=5).height == 5


@pytest.mark.slow  # 10 listing pages at praw's real pacing: ~5 s
def test_listing_stops_at_about_1000_posts(replay_server):
    posts = reddit_resource(replay_server.url, max_posts=5000).client().newest_posts("solana")
    assert posts.height == 1000  # Reddit's listing cap: older history is out of reach


def test_stop_before_ends_paging_early_and_stickies_never_do(frozen_reddit):
    stats = RequestStats()
    cutoff = FROZEN_NOW.timestamp() - 3 * 3600
    posts = (
        reddit_resource(frozen_reddit.url, max_posts=1000)
        .client()
        .newest_posts("cryptocurrency", stop_before=cutoff, stats=stats)
    )
    # Paging stops with the first page that reaches past the cutoff: every post newer than it, and no more pages.
    # The first page opens with two stickies from 45 and 400 days ago: had they counted, paging would have
    # stopped after that page, and they would sit among the posts.
    newer = [
        p for p in reddit.newest_posts("cryptocurrency", FROZEN_NOW.timestamp()) if p["created_utc"] >= cutoff
    ]
    assert posts["created_utc"].min() < cutoff and set(posts["id"]) >= {p["id"] for p in newer}
    assert stats.requests == len(newer) // 100 + 1
    assert not posts["id"].str.starts_with("st").any()
    assert posts["created_utc"].is_sorted(descending=True)
    assert (posts["listed_back_to_utc"] == posts["created_utc"].min()).all()


def test_bad_credentials_and_unknown_subreddit_fail_clearly(replay_server):
    with pytest.raises(Exception, match="401"):
        reddit_resource(replay_server.url, client_secret="invalid").client().newest_posts("bitcoin", limit=5)
    with pytest.raises(ApiError, match="r/nosuchsub not found"):
        reddit_resource(replay_server.url).client().newest_posts("nosuchsub", limit=5)


def test_429_is_retried_then_a_clear_error(replay_server):
    stats = RequestStats()
    client = reddit_resource(replay_server.url).client()
    client.newest_posts("ethereum", limit=1)  # token fetched before the faults are queued
    replay_server.inject("reddit", "429", 2)
    assert client.newest_posts("ethereum", limit=10, stats=stats).height == 10
    assert stats.retries == 2
    impatient = reddit_resource(replay_server.url, max_attempts=3).client()
    impatient.newest_posts("ethereum", limit=1)
    replay_server.inject("reddit", "429", 3)
    with pytest.raises(ApiError, match=r"r/ethereum/new.*gave up after 3 attempts.*TooManyRequests"):
        impatient.newest_posts("ethereum", limit=10)


def test_server_errors_are_retried_by_prawcore_alone(replay_server):
    client = reddit_resource(replay_server.url).client()
    client.newest_posts("bitcoin", limit=1)
    replay_server.clear()
    stats = RequestStats()
    replay_server.inject("reddit", "503", 1)  # prawcore retries a 5xx itself: our loop sees a success
    assert client.newest_posts("bitcoin", limit=5, stats=stats).height == 5 and stats.retries == 0


@pytest.mark.slow  # prawcore's own back-off before its 2nd and 3rd attempts: 2-6 s
def test_server_errors_are_given_up_on_after_prawcores_attempts_alone(replay_server):
    client = reddit_resource(replay_server.url).client()
    client.newest_posts("bitcoin", limit=1)
    replay_server.clear()
    replay_server.inject("reddit", "503", 12)
    with pytest.raises(ApiError, match=r"r/bitcoin/new .*HTTP 503"):
        client.newest_posts("bitcoin", limit=5)
    # prawcore's 3 attempts, not 3 x our 4: one layer retries.
    assert [p for _, p, _, status in replay_server.request_log if status == 503] == ["/r/bitcoin/new"] * 3


def test_malformed_listing_names_the_post(replay_server):
    client = reddit_resource(replay_server.url).client()
    client.newest_posts("solana", limit=1)
    replay_server.inject("reddit", "malformed")
    with pytest.raises(ValueError, match=r"r/solana/new: post '\w+' is malformed"):
        client.newest_posts("solana", limit=10)


def test_missing_credentials_name_every_variable():
    resource = RedditResource(
        client_id_env="CRPBOT_TEST_NO_ID",
        client_secret_env="CRPBOT_TEST_NO_SECRET",
        user_agent="crpbot-tests",
    )
    assert resource.missing_variables() == ["CRPBOT_TEST_NO_ID", "CRPBOT_TEST_NO_SECRET"]
    with pytest.raises(MissingCredentialsError, match="CRPBOT_TEST_NO_ID, CRPBOT_TEST_NO_SECRET"):
        resource.client()


def _post(post_id, created, score=1, sub="bitcoin", title="great", retrieved=None, listed_back_to=None):
    return {
        "listed_back_to_utc": listed_back_to,
        "id": post_id,
        "created_utc": created,
        "subreddit": sub,
        "title": title,
        "score": score,
        "num_comments": 2,
        "retrieved_utc": retrieved or created + 60,
    }


def test_append_dedups_by_id_and_keeps_the_first_observation():
    stored = posts_frame([_post("a", 100.0, score=1), _post("b", 200.0, score=5)])
    new = posts_frame([_post("b", 200.0, score=50, retrieved=9999.0), _post("c", 300.0)])
    merged = append_posts(stored, new)
    assert merged["id"].to_list() == ["a", "b", "c"]
    assert merged.filter(pl.col("id") == "b")["score"].item() == 5
    assert append_posts(pl.DataFrame(), new).height == 2
    # A partition stored before `listed_back_to_utc` existed reads it as null.
    legacy = stored.drop("listed_back_to_utc")
    assert append_posts(legacy, new)["listed_back_to_utc"].null_count() == 3


def test_hourly_aggregates_keep_gaps_null_and_zero_hours_zero():
    start = datetime(2024, 3, 1, tzinfo=UTC)
    t0 = start.timestamp()
    posts = posts_frame(
        [
            _post("a", t0 + 3600 * 1 + 10, score=3),
            _post("b", t0 + 3600 * 2 + 20, score=4),
            _post("c", t0 + 3600 * 2 + 30, score=2, sub="cryptocurrency", listed_back_to=t0 - 100),
            _post("d", t0 + 3600 * 4 + 5, score=1, retrieved=t0 + 3600 * 6 + 1),
            _post("e", t0 + 3600 * 4 + 9, score=1, sub="cryptocurrency", retrieved=t0 + 3600 * 7 + 1),
            _post("x", t0 + 3600 * 2 + 30, score=100, sub="ethereum"),
        ]
    )
    scores = [0.5, -0.1, 0.4, 0.2, 0.0, 0.9]
    hourly = hourly_aggregates(
        posts, scores, ["bitcoin", "cryptocurrency"], start, start + timedelta(hours=8)
    )
    rows = {r["ts"].hour: r for r in hourly.iter_rows(named=True)}
    assert list(rows) == [1, 2, 3, 4, 5, 6, 7, 8]  # hour ends 01:00 .. 08:00
    # Covered from hour end 03:00 to 06:00:01 (r/bitcoin's last retrieval; r/cryptocurrency's is later).
    # r/cryptocurrency's listing reached past the start; r/bitcoin's only to post a at 01:00:10, so the hour
    # 01:00-02:00 was seen only from a on, and observation starts with the hour beginning at 02:00.
    assert rows[2]["reddit_volume_1h"] is None and rows[2]["reddit_sentiment_1h"] is None  # r/bitcoin alone
    assert rows[3]["reddit_volume_1h"] == 2 and rows[3]["reddit_engagement_1h"] == 6
    assert rows[3]["reddit_sentiment_1h"] == pytest.approx(0.15)
    assert rows[4]["reddit_volume_1h"] == 0 and rows[4]["reddit_sentiment_1h"] is None  # covered, no posts
    # Both posts of 04:00-05:00 were first seen after 05:00: their scores would hold later votes.
    assert rows[5]["reddit_volume_1h"] == 2 and rows[5]["reddit_comments_1h"] is None
    assert rows[5]["reddit_engagement_1h"] is None
    assert rows[6]["reddit_volume_1h"] == 0
    assert rows[7]["reddit_volume_1h"] is None  # after the earliest last retrieval
    # A configured subreddit never observed: no coverage at all.
    solo = hourly_aggregates(posts, scores, ["bitcoin", "solana"], start, start + timedelta(hours=8))
    assert solo.drop("ts").null_count().row(0) == (8, 8, 8, 8)


def test_a_partly_observed_hour_is_not_covered():
    start = datetime(2024, 3, 1, tzinfo=UTC)
    t0 = start.timestamp()
    reach = t0 + 3 * 3600 + 17 * 60  # the listing stopped (cap) at a post of 03:17
    posts = posts_frame(
        [
            _post(i, t0 + offset, retrieved=t0 + 9 * 3600, listed_back_to=reach)
            for i, offset in (("a", 3 * 3600 + 17 * 60), ("b", 3 * 3600 + 40 * 60), ("c", 4 * 3600 + 600))
        ]
    )
    hourly = hourly_aggregates(posts, [0.1, 0.2, 0.3], ["bitcoin"], start, start + timedelta(hours=8))
    volume = dict(zip([t.hour for t in hourly["ts"].to_list()], hourly["reddit_volume_1h"].to_list()))
    # 03:00-04:00 held two posts but was observed only from 03:17: not covered, not counted as 2.
    assert volume == {1: None, 2: None, 3: None, 4: None, 5: 1.0, 6: 0.0, 7: 0.0, 8: 0.0}
    # A listing that reached past the month's start covers the month from its first hour.
    reached = posts.with_columns(pl.lit(t0 - 1.0).alias("listed_back_to_utc"))
    hourly = hourly_aggregates(reached, [0.1, 0.2, 0.3], ["bitcoin"], start, start + timedelta(hours=8))
    assert hourly["reddit_volume_1h"].to_list() == [0.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0]


def test_sensor_skips_with_the_reason_when_credentials_are_missing(memory_instance):
    resource = RedditResource(
        client_id_env="CRPBOT_TEST_NO_ID",
        client_secret_env="CRPBOT_TEST_NO_SECRET",
        user_agent_env="CRPBOT_TEST_NO_AGENT",
    )
    result = reddit_new_posts(
        dg.build_sensor_context(instance=memory_instance, resources={"reddit": resource})
    )
    assert isinstance(result, dg.SkipReason)
    assert "CRPBOT_TEST_NO_ID, CRPBOT_TEST_NO_SECRET, CRPBOT_TEST_NO_AGENT" in result.skip_message


def test_sensor_requests_runs_only_for_unseen_posts(memory_instance, frozen_reddit):
    resource = reddit_resource(frozen_reddit.url, subreddits={"BTC-USD": ["bitcoin"], "SOL-USD": ["solana"]})
    first = dg.build_sensor_context(instance=memory_instance, resources={"reddit": resource})
    requests = reddit_new_posts(first)
    # 100 newest posts reach back into February for r/solana (~6 posts/h), not for r/bitcoin.
    assert sorted(r.partition_key for r in requests) == ["2026-02-01", "2026-03-01"]
    cursor = json.loads(first.cursor)
    assert sorted(cursor) == ["bitcoin", "solana"]
    # compact: the newest post time and the ids of the last minutes, not the 100 ids of each page
    assert all(0 < len(state["recent"]) < 10 for state in cursor.values()) and len(first.cursor) < 600

    again = dg.build_sensor_context(
        instance=memory_instance, cursor=first.cursor, resources={"reddit": resource}
    )
    result = reddit_new_posts(again)
    assert isinstance(result, dg.SkipReason) and "no new posts" in result.skip_message

    # Pretend the last tick had not yet seen the 3 newest bitcoin posts: exactly those are new.
    page = resource.client().newest_posts("bitcoin", limit=100)
    _, before = fresh_posts(page["id"].to_list()[3:], page["created_utc"].to_list()[3:], None)
    older = dict(cursor, bitcoin=before)
    later = dg.build_sensor_context(
        instance=memory_instance, cursor=json.dumps(older), resources={"reddit": resource}
    )
    (request,) = reddit_new_posts(later)
    assert request.tags["crpbot/new_posts"] == "3" and request.run_key.startswith(
        f"reddit_posts:{request.partition_key}:"
    )
