"""The sentiment domain's Definitions: assets (sentiment_features with its check), sensor and schedules (resources: crpbot_assets/resources.py)."""

import dagster as dg

from crpbot_assets.sentiment.assets import (
    fear_greed_index,
    google_trends_hourly,
    reddit_hourly,
    reddit_posts,
    sentiment_features,
)
from crpbot_assets.sentiment.schedules import fear_greed_daily, google_trends_refresh
from crpbot_assets.sentiment.sensors import reddit_new_posts

defs = dg.Definitions(
    assets=[fear_greed_index, reddit_posts, reddit_hourly, google_trends_hourly, sentiment_features],
    schedules=[fear_greed_daily, google_trends_refresh],
    sensors=[reddit_new_posts],
)
