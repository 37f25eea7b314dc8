"""The candles domain's Definitions: asset (with its checks), job and schedule (resources: crpbot_assets/resources.py)."""

import dagster as dg

from crpbot_assets.candles.assets import candles
from crpbot_assets.candles.schedules import candles_current_month_schedule, candles_job

defs = dg.Definitions(
    assets=[candles],
    jobs=[candles_job],
    schedules=[candles_current_month_schedule],
)
