"""The sentiment domain's Definitions: assets, check, sensor, schedules and the resources for CRPBOT_ENV."""

import dagster as dg

from crpbot_assets.common.settings import crpbot_env, replay_url
from crpbot_assets.sentiment.assets import (
    fear_greed_index,
    google_trends_hourly,
    reddit_hourly,
    reddit_posts,
    sentiment_features,
)
from crpbot_assets.sentiment.checks import sentiment_features_schema
from crpbot_assets.sentiment.resources import FearGreedResource, GoogleTrendsResource, RedditResource
from crpbot_assets.sentiment.schedules import fear_greed_daily, google_trends_refresh
from crpbot_assets.sentiment.sensors import reddit_new_posts

REPLAY_REDDIT_CREDENTIALS = {
    "client_id": "crpbot-replay",
    "client_secret": "replay-secret",
    "user_agent": "crpbot/0.1 (replay server)",
}


def sentiment_resources(env: str) -> dict:
    """Production: the real hosts, Reddit credentials from REDDIT_CLIENT_ID/REDDIT_CLIENT_SECRET/
    REDDIT_USER_AGENT. Local: everything on the replay server, with fixed dummy Reddit credentials."""
    if env == "prod":
        return {
            "fear_greed": FearGreedResource(),
            "reddit": RedditResource(),
            "google_trends": GoogleTrendsResource(),
        }
    url = replay_url()
    return {
        "fear_greed": FearGreedResource(base_url=url),
        "reddit": RedditResource(base_url=url, reddit_url=url, **REPLAY_REDDIT_CREDENTIALS),
        "google_trends": GoogleTrendsResource(base_url=f"{url}/trends", requests_per_s=4.0, base_delay_s=0.5),
    }


defs = dg.Definitions(
    assets=[fear_greed_index, reddit_posts, reddit_hourly, google_trends_hourly, sentiment_features],
    asset_checks=[sentiment_features_schema],
    schedules=[fear_greed_daily, google_trends_refresh],
    sensors=[reddit_new_posts],
    resources=sentiment_resources(crpbot_env()),
)
