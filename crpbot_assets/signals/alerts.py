"""Paper-trading alerts: which conditions to report, once per episode. Pure (no Dagster).

Per symbol, for the month in progress, from the facts the sensor reads off the instance:
- `stalled`: a model is promoted, candles keep arriving, and the newest signal is more than `stall_minutes`
  behind the newest candle (reported once per newest signal, so a stall is reported once);
- `model_changed`: the promoted model version differs from the one seen at the previous evaluation
  (a promotion, a replacement or a demotion to nothing);
- `drawdown`: the paper portfolio's drawdown from its peak is beyond `max_drawdown` (reported once until it
  recovers above the threshold).
The cursor (JSON-able dict) is what the previous evaluation saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class AlertConfig:
    stall_minutes: int = 30
    max_drawdown: float = 0.10  # a fraction of the peak equity

    def __post_init__(self):
        if self.stall_minutes < 1 or not 0.0 < self.max_drawdown < 1.0:
            raise ValueError(f"need stall_minutes >= 1 and 0 < max_drawdown < 1: {self}")


@dataclass(frozen=True)
class SymbolFacts:
    newest_candle: datetime | None
    newest_signal: datetime | None
    model_version: str | None  # None: nothing promoted
    drawdown: float | None  # latest paper portfolio drawdown (<= 0), None: no portfolio yet


@dataclass(frozen=True)
class Alert:
    symbol: str
    kind: str  # stalled | model_changed | drawdown
    message: str


def evaluate(
    facts: dict[str, SymbolFacts], cursor: dict, config: AlertConfig = AlertConfig()
) -> tuple[list[Alert], dict]:
    """(alerts to report now, the next cursor)."""
    alerts = []
    seen_next = {}
    for symbol, f in sorted(facts.items()):
        seen = cursor.get(symbol, {})
        now_seen = {"model_version": f.model_version}
        if "model_version" in seen and seen["model_version"] != f.model_version:
            alerts.append(
                Alert(
                    symbol,
                    "model_changed",
                    f"{symbol}: promoted model changed from {seen['model_version'] or 'none'} to "
                    f"{f.model_version or 'none (demoted)'}",
                )
            )
        if f.model_version and f.newest_candle is not None:
            behind = f.newest_candle - f.newest_signal if f.newest_signal is not None else None
            stalled = behind is None or behind.total_seconds() / 60 > config.stall_minutes
            episode = str(f.newest_signal)
            if stalled and seen.get("stalled") != episode:
                lag = f"{behind.total_seconds() / 60:.0f} minutes" if behind is not None else "no signal yet"
                alerts.append(
                    Alert(
                        symbol,
                        "stalled",
                        f"{symbol}: signals stalled: newest signal {f.newest_signal or 'none'}, newest candle "
                        f"{f.newest_candle} ({lag}; limit {config.stall_minutes} minutes)",
                    )
                )
            if stalled:
                now_seen["stalled"] = episode
        if f.drawdown is not None and f.drawdown <= -config.max_drawdown:
            if not seen.get("drawdown"):
                alerts.append(
                    Alert(
                        symbol,
                        "drawdown",
                        f"{symbol}: paper portfolio drawdown {f.drawdown:.2%} beyond -{config.max_drawdown:.0%}",
                    )
                )
            now_seen["drawdown"] = True
        seen_next[symbol] = now_seen
    return alerts, seen_next
