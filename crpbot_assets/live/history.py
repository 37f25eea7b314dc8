"""One symbol's 1-minute candles as the live service knows them: the REST record plus the socket's newest bars.

Rows follow the candles contract (`candles.client.SCHEMA`, one row per minute that traded, sorted). REST is the
record: `merge_rest` replaces every row of a window by the REST candles and counts how the socket's bars compared
(equal, different, missed by the socket, seen only by the socket); those counts are the reconciliation the service
reports. Minutes the socket missed (a dropped connection, a sequence gap) are filled from REST the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from crpbot_assets.candles.client import SCHEMA, empty_frame
from crpbot_assets.live.bars import Bar


@dataclass
class Reconciliation:
    minutes_checked: int = 0
    equal: int = 0
    different: int = 0  # both have the minute, values differ
    socket_missed: int = 0  # REST has it, no row had it (the socket missed it: filled from REST)
    socket_only: int = 0  # the socket had a bar REST does not have (dropped)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def bar_frame(bars: list[Bar]) -> pl.DataFrame:
    rows = [b.row() for b in bars]
    frame = pl.DataFrame(
        {
            "ts": [datetime.fromtimestamp(r[0], UTC) for r in rows],
            **{
                name: [float(r[i + 1]) for r in rows]
                for i, name in enumerate(("open", "high", "low", "close", "volume"))
            },
        },
        schema={"ts": pl.Datetime("us", "UTC"), **{c: pl.Float64 for c in list(SCHEMA)[1:]}},
    )
    return frame.cast(SCHEMA)


@dataclass
class History:
    frame: pl.DataFrame = field(default_factory=empty_frame)
    socket_minutes: set[int] = field(default_factory=set)  # rows from the socket not yet reconciled with REST
    reconciliation: Reconciliation = field(default_factory=Reconciliation)

    def last_minute(self) -> int | None:
        return int(self.frame["ts"][-1].timestamp()) if self.frame.height else None

    def add_bar(self, bar: Bar) -> None:
        """Append a closed socket bar (its minute must be newer than every row)."""
        last = self.last_minute()
        if last is not None and bar.minute <= last:
            raise ValueError(f"bar {bar.minute} is not newer than the newest row {last}")
        self.frame = pl.concat([self.frame, bar_frame([bar])])
        self.socket_minutes.add(bar.minute)

    def merge_rest(
        self, rest: pl.DataFrame, start: datetime, end: datetime, count: bool = True
    ) -> Reconciliation:
        """Make REST's candles the rows of [start, end); returns how the socket compared (accumulated into
        `reconciliation` when `count`: not for history loaded before the socket ran)."""
        inside = (pl.col("ts") >= start) & (pl.col("ts") < end)
        mine = self.frame.filter(inside)
        rest = rest.filter(inside).cast(SCHEMA)
        socket = {
            int(r[0].timestamp()): r[1:] for r in mine.rows() if int(r[0].timestamp()) in self.socket_minutes
        }
        record = {int(r[0].timestamp()): r[1:] for r in rest.rows()}
        found = Reconciliation(minutes_checked=len(set(socket) | set(record)))
        for minute, values in socket.items():
            if minute not in record:
                found.socket_only += 1
            elif values == record[minute]:
                found.equal += 1
            else:
                found.different += 1
        present = {int(t.timestamp()) for t in mine["ts"]}
        found.socket_missed = sum(1 for minute in record if minute not in present)
        self.frame = pl.concat([self.frame.filter(~inside), rest]).sort("ts")
        lo, hi = start.timestamp(), end.timestamp()
        self.socket_minutes = {m for m in self.socket_minutes if not lo <= m < hi}
        for name, value in found.as_dict().items() if count else ():
            setattr(self.reconciliation, name, getattr(self.reconciliation, name) + value)
        return found

    def since(self, start: datetime) -> pl.DataFrame:
        return self.frame.filter(pl.col("ts") >= start)

    def row_after(self, minute: int) -> dict | None:
        """The first row after `minute` (a fill minute), or None."""
        later = self.frame.filter(pl.col("ts") > datetime.fromtimestamp(minute, UTC)).head(1)
        return later.row(0, named=True) if later.height else None

    def trim(self, start: datetime) -> None:
        self.frame = self.frame.filter(pl.col("ts") >= start)
        self.socket_minutes = {m for m in self.socket_minutes if m >= start.timestamp()}
