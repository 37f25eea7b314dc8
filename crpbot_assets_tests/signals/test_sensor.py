"""The paper_trading_alerts sensor on a real (temporary) instance: what it reads, what it reports where."""

import json
import logging
from datetime import UTC, datetime, timedelta

import dagster as dg

from crpbot_assets.candles.schedules import candles_current_month_schedule
from crpbot_assets.common.months import month_key
from crpbot_assets.common.partitions import symbol_month_partitions
from crpbot_assets.signals.checks import paper_drawdown_within_limit
from crpbot_assets.signals.sensors import (
    KEEP_UP_CHECK,
    alert_config,
    cadence_minutes,
    paper_trading_alerts,
    tick,
)

LOG = logging.getLogger("test_sensor")
CHECK = dg.AssetCheckKey(dg.AssetKey("signals"), KEEP_UP_CHECK)


def _report(instance, asset: str, partition: str, **metadata) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=partition, metadata=metadata)
    )


def _tick(instance, cursor, now):
    """One evaluation; its events stored as the sensor daemon stores them."""
    messages, events, cursor = tick(instance, cursor, now, LOG)
    for event in events:
        instance.report_runless_asset_event(event)
    return messages, events, cursor


def _keep_up(instance) -> list[bool]:
    """The signals_keep_up results, oldest first."""
    history = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=20)
    return [r.event.dagster_event.event_specific_data.passed for r in reversed(history)]


def test_the_stall_limit_comes_from_the_candles_schedule_and_the_environment(monkeypatch):
    assert cadence_minutes(candles_current_month_schedule) == 60
    assert cadence_minutes(dg.ScheduleDefinition(cron_schedule="0 */6 * * *", job_name="j")) == 360
    assert alert_config().stall_minutes() == 75
    monkeypatch.setenv("CRPBOT_CANDLE_CADENCE_MINUTES", "1")
    monkeypatch.setenv("CRPBOT_SIGNAL_CATCH_UP_MINUTES", "4")
    assert alert_config().stall_minutes() == 5


def test_a_stall_after_the_limit_alerts_once_turns_the_check_red_then_green(memory_instance):
    arrived = datetime.now(UTC)
    newest = arrived.replace(second=0, microsecond=0) - timedelta(minutes=1)
    key = f"{month_key(arrived)}|BTC-USD"
    _report(memory_instance, "promoted_model", key, model_version="v1")
    _report(memory_instance, "signals", key, latest_signal_ts=str(newest - timedelta(minutes=60)))
    messages, events, cursor = _tick(memory_instance, None, arrived + timedelta(minutes=1))  # first sight
    assert messages == [] and events == []
    _report(memory_instance, "candles", key, last_ts=str(newest))  # an hourly batch arrives
    (record,) = memory_instance.fetch_materializations(dg.AssetKey("candles"), limit=1).records

    at_limit = datetime.fromtimestamp(record.timestamp, UTC) + timedelta(minutes=75)
    messages, events, cursor = _tick(memory_instance, cursor, at_limit)
    assert messages == [] and events == []  # the batch is not older than the limit yet
    messages, events, cursor = _tick(memory_instance, cursor, at_limit + timedelta(milliseconds=1))
    (message,) = messages
    assert "signals stalled" in message and "over 75 minutes ago" in message
    observation = next(e for e in events if isinstance(e, dg.AssetObservation))
    assert observation.asset_key == dg.AssetKey("signals") and observation.partition == key
    assert _keep_up(memory_instance) == [False]
    messages, events, cursor = _tick(memory_instance, cursor, at_limit + timedelta(minutes=5))
    assert messages == [] and events == []  # the same stall: reported once

    _report(memory_instance, "signals", key, latest_signal_ts=str(newest))  # signals catch up
    messages, events, cursor = _tick(memory_instance, cursor, at_limit + timedelta(minutes=6))
    assert messages == [] and _keep_up(memory_instance) == [False, True]
    _report(memory_instance, "promoted_model", key, model_version="v2")
    messages, _, cursor = _tick(memory_instance, cursor, at_limit + timedelta(minutes=7))
    assert messages == ["BTC-USD: promoted model changed from v1 to v2"]
    assert set(json.loads(cursor)["seen"]) >= {"BTC-USD"}


def test_start_up_reports_the_state_as_a_check_but_no_alert(memory_instance):
    now = datetime.now(UTC)
    key = f"{month_key(now)}|BTC-USD"
    _report(memory_instance, "promoted_model", key, model_version="v1")
    _report(memory_instance, "candles", key, last_ts=str(now - timedelta(minutes=1)))
    _report(memory_instance, "paper_portfolio", key, drawdown=-0.3)
    # stalled and deep in drawdown
    messages, events, _ = _tick(memory_instance, None, now + timedelta(hours=2))
    assert messages == [] and not any(isinstance(e, dg.AssetObservation) for e in events)
    assert _keep_up(memory_instance) == [False]


def test_a_demo_only_promotion_is_not_a_traded_model(memory_instance):
    now = datetime.now(UTC)
    key = f"{month_key(now)}|BTC-USD"
    demo = {"demo_rule": True, "passes_configured_gate": False, "configured_gate_reason": "1 of 3 months"}
    _report(memory_instance, "promoted_model", key, model_version="v1", **demo)
    _report(memory_instance, "candles", key, last_ts=str(now - timedelta(minutes=1)))
    _, events, cursor = _tick(memory_instance, None, now + timedelta(minutes=1))
    _, events, cursor = _tick(memory_instance, cursor, now + timedelta(hours=2))
    assert events == [] and json.loads(cursor)["seen"]["BTC-USD"]["model_version"] is None


def test_the_sensor_definition_returns_its_tick(memory_instance):
    result = paper_trading_alerts(dg.build_sensor_context(instance=memory_instance))
    assert result.skip_reason.skip_message == "all clear" and result.asset_events == []
    assert set(json.loads(result.cursor)) == {"seen", "stalled_symbols"}


DRAWDOWN: dict[str, float] = {}  # the stand-in portfolio's drawdown per partition


def test_the_drawdown_check_runs_with_paper_portfolio_at_the_limit(memory_instance):
    @dg.asset(name="paper_portfolio", partitions_def=symbol_month_partitions)
    def portfolio_stand_in(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"drawdown": DRAWDOWN[context.partition_key]})

    outcomes = {}
    for key, drawdown in (("2024-03-01|BTC-USD", -0.1), ("2024-03-01|ETH-USD", -0.0999)):
        DRAWDOWN[key] = drawdown
        result = dg.materialize(
            [portfolio_stand_in, paper_drawdown_within_limit], partition_key=key, instance=memory_instance
        )
        (check,) = result.get_asset_check_evaluations()
        outcomes[key] = check.passed
        assert check.severity == dg.AssetCheckSeverity.WARN and check.partition == key
    assert outcomes == {"2024-03-01|BTC-USD": False, "2024-03-01|ETH-USD": True}
