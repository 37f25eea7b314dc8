"""The code location: each stage's Definitions merged with the shared resources for CRPBOT_ENV."""

import dagster as dg

import crpbot_assets.candles.definitions as candles
import crpbot_assets.features.definitions as features
import crpbot_assets.jobs as jobs
import crpbot_assets.launchers.definitions as launchers
import crpbot_assets.sentiment.definitions as sentiment
import crpbot_assets.training.definitions as training
from crpbot_assets.common.resources import shared_resources
from crpbot_assets.common.settings import crpbot_env

defs = dg.Definitions.merge(
    candles.defs,
    features.defs,
    sentiment.defs,
    training.defs,
    launchers.defs,
    jobs.defs,
    dg.Definitions(resources=shared_resources(crpbot_env())),
)
