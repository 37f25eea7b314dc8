"""The `live_paper_trading_alerts` sensor: what `crpbot-live` cannot say about itself, from what it reported.

Per symbol, from the latest `live_paper_ledger` materialization (the service reports hourly and when it stops):
- `silent`: no report for longer than `silent_after_s` (two missed hourly reports): the service is down or cut
  off from the instance;
- `not_trading`: its last report says trading is stopped (a stale feed it has not recovered from);
- `slow`: close->decision p95 above `max_latency_p95_s`.
Each is reported once per episode, as an observation on `live_paper_ledger[symbol]` (metadata `alert`, `message`)
and a warning in the tick's log, like `paper_trading_alerts`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import dagster as dg

from crpbot_assets.common.symbols import SYMBOLS
from crpbot_assets.live.report import ASSET


@dataclass(frozen=True)
class LiveAlertConfig:
    silent_after_s: float = 2.5 * 3600
    max_latency_p95_s: float = 1.0


def evaluate(reports: dict[str, tuple[float, dict]], now: float, cursor: dict, config: LiveAlertConfig):
    """(alerts [(symbol, kind, message)], next cursor) from {symbol: (report time, metadata)}."""
    alerts, seen_next = [], {}
    for symbol, (at, metadata) in sorted(reports.items()):
        seen, now_seen = cursor.get(symbol, {}), {}
        conditions = {
            "silent": (
                now - at > config.silent_after_s,
                f"no report from crpbot-live for {(now - at) / 3600:.1f} h",
            ),
            "not_trading": (
                metadata.get("trading") is False,
                "crpbot-live reports trading stopped (stale feed)",
            ),
            "slow": (
                metadata.get("latency_p95_s", 0.0) > config.max_latency_p95_s,
                f"close->decision p95 {metadata.get('latency_p95_s', 0.0):.2f} s above {config.max_latency_p95_s:g} s",
            ),
        }
        for kind, (active, message) in conditions.items():
            if active:
                now_seen[kind] = True
                if not seen.get(kind):
                    alerts.append((symbol, kind, f"{symbol}: {message}"))
        seen_next[symbol] = now_seen
    return alerts, seen_next


def latest_reports(instance: dg.DagsterInstance) -> dict[str, tuple[float, dict]]:
    reports = {}
    for symbol in SYMBOLS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(ASSET), asset_partitions=[symbol]), limit=1
        ).records
        if records:
            metadata = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
            reports[symbol] = (records[0].timestamp, metadata)
    return reports


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def live_paper_trading_alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Alerts on crpbot-live from its reports: silent (down), trading stopped, decisions slower than 1 s at p95."""
    cursor = json.loads(context.cursor) if context.cursor else {}
    alerts, next_cursor = evaluate(latest_reports(context.instance), time.time(), cursor, LiveAlertConfig())
    events = []
    for symbol, kind, message in alerts:
        context.log.warning(message)
        events.append(
            dg.AssetObservation(ASSET, partition=symbol, metadata={"alert": kind, "message": message})
        )
    summary = "; ".join(message for _, _, message in alerts) or "all clear"
    return dg.SensorResult(skip_reason=summary, asset_events=events, cursor=json.dumps(next_cursor))
