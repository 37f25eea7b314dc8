"""One symbol's walk-forward inputs from the replay's synthetic world, through crpbot's own code (tests and
benchmarks).

Candles from the synthetic generator (what the Coinbase replay serves), the 72 features from them, and
`sentiment_features` assembled from the Fear & Greed and Google Trends clients talking to a replay server on
loopback (Reddit's listings do not reach back months: its columns are null, as in the pipeline).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from crpbot_assets.features.compute import compute_features
from crpbot_assets.replay import synthetic
from crpbot_assets.replay.server import ReplayServer, default_services
from crpbot_assets.resources import replay_resources
from crpbot_assets.sentiment.fear_greed import hourly_index
from crpbot_assets.sentiment.features import assemble, hour_ends
from crpbot_assets.sentiment.trends import COLUMNS, KEYWORDS, as_of_hour_ends


def world(symbol: str, start: datetime, end: datetime, seed: int = 0):
    """(candles, features, sentiment_features) of [start, end) in the world of `seed` (the sentiment lead and
    its delay as set by CRPBOT_SYNTHETIC_SENTIMENT_LEAD and CRPBOT_SYNTHETIC_SENTIMENT_LEAD_DELAY, the probe lead
    by CRPBOT_SYNTHETIC_PROBE_LEAD)."""
    candles = synthetic.candles(symbol, start, end, seed)
    features = compute_features(candles).drop_nulls()  # rows whose lookback is unmet are dropped, as upstream
    hours = hour_ends(start, end)
    with ReplayServer(default_services(seed)) as replay:
        resources = replay_resources(replay.url)
        daily, _ = resources["fear_greed"].client().history()
        column = COLUMNS[symbol]
        interest = (
            resources["google_trends"]
            .client()
            .hourly_interest(KEYWORDS[symbol], start, end - timedelta(hours=1))
            .rename({"value": column})
        )
    sentiment = assemble(
        hours,
        pl.DataFrame(),
        hourly_index(daily, hours, timedelta(hours=1), timedelta(hours=26)),
        as_of_hour_ends(interest, hours, end, [column], timedelta(hours=8)),
    )
    return candles, features, sentiment
