"""Declarative automation, evaluated by Dagster's own evaluator over sequences of updates (no daemon)."""

from datetime import UTC, datetime

import dagster as dg
import pytest
import requests

from crpbot_assets.common.http import ApiError, RequestStats, RetryPolicy, get_json
from crpbot_assets.common.partitions import symbol_month_key
from crpbot_assets.definitions import defs
from crpbot_assets.sentiment.sensors import fresh_posts

NOW = datetime(2026, 5, 15, 12, 0, tzinfo=UTC)  # a Friday; month in progress 2026-05
MARCH, APRIL, MAY = (datetime(2026, m, 1, tzinfo=UTC) for m in (3, 4, 5))


def key(symbol: str, month: datetime) -> str:
    return str(symbol_month_key(symbol, month))


class Ticks:
    """Successive automation ticks on one instance, carrying the evaluator's cursor."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance
        self.cursor = None

    def materialize(self, asset: str, *partitions: str | None) -> None:
        for partition in partitions or (None,):
            self.instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))

    def tick(self, when: datetime = NOW) -> dict[str, set[str | None]]:
        """{asset: requested partition keys} of one evaluation."""
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=self.instance, evaluation_time=when, cursor=self.cursor
        )
        self.cursor = result.cursor
        return {
            r.key.to_user_string(): {str(k) for k in r.true_subset.expensively_compute_partition_keys()}
            if r.true_subset.is_partitioned
            else {None}
            for r in result.results
            if r.true_subset.size
        }


@pytest.fixture
def ticks(memory_instance):
    ticks = Ticks(memory_instance)
    assert ticks.tick() == {}  # first evaluation: nothing is requested retroactively
    return ticks


def test_late_warm_up_month_recomputes_that_features_month_and_nothing_else(ticks):
    ticks.materialize("candles", key("BTC-USD", APRIL))
    # April's features were never computed and their warm-up month (March) is missing: wait for it
    assert ticks.tick() == {}
    ticks.materialize("features", key("BTC-USD", APRIL))  # computed by hand without warm-up
    assert ticks.tick() == {}
    ticks.materialize("candles", key("BTC-USD", MARCH))  # the warm-up month arrives later
    # April recomputes; March's features never existed and its own warm-up (February) is missing
    assert ticks.tick() == {"features": {key("BTC-USD", APRIL)}}
    assert ticks.tick() == {}  # handled: not requested again


def test_month_in_progress_follows_its_candles_and_the_next_month_is_not_requested_to_fail(ticks):
    ticks.materialize("candles", key("ETH-USD", MARCH), key("ETH-USD", APRIL))
    # April: never computed, both inputs present; March waits for February (never computed)
    assert ticks.tick() == {"features": {key("ETH-USD", APRIL)}}
    ticks.materialize("features", key("ETH-USD", APRIL))
    assert ticks.tick() == {}
    ticks.materialize("candles", key("ETH-USD", APRIL))  # an hourly refresh of the latest fetched month
    # April recomputes; May (downstream of April through the warm-up) has no candles of its own yet
    assert ticks.tick() == {"features": {key("ETH-USD", APRIL)}}
    ticks.materialize("features", key("ETH-USD", APRIL))
    ticks.materialize("candles", key("ETH-USD", MAY))  # the month in progress gets candles
    assert ticks.tick() == {"features": {key("ETH-USD", MAY)}}


def test_reddit_posts_flow_to_sentiment_features_of_the_month_in_progress(ticks):
    ticks.materialize("fear_greed_index")
    ticks.materialize("google_trends_hourly", "2026-05-01")
    assert ticks.tick() == {}  # reddit_hourly, the other input of sentiment_features, is missing
    ticks.materialize("reddit_posts", "2026-05-01")
    both = {key(symbol, MAY) for symbol in ("BTC-USD", "ETH-USD", "SOL-USD")}
    # reddit_hourly follows its posts; sentiment_features follows reddit_hourly in the same tick
    assert ticks.tick() == {"reddit_hourly": both, "sentiment_features": both}
    ticks.materialize("reddit_hourly", *both)
    ticks.materialize("sentiment_features", *both)
    assert ticks.tick() == {}
    ticks.materialize("reddit_posts", "2026-05-01")  # the sensor appended posts
    assert ticks.tick() == {"reddit_hourly": both, "sentiment_features": both}


def test_daily_fear_and_greed_refreshes_only_the_latest_month_of_sentiment(ticks):
    ticks.materialize("fear_greed_index")
    ticks.materialize("google_trends_hourly", "2026-04-01", "2026-05-01")
    ticks.materialize("reddit_hourly", key("BTC-USD", APRIL), key("BTC-USD", MAY))
    assert ticks.tick() == {"sentiment_features": {key("BTC-USD", APRIL), key("BTC-USD", MAY)}}
    ticks.materialize("sentiment_features", key("BTC-USD", APRIL), key("BTC-USD", MAY))
    assert ticks.tick() == {}
    ticks.materialize("fear_greed_index")  # the daily refresh of the whole history
    assert ticks.tick() == {"sentiment_features": {key("BTC-USD", MAY)}}


def test_training_chain_retrains_on_its_weekly_cron_not_on_every_candle(ticks):
    for asset in ("candles", "features", "sentiment_features"):
        ticks.materialize(asset, key("BTC-USD", MAY))
    ticks.materialize("fear_greed_index")
    assert "training_dataset" not in ticks.tick()  # Friday: candles alone never retrain
    monday = datetime(2026, 5, 18, 3, 30, tzinfo=UTC)  # after the default cron's tick (Mon 03:00 UTC)
    for asset in ("candles", "features", "sentiment_features"):
        ticks.materialize(asset, key("BTC-USD", MAY))
    requested = ticks.tick(monday)
    chain = {"training_dataset": {"BTC-USD"}, "lstm_model": {"BTC-USD"}, "model_evaluation": {"BTC-USD"}}
    assert {k: v for k, v in requested.items() if k in chain} == chain
    assert "training_dataset" not in ticks.tick(monday.replace(hour=4))  # once per cron tick


def test_the_fold_of_the_month_in_progress_follows_complete_months_only(ticks):
    window = [
        datetime(2025 + (4 + k) // 12, (4 + k) % 12 + 1, 1, tzinfo=UTC) for k in range(12)
    ]  # 2025-05..2026-04
    for asset in ("candles", "features", "sentiment_features"):
        ticks.materialize(asset, *(key("BTC-USD", m) for m in window[:-1]))
    assert "fold_model" not in ticks.tick()  # April, the last month of its window, is not there yet
    for asset in ("candles", "features", "sentiment_features"):
        ticks.materialize(asset, key("BTC-USD", APRIL))
    requested = ticks.tick()
    assert requested.get("fold_model") == {key("BTC-USD", MAY)}  # the model that will trade May
    assert "promoted_model" not in ticks.tick()  # May waits for its fold model (no transient demotion)
    ticks.materialize("fold_model", key("BTC-USD", MAY))
    assert ticks.tick().get("promoted_model") == {key("BTC-USD", MAY)}  # judged even without a record
    ticks.materialize("promoted_model", key("BTC-USD", MAY))
    for asset in ("candles", "features", "sentiment_features"):  # the hourly refresh of the month in progress
        ticks.materialize(asset, key("BTC-USD", MAY))
    requested = ticks.tick()
    assert "fold_model" not in requested and "promoted_model" not in requested


def test_sensor_cursor_is_a_high_water_mark_and_the_ids_of_the_last_minutes():
    ids = [f"p{i}" for i in range(100)]
    created = [1_000_000.0 - 60 * i for i in range(100)]  # newest first, one a minute
    fresh, state = fresh_posts(ids, created, None)
    assert len(fresh) == 100 and state["hwm"] == 1_000_000.0
    assert sorted(state["recent"]) == sorted(ids[:11])  # within RECENT_S (600 s) of the newest post
    # next tick: two newer posts, and one from 5 minutes before the mark that the listing reveals late
    later_ids = ["n1", "n0", "late", *ids[:50]]
    later_created = [1_000_120.0, 1_000_060.0, 999_700.0, *created[:50]]
    fresh, state = fresh_posts(later_ids, later_created, state)
    assert fresh == [("n1", 1_000_120.0), ("n0", 1_000_060.0), ("late", 999_700.0)]
    assert state["hwm"] == 1_000_120.0 and "late" in state["recent"] and "p10" not in state["recent"]
    assert fresh_posts(later_ids, later_created, state)[0] == []  # nothing new twice
    # a legacy cursor (the ids of the last page) still counts exactly those ids as seen
    fresh, state = fresh_posts(ids[:5], created[:5], ids[2:5])
    assert [post_id for post_id, _ in fresh] == ["p0", "p1"] and state["hwm"] == created[0]


def test_sustained_429s_are_retried_within_a_total_wait_budget_and_the_wait_is_reported(replay_server):
    url = f"{replay_server.url}/products/BTC-USD/candles"
    params = {"granularity": 60, "start": "2019-02-01T00:00:00Z", "end": "2019-02-01T04:59:00Z"}
    replay_server.inject("coinbase", "429", 8)  # more 429s in a row than max_attempts allows
    stats = RequestStats()
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.2, max_rate_limited_wait_s=30)
    rows = get_json(requests.Session(), url, params=params, policy=policy, stats=stats)
    assert len(rows) == 300 and stats.retries == 8 and stats.requests == 9
    # each 429 carried Retry-After: 0.1, honoured; 1e-9 absorbs float summation (8 x 0.1 sums to 0.7999...)
    assert stats.waited_s >= 8 * 0.1 - 1e-9
    replay_server.inject("coinbase", "429", 50)
    short = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.2, max_rate_limited_wait_s=1.0)
    with pytest.raises(
        ApiError, match=r"gave up after \d+ attempts; last problem: HTTP 429 \(\d\.\ds of back-off\)"
    ):
        get_json(requests.Session(), url, params=params, policy=short)
