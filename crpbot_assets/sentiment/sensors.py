"""The Reddit poller: new posts -> runs of `reddit_posts` for the months they fall in."""

import hashlib
import json
from datetime import UTC, datetime

import dagster as dg

from crpbot_assets.common.months import month_key
from crpbot_assets.common.settings import interval_setting
from crpbot_assets.sentiment.assets import reddit_posts
from crpbot_assets.sentiment.resources import RedditResource

POLL_PAGE = 100  # one page per subreddit per tick; the asset pages deeper when it runs


@dg.sensor(
    name="reddit_new_posts",
    minimum_interval_seconds=interval_setting("CRPBOT_REDDIT_POLL_S", 300),
    asset_selection=[reddit_posts],
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def reddit_new_posts(context: dg.SensorEvaluationContext, reddit: RedditResource):
    """Every 5 minutes: read the newest page of each subreddit; posts whose ids the previous tick did not
    see request a `reddit_posts` run for their month (which appends and de-duplicates by id). Cursor:
    the ids seen on the last page of each subreddit. Skips, with the reason, when credentials are missing."""
    missing = reddit.missing_variables()
    if missing:
        return dg.SkipReason(
            f"Reddit credentials missing: set the environment variable(s) {', '.join(missing)}"
        )
    seen = json.loads(context.cursor) if context.cursor else {}
    client = reddit.client()
    cursor = {}
    fresh_by_month = {}
    for sub in reddit.all_subreddits():
        page = reddit.newest_posts(sub, limit=POLL_PAGE, client=client, log=context.log.warning)
        cursor[sub] = page["id"].to_list()
        previous = set(seen.get(sub, []))
        for post_id, created in zip(page["id"], page["created_utc"]):
            if post_id not in previous:
                month = month_key(datetime.fromtimestamp(created, UTC))
                fresh_by_month.setdefault(month, []).append(post_id)
    context.update_cursor(json.dumps(cursor))
    if not fresh_by_month:
        return dg.SkipReason(f"no new posts in r/{', r/'.join(reddit.all_subreddits())}")
    requests = []
    for month, ids in sorted(fresh_by_month.items()):
        digest = hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:16]
        context.log.info(f"{month}: {len(ids)} new posts")
        requests.append(
            dg.RunRequest(
                run_key=f"reddit_posts:{month}:{digest}",
                partition_key=month,
                tags={"crpbot/new_posts": str(len(ids))},
            )
        )
    return requests
