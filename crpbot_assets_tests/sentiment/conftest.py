"""Sentiment fixtures: the three source resources pointed at the session replay server, with short back-offs."""

import pytest

from crpbot_assets.resources import REPLAY_REDDIT_CREDENTIALS
from crpbot_assets.sentiment.resources import FearGreedResource, GoogleTrendsResource, RedditResource


def reddit_resource(url: str, **overrides) -> RedditResource:
    config = {"max_posts": 200, "base_delay_s": 0.05, **REPLAY_REDDIT_CREDENTIALS, **overrides}
    return RedditResource(base_url=url, reddit_url=url, **config)


def trends_resource(url: str, **overrides) -> GoogleTrendsResource:
    # 4.5 requests/s against the replay's 5/s: paced like production, not slowed down for tests.
    config = {"requests_per_s": 4.5, "base_delay_s": 0.05, "max_delay_s": 0.5, **overrides}
    return GoogleTrendsResource(base_url=f"{url}/trends", **config)


@pytest.fixture
def sentiment_resources(replay_server) -> dict:
    url = replay_server.url
    return {
        "fear_greed": FearGreedResource(base_url=url, base_delay_s=0.05),
        "reddit": reddit_resource(url),
        "google_trends": trends_resource(url),
    }
