"""The candles client against the replay server: paging, pacing, retries and strict payload validation."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from crpbot_assets.candles.client import CandlePayloadError, Page, page_plan, parse_page
from crpbot_assets.common.http import ApiError
from crpbot_assets.replay import synthetic
from crpbot_assets_tests.candles.conftest import fast_coinbase

UTC = UTC
FEB = datetime(2019, 2, 1, tzinfo=UTC)
MAR = datetime(2019, 3, 1, tzinfo=UTC)


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def test_page_plan_covers_the_month_exactly():
    pages = page_plan(FEB, MAR)
    assert len(pages) == 135  # 28 * 1440 / 300 = 134.4
    assert pages[0].first == FEB and pages[-1].last == MAR - minutes(1)
    for before, after in zip(pages, pages[1:]):
        assert after.first == before.last + minutes(1)  # contiguous: no gap, no overlap
    assert all((p.last - p.first) / minutes(1) + 1 <= 300 for p in pages)
    assert sum(int((p.last - p.first) / minutes(1)) + 1 for p in pages) == 28 * 1440
    with pytest.raises(ValueError, match="minute-aligned"):
        page_plan(FEB + timedelta(seconds=30), MAR)
    with pytest.raises(ValueError, match="timezone-aware"):
        page_plan(datetime(2019, 2, 1), MAR)


def test_full_month_equals_the_served_series(fast):
    client = fast_coinbase(fast).client()
    result = client.fetch("BTC-USD", FEB, MAR)
    expected = synthetic.candles("BTC-USD", FEB, MAR)
    assert result.frame.equals(expected.select(result.frame.columns))  # identical rows, order and dtypes
    assert result.frame.height < 28 * 1440  # the series has gaps, and they stay gaps
    assert result.pages == result.requests == fast.stats["coinbase"]["requests"] == 135
    assert fast.stats["coinbase"]["max_in_flight"] >= 2  # pages really go out concurrently


@pytest.mark.slow  # 40 requests at the real 10/s: ~4 s
def test_pacing_honours_the_rate_limit(replay_server):
    """At Coinbase's 10/s against a server enforcing 10/s (burst 15): no 429s, never faster than the limit."""
    client = fast_coinbase(replay_server, requests_per_second=10.0, max_workers=None).client()
    result = client.fetch("ETH-USD", FEB, FEB + minutes(300 * 40))
    times = sorted(t for t, path, _, _ in replay_server.request_log if path.endswith("/candles"))
    assert result.requests == len(times) == 40 and result.retries == 0
    assert replay_server.stats["coinbase"].get("rate_limited", 0) == 0
    assert (len(times) - 1) / (times[-1] - times[0]) <= 10 * 1.05
    busiest = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert busiest <= 12  # 10/s plus the first token and arrival jitter


def test_429_5xx_and_timeouts_are_survived(replay_server):
    for fault, count in (("500", 2), ("429", 1), ("503", 1), ("timeout", 1)):
        replay_server.inject("coinbase", fault, count)
    client = fast_coinbase(replay_server, requests_per_second=10.0, timeout_s=0.5).client()
    start = datetime(2021, 6, 1, tzinfo=UTC)
    result = client.fetch("SOL-USD", start, start + minutes(300 * 8))
    assert result.retries == 5 and result.requests == 8 + 5
    stats = replay_server.stats["coinbase"]
    assert (
        stats["fault_500"] == 2
        and stats["fault_429"] == 1
        and stats["fault_503"] == 1
        and stats["fault_timeout"] == 1
    )
    assert result.frame.equals(synthetic.candles("SOL-USD", start, start + minutes(300 * 8)))


def test_exhausted_retries_raise_naming_the_request(replay_server):
    replay_server.inject("coinbase", "500", 3)
    client = fast_coinbase(replay_server, max_attempts=3).client()
    with pytest.raises(
        ApiError, match=r"/products/BTC-USD/candles.*2019-02-01T00:00:00Z.*gave up after 3 attempts"
    ):
        client.fetch("BTC-USD", FEB, FEB + minutes(300))


def test_malformed_payload_raises_naming_the_request(fast):
    fast.inject("coinbase", "malformed", 1)
    client = fast_coinbase(fast).client()
    with pytest.raises(
        CandlePayloadError, match=r"GET .*/products/BTC-USD/candles params=.*start.*non-numeric"
    ):
        client.fetch("BTC-USD", FEB, FEB + minutes(1500))


def test_a_200_message_object_shows_the_services_message(fast):
    fast.inject("coinbase", "message", 1)
    with pytest.raises(
        CandlePayloadError,
        match=r"GET .*/products/BTC-USD/candles params=.*: the API answered 'Internal error: try again later'",
    ):
        fast_coinbase(fast).client().fetch("BTC-USD", FEB, FEB + minutes(300))


def test_empty_pages_between_full_ones_are_kept_and_counted(fast):
    client = fast_coinbase(fast, max_workers=1).client()
    full = client.fetch("BTC-USD", FEB, FEB + minutes(900))
    assert full.empty_pages == 0
    fast.inject("coinbase", "empty", 1)  # with one worker the first page is the one answered empty
    result = client.fetch("BTC-USD", FEB, FEB + minutes(900))
    assert result.pages == 3 and result.empty_pages == 1 and result.retries == 0
    assert result.frame.equals(full.frame.filter(pl.col("ts") >= FEB + minutes(300)))


def test_unknown_symbol_is_a_clear_error(fast):
    client = fast_coinbase(fast).client()
    with pytest.raises(ApiError, match=r"/products/DOGE-USD/candles.*HTTP 404"):
        client.fetch("DOGE-USD", FEB, FEB + minutes(300))


PAGE = Page(FEB + minutes(10), FEB + minutes(14))
T0 = int(PAGE.first.timestamp())


def row(ts, low=1.0, high=2.0, open_=1.5, close=1.5, volume=3.0):
    return [ts, low, high, open_, close, volume]


def test_parse_page_drops_the_documented_leak_before_start():
    rows = parse_page([row(T0 + 240), row(T0), row(T0 - 60)], PAGE, "req")
    assert rows[:, 0].tolist() == [T0 + 240, T0]


@pytest.mark.parametrize(
    "payload, problem",
    [
        ({"message": "oops"}, "the API answered 'oops' instead of candles"),
        ({"error": "oops"}, "expected a JSON list"),
        ([row(T0)[:5]], "row 0 is not"),
        ([row(T0), row(T0 + 60, high="2.0")], "row 1 holds a non-numeric"),
        ([row(T0, volume=True)], "non-numeric"),
        ([row(T0, close=float("nan"))], "non-finite"),
        ([row(T0 + 30)], "not minute-aligned"),
        ([row(T0 + 300)], "outside the requested window"),
        ([row(T0 - 3600)], "outside the requested window"),
        ([row(T0 + 60), row(T0 + 60, close=1.9)], "row 1 repeats time"),
    ],
)
def test_parse_page_rejects_bad_payloads(payload, problem):
    with pytest.raises(CandlePayloadError, match=f"GET x: .*{problem}"):
        parse_page(payload, PAGE, "GET x")


def test_parse_page_of_empty_window():
    assert parse_page([], PAGE, "req").shape == (0, 6)
