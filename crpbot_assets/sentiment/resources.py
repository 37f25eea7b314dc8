"""The three sentiment sources as ConfigurableResources: configuration only, each builds its client
(`*_client.py`, no Dagster) with `client()`.

The local environment points them at the replay server; production uses the real hosts. Reddit
credentials come from environment variables read at use time (`dg.EnvVar(...).get_value()`), so a
missing variable is a clear error naming every missing variable (and a sensor skip), not a config crash.
"""

from __future__ import annotations

import dagster as dg

from crpbot_assets.common.http import RetryPolicy
from crpbot_assets.sentiment.fear_greed_client import PROD_URL as FEAR_GREED_URL
from crpbot_assets.sentiment.fear_greed_client import FearGreedClient
from crpbot_assets.sentiment.reddit import DEFAULT_SUBREDDITS
from crpbot_assets.sentiment.reddit_client import PROD_OAUTH_URL, PROD_REDDIT_URL, RedditClient
from crpbot_assets.sentiment.trends_client import PROD_URL as TRENDS_URL
from crpbot_assets.sentiment.trends_client import TrendsClient


class MissingCredentialsError(RuntimeError):
    """Reddit credentials are not configured."""


class FearGreedResource(dg.ConfigurableResource):
    """alternative.me Crypto Fear & Greed Index (`GET {base_url}/fng/?limit=0&format=json`)."""

    base_url: str = FEAR_GREED_URL
    max_attempts: int = 5
    base_delay_s: float = 1.0
    timeout_s: float = 15.0

    def client(self) -> FearGreedClient:
        policy = RetryPolicy(
            max_attempts=self.max_attempts, base_delay_s=self.base_delay_s, timeout_s=self.timeout_s
        )
        return FearGreedClient(self.base_url, policy)


class RedditResource(dg.ConfigurableResource):
    """praw in read-only mode. `base_url` is praw's `oauth_url` (the API host) and `reddit_url` its token host.

    Credentials: `client_id`/`client_secret`/`user_agent` when set (the local replay uses fixed dummies),
    else the environment variables named by the `*_env` fields (production).
    """

    base_url: str = PROD_OAUTH_URL
    reddit_url: str = PROD_REDDIT_URL
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

    def client(self) -> RedditClient:
        self.require_credentials()
        client_id, secret, agent = self._credentials().values()
        return RedditClient(
            client_id,
            secret,
            agent,
            oauth_url=self.base_url,
            reddit_url=self.reddit_url,
            max_posts=self.max_posts,
            timeout_s=self.timeout_s,
            policy=RetryPolicy(max_attempts=self.max_attempts, base_delay_s=self.base_delay_s),
        )


class GoogleTrendsResource(dg.ConfigurableResource):
    """Google Trends through pytrends: hourly interest in overlapping 7-day windows stitched onto one scale."""

    base_url: str = TRENDS_URL
    hl: str = "en-US"
    geo: str = ""
    window_hours: int = 168
    overlap_hours: int = 24
    requests_per_s: float = 0.5
    max_attempts: int = 6
    base_delay_s: float = 5.0
    max_delay_s: float = 120.0
    timeout_s: float = 10.0

    def client(self) -> TrendsClient:
        """A client with its own token bucket: build one per run so every keyword and month shares the pace."""
        return TrendsClient(
            self.base_url,
            hl=self.hl,
            geo=self.geo,
            window_hours=self.window_hours,
            overlap_hours=self.overlap_hours,
            requests_per_s=self.requests_per_s,
            timeout_s=self.timeout_s,
            policy=RetryPolicy(
                max_attempts=self.max_attempts, base_delay_s=self.base_delay_s, max_delay_s=self.max_delay_s
            ),
        )
