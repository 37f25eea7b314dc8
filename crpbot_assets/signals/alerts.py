"""Paper-trading alerts: which conditions hold now, and which to report. Pure (no Dagster).

Per symbol, for the month in progress, from the facts the sensor reads off the instance:
- `stalled`: a model trades (promoted, not a demo-only promotion) and its newest signal is older than the
  newest candle that arrived more than the stall limit ago. The limit follows the cadence candles arrive at:
  one cadence (the next refresh may still be on its way) plus a catch-up allowance (automation, features,
  scoring). Hourly candles (the schedule): 60 + 15 = 75 minutes; minute-fresh candles: 1 + 15. A batch that
  arrives after a long pause (the daemon was down) is not a stall until it is older than the limit.
- `model_changed`: the traded model version differs from the one seen at the previous evaluation (a
  promotion, a replacement, a demotion to nothing);
- `drawdown`: the paper portfolio's drawdown from its peak is beyond `max_drawdown`.
`conditions()` says which of stalled/drawdown hold (the state the asset checks show); `evaluate()` turns them
into alerts, once per episode, and never on a symbol's first evaluation: that one only records what it sees
(a state the checks show, not news). The cursor (JSON-able dict) is what the previous evaluation saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class AlertConfig:
    cadence_minutes: float = 60.0  # how often candles arrive (default: the candles schedule's interval)
    catch_up_minutes: float = 15.0  # how long signals may take to cover candles once they arrived
    max_drawdown: float = 0.10  # a fraction of the peak equity

    def __post_init__(self):
        if self.cadence_minutes <= 0 or self.catch_up_minutes < 0 or not 0.0 < self.max_drawdown < 1.0:
            raise ValueError(f"need cadence_minutes > 0, catch_up_minutes >= 0, 0 < max_drawdown < 1: {self}")

    def stall_minutes(self, cadence_minutes: float | None = None) -> float:
        """The stall limit for candles arriving every `cadence_minutes` (default: the configured cadence)."""
        return (cadence_minutes or self.cadence_minutes) + self.catch_up_minutes


@dataclass(frozen=True)
class SymbolFacts:
    due_candle: (
        datetime | None
    )  # newest candle that arrived at least `stall_minutes` ago: signals must cover it
    newest_signal: datetime | None
    model_version: str | None  # None: nothing trades (nothing promoted, or a demo-only promotion)
    drawdown: float | None  # latest paper portfolio drawdown (<= 0), None: no portfolio yet
    stall_minutes: float = AlertConfig().stall_minutes()  # the limit `due_candle` was found with


@dataclass(frozen=True)
class Alert:
    symbol: str
    kind: str  # stalled | model_changed | drawdown
    message: str


def conditions(symbol: str, f: SymbolFacts, config: AlertConfig) -> dict[str, str | None]:
    """{"stalled": message or None, "drawdown": message or None}: what holds now."""
    stalled = None
    if f.model_version and f.due_candle is not None:
        if f.newest_signal is None or f.newest_signal < f.due_candle:
            lag = f.due_candle - f.newest_signal if f.newest_signal is not None else None
            stalled = (
                f"{symbol}: signals stalled: newest signal {f.newest_signal or 'none'} is behind candle "
                f"{f.due_candle}, which arrived over {f.stall_minutes:g} minutes ago "
                f"({f'{lag.total_seconds() / 60:.0f} minutes behind' if lag else 'no signal yet'})"
            )
    drawdown = None
    if f.drawdown is not None and f.drawdown <= -config.max_drawdown:
        drawdown = f"{symbol}: paper portfolio drawdown {f.drawdown:.2%} beyond -{config.max_drawdown:.0%}"
    return {"stalled": stalled, "drawdown": drawdown}


def evaluate(
    facts: dict[str, SymbolFacts], cursor: dict, config: AlertConfig = AlertConfig()
) -> tuple[list[Alert], dict]:
    """(alerts to report now, the next cursor)."""
    alerts = []
    seen_next = {}
    for symbol, f in sorted(facts.items()):
        first_sight = symbol not in cursor
        seen = cursor.get(symbol, {})
        now = conditions(symbol, f, config)
        stall_episode = str(f.newest_signal) if now["stalled"] else None  # one stall per stuck signal
        reported = {
            "model_changed": seen.get("model_version") != f.model_version,
            "stalled": now["stalled"] is not None and seen.get("stalled") != stall_episode,
            "drawdown": now["drawdown"] is not None and not seen.get("drawdown"),
        }
        if not first_sight:
            if reported["model_changed"]:
                old, new = seen.get("model_version") or "none", f.model_version or "none (demoted)"
                alerts.append(
                    Alert(symbol, "model_changed", f"{symbol}: promoted model changed from {old} to {new}")
                )
            alerts += [Alert(symbol, kind, now[kind]) for kind in ("stalled", "drawdown") if reported[kind]]
        seen_next[symbol] = {
            "model_version": f.model_version,
            "stalled": stall_episode,
            "drawdown": now["drawdown"] is not None,
        }
    return alerts, seen_next
