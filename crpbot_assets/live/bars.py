"""1-minute OHLCV bars from a stream of trades, closed as soon as the minute is known to be over. Pure.

A minute [m, m + 60 s) closes when either arrives first:
- a trade of a later minute (trades of a product come in time order: the minute has no more), or
- feed time (a heartbeat's or any message's `timestamp`) at or past m + 60 s + `GRACE_S`. Coinbase collects trades
  over 250 ms before sending them, so a trade of the minute's last instant is sent by m + 60.25 s; the grace
  covers that batch. A minute without a trade never opens and never closes: it has no bar, like the REST candles.
Volume is summed in Decimal from the trades' decimal strings, so it is exact; prices are floats parsed from them.

A bar is `complete` unless the feed may have missed some of its trades: it was in progress when the connection
broke or messages were lost (a sequence gap), or it began before the (re)subscription (`interrupt`). The live
service replaces incomplete bars with REST candles. A trade of a minute already closed is `late`: counted, and
left to the REST reconciliation.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

GRACE_S = (
    0.3  # beyond the minute's end, on feed time, before a heartbeat closes it (one 250 ms batch + margin)
)


@dataclass
class Bar:
    minute: int  # unix seconds of the minute's start
    open: float
    high: float
    low: float
    close: float
    volume: Decimal
    trades: int
    first_seen: float  # local (virtual) clock when its first trade arrived: the open as observed
    complete: bool = True

    def row(self) -> tuple:
        """(minute, open, high, low, close, volume) as the candles contract holds them."""
        return (self.minute, self.open, self.high, self.low, self.close, float(self.volume))


class BarBuilder:
    """Bars of one product."""

    def __init__(self, grace_s: float = GRACE_S):
        self.grace_s = grace_s
        self.current: Bar | None = None
        self.closed_through: int | None = None  # start of the newest minute closed
        self.suspect_before: float | None = None  # bars starting before this feed time are incomplete
        self.late_trades = 0

    def interrupt(self, until: float) -> None:
        """Trades before feed time `until` may be missing (a reconnect, or messages lost up to `until`)."""
        if self.current is not None:
            self.current.complete = False
        self.suspect_before = max(self.suspect_before or until, until)

    def on_trade(self, time: float, price: float, size: Decimal, seen_at: float) -> list[Bar]:
        """Add one trade (feed time `time`); returns the bars it closes."""
        minute = int(time // 60) * 60
        if (self.closed_through is not None and minute <= self.closed_through) or (
            self.current is not None and minute < self.current.minute
        ):
            self.late_trades += 1
            return []
        closed = []
        if self.current is not None and minute > self.current.minute:
            closed.append(self._close())
        bar = self.current
        if bar is None:
            complete = self.suspect_before is None or minute >= self.suspect_before
            self.current = Bar(minute, price, price, price, price, size, 1, seen_at, complete)
        else:
            bar.high = max(bar.high, price)
            bar.low = min(bar.low, price)
            bar.close = price
            bar.volume += size
            bar.trades += 1
        return closed

    def on_time(self, time: float) -> list[Bar]:
        """Feed time advanced to `time`: the bar in progress closes once its minute plus the grace is over."""
        if self.current is not None and time >= self.current.minute + 60 + self.grace_s:
            return [self._close()]
        return []

    def _close(self) -> Bar:
        bar, self.current = self.current, None
        self.closed_through = bar.minute
        return bar
