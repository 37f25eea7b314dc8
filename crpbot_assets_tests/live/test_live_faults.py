"""crpbot-live through the replayed feed's rudeness (fast clock, 30x): a dropped connection, a sequence gap, a
silent feed, the feed gone (connections refused), and a model promoted while it runs. The service runs in a thread of the test process."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from crpbot_assets.candles.client import CandlesClient
from crpbot_assets.live.ledger import read_records
from crpbot_assets.live.service import LiveService
from crpbot_assets.replay.coinbase_ws import CoinbaseFeed
from crpbot_assets_tests.live.conftest import ORIGIN, World, promote, wait_for

pytestmark = pytest.mark.slow
SYMBOLS = ["BTC-USD", "ETH-USD"]


def decisions(service: LiveService) -> list[dict]:
    return [r for r in read_records(service.ledger.path) if r["kind"] == "decision"]


def test_drop_gap_and_silence_are_recovered_from_rest_and_a_stale_feed_stops_trading(
    tmp_path, fold, decisive_fold
):
    promote(tmp_path / "data", "BTC-USD", fold)  # ETH-USD: promoted_model not materialized yet
    with World(speed=30, stall_s=60.0) as world:
        world.seed_cache(tmp_path, SYMBOLS, ORIGIN - timedelta(minutes=30))
        # no periodic reconciliation: only the gap fills can make the history equal REST
        settings = world.settings(tmp_path, SYMBOLS, model_poll_s=5.0, reconcile_every_s=1e9)
        service = LiveService(settings, world.clock)
        service.load()
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(decisions(service)) >= 2, 30, "two decisions")
            assert {r["symbol"] for r in decisions(service)} == {"BTC-USD"}
            # a model promoted while running is picked up without a restart
            version = promote(tmp_path / "data", "ETH-USD", decisive_fold)
            wait_for(
                lambda: any(r["symbol"] == "ETH-USD" for r in decisions(service)), 30, "ETH-USD deciding"
            )
            assert any(a["kind"] == "model_changed" and a["symbol"] == "ETH-USD" for a in service.alerts)
            assert {r["model_version"] for r in decisions(service) if r["symbol"] == "ETH-USD"} == {version}

            def decided_after(stamp: float):
                return lambda: (
                    {r["symbol"] for r in decisions(service) if r["decided_at"] > stamp} == set(SYMBOLS)
                )

            world.feed.inject("drop")
            wait_for(
                lambda: service.stats.disconnects >= 1 and service.stats.connections >= 2, 30, "a reconnect"
            )
            wait_for(decided_after(world.clock.now()), 30, "decisions after the reconnect")
            world.feed.inject("gap")
            wait_for(lambda: service.stats.gaps >= 1, 30, "the sequence gap")
            wait_for(decided_after(world.clock.now()), 30, "decisions after the gap")
            world.feed.inject("stall")
            wait_for(lambda: any(a["kind"] == "resumed" for a in service.alerts), 60, "trading resumed")
            wait_for(decided_after(world.clock.now()), 30, "decisions after the silence")
            # the feed itself gone for a while (connections refused): stale, then back on the same address
            world.feed.stop()
            wait_for(
                lambda: sum(a["kind"] == "stale" for a in service.alerts) == 2, 30, "stale while refused"
            )
            world.feed = CoinbaseFeed(clock=world.clock, port=world.feed.port).start()
            wait_for(lambda: sum(a["kind"] == "resumed" for a in service.alerts) == 2, 60, "resumed again")
            wait_for(decided_after(world.clock.now()), 30, "decisions after the outage")
        finally:
            service.stop()
            thread.join(30)
        stale = next(a for a in service.alerts if a["kind"] == "stale")
        resumed = next(a for a in service.alerts if a["kind"] == "resumed")
        assert (
            service.stats.stale_episodes >= 1 and service.stats.connections >= 3
        )  # drop, silence: reconnected
        assert not [r for r in decisions(service) if stale["at"] < r["decided_at"] < resumed["at"]]  # stopped
        # Every minute since the service started equals the REST record: the socket's missing minutes and the
        # minute whose trades the gap lost were replaced by REST candles before any decision used them.
        rest = CandlesClient(world.rest.url, 2000, burst=2000)
        for symbol in SYMBOLS:
            history = service.histories[symbol]
            start = (ORIGIN - timedelta(minutes=30)).replace(second=0)
            end = datetime.fromtimestamp(history.last_minute() + 60, UTC)
            record = rest.fetch(symbol, start, end).frame
            assert history.frame.filter(pl.col("ts") >= start).equals(record), symbol
            mine = [r for r in decisions(service) if r["symbol"] == symbol]
            assert len({r["minute"] for r in mine}) == len(mine)
        assert service.stats.rest_fills >= 3 * len(SYMBOLS)


def test_the_replayed_feed_closes_a_channel_without_heartbeats_and_bursts_keep_bars_exact():
    """Without a heartbeats subscription a channel with nothing to send is closed within 60-90 s; with one it stays
    open. A burst (3 s of messages held back, then sent at once) changes no bar."""
    import json as json_

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from crpbot_assets.live.bars import BarBuilder
    from crpbot_assets.live.feed import FeedConnection

    with World(speed=60) as world:

        def open_for(channels: list[str]) -> float:
            """Clock seconds until the server closed a connection subscribed to nothing to send (capped)."""
            opened = world.clock.now()
            with connect(world.feed.url) as ws:
                for channel in channels:
                    ws.send(json_.dumps({"type": "subscribe", "product_ids": [], "channel": channel}))
                while world.clock.now() - opened < 120:
                    try:
                        ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    except ConnectionClosed:
                        break
            return world.clock.now() - opened

        assert 60 <= open_for(["market_trades"]) <= 95
        assert open_for(["market_trades", "heartbeats"]) >= 120
        builder, bars = BarBuilder(), []
        with FeedConnection(world.feed.url, ["BTC-USD"]) as conn:
            builder.interrupt(world.clock.now())
            world.feed.inject("burst", 3)
            until = world.clock.now() + 200
            while world.clock.now() < until:
                message = conn.recv(0.2)
                if message is None:
                    continue
                assert not conn.sequence.check(message)  # held back, not lost
                if message.snapshot:
                    continue
                for trade in message.trades:
                    bars += builder.on_trade(trade.time, trade.price, trade.size, 0)
                bars += builder.on_time(message.time)
        assert world.feed.stats["faults"] == 3  # the bursts happened
        complete = [b for b in bars if b.complete]
        assert len(complete) >= 2
        rest = CandlesClient(world.rest.url, 2000, burst=2000)
        first, last = (datetime.fromtimestamp(b.minute, UTC) for b in (complete[0], complete[-1]))
        record = rest.fetch("BTC-USD", first, last + timedelta(minutes=1)).frame
        assert [(int(r[0].timestamp()), *r[1:]) for r in record.rows()] == [b.row() for b in complete]
