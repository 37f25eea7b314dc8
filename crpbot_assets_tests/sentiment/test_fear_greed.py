"""Fear & Greed: the wire format from the replay, validation, missing days, causal hourly alignment."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from crpbot_assets.common.http import ApiError
from crpbot_assets.replay import fear_greed as replay_fg
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.sentiment.fear_greed import (
    FearGreedPayloadError,
    hourly_index,
    missing_days,
    parse_payload,
)
from crpbot_assets.sentiment.resources import FearGreedResource

UTC = UTC


# Half a minute after midnight UTC: the moment a test reading the wall clock could disagree with the server.
FROZEN_NOW = datetime(2026, 3, 1, 0, 0, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def frozen_fear_greed():
    """A Fear & Greed replay whose clock stands at FROZEN_NOW."""
    with ReplayServer([replay_fg.service(clock=FROZEN_NOW.timestamp)]) as server:
        yield FearGreedResource(base_url=server.url, base_delay_s=0.05)


def test_history_parses_the_replayed_wire_format(frozen_fear_greed):
    daily, stats = frozen_fear_greed.client().history()
    expected = replay_fg.history(today=FROZEN_NOW)
    assert daily.height == len(expected) and stats.requests == 1
    assert daily["day"].is_sorted() and daily["day"].n_unique() == daily.height
    assert daily["day"][0] == datetime(2018, 2, 1, tzinfo=UTC)
    assert daily["day"][-1] == datetime(2026, 3, 1, tzinfo=UTC)  # today's value is out from 00:00 UTC
    assert list(zip(daily["day"].to_list(), daily["fear_greed_index"].to_list())) == expected
    assert set(daily["classification"].unique()) <= {
        "Extreme Fear",
        "Fear",
        "Neutral",
        "Greed",
        "Extreme Greed",
    }


def test_missing_days_are_reported_not_filled(sentiment_resources):
    daily, _ = sentiment_resources["fear_greed"].client().history()
    assert missing_days(daily) == ["2018-04-14", "2018-04-15", "2018-04-16"]
    assert daily.filter(
        pl.col("day").dt.date().cast(pl.String).is_in(["2018-04-14", "2018-04-15"])
    ).is_empty()


def test_malformed_payload_from_the_server_names_the_entry(sentiment_resources, replay_server):
    replay_server.inject("fear_greed", "malformed")
    with pytest.raises(FearGreedPayloadError, match=r"fng.*entry \d+ is malformed.*'n/a'"):
        sentiment_resources["fear_greed"].client().history()


def test_429_is_retried_then_a_clear_error(sentiment_resources, replay_server):
    replay_server.inject("fear_greed", "429", 2)
    daily, stats = sentiment_resources["fear_greed"].client().history()
    assert daily.height > 3000 and stats.retries == 2
    replay_server.inject("fear_greed", "429", 5)
    with pytest.raises(ApiError, match=r"/fng/.*gave up after 5 attempts.*HTTP 429"):
        sentiment_resources["fear_greed"].client().history()


@pytest.mark.parametrize(
    "payload, problem",
    [
        ({"name": "x"}, "expected an object with a `data` list"),
        ({"data": [], "metadata": {"error": "Invalid limit"}}, "API reported an error: Invalid limit"),
        (
            {"data": [{"value": "140", "value_classification": "Greed", "timestamp": "1551139200"}]},
            "outside 0..100",
        ),
        (
            {"data": [{"value": "40", "value_classification": "Fear", "timestamp": "1551139201"}]},
            "not 00:00 UTC",
        ),
        ({"data": [{"value": "40", "timestamp": "1551139200"}]}, "entry 0 is malformed"),
        (
            {"data": [{"value": "40", "value_classification": "Fear", "timestamp": "1551139200"}] * 2},
            "duplicate days",
        ),
    ],
)
def test_validation_rejects_bad_payloads(payload, problem):
    with pytest.raises(FearGreedPayloadError, match=problem):
        parse_payload(payload, source="test payload")


def _daily(values: dict[str, float]) -> pl.DataFrame:
    payload = {
        "data": [
            {
                "value": str(int(v)),
                "value_classification": "x",
                "timestamp": str(int(datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp())),
            }
            for d, v in values.items()
        ]
    }
    return parse_payload(payload)


def test_hourly_alignment_has_no_look_ahead():
    daily = _daily({"2024-03-01": 10, "2024-03-02": 20, "2024-03-04": 40})  # 03-03 missing
    hours = pl.datetime_range(
        datetime(2024, 3, 1, 1, tzinfo=UTC),
        datetime(2024, 3, 5, tzinfo=UTC),
        "1h",
        time_zone="UTC",
        eager=True,
    )
    lag = timedelta(hours=1)
    out = hourly_index(daily, hours, lag, timedelta(hours=26))
    value = dict(zip(out["ts"].to_list(), out["fear_greed_index"].to_list()))
    at = lambda *a: value[datetime(2024, 3, *a, tzinfo=UTC)]  # noqa: E731
    assert at(2, 0) == 10  # the hour ending at midnight cannot see the new day
    assert at(2, 1) == 20  # usable from publication (00:00 + 1 h) on
    assert at(3, 3) == 20 and at(4, 0) is None  # day 3 missing: stale value expires after 26 h, then null
    assert at(4, 1) == 40
    # Causality in general: each row's value was published at or before the row's ts.
    published = daily.select((pl.col("day") + lag).alias("published_at"), "fear_greed_index")
    for ts, v in value.items():
        if v is not None:
            assert published.filter((pl.col("published_at") <= ts) & (pl.col("fear_greed_index") == v)).height


def test_zero_lag_and_truncated_history_agree_on_the_past():
    daily = _daily({f"2024-03-{d:02d}": 10 + d for d in range(1, 20)})
    hours = pl.datetime_range(
        datetime(2024, 3, 1, 1, tzinfo=UTC),
        datetime(2024, 3, 20, tzinfo=UTC),
        "1h",
        time_zone="UTC",
        eager=True,
    )
    full = hourly_index(daily, hours, timedelta(hours=1), timedelta(hours=26))
    cut = datetime(2024, 3, 10, 5, tzinfo=UTC)
    truncated = hourly_index(
        daily.filter(pl.col("day") + timedelta(hours=1) <= cut),
        hours,
        timedelta(hours=1),
        timedelta(hours=26),
    )
    assert full.filter(pl.col("ts") <= cut).equals(truncated.filter(pl.col("ts") <= cut))
