"""The live domain's Definitions: the asset `crpbot-live` reports to (the service runs outside Dagster) and the
sensor that alerts on its reports."""

import dagster as dg

from crpbot_assets.live.report import live_paper_ledger
from crpbot_assets.live.sensors import live_paper_trading_alerts

defs = dg.Definitions(assets=[live_paper_ledger], sensors=[live_paper_trading_alerts])
