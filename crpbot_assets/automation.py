"""The automation sensor: evaluates every asset's `AutomationCondition` (crpbot_assets/common/automation.py)."""

import dagster as dg

from crpbot_assets.common.settings import interval_setting

automation_sensor = dg.AutomationConditionSensorDefinition(
    "crpbot_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=interval_setting("CRPBOT_AUTOMATION_INTERVAL_S", 30),
    description="Keeps the graph fresh: features and sentiment follow their inputs (any month), the training "
    "chain retrains on CRPBOT_RETRAIN_CRON. Running by default; stop it on the Automation page to pause.",
)

defs = dg.Definitions(sensors=[automation_sensor])
