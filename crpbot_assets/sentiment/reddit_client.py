"""Reddit client: praw in read-only mode, paging a subreddit's `new` listing. No Dagster.

Retries: prawcore retries 5xx answers, connection errors and read timeouts twice by itself (3 attempts) and
paces by Reddit's `x-ratelimit-*` headers; this client adds back-off only for what prawcore raises at once,
429 Too Many Requests, so no failure is retried by two layers (see `common.http`).
"""

from __future__ import annotations

import time

import polars as pl
import praw
import prawcore

from crpbot_assets.common.http import (
    ApiError,
    RequestStats,
    RetryPolicy,
    call_with_retries,
    parse_retry_after,
)
from crpbot_assets.sentiment.reddit import posts_frame

PROD_OAUTH_URL = "https://oauth.reddit.com"
PROD_REDDIT_URL = "https://www.reddit.com"
PAGE = 100  # Reddit's largest listing page


def _retryable(exc: Exception) -> float | None | bool:
    """Only 429: prawcore has already retried 5xx and transport errors before they reach us."""
    if isinstance(exc, prawcore.exceptions.TooManyRequests):
        return (
            parse_retry_after(exc.response.headers.get("retry-after")) if exc.response is not None else None
        )
    return False


class RedditClient:
    """Newest posts of subreddits, as POST_SCHEMA frames."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        user_agent: str,
        oauth_url: str = PROD_OAUTH_URL,
        reddit_url: str = PROD_REDDIT_URL,
        max_posts: int = 1000,
        timeout_s: float = 16.0,
        policy: RetryPolicy | None = None,
    ):
        self.oauth_url = oauth_url.rstrip("/")
        self.max_posts = max_posts
        self.policy = policy or RetryPolicy(max_attempts=4, base_delay_s=2.0)
        self.praw = praw.Reddit(
            client_id=client_id,
            client_secret=client_secret,
            user_agent=user_agent,
            oauth_url=self.oauth_url,
            reddit_url=reddit_url.rstrip("/"),
            check_for_updates=False,
            check_for_async=False,
            timeout=timeout_s,
        )

    def newest_posts(
        self,
        subreddit: str,
        limit: int | None = None,
        stop_before: float | None = None,
        stats: RequestStats | None = None,
        log=None,
    ) -> pl.DataFrame:
        """Newest posts of `subreddit` (POST_SCHEMA), paging 100 at a time until `limit` (default `max_posts`),
        the listing's end (Reddit keeps ~1000), or a post created before `stop_before` (UNIX s). Stickied
        posts are left out. Every row's `listed_back_to_utc` is the oldest post this listing reached."""
        stats = stats if stats is not None else RequestStats()
        limit = limit or self.max_posts
        rows = []
        after = None
        while len(rows) < limit:
            params = {"limit": min(PAGE, limit - len(rows)), **({"after": after} if after else {})}
            what = f"GET {self.oauth_url}/r/{subreddit}/new {params}"

            def fetch():
                stats.add(requests=1)
                return self.praw.get(f"r/{subreddit}/new", params=params)  # noqa: B023 (called at once, inside the iteration)

            try:
                listing = call_with_retries(what, fetch, _retryable, self.policy, stats, log)
            except prawcore.exceptions.NotFound:
                raise ApiError(f"{what}: subreddit r/{subreddit} not found") from None
            except prawcore.exceptions.ResponseException as exc:
                hint = " (check the Reddit credentials)" if exc.response.status_code in (401, 403) else ""
                raise ApiError(f"{what}: HTTP {exc.response.status_code}{hint}") from exc
            except prawcore.exceptions.RequestException as exc:
                raise ApiError(f"{what}: {type(exc.original_exception).__name__}: {exc}") from exc
            retrieved = time.time()
            # Stickied posts come first on a page, old and out of order: never posts of the listing's span.
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
                if not p.stickied
            ]
            rows.extend(page)
            after = listing.after
            if (
                not page
                or after is None
                or (stop_before is not None and min(r["created_utc"] for r in page) < stop_before)
            ):
                break
        rows = rows[:limit]
        # The listing observed every post from its oldest listed one on: that is where its coverage starts.
        reach = min((r["created_utc"] for r in rows), default=None)
        return posts_frame([{**r, "listed_back_to_utc": reach} for r in rows], source=f"r/{subreddit}/new")
