"""The forward paper ledger: an append-only file of decisions and fills, never rewritten. Pure (no Dagster).

One JSON object per line, appended with a single `write` and `fsync`ed before the service acts on it. A process
killed mid-append leaves at most one torn last line (no newline); opening the ledger cuts it off, so that record
was never made. Nothing else is ever removed or changed. `CRPBOT_LIVE_TEST_HOOK=<mid-append|after-append>:<kind>:<n>`
(tests only; kind `decision`, `fill`, or `trade`: a decision that changes the position) pauses the n-th such append half-written or just after its fsync, touching the file
named by `CRPBOT_LIVE_TEST_SIGNAL`, so a kill test can SIGKILL exactly there.

Records (every time unix seconds on the service's clock):
- `decision`: one per closed minute the service decided, made once: the minute's row of the `signals` asset
  (`minute`, the fold model's probabilities and `score`, None when flat; `grid`: a decision-grid minute, signals'
  `decision`; `signal`: the rule's position, signals' `position`; `model_version`), the resulting `target` (the
  signal on the grid, else the position held) and the `held` position, `decided_at` and `latency_s` (from the
  minute's close, minute + 60 s).
- `fill`: one per decision whose target differs from the position held, at the open of the first minute after
  the decision minute that traded (the fill minute), with the paper ledger's cost model
  (`signals.ledger`: taker fee, half-spread fixed or a quarter of the fill minute's range): the same arithmetic as
  the `paper_trades` asset. Keyed by (symbol, decision minute): recorded at most once.

`Book` replays the records of one symbol into its state (position, cash, units, the decision awaiting its fill).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from crpbot_assets.signals import ledger as paper


@dataclass
class Book:
    """One symbol's paper state, rebuilt from its records."""

    config: paper.PaperConfig
    position: int = 0
    units: float = 0.0
    cash: float = 0.0
    hold_units: float | None = None  # buy-and-hold reference: capital bought at the first fill opportunity
    last_decision: int | None = None  # newest decided minute
    last_signal: int = 0  # its `signal`: the decision rule's position after it (the rule's state)
    pending: dict | None = None  # the decision awaiting its fill
    decisions: int = 0
    fills: int = 0
    fees: float = 0.0

    def __post_init__(self):
        self.cash = self.config.starting_capital

    def apply(self, record: dict) -> None:
        if record["kind"] == "decision":
            self.last_decision, self.last_signal = record["minute"], record["signal"]
            self.decisions += 1
            self.pending = record if record["target"] != self.position else None
        elif record["kind"] == "fill":
            self.position, self.units, self.cash = record["position"], record["units"], record["cash"]
            self.hold_units = record["hold_units"]
            self.fills += 1
            self.fees += record["fee"]
            if self.pending and self.pending["minute"] == record["decision_minute"]:
                self.pending = None

    def equity(self, price: float) -> float:
        return self.cash + self.units * price

    def fill(self, candle: dict, recorded_at: float, open_observed_at: float | None) -> dict:
        """The fill record of the pending decision at `candle` (the fill minute: ts, open, high, low, close)."""
        decision = self.pending
        ts = lambda minute: datetime.fromtimestamp(minute, UTC)  # noqa: E731
        row = {
            "decision_ts": ts(decision["minute"]),
            "fill_ts": candle["ts"],
            "fill_open": candle["open"],
            "high": candle["high"],
            "low": candle["low"],
            "close": candle["close"],
            "model_version": decision["model_version"],
        }
        spread = paper._spread(row, self.config)
        hold = self.hold_units
        if hold is None:
            hold = paper._hold_units(
                self.config.starting_capital, candle["open"] * (1 + spread / 1e4), self.config.fee_bps
            )
        state = {"cash": self.cash, "units": self.units, "hold_units": hold}
        after = paper._fill(state, row, decision["target"], self.config)
        return {
            "kind": "fill",
            "symbol": decision["symbol"],
            "decision_minute": decision["minute"],
            "fill_minute": int(candle["ts"].timestamp()),
            **{k: after[k] for k in ("fill_open", "half_spread_bps", "fill_price", "traded_units", "fee")},
            **{k: after[k] for k in ("spread_cost", "position", "units", "cash", "equity", "hold_units")},
            "model_version": decision["model_version"],
            "open_observed_at": open_observed_at,
            "recorded_at": recorded_at,
        }


def _hook(stage: str, kind: str, count: int) -> bool:
    spec = os.environ.get("CRPBOT_LIVE_TEST_HOOK")
    return bool(spec) and spec == f"{stage}:{kind}:{count}"


def _pause() -> None:
    with open(os.environ["CRPBOT_LIVE_TEST_SIGNAL"], "w") as signal_file:
        signal_file.write(f"paused pid {os.getpid()}\n")
    while True:
        time.sleep(60)


def read_records(path: str | Path) -> list[dict]:
    """The complete records of a ledger file (a reader's view: a torn last line is left out, not cut)."""
    data = Path(path).read_bytes() if Path(path).exists() else b""
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


class TornLedgerError(RuntimeError):
    """A ledger line other than the last is not a record: the file was edited or corrupted."""


@dataclass
class ForwardLedger:
    """The ledger file at `path` (created if absent) and the records it holds."""

    path: Path
    records: list[dict] = field(
        default_factory=list
    )  # as opened (appends are not kept: a process runs for weeks)
    repaired_bytes: int = 0  # a torn last line cut off when opened

    def __post_init__(self):
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        *lines, torn = data.split(b"\n")  # a single write appends a whole line: only the last can be cut
        for number, line in enumerate(lines, 1):
            try:
                self.records.append(json.loads(line))
            except ValueError as exc:
                raise TornLedgerError(
                    f"{self.path}: line {number} is not a JSON record: {line[:120]!r}"
                ) from exc
        if torn:
            self.repaired_bytes = len(torn)
            with open(self.path, "r+b") as handle:
                handle.truncate(len(data) - len(torn))
                os.fsync(handle.fileno())
        self._appended: dict[str, int] = {}
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict) -> None:
        """Durably append one record (one write, then fsync)."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        tags = [record["kind"]] + (
            ["trade"] if record.get("target", record.get("held")) != record.get("held") else []
        )
        for tag in tags:
            self._appended[tag] = self._appended.get(tag, 0) + 1
        if any(_hook("mid-append", tag, self._appended[tag]) for tag in tags):
            os.write(self._fd, line[: len(line) // 2])
            os.fsync(self._fd)
            _pause()
        written = os.write(self._fd, line)
        if written != len(line):
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        os.fsync(self._fd)
        if any(_hook("after-append", tag, self._appended[tag]) for tag in tags):
            _pause()

    def close(self) -> None:
        os.close(self._fd)

    def books(self, symbols: list[str], config: paper.PaperConfig) -> dict[str, Book]:
        books = {symbol: Book(config) for symbol in symbols}
        for record in self.records:
            if record.get("symbol") in books:
                books[record["symbol"]].apply(record)
        return books
