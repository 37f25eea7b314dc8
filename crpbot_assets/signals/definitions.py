"""The signals domain's Definitions: promotion, live signals, the paper-trading ledger and its alerts."""

import dagster as dg

from crpbot_assets.signals.assets import paper_portfolio, paper_trades, promoted_model, signals
from crpbot_assets.signals.checks import SIGNAL_CHECKS
from crpbot_assets.signals.sensors import paper_trading_alerts

defs = dg.Definitions(
    assets=[promoted_model, signals, paper_trades, paper_portfolio],
    asset_checks=SIGNAL_CHECKS,
    sensors=[paper_trading_alerts],
)
