"""The candles domain's Definitions: asset, checks, job/schedule and the `coinbase` resource."""

import dagster as dg

from crpbot_assets.candles.assets import candles
from crpbot_assets.candles.checks import candles_checks
from crpbot_assets.candles.resources import candles_resources
from crpbot_assets.candles.schedules import candles_current_month_schedule, candles_job
from crpbot_assets.common.settings import crpbot_env

defs = dg.Definitions(
    assets=[candles],
    asset_checks=candles_checks,
    jobs=[candles_job],
    schedules=[candles_current_month_schedule],
    resources=candles_resources(crpbot_env()),
)
