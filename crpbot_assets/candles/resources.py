"""The Coinbase Exchange resource: where candles come from and how hard to pull."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from crpbot_assets.candles.client import PROD_URL, CandlesClient
from crpbot_assets.common.http import RetryPolicy


class CoinbaseResource(dg.ConfigurableResource):
    """Coinbase Exchange public market data (or the replay server speaking its wire format)."""

    base_url: str = Field(default=PROD_URL, description="API root, e.g. https://api.exchange.coinbase.com")
    requests_per_second: float = Field(
        default=10.0, description="Client-side pacing (Coinbase's public limit: 10/s)"
    )
    burst: int = Field(default=1, description="Requests the limiter may send back to back")
    max_workers: int | None = Field(
        default=None, description="Concurrent requests; default ~ requests_per_second"
    )
    max_attempts: int = Field(default=6, description="Attempts per request before giving up")
    timeout_s: float = Field(default=10.0, description="Per-request timeout")
    base_delay_s: float = Field(default=0.25, description="First back-off delay (exponential, full jitter)")
    max_delay_s: float = Field(default=20.0, description="Longest back-off delay")
    max_rate_limited_wait_s: float = Field(
        default=300.0,
        description="Under sustained 429s (other runs sharing the limit), keep retrying a request while its "
        "total back-off stays within this many seconds (beyond max_attempts)",
    )

    def client(self) -> CandlesClient:
        policy = RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay_s=self.base_delay_s,
            max_delay_s=self.max_delay_s,
            timeout_s=self.timeout_s,
            max_rate_limited_wait_s=self.max_rate_limited_wait_s,
        )
        return CandlesClient(self.base_url, self.requests_per_second, self.burst, policy, self.max_workers)
