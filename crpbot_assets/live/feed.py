"""Coinbase Advanced Trade market-data WebSocket client: `market_trades` + `heartbeats`, messages parsed and
checked for loss. Built on the `websockets` library's synchronous client (README: why not the SDK's WSClient).

`parse` turns one message into a `Message` (envelope fields, trades, heartbeat counter) or raises FeedError naming
what is wrong. `Sequence` watches one connection: `sequence_num` must increase by one per message and
`heartbeat_counter` by one per heartbeat; a jump is a `gap` (messages were lost between the two feed times).
`FeedConnection` opens a connection and subscribes; `recv(timeout)` returns a Message or None.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

CHANNELS = ("market_trades", "heartbeats")
PROD_WS_URL = "wss://advanced-trade-ws.coinbase.com"


class FeedError(RuntimeError):
    """A message the feed should not send (malformed, or an error from the service)."""


@dataclass(frozen=True)
class Trade:
    product: str
    trade_id: str
    price: float
    size: Decimal
    time: float  # unix seconds


@dataclass(frozen=True)
class Message:
    channel: str
    sequence: int
    time: float  # the envelope's timestamp, unix seconds
    trades: list[Trade] = field(default_factory=list)
    snapshot: bool = False
    heartbeat_counter: int | None = None


def parse_time(value: str) -> float:
    """Unix seconds of `2026-12-04T20:31:26.122969572Z` or Go's `2026-12-04 20:31:26.1229 +0000 UTC m=+1.2`."""
    text = value.replace("T", " ").split(" +")[0].rstrip("Z")
    whole, _, fraction = text.partition(".")
    try:
        date, clock = whole.split(" ")
        y, mo, d = (int(x) for x in date.split("-"))
        h, mi, s = (int(x) for x in clock.split(":"))
        frac = float("0." + fraction) if fraction else 0.0
    except ValueError as exc:
        raise FeedError(f"unreadable time {value!r}") from exc
    return calendar.timegm((y, mo, d, h, mi, s)) + frac


def _trade(raw: dict) -> Trade:
    try:
        return Trade(
            raw["product_id"],
            str(raw["trade_id"]),
            float(raw["price"]),
            Decimal(raw["size"]),
            parse_time(raw["time"]),
        )
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise FeedError(f"malformed trade {raw!r:.200}: {type(exc).__name__}: {exc}") from exc


def parse(raw: str | bytes) -> Message:
    """One WebSocket message -> Message; FeedError for an error message or a malformed one."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise FeedError(f"message is not JSON: {raw[:200]!r}") from exc
    if body.get("type") == "error":
        raise FeedError(f"the feed answered an error: {body.get('message')!r}")
    try:
        channel, sequence, time = body["channel"], int(body["sequence_num"]), parse_time(body["timestamp"])
        events = body["events"]
    except (KeyError, TypeError, ValueError) as exc:
        raise FeedError(f"message without a valid envelope: {str(raw)[:200]!r}") from exc
    if channel == "market_trades":
        trades = [_trade(t) for e in events for t in e.get("trades", [])]
        snapshot = any(e.get("type") == "snapshot" for e in events)
        return Message(channel, sequence, time, sorted(trades, key=lambda t: (t.time, t.trade_id)), snapshot)
    if channel == "heartbeats":
        counters = [int(e["heartbeat_counter"]) for e in events if "heartbeat_counter" in e]  # int or string
        return Message(channel, sequence, time, heartbeat_counter=counters[-1] if counters else None)
    return Message(channel, sequence, time)


class Sequence:
    """Loss detection on one connection: `check(message)` is True when messages were lost before it."""

    def __init__(self):
        self.sequence: int | None = None
        self.heartbeat: int | None = None
        self.gaps = 0

    def check(self, message: Message) -> bool:
        gap = self.sequence is not None and message.sequence != self.sequence + 1
        self.sequence = message.sequence
        if message.heartbeat_counter is not None:
            gap |= self.heartbeat is not None and message.heartbeat_counter != self.heartbeat + 1
            self.heartbeat = message.heartbeat_counter
        self.gaps += gap
        return gap


class FeedConnection:
    """One subscribed connection (a context manager)."""

    def __init__(self, url: str, products: list[str], open_timeout_s: float = 10.0):
        self.url, self.products, self.open_timeout_s = url, list(products), open_timeout_s
        self.sequence = Sequence()
        self._ws = None

    def __enter__(self) -> FeedConnection:
        from websockets.sync.client import connect

        # Coinbase sends heartbeats itself; websockets' own pings are left on (keepalive of the TCP path).
        self._ws = connect(self.url, open_timeout=self.open_timeout_s, max_size=2**24, close_timeout=1)
        for channel in CHANNELS:
            self._ws.send(json.dumps({"type": "subscribe", "product_ids": self.products, "channel": channel}))
        return self

    def __exit__(self, *exc) -> None:
        if self._ws is not None:
            self._ws.close()

    def recv(self, timeout_s: float) -> Message | None:
        """The next message, or None when none arrived within `timeout_s`. Raises websockets'
        ConnectionClosed when the connection ends, FeedError for an error or malformed message."""
        try:
            raw = self._ws.recv(timeout=timeout_s)
        except TimeoutError:
            return None
        return parse(raw)
