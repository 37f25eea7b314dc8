"""Coinbase Advanced Trade's public market-data WebSocket, replayed: `market_trades` and `heartbeats` on a clock.

Wire format (see ../shared/notes/data-sources.md): one channel per `{"type": "subscribe", "product_ids": [...],
"channel": ...}`, answered by a `subscriptions` message; every message an envelope `{"channel", "client_id",
"timestamp", "sequence_num", "events"}` with `sequence_num` increasing per connection; `market_trades` events carry
`trades: [{"trade_id", "product_id", "price", "size", "side", "time"}]` (numbers as strings), a `snapshot` of recent
trades first, then `update`s collected over 250 ms; `heartbeats` every second with `current_time` (Go's time
format) and an integer `heartbeat_counter`. A connection that subscribed to no `heartbeats` and was sent nothing
for 60-90 s is closed, as the real channels are.

The trades are the replay's REST candles taken apart (`minute_trades`): the first trade of a minute is its open,
the last its close, two others its high and low, the sizes (decimal strings) add up exactly to its volume, so
1-minute bars built from the stream equal the candles `GET /products/{id}/candles` serves for the same minutes
(same seed, same clock). A minute without a candle has no trade.

Rudeness, queued with `inject(fault)`: "drop" (the TCP connection is cut without a close frame), "gap" (one
message is lost: `sequence_num` skips and its trades never arrive), "stall" (nothing, heartbeats included, for
`stall_s`, then the connection is closed), "burst" (`burst_s` of messages held back, then sent at once).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import OrderedDict, deque
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

import numpy as np

from crpbot_assets.common.symbols import SYMBOLS
from crpbot_assets.live.clock import Clock
from crpbot_assets.replay import synthetic

FAULTS = ("drop", "gap", "stall", "burst")
# Mean delay of a minute's first trade after the minute starts, in seconds (unverified: liquid pairs trade
# several times a second on Coinbase; the replay's minutes hold 4-12 trades, so the rest are spread out).
FIRST_TRADE_MEAN_S = {"BTC-USD": 0.08, "ETH-USD": 0.12, "SOL-USD": 0.2}
SIZE_QUANTUM = Decimal("1e-8")


def iso_ns(unix: float) -> str:
    """`2026-12-04T20:31:26.122969572Z`: Coinbase's envelope timestamp (nanoseconds)."""
    whole = int(unix // 1)
    nanos = int(round((unix - whole) * 1e9))
    whole, nanos = whole + nanos // 1_000_000_000, nanos % 1_000_000_000
    return f"{datetime.fromtimestamp(whole, UTC):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def go_time(unix: float, monotonic: float) -> str:
    """`2026-12-04 20:31:56.121961769 +0000 UTC m=+91717.525857105`: a heartbeat's `current_time`."""
    return iso_ns(unix).replace("T", " ").rstrip("Z") + f" +0000 UTC m=+{monotonic:.9f}"


def _split_volume(volume: float, weights: np.ndarray) -> list[str]:
    """Decimal sizes, one per weight, whose exact sum is the decimal value of `volume`'s repr."""
    total = Decimal(repr(float(volume)))
    quantum = min(SIZE_QUANTUM, Decimal(1).scaleb(total.as_tuple().exponent))
    parts = [(total * Decimal(repr(float(w)))).quantize(quantum, ROUND_DOWN) for w in weights[:-1]]
    return [str(p) for p in parts] + [str(total - sum(parts, Decimal(0)))]


def minute_trades(symbol: str, minute: int, seed: int = 0) -> list[dict]:
    """The trades of `symbol` in the minute starting at unix second `minute`, oldest first, wire-shaped
    (plus `_t`, the trade time as unix seconds); [] when the replay has no candle for that minute."""
    start = datetime.fromtimestamp(minute, UTC)
    frame = synthetic.candles(
        symbol, start, start + timedelta(minutes=1), seed, now=start + timedelta(minutes=1)
    )
    if frame.height == 0:
        return []
    _, o, h, l, c, v = frame.row(0)
    rng = np.random.default_rng([seed, SYMBOLS.index(symbol), minute // 60, 19])
    k = int(rng.integers(4, 13))
    first = min(float(rng.exponential(FIRST_TRADE_MEAN_S.get(symbol, 0.2))), 2.0) + 0.001
    offsets = np.sort(rng.uniform(first, 59.95, k - 1))
    offsets = np.concatenate([[first], np.maximum.accumulate(offsets + np.arange(1, k) * 1e-5)])
    prices = rng.uniform(l, h, k)
    prices[0], prices[-1] = o, c
    high_at, low_at = rng.choice(np.arange(1, k - 1), 2, replace=False)
    prices[high_at], prices[low_at] = h, l
    sizes = _split_volume(v, rng.dirichlet(np.ones(k)))
    sides = rng.choice(["BUY", "SELL"], k)
    trades = []
    for j in range(k):
        t = minute + float(offsets[j])
        trades.append(
            {
                "trade_id": str(minute // 60 * 100 + j),
                "product_id": symbol,
                "price": repr(float(prices[j])),
                "size": sizes[j],
                "side": str(sides[j]),
                "time": iso_ns(round(t, 6)).replace("000Z", "Z"),  # microseconds, like recorded messages
                "_t": round(t, 6),
            }
        )
    return trades


class _TradeBook:
    """Trades by minute, generated on demand (small LRU cache)."""

    def __init__(self, seed: int):
        self.seed = seed
        self._cache: OrderedDict[tuple[str, int], list[dict]] = OrderedDict()

    def minute(self, symbol: str, minute: int) -> list[dict]:
        key = (symbol, minute)
        if key not in self._cache:
            self._cache[key] = minute_trades(symbol, minute, self.seed)
            if len(self._cache) > 64:
                self._cache.popitem(last=False)
        return self._cache[key]

    def between(self, symbols, after: float, until: float) -> list[dict]:
        """Trades with after < time <= until, oldest first."""
        out = []
        for minute in range(int(after // 60) * 60, int(until // 60) * 60 + 1, 60):
            for symbol in symbols:
                out += [t for t in self.minute(symbol, minute) if after < t["_t"] <= until]
        return sorted(out, key=lambda t: (t["_t"], t["trade_id"]))

    def recent(self, symbols, until: float, count: int) -> list[dict]:
        """The last `count` trades at or before `until` (the subscription snapshot)."""
        return self.between(symbols, until - 180.0, until)[-count:]


def _wire(trades: list[dict]) -> list[dict]:
    """Newest first, as recorded messages list them (order within a message: unverified), without `_t`."""
    return [{k: v for k, v in t.items() if k != "_t"} for t in reversed(trades)]


class CoinbaseFeed:
    """The replayed WebSocket on loopback (its own thread and event loop); a context manager."""

    def __init__(
        self,
        seed: int = 0,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        batch_s: float = 0.25,
        heartbeat_s: float = 1.0,
        snapshot_trades: int = 50,
        idle_close_s: tuple[float, float] = (60.0, 90.0),
        stall_s: float = 120.0,
        burst_s: float = 3.0,
    ):
        self.seed, self.clock = seed, clock or Clock()
        self.host, self.port = host, port
        self.batch_s, self.heartbeat_s, self.snapshot_trades = batch_s, heartbeat_s, snapshot_trades
        self.idle_close_s, self.stall_s, self.burst_s = idle_close_s, stall_s, burst_s
        self._book = _TradeBook(seed)
        self._faults: deque[str] = deque()
        self._lock = threading.Lock()
        self.stats = {"connections": 0, "messages": 0, "trades": 0, "faults": 0, "idle_closed": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def inject(self, fault: str, count: int = 1) -> None:
        """Act out `fault` on the next `count` batches of any subscribed connection."""
        if fault not in FAULTS:
            raise ValueError(f"unknown WebSocket fault {fault!r}; choose from {FAULTS}")
        with self._lock:
            self._faults.extend([fault] * count)

    def _next_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def start(self) -> CoinbaseFeed:
        self._thread = threading.Thread(target=self._run, name="replay-coinbase-ws", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the replayed Coinbase WebSocket did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> CoinbaseFeed:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        self._run()

    def _run(self) -> None:
        from websockets.asyncio.server import serve

        async def main():
            self._loop = asyncio.get_running_loop()
            async with serve(self._connection, self.host, self.port, ping_interval=None) as server:
                self._server = server
                self.port = server.sockets[0].getsockname()[1]
                self._started.set()
                await server.wait_closed()

        asyncio.run(main())

    async def _connection(self, ws) -> None:
        session = _Session(self, ws)
        self.stats["connections"] += 1
        from websockets.exceptions import ConnectionClosed

        reader = asyncio.create_task(session.read())
        try:
            await session.write()
        except ConnectionClosed:
            pass  # the client went away
        finally:
            reader.cancel()


class _Session:
    """One client connection: its subscriptions, sequence numbers and heartbeat counter."""

    def __init__(self, feed: CoinbaseFeed, ws):
        self.feed, self.ws, self.clock = feed, ws, feed.clock
        self.sequence = 0
        self.heartbeat_counter = 0
        self.trade_products: list[str] = []
        self.heartbeats = False
        self.cursor: float | None = None  # trades up to this time were sent (or lost)
        self.outbox: list[str] = []
        self.last_sent = self.clock.now()
        self.idle_limit = random.Random(feed.seed).uniform(*feed.idle_close_s)
        self.born = self.clock.now()

    def envelope(self, channel: str, events: list[dict], now: float) -> str:
        message = {
            "channel": channel,
            "client_id": "",
            "timestamp": iso_ns(now),
            "sequence_num": self.sequence,
            "events": events,
        }
        self.sequence += 1
        return json.dumps(message)

    async def read(self) -> None:
        async for raw in self.ws:
            try:
                request = json.loads(raw)
                kind, channel = request["type"], request["channel"]
                products = list(request.get("product_ids", []))
            except (ValueError, KeyError, TypeError):
                await self.ws.send(
                    json.dumps({"type": "error", "message": f"malformed request: {raw!r:.200}"})
                )
                continue
            now = self.clock.now()
            unknown = [p for p in products if p not in SYMBOLS]
            if (
                kind not in ("subscribe", "unsubscribe")
                or channel not in ("market_trades", "heartbeats")
                or unknown
            ):
                await self.ws.send(
                    json.dumps({"type": "error", "message": f"Failure to subscribe: {channel} {unknown}"})
                )
                continue
            new = []
            if channel == "heartbeats":
                self.heartbeats = kind == "subscribe"
            elif kind == "subscribe":
                new = [p for p in products if p not in self.trade_products]
                self.trade_products += new
                if self.cursor is None:
                    self.cursor = now
            else:
                self.trade_products = [p for p in self.trade_products if p not in products]
            subscriptions = {"market_trades": self.trade_products}
            if self.heartbeats:
                subscriptions["heartbeats"] = ["heartbeats"]
            self.outbox.append(self.envelope("subscriptions", [{"subscriptions": subscriptions}], now))
            if new:
                snapshot = self.feed._book.recent(new, now, self.feed.snapshot_trades)
                events = [{"type": "snapshot", "trades": _wire(snapshot)}]
                self.outbox.append(self.envelope("market_trades", events, now))

    async def write(self) -> None:
        feed = self.feed
        next_heartbeat = self.clock.now()
        held_until = None
        while True:
            await asyncio.sleep(self.clock.wall_seconds(feed.batch_s))
            now = self.clock.now()
            fault = feed._next_fault() if self.trade_products or self.heartbeats else None
            if fault:
                feed.stats["faults"] += 1
            if fault == "drop":
                self.ws.transport.abort()
                return
            if fault == "stall":
                await asyncio.sleep(self.clock.wall_seconds(feed.stall_s))
                await self.ws.close(1011, "no updates")
                return
            if fault == "burst":
                held_until = now + feed.burst_s
            if self.trade_products and self.cursor is not None:
                trades = feed._book.between(self.trade_products, self.cursor, now)
                self.cursor = now
                if trades:
                    message = self.envelope(
                        "market_trades", [{"type": "update", "trades": _wire(trades)}], now
                    )
                    if fault == "gap":
                        fault = None  # lost: its sequence number is spent, its trades never arrive
                    else:
                        self.outbox.append(message)
                        feed.stats["trades"] += len(trades)
            if self.heartbeats and now >= next_heartbeat:
                self.heartbeat_counter += 1
                event = {
                    "current_time": go_time(now, now - self.born),
                    "heartbeat_counter": self.heartbeat_counter,
                }
                self.outbox.append(self.envelope("heartbeats", [event], now))
                next_heartbeat += feed.heartbeat_s * max(
                    1, int((now - next_heartbeat) // feed.heartbeat_s) + 1
                )
            if fault == "gap":  # nothing to lose in this batch: the next one with trades goes
                with feed._lock:
                    feed._faults.appendleft("gap")
            if held_until is not None and now < held_until:
                continue
            held_until = None
            if self.outbox:
                messages, self.outbox = self.outbox, []
                for message in messages:
                    await self.ws.send(message)
                feed.stats["messages"] += len(messages)
                self.last_sent = now
            elif not self.heartbeats and now - self.last_sent >= self.idle_limit:
                feed.stats["idle_closed"] += 1
                await self.ws.close(1000, "no updates in the subscribed channels")
                return
