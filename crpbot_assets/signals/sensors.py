"""The `paper_trading_alerts` sensor: alerts.py's conditions, reported where a user looks.

Each alert is a warning in the sensor tick's log and an `AssetObservation` on the asset concerned (signals,
promoted_model or paper_portfolio; metadata `alert`, `message`: the asset's event timeline). A stall also turns
the signals asset's `signals_keep_up` check red (green again once signals catch up), shown on its Checks tab and
its graph node; the drawdown and demo-promotion checks run with their assets' runs (signals/checks.py). Runs by
default every minute; its first evaluation only records the state (no alert at start-up).

The stall limit (alerts.AlertConfig) is the candles' cadence plus a catch-up allowance. The cadence defaults to
the interval of `candles_current_month_schedule` (hourly), `CRPBOT_CANDLE_CADENCE_MINUTES` overrides it, and a
candles writer with another cadence (a live feed) states its own as metadata `cadence_minutes` on its
materializations, which wins for that symbol. `CRPBOT_SIGNAL_CATCH_UP_MINUTES` (15) and
`CRPBOT_PAPER_MAX_DRAWDOWN` (0.10) set the rest.
"""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._utils.schedules import cron_string_iterator  # not exported by dagster

from crpbot_assets.candles.schedules import candles_current_month_schedule
from crpbot_assets.common.months import month_key
from crpbot_assets.common.symbols import SYMBOLS, is_listed
from crpbot_assets.signals import gate
from crpbot_assets.signals.alerts import AlertConfig, SymbolFacts, conditions, evaluate
from crpbot_assets.signals.assets import latest_metadata

ASSET_OF_ALERT = {"stalled": "signals", "model_changed": "promoted_model", "drawdown": "paper_portfolio"}
KEEP_UP_CHECK = "signals_keep_up"


def cadence_minutes(schedule: dg.ScheduleDefinition) -> float:
    """The longest interval between consecutive ticks of `schedule` over a year's first 400 ticks."""
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    ticks = list(itertools.islice(cron_string_iterator(start, schedule.cron_schedule, "UTC"), 400))
    return max((b - a).total_seconds() / 60 for a, b in itertools.pairwise(ticks))


def _setting(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value is not None else default
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number") from None


def alert_config() -> AlertConfig:
    """Thresholds from the environment, the cadence from the candles schedule unless overridden."""
    defaults = AlertConfig()
    return AlertConfig(
        cadence_minutes=_setting(
            "CRPBOT_CANDLE_CADENCE_MINUTES", cadence_minutes(candles_current_month_schedule)
        ),
        catch_up_minutes=_setting("CRPBOT_SIGNAL_CATCH_UP_MINUTES", defaults.catch_up_minutes),
        max_drawdown=_setting("CRPBOT_PAPER_MAX_DRAWDOWN", defaults.max_drawdown),
    )


def _ts(value) -> datetime | None:
    return datetime.fromisoformat(value) if value and value != "none" else None


def symbol_facts(
    instance: dg.DagsterInstance, symbol: str, month: str, now: datetime, config: AlertConfig
) -> SymbolFacts:
    """What the alert conditions need for one symbol-month partition, as the instance knows it at `now`."""
    key = f"{month}|{symbol}"
    candles = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("candles"), asset_partitions=[key]), limit=1
    ).records
    newest = candles[0].asset_materialization.metadata if candles else {}
    cadence = newest["cadence_minutes"].value if "cadence_minutes" in newest else None
    limit = config.stall_minutes(cadence)
    due = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("candles"),
            asset_partitions=[key],
            before_timestamp=(now - timedelta(minutes=limit)).timestamp(),
        ),
        limit=5,  # a range run's commit record may precede the record with the window's metadata
    ).records
    due_candle = next(
        (
            _ts(r.asset_materialization.metadata["last_ts"].value)
            for r in due
            if "last_ts" in r.asset_materialization.metadata
        ),
        None,
    )
    promotion = latest_metadata(instance, "promoted_model", key)
    drawdown = latest_metadata(instance, "paper_portfolio", key).get("drawdown")
    return SymbolFacts(
        due_candle=due_candle,
        newest_signal=_ts(latest_metadata(instance, "signals", key).get("latest_signal_ts")),
        # what automation trades: a demo-only promotion is refused outside the demo (signals/gate.py)
        model_version=None if gate.refusal(promotion, {}) else promotion.get("model_version") or None,
        drawdown=float(drawdown) if drawdown is not None else None,
        stall_minutes=limit,
    )


def gather_facts(instance: dg.DagsterInstance, now: datetime, config: AlertConfig) -> dict[str, SymbolFacts]:
    """Facts per listed symbol for the month in progress at `now`."""
    month = month_key(now)
    return {s: symbol_facts(instance, s, month, now, config) for s in SYMBOLS if is_listed(s, now)}


def stalled_messages(facts: dict[str, SymbolFacts], config: AlertConfig) -> dict[str, str]:
    """{symbol: message} of the symbols whose signals are stalled now."""
    found = {symbol: conditions(symbol, f, config)["stalled"] for symbol, f in facts.items()}
    return {symbol: message for symbol, message in found.items() if message}


def keep_up_result(stalled: dict[str, str]) -> dict:
    """The signals_keep_up check's outcome (one result for the month in progress, every symbol)."""
    return {
        "passed": not stalled,
        "severity": dg.AssetCheckSeverity.ERROR,
        "description": "; ".join(stalled.values()) or "signals cover every candle older than the stall limit",
        "metadata": {"stalled_symbols": ", ".join(sorted(stalled)) or "none"},
    }


def tick(instance: dg.DagsterInstance, cursor: str | None, now: datetime, log) -> tuple[list[str], list, str]:
    """One evaluation at `now`: (alert messages, asset events to report, next cursor). `log`: a logger."""
    month = month_key(now)
    config = alert_config()
    state = json.loads(cursor) if cursor else {}
    facts = gather_facts(instance, now, config)
    alerts, seen = evaluate(facts, state.get("seen", {}), config)
    events: list = []
    for alert in alerts:
        log.warning(alert.message)
        asset = ASSET_OF_ALERT[alert.kind]
        events.append(
            dg.AssetObservation(
                asset_key=asset,
                partition=f"{month}|{alert.symbol}",
                metadata={"alert": alert.kind, "message": alert.message},
            )
        )
    # The check is per asset, not per partition: Dagster stores one runless evaluation per partition only.
    stalled = stalled_messages(facts, config)
    if sorted(stalled) != state.get("stalled_symbols", []):  # a change of state, first sight included
        events.append(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("signals"), check_name=KEEP_UP_CHECK, **keep_up_result(stalled)
            )
        )
    return [a.message for a in alerts], events, json.dumps({"seen": seen, "stalled_symbols": sorted(stalled)})


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def paper_trading_alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Alerts for the month in progress: signals stalled while candles arrive, the promoted model changed,
    paper drawdown beyond the threshold; in this log, as observations, and as the signals_keep_up check."""
    messages, events, cursor = tick(context.instance, context.cursor, datetime.now(UTC), context.log)
    return dg.SensorResult(skip_reason="; ".join(messages) or "all clear", asset_events=events, cursor=cursor)
