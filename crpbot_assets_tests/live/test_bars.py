"""The bar builder and the feed's message parsing, on hand-made trades and messages."""

import json
from decimal import Decimal

import pytest

from crpbot_assets.live.bars import GRACE_S, BarBuilder
from crpbot_assets.live.feed import FeedError, Sequence, parse, parse_time
from crpbot_assets.replay.coinbase_ws import go_time, iso_ns, minute_trades

M = 1_790_000_040  # a minute start


def test_a_minute_closes_at_the_next_minutes_first_trade_or_a_heartbeat_past_the_grace():
    bars = BarBuilder()
    assert bars.on_trade(M + 1.0, 100.0, Decimal("0.5"), 0) == []
    assert bars.on_trade(M + 30.0, 104.0, Decimal("0.25"), 0) == []
    assert bars.on_trade(M + 59.9, 99.0, Decimal("0.125"), 0) == []
    assert bars.on_time(M + 60 + GRACE_S - 1e-6) == []  # inside the grace: a late batch may still come
    (bar,) = bars.on_time(M + 60 + GRACE_S)
    assert bar.row() == (M, 100.0, 104.0, 99.0, 99.0, 0.875) and bar.complete
    assert bars.on_trade(M + 59.95, 101.0, Decimal("1"), 0) == [] and bars.late_trades == 1
    bars.on_trade(M + 60.2, 98.0, Decimal("1"), 0)
    (closed,) = bars.on_trade(M + 125.0, 97.0, Decimal("2"), 0)  # a quiet minute between: no bar for it
    assert closed.minute == M + 60 and closed.volume == Decimal("1")
    assert bars.current.minute == M + 120


def test_bars_open_before_a_reconnect_or_a_gap_are_incomplete():
    bars = BarBuilder()
    bars.on_trade(M + 10.0, 100.0, Decimal("1"), 0)
    bars.interrupt(M + 20.0)
    (bar,) = bars.on_trade(M + 61.0, 100.0, Decimal("1"), 0)
    assert not bar.complete and bars.current.complete  # the new minute began after the interruption
    bars.interrupt(M + 100.0)
    (bar,) = bars.on_time(M + 121.0)
    assert not bar.complete


def test_replayed_trades_rebuild_the_candle_exactly():
    from datetime import UTC, datetime, timedelta

    from crpbot_assets.replay import synthetic

    start = datetime(2026, 11, 3, 10, tzinfo=UTC)
    for symbol in ("BTC-USD", "SOL-USD"):
        candles = synthetic.candles(
            symbol, start, start + timedelta(minutes=30), now=start + timedelta(hours=1)
        )
        for ts, o, h, l, c, v in candles.rows():
            minute = int(ts.timestamp())
            trades = minute_trades(symbol, minute)
            bars = BarBuilder()
            for t in trades:
                bars.on_trade(parse_time(t["time"]), float(t["price"]), Decimal(t["size"]), 0)
            (bar,) = bars.on_time(minute + 61)
            assert bar.row() == (minute, o, h, l, c, v)  # exact, volume included


def test_messages_parse_as_recorded_and_losses_show():
    raw = {
        "channel": "market_trades",
        "client_id": "",
        "timestamp": iso_ns(M + 5.5),
        "sequence_num": 7,
        "events": [
            {
                "type": "update",
                "trades": [
                    {
                        "trade_id": "2",
                        "product_id": "BTC-USD",
                        "price": "101.5",
                        "size": "0.1",
                        "side": "BUY",
                        "time": "2026-09-21T13:14:05.600000Z",
                    },
                    {
                        "trade_id": "1",
                        "product_id": "BTC-USD",
                        "price": "101",
                        "size": "0.2",
                        "side": "SELL",
                        "time": "2026-09-21T13:14:05.100000Z",
                    },
                ],
            }
        ],
    }
    message = parse(json.dumps(raw))
    assert [t.trade_id for t in message.trades] == ["1", "2"] and message.time == pytest.approx(M + 5.5)
    assert message.trades[0].time == pytest.approx(parse_time("2026-09-21T13:14:05.1Z"))
    heartbeat = {
        **raw,
        "channel": "heartbeats",
        "sequence_num": 8,
        "events": [{"current_time": go_time(M + 6, 12.5), "heartbeat_counter": "41"}],
    }  # SDK: a string
    beat = parse(json.dumps(heartbeat))
    assert beat.heartbeat_counter == 41
    assert parse_time(heartbeat["events"][0]["current_time"]) == pytest.approx(M + 6)
    sequence = Sequence()
    assert not sequence.check(message) and not sequence.check(beat)
    skipped = parse(json.dumps({**heartbeat, "sequence_num": 10, "events": [{"heartbeat_counter": 42}]}))
    assert sequence.check(skipped)  # sequence_num jumped
    jumped = parse(json.dumps({**heartbeat, "sequence_num": 11, "events": [{"heartbeat_counter": 44}]}))
    assert sequence.check(jumped) and sequence.gaps == 2  # heartbeat_counter jumped
    with pytest.raises(FeedError, match="error"):
        parse(json.dumps({"type": "error", "message": "Failure to subscribe"}))
    with pytest.raises(FeedError, match="malformed trade"):
        parse(json.dumps({**raw, "events": [{"type": "update", "trades": [{"price": "x"}]}]}))


def test_rest_replaces_socket_bars_and_the_differences_are_counted():
    from datetime import UTC, datetime

    import polars as pl

    from crpbot_assets.live.bars import Bar
    from crpbot_assets.live.history import History, bar_frame

    def bar(minute: int, close: float) -> Bar:
        return Bar(minute, 1.0, 2.0, 0.5, close, Decimal("3"), 2, 0.0)

    history = History()
    for minute, close in ((M, 1.5), (M + 60, 1.6), (M + 180, 1.7)):  # the socket saw no M + 120
        history.add_bar(bar(minute, close))
    record = bar_frame([bar(M, 1.5), bar(M + 60, 1.65), bar(M + 120, 1.8)])  # REST: no M + 180
    at = lambda m: datetime.fromtimestamp(m, UTC)  # noqa: E731
    found = history.merge_rest(record, at(M), at(M + 240))
    assert found.as_dict() == {
        "minutes_checked": 4,
        "equal": 1,
        "different": 1,
        "socket_missed": 1,
        "socket_only": 1,
    }
    assert history.frame.equals(record) and history.socket_minutes == set()
    again = history.merge_rest(record, at(M), at(M + 240))  # reconciling REST rows again counts nothing new
    assert (again.socket_missed, again.different, history.reconciliation.socket_missed) == (0, 0, 1)
    assert history.row_after(M + 60)["close"] == 1.8 and history.frame.schema["ts"] == pl.Datetime(
        "us", "UTC"
    )
