"""Clients of the three sentiment sources, each a ConfigurableResource with a `base_url`.

The local environment points them at the replay server; production uses the real hosts. Reddit
credentials come from environment variables read at use time (`dg.EnvVar(...).get_value()`), so a
missing variable is a clear error naming every missing variable (and a sensor skip), not a config crash.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import dagster as dg
import polars as pl
import praw
import prawcore
import requests
from pytrends.exceptions import ResponseError, TooManyRequestsError
from pytrends.request import BASE_TRENDS_URL, TrendReq

from crpbot_assets.common.http import (
    ApiError,
    RateLimiter,
    RequestStats,
    RetryPolicy,
    call_with_retries,
    get_json,
    parse_retry_after,
)
from crpbot_assets.sentiment.fear_greed import parse_payload
from crpbot_assets.sentiment.reddit import DEFAULT_SUBREDDITS, posts_frame
from crpbot_assets.sentiment.trends import SERIES_SCHEMA, plan_windows, stitch


class MissingCredentialsError(RuntimeError):
    """Reddit credentials are not configured."""


class TrendsPayloadError(ValueError):
    """A Google Trends response that cannot be read as interest over time."""


class FearGreedResource(dg.ConfigurableResource):
    """alternative.me Crypto Fear & Greed Index (`GET {base_url}/fng/?limit=0&format=json`)."""

    base_url: str = "https://api.alternative.me"
    max_attempts: int = 5
    base_delay_s: float = 1.0
    timeout_s: float = 15.0

    def history(self, log=None) -> tuple[pl.DataFrame, RequestStats]:
        """The whole daily history (validated, oldest first) and the request counters."""
        url, params, stats = (
            f"{self.base_url.rstrip('/')}/fng/",
            {"limit": 0, "format": "json"},
            RequestStats(),
        )
        policy = RetryPolicy(
            max_attempts=self.max_attempts, base_delay_s=self.base_delay_s, timeout_s=self.timeout_s
        )
        with requests.Session() as session:
            payload = get_json(session, url, params=params, policy=policy, stats=stats, log=log)
        return parse_payload(payload, source=f"GET {url}?limit=0&format=json"), stats


def _reddit_retryable(exc: Exception) -> float | None | bool:
    if isinstance(exc, (prawcore.exceptions.TooManyRequests, prawcore.exceptions.ServerError)):
        return (
            parse_retry_after(exc.response.headers.get("retry-after")) if exc.response is not None else None
        )
    return None if isinstance(exc, prawcore.exceptions.RequestException) else False


class RedditResource(dg.ConfigurableResource):
    """praw in read-only mode. `base_url` is praw's `oauth_url` (the API host) and `reddit_url` its token host.

    Credentials: `client_id`/`client_secret`/`user_agent` when set (the local replay uses fixed dummies),
    else the environment variables named by the `*_env` fields (production).
    """

    base_url: str = "https://oauth.reddit.com"
    reddit_url: str = "https://www.reddit.com"
    client_id: str | None = None
    client_secret: str | None = None
    user_agent: str | None = None
    client_id_env: str = "REDDIT_CLIENT_ID"
    client_secret_env: str = "REDDIT_CLIENT_SECRET"
    user_agent_env: str = "REDDIT_USER_AGENT"
    subreddits: dict[str, list[str]] = DEFAULT_SUBREDDITS
    max_posts: int = 1000
    max_attempts: int = 4
    base_delay_s: float = 2.0
    timeout_s: float = 16.0

    def _credentials(self) -> dict[str, str | None]:
        return {
            env: explicit or dg.EnvVar(env).get_value()
            for explicit, env in (
                (self.client_id, self.client_id_env),
                (self.client_secret, self.client_secret_env),
                (self.user_agent, self.user_agent_env),
            )
        }

    def missing_variables(self) -> list[str]:
        """Environment variables that must be set before Reddit can be read (empty when ready)."""
        return [env for env, value in self._credentials().items() if not value]

    def require_credentials(self) -> None:
        if missing := self.missing_variables():
            raise MissingCredentialsError(
                f"Reddit credentials missing: set the environment variable(s) {', '.join(missing)}"
            )

    def all_subreddits(self) -> list[str]:
        return sorted({s.lower() for names in self.subreddits.values() for s in names})

    def subreddits_of(self, symbol: str) -> list[str]:
        if symbol not in self.subreddits:
            raise KeyError(f"no subreddits configured for {symbol!r}; configured: {sorted(self.subreddits)}")
        return self.subreddits[symbol]

    def client(self) -> praw.Reddit:
        self.require_credentials()
        client_id, secret, agent = self._credentials().values()
        return praw.Reddit(
            client_id=client_id,
            client_secret=secret,
            user_agent=agent,
            oauth_url=self.base_url.rstrip("/"),
            reddit_url=self.reddit_url.rstrip("/"),
            check_for_updates=False,
            check_for_async=False,
            timeout=self.timeout_s,
        )

    def newest_posts(
        self,
        subreddit: str,
        limit: int | None = None,
        stop_before: float | None = None,
        client: praw.Reddit | None = None,
        stats: RequestStats | None = None,
        log=None,
    ) -> pl.DataFrame:
        """Newest posts of `subreddit` (POST_SCHEMA), paging 100 at a time until `limit` (default `max_posts`),
        the listing's end (Reddit keeps ~1000), or a post created before `stop_before` (UNIX s)."""
        reddit, stats = client or self.client(), stats if stats is not None else RequestStats()
        policy = RetryPolicy(max_attempts=self.max_attempts, base_delay_s=self.base_delay_s)
        limit, rows, after = limit or self.max_posts, [], None
        while len(rows) < limit:
            params = {"limit": min(100, limit - len(rows)), **({"after": after} if after else {})}
            what = f"GET {self.base_url}/r/{subreddit}/new {params}"

            def fetch():
                stats.add(requests=1)
                return reddit.get(f"r/{subreddit}/new", params=params)  # noqa: B023 (called at once, inside the iteration)

            try:
                listing = call_with_retries(what, fetch, _reddit_retryable, policy, stats, log)
            except prawcore.exceptions.NotFound:
                raise ApiError(f"{what}: subreddit r/{subreddit} not found") from None
            except prawcore.exceptions.ResponseException as exc:
                raise ApiError(
                    f"{what}: HTTP {exc.response.status_code} (check the Reddit credentials)"
                ) from exc
            retrieved = time.time()
            page = [
                {
                    "id": p.id,
                    "created_utc": p.created_utc,
                    "subreddit": str(p.subreddit),
                    "title": p.title,
                    "score": p.score,
                    "num_comments": p.num_comments,
                    "retrieved_utc": retrieved,
                }
                for p in listing
            ]
            rows.extend(page)
            after = listing.after
            if (
                not page
                or after is None
                or (stop_before is not None and min(r["created_utc"] for r in page) < stop_before)
            ):
                break
        return posts_frame(rows[:limit], source=f"r/{subreddit}/new")


