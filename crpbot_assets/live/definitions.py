"""The live domain's Definitions: the asset `crpbot-live` reports to (the service runs outside Dagster)."""

import dagster as dg

from crpbot_assets.live.report import live_paper_ledger

defs = dg.Definitions(assets=[live_paper_ledger])
