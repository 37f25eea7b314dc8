"""The paper_trading_alerts sensor on a real (temporary) instance."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from crpbot_assets.common.months import month_key
from crpbot_assets.signals.sensors import paper_trading_alerts


def _report(instance, asset: str, partition: str, **metadata) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=partition, metadata=metadata)
    )


def test_the_sensor_reports_a_model_change_and_a_stall_as_observations(instance):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    key = f"{month_key(now)}|BTC-USD"
    context = dg.build_sensor_context(instance=instance)
    result = paper_trading_alerts(context)
    assert result.skip_reason.skip_message == "all clear" and result.asset_events == []

    _report(instance, "promoted_model", key, model_version="v1")
    _report(instance, "candles", key, last_ts=str(now))
    _report(instance, "signals", key, latest_signal_ts=str(now - timedelta(minutes=5)))
    cursor = paper_trading_alerts(dg.build_sensor_context(instance=instance)).cursor
    assert json.loads(cursor)["BTC-USD"]["model_version"] == "v1"

    _report(instance, "promoted_model", key, model_version="v2")
    _report(instance, "candles", key, last_ts=str(now + timedelta(minutes=40)))
    result = paper_trading_alerts(dg.build_sensor_context(instance=instance, cursor=cursor))
    alerts = {e.metadata["alert"].value: e for e in result.asset_events}
    assert set(alerts) == {"model_changed", "stalled"}
    assert alerts["model_changed"].asset_key == dg.AssetKey("promoted_model")
    assert alerts["stalled"].asset_key == dg.AssetKey("signals") and alerts["stalled"].partition == key
    assert "from v1 to v2" in result.skip_reason.skip_message