class _TrendReq(TrendReq):
    """pytrends' client with every request under `base_url`.

    pytrends reads its endpoint URLs as `TrendReq.X_URL` class attributes and the cookie page from the
    module constant, so instance attributes would be ignored and patching the class would leak across
    threads; instead each request URL is re-rooted at `base_url`. Retries stay at 0 (pytrends' own retry
    path crashes with urllib3 2); the resource backs off itself.
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


def _trends_retryable(exc: Exception) -> float | None | bool:
    if isinstance(exc, ResponseError):
        if exc.response.status_code == 429 or exc.response.status_code >= 500:
            return parse_retry_after(exc.response.headers.get("Retry-After"))
        return False
    return None if isinstance(exc, (requests.ConnectionError, requests.Timeout)) else False


class GoogleTrendsResource(dg.ConfigurableResource):
    """Google Trends through pytrends: hourly interest in overlapping 7-day windows stitched onto one scale."""

    base_url: str = BASE_TRENDS_URL
    hl: str = "en-US"
    geo: str = ""
    window_hours: int = 168
    overlap_hours: int = 24
    requests_per_s: float = 0.5
    max_attempts: int = 6
    base_delay_s: float = 5.0
    max_delay_s: float = 120.0
    timeout_s: float = 10.0

    def _policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts, base_delay_s=self.base_delay_s, max_delay_s=self.max_delay_s
        )

    def window(
        self,
        keyword: str,
        start: datetime,
        end: datetime,
        stats: RequestStats | None = None,
        limiter: RateLimiter | None = None,
        log=None,
    ) -> pl.DataFrame:
        """One window's final hourly points (`ts` = hour start, `value` 0-100 on the window's own scale)."""
        stats = stats if stats is not None else RequestStats()
        limiter = limiter or RateLimiter(self.requests_per_s)
        timeframe = f"{start:%Y-%m-%dT%H} {end:%Y-%m-%dT%H}"
        what = f"Google Trends {keyword!r} {timeframe}"

        def paced():
            limiter.acquire()
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

        frame = call_with_retries(what, fetch, _trends_retryable, self._policy(), stats, log)
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
        limiter: RateLimiter | None = None,
        log=None,
    ) -> pl.DataFrame:
        """Hourly interest over [start, end] on one scale: the anchor's when given (it must cover the
        first `overlap_hours` before `start`), else the first window's. Pass one `limiter` to pace many calls."""
        stats = stats if stats is not None else RequestStats()
        limiter = limiter or RateLimiter(self.requests_per_s)
        overlap = timedelta(hours=self.overlap_hours)
        first = start - overlap if anchor is not None and anchor.height else start
        plan = plan_windows(first, end, timedelta(hours=self.window_hours), overlap)
        windows = []
        for i, (a, b) in enumerate(plan, 1):
            windows.append(self.window(keyword, a, b, stats, limiter, log))
            if log:
                log(f"Google Trends {keyword!r}: {i}/{len(plan)} windows")
        return stitch(windows, anchor, label=f"Google Trends {keyword!r}")
