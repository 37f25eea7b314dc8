"""The features domain's Definitions: the `features` asset (with its checks) (no resources beyond the shared IO manager)."""

import dagster as dg

from crpbot_assets.features.assets import features

defs = dg.Definitions(assets=[features])
