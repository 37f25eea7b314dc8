"""The `paper_trading_alerts` sensor: alerts.py's conditions, reported where the UI shows them.

Each alert is an `AssetObservation` on the asset concerned (signals, promoted_model or paper_portfolio;
metadata `alert` and `message`: the asset's event timeline) and a warning in the sensor tick's log; the tick's
skip reason lists the alerts of the tick ("all clear" otherwise). Runs by default every minute.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg

from crpbot_assets.common.months import month_key
from crpbot_assets.common.symbols import SYMBOLS, is_listed
from crpbot_assets.signals.alerts import AlertConfig, SymbolFacts, evaluate
from crpbot_assets.signals.assets import latest_metadata

ALERTS = AlertConfig()  # stall and drawdown thresholds
ASSET_OF_ALERT = {"stalled": "signals", "model_changed": "promoted_model", "drawdown": "paper_portfolio"}


def _ts(value) -> datetime | None:
    return datetime.fromisoformat(value) if value and value != "none" else None


def gather_facts(instance: dg.DagsterInstance, now: datetime) -> dict[str, SymbolFacts]:
    """What alerts.evaluate needs, per listed symbol, for the month in progress at `now`."""
    month = month_key(now)
    facts = {}
    for symbol in SYMBOLS:
        if not is_listed(symbol, now):
            continue
        key = f"{month}|{symbol}"
        drawdown = latest_metadata(instance, "paper_portfolio", key).get("drawdown")
        facts[symbol] = SymbolFacts(
            newest_candle=_ts(latest_metadata(instance, "candles", key).get("last_ts")),
            newest_signal=_ts(latest_metadata(instance, "signals", key).get("latest_signal_ts")),
            model_version=latest_metadata(instance, "promoted_model", key).get("model_version") or None,
            drawdown=float(drawdown) if drawdown is not None else None,
        )
    return facts


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def paper_trading_alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Alerts for the month in progress: signals stalled while candles arrive, the promoted model changed,
    paper drawdown beyond the threshold. Each shows as an observation on the asset concerned and in this log."""
    now = datetime.now(UTC)
    month = month_key(now)
    cursor = json.loads(context.cursor) if context.cursor else {}
    alerts, next_cursor = evaluate(gather_facts(context.instance, now), cursor, ALERTS)
    events = []
    for alert in alerts:
        context.log.warning(alert.message)
        asset = ASSET_OF_ALERT[alert.kind]
        events.append(
            dg.AssetObservation(
                asset_key=asset,
                partition=f"{month}|{alert.symbol}",
                metadata={"alert": alert.kind, "message": alert.message},
            )
        )
    summary = "; ".join(a.message for a in alerts) or "all clear"
    return dg.SensorResult(skip_reason=summary, asset_events=events, cursor=json.dumps(next_cursor))
