"""The code location: each domain's Definitions merged with the resources of CRPBOT_ENV."""

import dagster as dg

import crpbot_assets.automation as automation
import crpbot_assets.candles.definitions as candles
import crpbot_assets.features.definitions as features
import crpbot_assets.jobs as jobs
import crpbot_assets.launchers.definitions as launchers
import crpbot_assets.live.definitions as live
import crpbot_assets.sentiment.definitions as sentiment
import crpbot_assets.signals.definitions as signals
import crpbot_assets.training.definitions as training
from crpbot_assets.common.settings import crpbot_env
from crpbot_assets.resources import resources_for

defs = dg.Definitions.merge(
    candles.defs,
    features.defs,
    sentiment.defs,
    training.defs,
    signals.defs,
    jobs.defs,
    automation.defs,
    launchers.defs,
    live.defs,
    dg.Definitions(resources=resources_for(crpbot_env())),
)
