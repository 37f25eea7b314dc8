"""The code location: merges each stage's Definitions with the shared resources for CRPBOT_ENV."""

import dagster as dg

from crpbot_assets.common.resources import shared_resources
from crpbot_assets.common.settings import crpbot_env

from crpbot_assets.candles.definitions import defs as candles_defs

defs = dg.Definitions.merge(
    candles_defs,
    dg.Definitions(resources=shared_resources(crpbot_env())),
)
