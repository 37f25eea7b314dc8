"""A code location for the kill tests: the real `candles` asset (its checks run inside it), the file IO manager under
`CRPBOT_STORAGE_URI`, Coinbase at `CRPBOT_REPLAY_URL` paced for a fast replay server (tests only)."""

import os

import dagster as dg

from crpbot_assets.candles.assets import candles
from crpbot_assets.candles.resources import CoinbaseResource
from crpbot_assets.resources import file_resources

defs = dg.Definitions(
    assets=[candles],
    resources={
        **file_resources(os.environ["CRPBOT_STORAGE_URI"]),
        "coinbase": CoinbaseResource(
            base_url=os.environ["CRPBOT_REPLAY_URL"], requests_per_second=400.0, max_workers=8, timeout_s=5.0
        ),
    },
)
