"""The features domain's Definitions: the `features` asset and its checks (no resources beyond the shared IO manager)."""

import dagster as dg

from crpbot_assets.features.assets import features
from crpbot_assets.features.checks import features_checks

defs = dg.Definitions(assets=[features], asset_checks=features_checks)
