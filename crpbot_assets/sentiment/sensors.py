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
RECENT_S = 600  # posts this close to the newest seen one are remembered by id (listings show them late)


def fresh_posts(
    ids: list[str], created: list[float], state: dict | list | None, recent_s: float = RECENT_S
) -> tuple[list[tuple[str, float]], dict]:
    """(id, created_utc) of the posts on one listing page the cursor has not seen, and the new state.

    The state is compact: `{"hwm": newest created_utc seen, "recent": {id: created_utc}}` holding only the
    posts created within `recent_s` of the mark (a listing can reveal those late). A post is new when it is
    not among them and not older than that window. A legacy state (a list of ids) means those ids were seen.
    """
    if isinstance(state, dict):
        mark, recent = float(state.get("hwm", float("-inf"))), dict(state.get("recent", {}))
    else:
        mark, recent = float("-inf"), {post_id: float("inf") for post_id in state or []}
    fresh = [(i, t) for i, t in zip(ids, created) if i not in recent and t >= mark - recent_s]
    recent.update(zip(ids, created))
    new_mark = max([mark, *created])
    if new_mark == float("-inf"):
        return fresh, {}
    keep = {i: t for i, t in recent.items() if new_mark - recent_s <= t < float("inf")}
    return fresh, {"hwm": new_mark, "recent": keep}


@dg.sensor(
    name="reddit_new_posts",
    minimum_interval_seconds=interval_setting("CRPBOT_REDDIT_POLL_S", 300),
    asset_selection=[reddit_posts],
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def reddit_new_posts(context: dg.SensorEvaluationContext, reddit: RedditResource):
    """Every 5 minutes: read the newest page of each subreddit; posts whose ids the previous tick did not
    see request a `reddit_posts` run for their month (which appends and de-duplicates by id). Cursor:
    per subreddit, the newest post time seen and the ids of the few minutes before it (`fresh_posts`).
    Skips, with the reason, when credentials are missing."""
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
        page = client.newest_posts(sub, limit=POLL_PAGE, log=context.log.warning)
        fresh, cursor[sub] = fresh_posts(page["id"].to_list(), page["created_utc"].to_list(), seen.get(sub))
        for post_id, created in fresh:
            month = month_key(datetime.fromtimestamp(created, UTC))
            fresh_by_month.setdefault(month, []).append(post_id)
    context.update_cursor(json.dumps(cursor, separators=(",", ":")))
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
