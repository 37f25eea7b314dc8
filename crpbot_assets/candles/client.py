"""Coinbase Exchange 1-minute candles client: paged, rate-paced, concurrent, strictly validated. No Dagster.

`GET {base_url}/products/{id}/candles?granularity=60&start=&end=` returns at most 300 rows
`[time, low, high, open, close, volume]`, newest first, both window ends inclusive. A window is cut into
300-minute pages that cover it exactly; pages go out concurrently, paced by one `RateLimiter`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import numpy as np
import polars as pl
import requests
from requests.adapters import HTTPAdapter

from crpbot_assets.common.http import ApiError, RequestStats, RetryPolicy, get_json, rate_limiter

GRANULARITY_S = 60
PAGE_MINUTES = 300
# The API sometimes returns a bucket from just before `start`; anything earlier than this is an error.
MAX_LEAK = timedelta(minutes=5)
SCHEMA = {
    "ts": pl.Datetime("us", "UTC"),
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
}
PROD_URL = "https://api.exchange.coinbase.com"


class CandlePayloadError(ApiError):
    """A candles response that is not what the API promises (shape, numbers, window)."""


@dataclass(frozen=True)
class Page:
    """One request: minutes `first`..`last`, both inclusive like the API."""

    first: datetime
    last: datetime

    def params(self) -> dict:
        return {"granularity": GRANULARITY_S, "start": _iso(self.first), "end": _iso(self.last)}


@dataclass
class FetchResult:
    frame: pl.DataFrame
    pages: int
    requests: int
    retries: int
    seconds: float
    empty_pages: int = 0  # pages answered with no candles: legal (no trades), or an outage or throttling
    retry_wait_s: float = 0.0  # back-off slept before retries, summed over the concurrent requests


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def empty_frame() -> pl.DataFrame:
    """A candles frame with no rows (e.g. a month before the product was listed)."""
    return pl.DataFrame(schema=SCHEMA)


def page_plan(start: datetime, end: datetime) -> list[Page]:
    """Pages of at most 300 minutes covering minutes start <= t < end exactly (no overlap, no gap)."""
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None or value.second or value.microsecond:
            raise ValueError(f"{name}={value} must be a timezone-aware, minute-aligned datetime")
    pages, step, last = [], timedelta(minutes=PAGE_MINUTES), end - timedelta(minutes=1)
    first = start
    while first <= last:
        pages.append(Page(first, min(first + step - timedelta(minutes=1), last)))
        first += step
    return pages


def parse_page(payload, page: Page, described: str) -> np.ndarray:
    """Validate one response strictly; return its rows inside the page as an (n, 6) float array.

    Rows from up to MAX_LEAK before the page (a documented API quirk) are dropped; anything else outside
    the page, a repeated time, a wrong shape or a non-finite/non-numeric value raises CandlePayloadError
    naming the request.
    """
    if isinstance(payload, dict) and "message" in payload:
        # Coinbase sometimes answers 200 with an error object instead of candles.
        raise CandlePayloadError(f"{described}: the API answered {payload['message']!r} instead of candles")
    if not isinstance(payload, list):
        raise CandlePayloadError(
            f"{described}: expected a JSON list of candles, got {type(payload).__name__}"
        )
    first, last = page.first.timestamp(), page.last.timestamp()
    kept, seen = [], set()
    for index, row in enumerate(payload):
        if not isinstance(row, list) or len(row) != 6:
            raise CandlePayloadError(
                f"{described}: row {index} is not [time, low, high, open, close, volume]: {row!r:.120}"
            )
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row):
            raise CandlePayloadError(
                f"{described}: row {index} holds a non-numeric or non-finite value: {row!r:.120}"
            )
        ts = row[0]
        if ts % GRANULARITY_S:
            raise CandlePayloadError(f"{described}: row {index} time {ts} is not minute-aligned")
        if ts < first - MAX_LEAK.total_seconds() or ts > last:
            when = datetime.fromtimestamp(ts, UTC).isoformat()
            raise CandlePayloadError(f"{described}: row {index} at {when} lies outside the requested window")
        if ts in seen:
            raise CandlePayloadError(
                f"{described}: row {index} repeats time {ts} (two candles for one minute)"
            )
        seen.add(ts)
        if ts >= first:
            kept.append(row)
    return np.asarray(kept, dtype=np.float64).reshape(-1, 6)


def to_frame(rows: np.ndarray) -> pl.DataFrame:
    """API rows (unique times: `parse_page` rejects repeats, pages do not overlap) -> the contract, sorted by ts."""
    frame = pl.DataFrame(
        {
            "ts": rows[:, 0].astype(np.int64) * 1_000_000,
            "open": rows[:, 3],
            "high": rows[:, 2],
            "low": rows[:, 1],
            "close": rows[:, 4],
            "volume": rows[:, 5],
        }
    )
    frame = frame.with_columns(pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    return frame.sort("ts").cast(SCHEMA)


class CandlesClient:
    """Fetches 1-minute candles of one product over any minute-aligned window."""

    def __init__(
        self,
        base_url: str,
        requests_per_second: float = 10.0,
        burst: int = 1,
        policy: RetryPolicy | None = None,
        max_workers: int | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        # shared by every run of the instance that calls this API (see common/http.py `rate_limiter`)
        self.limiter = rate_limiter(f"coinbase-{urlparse(self.base_url).netloc}", requests_per_second, burst)
        self.policy = policy or RetryPolicy()
        # Enough workers to keep the limiter busy while responses take up to ~1 s.
        self.max_workers = max_workers or max(2, min(32, math.ceil(requests_per_second)))
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.max_workers)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def fetch(
        self,
        product: str,
        start: datetime,
        end: datetime,
        progress: Callable[[int, int], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> FetchResult:
        """Candles with start <= ts < end. Raises ApiError (naming the request) if any page fails."""
        pages = page_plan(start, end)
        url = f"{self.base_url}/products/{product}/candles"
        stats, started = RequestStats(), time.monotonic()
        failed = threading.Event()

        def one(page: Page) -> np.ndarray:
            if failed.is_set():  # another page already failed: don't spend requests
                return np.empty((0, 6))
            params = page.params()
            payload = get_json(
                self.session,
                url,
                params=params,
                limiter=self.limiter,
                policy=self.policy,
                stats=stats,
                log=log,
            )
            return parse_page(payload, page, f"GET {url} params={params}")

        parts: list[np.ndarray] = []
        with ThreadPoolExecutor(self.max_workers, thread_name_prefix=f"candles-{product}") as pool:
            pending = {pool.submit(one, page) for page in pages}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:
                        failed.set()
                        for other in pending:
                            other.cancel()
                        raise future.exception()
                    parts.append(future.result())
                if progress:
                    progress(len(parts), len(pages))
        rows = np.concatenate(parts) if parts else np.empty((0, 6))
        return FetchResult(
            to_frame(rows),
            len(pages),
            stats.requests,
            stats.retries,
            time.monotonic() - started,
            retry_wait_s=round(stats.waited_s, 3),
            empty_pages=sum(1 for part in parts if not len(part)),
        )
