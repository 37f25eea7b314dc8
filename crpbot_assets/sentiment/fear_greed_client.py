"""alternative.me Crypto Fear & Greed client: `GET {base_url}/fng/?limit=0&format=json`. No Dagster."""

from __future__ import annotations

import polars as pl
import requests

from crpbot_assets.common.http import RequestStats, RetryPolicy, get_json
from crpbot_assets.sentiment.fear_greed import parse_payload

PROD_URL = "https://api.alternative.me"


class FearGreedClient:
    """Reads the whole daily history in one request (the API has no date range)."""

    def __init__(self, base_url: str = PROD_URL, policy: RetryPolicy | None = None):
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()

    def history(self, log=None) -> tuple[pl.DataFrame, RequestStats]:
        """The whole daily history (validated, oldest first) and the request counters."""
        url = f"{self.base_url}/fng/"
        stats = RequestStats()
        with requests.Session() as session:
            payload = get_json(
                session, url, params={"limit": 0, "format": "json"}, policy=self.policy, stats=stats, log=log
            )
        return parse_payload(payload, source=f"GET {url}?limit=0&format=json"), stats
