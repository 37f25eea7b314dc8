"""`crpbot-live`: one long-running process that paper-trades every symbol forward, from each minute's close.

Per closed minute of a symbol (bars.py decides when a minute is closed):
1. its candle: the socket's bar, or REST's when the bar may be incomplete or minutes were missed since the last
   row (a reconnect or a sequence gap): the gap is filled from REST before anything is decided;
2. a pending fill is settled at the first minute after its decision minute (ledger.py);
3. the features of the month so far with `features_for_month`, the code of the `features` asset, on the same
   input the asset reads (the previous month's candles and the month's): identical values, bit for bit
   (`test_live_service.py`); the previous month's rows, needed by the first windows of a month, once a month;
4. the signal of the month's promoted fold model (model.py: `signals`' row for the minute, the position by the
   fold's rule) and the paper decision (on the fold's decision grid the target is the signal, off it the position
   held), appended to the forward ledger at once.
Decisions are made only for minutes that close while the service runs, on time (`decide_within_s`), at most once
per minute: a restart after SIGKILL resumes from the ledger, and a decision awaiting its fill is filled from the
candles (REST has the minute the socket did not see). A feed without a message for `stale_after_s` stops trading
(alert `stale`), is reconnected with jittered exponential back-off, and trading resumes (`resumed`) only after the
gap is filled from REST. A newly promoted model is picked up within `model_poll_s`, the next month's at its first
minute. REST candles reconcile the
socket's bars every `reconcile_every_s` (REST is the record: differences are counted and reported).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import torch
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from crpbot_assets.candles.client import SCHEMA, CandlesClient, empty_frame
from crpbot_assets.common.http import ApiError
from crpbot_assets.common.months import month_end, month_start, previous_month
from crpbot_assets.common.storage import Storage
from crpbot_assets.features.compute import features_for_month, warmup_start
from crpbot_assets.live.bars import GRACE_S, Bar, BarBuilder
from crpbot_assets.live.clock import Clock
from crpbot_assets.live.feed import FeedConnection, FeedError
from crpbot_assets.live.history import History
from crpbot_assets.live.ledger import ForwardLedger
from crpbot_assets.live.model import Models, Promotion, RuleState
from crpbot_assets.signals.ledger import PaperConfig

log = logging.getLogger("crpbot.live")
MINUTE = 60
LATENCIES_KEPT = 7 * 1440  # per symbol: the figures reported cover about the last week of decisions


@dataclass
class LiveSettings:
    symbols: list[str]
    ws_url: str
    rest_url: str
    storage_uri: str  # where promoted models, sentiment and stored candles are read (the Dagster storage)
    state_dir: str  # the forward ledger, the candle cache, status.json
    paper: PaperConfig = field(default_factory=PaperConfig)
    demo: bool = False  # crpbot-demo's live stretch: a demo-rule promotion may trade (signals/gate.py)
    stale_after_s: float = 10.0  # heartbeats come every second
    backoff_s: tuple[float, float] = (0.5, 30.0)
    decide_within_s: float = (
        30.0  # a minute closed longer ago than this is not decided (not forward any more)
    )
    reconcile_every_s: float = 300.0
    reconcile_lag_s: float = 120.0  # minutes older than this are reconciled with REST
    model_poll_s: float = 10.0
    sentiment_poll_s: float = 300.0
    report_every_s: float = 3600.0  # Dagster materialization of the ledger's figures
    rest_rate_per_s: float = 10.0
    report_to_dagster: bool = True


@dataclass
class Stats:
    connections: int = 0
    disconnects: int = 0
    gaps: int = 0
    stale_episodes: int = 0
    rest_fills: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> minutes not decided
    latencies: dict = field(default_factory=dict)  # symbol -> [close->decision seconds]

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class AlreadyRunning(RuntimeError):
    """Another crpbot-live holds the state directory."""


def describe(promotion: Promotion | None, symbol: str, month: datetime) -> str:
    """What trades `symbol` in `month`, in words."""
    if promotion is None:
        return f"{month:%Y-%m}: promoted_model not materialized (no decisions, position held)"
    return f"{month:%Y-%m}: {promotion.describe()}"


def percentiles(values) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(list(values))
    return {
        "n": len(a),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }


class LiveService:
    def __init__(self, settings: LiveSettings, clock: Clock | None = None, reporter=None):
        self.settings, self.clock = settings, clock or Clock()
        # One window of one minute is a tiny LSTM call: torch's intra-op threads only add hand-off stalls (up to
        # a second measured on a busy 2-core machine), so score on this thread.
        torch.set_num_threads(1)
        self.symbols = list(settings.symbols)
        self.state = Path(settings.state_dir)
        self.state.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.state / "live.lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise AlreadyRunning(
                f"another crpbot-live is running on {self.state} (live.lock is held)"
            ) from exc
        self.storage = Storage(settings.storage_uri)
        self.cache = Storage(str(self.state / "candles"))
        self.ledger = ForwardLedger(self.state / "ledger.jsonl")
        if self.ledger.repaired_bytes:
            log.warning(f"ledger: cut {self.ledger.repaired_bytes} bytes of a torn last record (never made)")
        self.books = self.ledger.books(self.symbols, settings.paper)
        self.models = Models(self.storage, settings.demo, getattr(reporter, "instance", None))
        self.rules = {  # the decision rule's state: from the last decision recorded
            s: RuleState(
                month_start(datetime.fromtimestamp(book.last_decision, UTC)),
                datetime.fromtimestamp(book.last_decision, UTC),
                book.last_signal,
            )
            if book.last_decision is not None
            else RuleState(month_start(datetime.fromtimestamp(self.clock.now(), UTC)))
            for s, book in self.books.items()
        }
        self.rest = CandlesClient(
            settings.rest_url, settings.rest_rate_per_s, burst=max(1, int(settings.rest_rate_per_s))
        )
        self.builders = {s: BarBuilder(GRACE_S) for s in self.symbols}
        self.histories = {s: History() for s in self.symbols}
        self.resync = {s: True for s in self.symbols}
        self.first_seen: dict[str, dict[int, float]] = {s: {} for s in self.symbols}
        self.previous_features: dict[tuple[str, datetime], pl.DataFrame] = {}
        self.sentiment: dict[str, pl.DataFrame] = {}
        self.stats = Stats(latencies={s: deque(maxlen=LATENCIES_KEPT) for s in self.symbols})
        self.alerts: list[dict] = []
        self.stale_since: float | None = None
        self.last_message_at = self.clock.now()
        self.reporter = reporter
        self._stop = False
        self._due: dict[str, float] = {}
        self._models_seen: dict[str, str] = {}  # symbol -> what trades it now, in words
        self.started_at = self.clock.now()

    # --- start-up ---------------------------------------------------------------------------------------------
    def buffer_start(self, now: float) -> datetime:
        """The oldest candle needed: the previous month's warm-up (its features feed a month's first windows)."""
        return warmup_start(previous_month(month_start(datetime.fromtimestamp(now, UTC))))

    def load(self) -> None:
        """History (cache, then REST up to the last closed minute), models, sentiment; settle pending fills."""
        now = self.clock.now()
        start = self.buffer_start(now)
        end = datetime.fromtimestamp(now // MINUTE * MINUTE, UTC)
        for symbol in self.symbols:
            history = self.histories[symbol]
            history.frame = self._cached(symbol, start)
            cached = history.frame.height
            first = history.frame["ts"][-1] + timedelta(minutes=1) if cached else start
            if first < end:
                history.merge_rest(self._record(symbol, first, end), first, end, count=False)
            log.info(
                f"{symbol}: {history.frame.height} candles from {start:%Y-%m-%d} ({cached} from the cache)"
            )
            self._settle(symbol, now)
        self._poll_models(now)
        self._poll_sentiment(now)
        for symbol in self.symbols:  # warm up before any close: features, model, the rule's state caught up
            last = self.histories[symbol].last_minute()
            when = datetime.fromtimestamp(last, UTC) if last is not None else None
            promotion = self.models.for_minute(symbol, when) if when is not None else None
            state = self.rules[symbol].at(when) if when is not None else None
            if promotion is not None and (state.through is None or state.through < when):
                _, self.rules[symbol] = self.models.signal(
                    promotion, self.features(symbol, when), self.sentiment[symbol], when, state
                )

    def _cached(self, symbol: str, start: datetime) -> pl.DataFrame:
        """What this service reconciled before (its candle cache), from `start`."""
        name = f"{symbol}.parquet"
        if not self.cache.exists(name):
            return empty_frame()
        return self.cache.read_parquet(name).filter(pl.col("ts") >= start)

    def _record(self, symbol: str, start: datetime, end: datetime) -> pl.DataFrame:
        """Candles of [start, end): the `candles` asset's stored months where they exist (the same record the
        batch features read), REST for the rest (months not stored, minutes after a stored month's last row)."""
        import dagster as dg

        from crpbot_assets.common.io_manager import partition_path
        from crpbot_assets.common.partitions import symbol_month_key

        frames, month = [], month_start(start)
        while month < end:
            lo, hi = max(start, month), min(end, month_end(month))
            path = partition_path(dg.AssetKey("candles"), str(symbol_month_key(symbol, month))) + ".parquet"
            stored = self.storage.read_parquet(path) if self.storage.exists(path) else empty_frame()
            stored = stored.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi))
            frames.append(stored.cast(SCHEMA))
            after = stored["ts"][-1] + timedelta(minutes=1) if stored.height else lo
            if after < hi:
                frames.append(self.rest.fetch(symbol, after, hi).frame)
            month = month_end(month)
        return pl.concat(frames).sort("ts") if frames else empty_frame()

    # --- the loop ---------------------------------------------------------------------------------------------
    def stop(self, *_args) -> None:
        self._stop = True

    def run(self, until: float | None = None) -> dict:
        """Run until stopped (SIGTERM/SIGINT) or until clock time `until`; returns the summary."""
        low, high = self.settings.backoff_s
        backoff = low
        self.last_message_at = self.clock.now()
        while not self._stop and (until is None or self.clock.now() < until):
            try:
                with FeedConnection(self.settings.ws_url, self.symbols) as conn:
                    self.stats.connections += 1
                    connected = self.clock.now()
                    for symbol in self.symbols:
                        self.builders[symbol].interrupt(connected)
                        self.resync[symbol] = True
                    heard = connected  # this connection's last message
                    while not self._stop and (until is None or self.clock.now() < until):
                        message = conn.recv(timeout_s=self.clock.wall_seconds(0.2))
                        now = self.clock.now()
                        if message is not None:
                            heard = self.last_message_at = now
                            backoff = low
                            self._on_message(conn, message, now)
                        elif now - heard > self.settings.stale_after_s:
                            self._go_stale(now, now - self.last_message_at)
                            break
                        self._timers(now)
            except (ConnectionClosed, InvalidHandshake, OSError, FeedError, TimeoutError) as exc:
                self.stats.disconnects += 1
                log.warning(
                    f"feed connection lost: {type(exc).__name__}: {exc}; reconnecting in ~{backoff:.1f}s"
                )
            if self._stop or (until is not None and self.clock.now() >= until):
                break
            now = self.clock.now()
            for builder in self.builders.values():
                builder.interrupt(now)
            if now - self.last_message_at > self.settings.stale_after_s:
                self._go_stale(now, now - self.last_message_at)  # cannot even connect: stale all the same
            wake = now + random.uniform(0.5, 1.0) * backoff
            while not self._stop and self.clock.now() < wake:  # SIGTERM is served within 0.2 s
                self.clock.sleep(min(0.2, wake - self.clock.now()))
            backoff = min(high, backoff * 2)
        return self.finish()

    def close(self) -> None:
        """Release the ledger and the state directory's lock."""
        self.ledger.close()
        self.rest.close()
        self._lock.close()

    def finish(self) -> dict:
        summary = self.summary()
        self._write_status(summary)
        if self.reporter is not None:
            self.reporter.report(summary)
        return summary

    def _on_message(self, conn: FeedConnection, message, now: float) -> None:
        if conn.sequence.check(message):
            self.stats.gaps += 1
            log.warning(
                f"sequence gap before message {message.sequence}: minutes since the last message come from REST"
            )
            for symbol in self.symbols:
                self.builders[symbol].interrupt(message.time)
                self.resync[symbol] = True
        if (
            message.snapshot
        ):  # trades from before the subscription: the minute in progress is incomplete anyway
            return
        closed: list[tuple[str, Bar]] = []
        for trade in message.trades:
            builder = self.builders.get(trade.product)
            if builder is None:
                continue
            closed += [
                (trade.product, bar) for bar in builder.on_trade(trade.time, trade.price, trade.size, now)
            ]
            if builder.current is not None:
                self.first_seen[trade.product].setdefault(builder.current.minute, builder.current.first_seen)
        for symbol in self.symbols:
            closed += [(symbol, bar) for bar in self.builders[symbol].on_time(message.time)]
        for symbol, bar in closed:
            self.close_minute(symbol, bar)

    def _go_stale(self, now: float, silent_s: float) -> None:
        if self.stale_since is None:
            self.stats.stale_episodes += 1
            self.stale_since = now
            self.alert(
                "stale",
                f"no trade or heartbeat for {silent_s:.1f}s (limit {self.settings.stale_after_s:g}s): trading stopped, reconnecting",
            )

    # --- per closed minute ------------------------------------------------------------------------------------
    def close_minute(self, symbol: str, bar: Bar) -> None:
        history = self.histories[symbol]
        minute, last = bar.minute, history.last_minute()
        if last is not None and minute <= last:
            pass  # already a row (REST filled it): the decision below is still made once at most
        elif self.resync[symbol] or not bar.complete:
            start = datetime.fromtimestamp(last + MINUTE if last is not None else minute, UTC)
            end = datetime.fromtimestamp(minute + MINUTE, UTC)
            try:
                rest = self.rest.fetch(symbol, start, end).frame if start < end else empty_frame()
            except ApiError as exc:
                log.warning(
                    f"{symbol}: REST fill of {start:%H:%M}..{end:%H:%M} failed ({exc}); minute {minute} not decided"
                )
                self.stats.skip("rest_failed")
                return
            has_minute = rest.height and int(rest["ts"][-1].timestamp()) == minute
            if bar.complete and not has_minute:
                history.merge_rest(rest, start, datetime.fromtimestamp(minute, UTC))
                history.add_bar(bar)
            else:
                history.merge_rest(rest, start, end)
            self.stats.rest_fills += 1
            self.resync[symbol] = False
            if not bar.complete and not has_minute:
                self.stats.skip("incomplete_minute")
                return
        else:
            history.add_bar(bar)
        now = self.clock.now()
        self._settle(symbol, now)
        self.decide(symbol, minute, now)
        seen = self.first_seen[symbol]
        for old in [m for m in seen if m < minute - 3600]:
            del seen[old]

    def _settle(self, symbol: str, now: float) -> None:
        book = self.books[symbol]
        if book.pending is None:
            return
        row = self.histories[symbol].row_after(book.pending["minute"])
        if row is None:
            return
        fill_minute = int(row["ts"].timestamp())
        record = book.fill(row, now, self.first_seen[symbol].get(fill_minute))
        self.ledger.append(record)
        book.apply(record)

    def features(self, symbol: str, minute: datetime) -> pl.DataFrame:
        """Stored-form features up to `minute`: the previous month's (computed once) and the month's so far."""
        history = self.histories[symbol]
        month = month_start(minute)
        before = previous_month(month)
        if (symbol, month) not in self.previous_features:
            older = history.since(warmup_start(before)).filter(pl.col("ts") < month)
            self.previous_features = {(symbol, month): features_for_month(older, before, month).frame} | {
                k: v for k, v in self.previous_features.items() if k[0] != symbol
            }
        candles = history.since(before).filter(pl.col("ts") <= minute)
        current = features_for_month(candles, month, month_end(month), where=f"live candles {symbol}").frame
        return pl.concat([self.previous_features[(symbol, month)], current])

    def decide(self, symbol: str, minute: int, now: float) -> None:
        book = self.books[symbol]
        if book.last_decision is not None and minute <= book.last_decision:
            return  # decided before a restart: never twice
        if self.stale_since is not None:
            self.stale_since = None
            self.alert("resumed", "feed fresh again and its gap filled from REST: trading resumed")
        latency = now - (minute + MINUTE)
        if latency > self.settings.decide_within_s:
            self.stats.skip("late")
            return
        if book.pending is not None:
            self.stats.skip("fill_pending")
            return
        when = datetime.fromtimestamp(minute, UTC)
        promotion = self.models.for_minute(symbol, when)
        if promotion is None:  # promoted_model of the month not materialized: `signals` has no row either
            self.stats.skip("no_promotion")
            return
        state = self.rules[symbol].at(when)
        if state.through is not None and when <= state.through:
            self.stats.skip("scored_before_start")
            return
        features = self.features(symbol, when)
        if features.height == 0 or features["ts"][-1] != when:
            self.stats.skip("no_features")
            return
        signal_, self.rules[symbol] = self.models.signal(
            promotion, features, self.sentiment.get(symbol, pl.DataFrame()), when, state
        )
        if signal_ is None:  # no complete input window; flat: off the grid
            self.stats.skip("no_window" if promotion.fold is not None else "flat_off_grid")
            return
        probabilities = signal_.probabilities or (None, None, None)
        decided = self.clock.now()
        record = {
            "kind": "decision",
            "symbol": symbol,
            "minute": minute,
            "p_down": probabilities[0],
            "p_flat": probabilities[1],
            "p_up": probabilities[2],
            "score": signal_.score,
            "signal": signal_.position,
            "grid": signal_.decision,
            "target": signal_.position if signal_.decision else book.position,
            "held": book.position,
            "model_version": signal_.model_version,
            "decided_at": decided,
            "latency_s": round(decided - (minute + MINUTE), 6),
        }
        self.ledger.append(record)
        book.apply(record)
        self.stats.latencies[symbol].append(record["latency_s"])

    # --- timers -----------------------------------------------------------------------------------------------
    def _every(self, name: str, period: float, now: float) -> bool:
        if now >= self._due.get(name, 0.0):
            self._due[name] = now + period
            return True
        return False

    def _timers(self, now: float) -> None:
        s = self.settings
        if self._every("models", s.model_poll_s, now):
            self._poll_models(now)
        if self._every("sentiment", s.sentiment_poll_s, now):
            self._poll_sentiment(now)
        if self._every("reconcile", s.reconcile_every_s, now) and now - self.started_at > s.reconcile_lag_s:
            self.reconcile(now)
        if self._every("status", 10.0, now):
            self._write_status(self.summary())
        if self._every("report", s.report_every_s, now) and now - self.started_at > 1 and self.reporter:
            self.reporter.report(self.summary())

    def _poll_models(self, now: float) -> None:
        """Re-read the promotion of the month in progress; say when what trades a symbol changed (a new
        promotion, a demotion, the next month's model or its absence)."""
        month = month_start(datetime.fromtimestamp(now, UTC))
        for symbol in self.symbols:
            try:
                self.models.refresh(symbol, month)
            except Exception as exc:  # noqa: BLE001 - a bad file must not stop trading: the previous value stays
                log.warning(
                    f"{symbol}: promoted_model of {month:%Y-%m} unreadable ({exc}); keeping what was read"
                )
            described = describe(self.models.for_minute(symbol, month), symbol, month)
            before = self._models_seen.get(symbol)
            if before == described:
                continue
            self._models_seen[symbol] = described
            if before is None:  # the first read at start: no change to report
                log.info(f"{symbol}: {described} (at start)")
            else:
                self.alert("model_changed", f"{before} -> {described}", symbol)

    def _poll_sentiment(self, now: float) -> None:
        import dagster as dg

        from crpbot_assets.common.io_manager import partition_path
        from crpbot_assets.common.partitions import symbol_month_key

        month = month_start(datetime.fromtimestamp(now, UTC))
        for symbol in self.symbols:
            frames = []
            for m in (previous_month(month), month):
                path = (
                    partition_path(dg.AssetKey("sentiment_features"), str(symbol_month_key(symbol, m)))
                    + ".parquet"
                )
                if self.storage.exists(path):
                    frames.append(self.storage.read_parquet(path))
            self.sentiment[symbol] = pl.concat(frames) if frames else pl.DataFrame()

    def reconcile(self, now: float) -> None:
        """REST replaces the socket's bars older than `reconcile_lag_s` (counted); the candle cache is written."""
        end = datetime.fromtimestamp((now - self.settings.reconcile_lag_s) // MINUTE * MINUTE, UTC)
        for symbol in self.symbols:
            history = self.histories[symbol]
            if not history.socket_minutes:
                continue
            start = datetime.fromtimestamp(min(history.socket_minutes), UTC)
            if start >= end:
                continue
            try:
                rest = self.rest.fetch(symbol, start, end).frame
            except ApiError as exc:
                log.warning(f"{symbol}: reconciliation failed ({exc}); retried at the next round")
                continue
            found = history.merge_rest(rest, start, end)
            if found.different or found.socket_missed or found.socket_only:
                log.warning(f"{symbol}: socket vs REST {start:%H:%M}..{end:%H:%M}: {found.as_dict()}")
            history.trim(self.buffer_start(now))
            self.cache.write_parquet(f"{symbol}.parquet", history.frame.filter(pl.col("ts") < end))

    # --- reporting --------------------------------------------------------------------------------------------
    def alert(self, kind: str, message: str, symbol: str | None = None) -> None:
        entry = {"kind": kind, "symbol": symbol, "message": message, "at": self.clock.now()}
        self.alerts = [*self.alerts[-99:], entry]
        log.warning(f"ALERT {kind}{' ' + symbol if symbol else ''}: {message}")
        if self.reporter is not None:
            self.reporter.alert(entry)

    def summary(self) -> dict:
        per_symbol = {}
        for symbol in self.symbols:
            book, history = self.books[symbol], self.histories[symbol]
            price = float(history.frame["close"][-1]) if history.frame.height else None
            equity = book.equity(price) if price is not None else book.cash
            hold = book.hold_units * price if book.hold_units is not None and price is not None else None
            per_symbol[symbol] = {
                "decisions": book.decisions,
                "fills": book.fills,
                "position": book.position,
                "equity": equity,
                "return": equity / self.settings.paper.starting_capital - 1,
                "buy_and_hold_equity": hold,
                "fees": book.fees,
                "last_decision": book.last_decision,
                "latency_s": percentiles(self.stats.latencies[symbol]),
                "reconciliation": history.reconciliation.as_dict(),
                "late_trades": self.builders[symbol].late_trades,
            }
        stats = {k: v for k, v in self.stats.__dict__.items() if k != "latencies"}
        every = [v for values in self.stats.latencies.values() for v in values]
        return {
            "as_of": self.clock.now(),
            "trading": self.stale_since is None,
            "symbols": per_symbol,
            "latency_s": percentiles(every),
            "feed": stats,
            "alerts": self.alerts[-20:],
        }

    def _write_status(self, summary: dict) -> None:
        tmp = self.state / f"status.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(summary, indent=1, default=str))
        os.replace(tmp, self.state / "status.json")
