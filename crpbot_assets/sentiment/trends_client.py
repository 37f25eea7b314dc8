"""Google Trends client: pytrends 4.9.2 re-rooted at any base URL, one window at a time, windows stitched
onto one scale (`sentiment.trends`). No Dagster.

pytrends is archived upstream; everything crpbot needs from it sits behind `TrendsClient`, so it can be
replaced without touching the assets.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import polars as pl
import requests
from pytrends.exceptions import ResponseError, TooManyRequestsError
from pytrends.request import BASE_TRENDS_URL, TrendReq

from crpbot_assets.common.http import (
    ApiError,
    RateLimiter,
    RequestStats,
    RetryPolicy,
    call_with_retries,
    parse_retry_after,
)
from crpbot_assets.sentiment.trends import (
    TS,
    WINDOW_SCHEMA,
    detect_resolution,
    period_end,
    plan_windows,
    stitch,
)

PROD_URL = BASE_TRENDS_URL
ADJECTIVES = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly"}


class TrendsError(ApiError):
    """A Google Trends window that could not be fetched or read; the message names keyword and timeframe."""


class TrendsPayloadError(TrendsError, ValueError):
    """A Google Trends response that cannot be read as interest over time."""


class TrendsCookieError(RuntimeError):
    """The cookie page set no NID cookie (pytrends needs it for every API call)."""


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
        """The NID cookie, kept whatever the status, as pytrends does: real Google answers this page 404 and
        sets NID anyway. No NID: a 429/5xx is raised to be retried, anything else is a TrendsCookieError."""
        url = f"{self.base_url}/explore/?geo={self.hl[-2:]}"
        response = requests.get(url, timeout=self.timeout, **self.requests_args)
        nid = {name: value for name, value in response.cookies.items() if name == "NID"}
        if nid:
            return nid
        if response.status_code == 429:
            raise TooManyRequestsError.from_response(response)
        if response.status_code >= 500:
            raise ResponseError.from_response(response)
        raise TrendsCookieError(
            f"cookie page GET {url} answered HTTP {response.status_code} without an NID cookie"
        )

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


def _describe(exc: Exception) -> str:
    if isinstance(exc, ResponseError):
        return f"HTTP {exc.response.status_code} from {exc.response.url}"
    return f"{type(exc).__name__}: {exc}"


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
        self.clock = time.time  # when values are retrieved (tests fix it together with the replay's)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def window(
        self,
        keyword: str,
        start: datetime,
        end: datetime,
        stats: RequestStats | None = None,
        log=None,
        partial: str = "drop",
        require: str | None = None,
    ) -> pl.DataFrame:
        """One window's points on the window's own 0-100 scale: `ts` (period start), `period_end` (when the
        value is final), `value`, `retrieved_at`. The resolution (hour/day/week/month) is read from the
        timestamps; `require` makes any other a TrendsError. `isPartial` points (period not over) are dropped,
        or kept with `partial` = True when `partial="flag"`."""
        if partial not in ("drop", "flag"):
            raise ValueError(f"partial must be 'drop' or 'flag', got {partial!r}")
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
                return client.interest_over_time(), self.clock()
            except (ValueError, KeyError, TypeError) as exc:
                raise TrendsPayloadError(
                    f"{what}: malformed interest over time ({type(exc).__name__}: {exc})"
                ) from None

        try:
            frame, retrieved = call_with_retries(what, fetch, _retryable, self.policy, stats, log)
        except TrendsError:
            raise
        except ApiError as exc:  # retries exhausted: the message already names keyword and timeframe
            raise TrendsError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - every failure must name the keyword and the timeframe
            raise TrendsError(f"{what}: {_describe(exc)}") from exc
        if frame.empty:
            return pl.DataFrame(schema=WINDOW_SCHEMA)
        out = pl.DataFrame(
            [
                pl.Series("ts", frame.index),
                pl.Series("value", frame[keyword].to_numpy()),
                pl.Series("partial", frame["isPartial"].to_numpy(), dtype=pl.Boolean),
            ]
        ).with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.cast_time_unit("us"))
        if out.filter(~pl.col("value").is_between(0, 100)).height:
            raise TrendsPayloadError(f"{what}: values outside 0..100")
        try:
            resolution = detect_resolution(out["ts"], end - start)
        except ValueError as exc:
            raise TrendsPayloadError(f"{what}: {exc}") from None
        if require and resolution != require:
            raise TrendsError(
                f"{what}: Google answered {ADJECTIVES[resolution]} points where {ADJECTIVES[require]} ones are "
                "required "
                f"(Google gives hourly points only for windows up to 7 days; window_hours={self.window_hours})"
            )
        out = out.with_columns(
            period_end(pl.col("ts"), resolution).alias("period_end"),
            pl.lit(datetime.fromtimestamp(retrieved, UTC)).cast(TS).alias("retrieved_at"),
            pl.col("value").cast(pl.Float64),
        )
        if partial == "drop":
            return out.filter(~pl.col("partial")).select(list(WINDOW_SCHEMA))
        return out.select(*WINDOW_SCHEMA, "partial")

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
            windows.append(self.window(keyword, a, b, stats, log, require="hour"))
            if log:
                log(f"Google Trends {keyword!r}: {i}/{len(plan)} windows")
        return stitch(windows, anchor, label=f"Google Trends {keyword!r}")
