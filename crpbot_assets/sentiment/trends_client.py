"""Google Trends client: pytrends 4.9.2 re-rooted at any base URL, one window at a time, windows stitched
onto one scale (`sentiment.trends`). No Dagster.

pytrends is archived upstream; everything crpbot needs from it sits behind `TrendsClient`, so it can be
replaced without touching the assets.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import requests
from pytrends.exceptions import ResponseError, TooManyRequestsError
from pytrends.request import BASE_TRENDS_URL, TrendReq

from crpbot_assets.common.http import (
    RateLimiter,
    RequestStats,
    RetryPolicy,
    call_with_retries,
    parse_retry_after,
)
from crpbot_assets.sentiment.trends import SERIES_SCHEMA, plan_windows, stitch

PROD_URL = BASE_TRENDS_URL


class TrendsPayloadError(ValueError):
    """A Google Trends response that cannot be read as interest over time."""


class _TrendReq(TrendReq):
    """pytrends' client with every request under `base_url`.

    pytrends reads its endpoint URLs as `TrendReq.X_URL` class attributes and the cookie page from the
    module constant, so instance attributes would be ignored and patching the class would leak across
    threads; instead each request URL is re-rooted at `base_url`. Retries stay at 0 (pytrends' own retry
    path crashes with urllib3 2); the client backs off itself.
    """

    def __init__(self, base_url: str, **kwargs):
        self.base_url = base_url.rstrip("/")
        super().__init__(retries=0, backoff_factor=0, **kwargs)

    def GetGoogleCookie(self):  # noqa: N802 - pytrends' name
        response = requests.get(
            f"{self.base_url}/explore/?geo={self.hl[-2:]}", timeout=self.timeout, **self.requests_args
        )
        if response.status_code == 429:
            raise TooManyRequestsError.from_response(response)
        if response.status_code >= 400:
            raise ResponseError.from_response(response)
        return dict(filter(lambda item: item[0] == "NID", response.cookies.items()))

    def _get_data(self, url, method=TrendReq.GET_METHOD, trim_chars=0, **kwargs):
        return super()._get_data(
            self.base_url + url.removeprefix(BASE_TRENDS_URL), method, trim_chars, **kwargs
        )


def _retryable(exc: Exception) -> float | None | bool:
    if isinstance(exc, ResponseError):
        if exc.response.status_code == 429 or exc.response.status_code >= 500:
            return parse_retry_after(exc.response.headers.get("Retry-After"))
        return False
    return None if isinstance(exc, (requests.ConnectionError, requests.Timeout)) else False


class TrendsClient:
    """Hourly interest in overlapping windows (default 7 days, 24 hours of overlap) stitched onto one scale.

    One client paces every request it makes with one token bucket (`requests_per_s`), however many keywords
    and months it fetches.
    """

    def __init__(
        self,
        base_url: str = PROD_URL,
        hl: str = "en-US",
        geo: str = "",
        window_hours: int = 168,
        overlap_hours: int = 24,
        requests_per_s: float = 0.5,
        timeout_s: float = 10.0,
        policy: RetryPolicy | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.hl = hl
        self.geo = geo
        self.window_hours = window_hours
        self.overlap_hours = overlap_hours
        self.timeout_s = timeout_s
        self.limiter = RateLimiter(requests_per_s)
        self.policy = policy or RetryPolicy(max_attempts=6, base_delay_s=5.0, max_delay_s=120.0)

    def window(
        self, keyword: str, start: datetime, end: datetime, stats: RequestStats | None = None, log=None
    ) -> pl.DataFrame:
        """One window's final hourly points (`ts` = hour start, `value` 0-100 on the window's own scale)."""
        stats = stats if stats is not None else RequestStats()
        timeframe = f"{start:%Y-%m-%dT%H} {end:%Y-%m-%dT%H}"
        what = f"Google Trends {keyword!r} {timeframe}"

        def paced():
            self.limiter.acquire()
            stats.add(requests=1)

        def fetch():
            paced()
            client = _TrendReq(self.base_url, hl=self.hl, tz=0, timeout=(self.timeout_s, self.timeout_s))
            paced()
            client.build_payload([keyword], timeframe=timeframe, geo=self.geo)
            paced()
            try:
                return client.interest_over_time()
            except (ValueError, KeyError, TypeError) as exc:
                raise TrendsPayloadError(
                    f"{what}: malformed interest over time ({type(exc).__name__}: {exc})"
                ) from None

        frame = call_with_retries(what, fetch, _retryable, self.policy, stats, log)
        if frame.empty:
            return pl.DataFrame(schema=SERIES_SCHEMA)
        out = pl.DataFrame(
            [
                pl.Series("ts", frame.index),
                pl.Series("value", frame[keyword].to_numpy()),
                pl.Series("partial", frame["isPartial"].to_numpy(), dtype=pl.Boolean),
            ]
        )
        out = out.with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.cast_time_unit("us"))
        if out.filter(~pl.col("value").is_between(0, 100)).height:
            raise TrendsPayloadError(f"{what}: values outside 0..100")
        return out.filter(~pl.col("partial")).select("ts", pl.col("value").cast(pl.Float64))

    def hourly_interest(
        self,
        keyword: str,
        start: datetime,
        end: datetime,
        anchor: pl.DataFrame | None = None,
        stats: RequestStats | None = None,
        log=None,
    ) -> pl.DataFrame:
        """Hourly interest over [start, end] on one scale: the anchor's when given (it must cover the
        first `overlap_hours` before `start`), else the first window's."""
        stats = stats if stats is not None else RequestStats()
        overlap = timedelta(hours=self.overlap_hours)
        first = start - overlap if anchor is not None and anchor.height else start
        plan = plan_windows(first, end, timedelta(hours=self.window_hours), overlap)
        windows = []
        for i, (a, b) in enumerate(plan, 1):
            windows.append(self.window(keyword, a, b, stats, log))
            if log:
                log(f"Google Trends {keyword!r}: {i}/{len(plan)} windows")
        return stitch(windows, anchor, label=f"Google Trends {keyword!r}")
