"""Reddit's OAuth API as praw 8 calls it, replayed with deterministic synthetic posts.

- `POST {reddit_url}/api/v1/access_token` (HTTP Basic client_id:client_secret, `grant_type=client_credentials`)
  -> `{"access_token", "token_type": "bearer", "expires_in", "scope"}`; a secret of "invalid" -> 401.
- `GET {oauth_url}/r/{subreddit}/new?limit=&after=` (bearer token) -> a `Listing` of `t3` children, newest
  first, 100 a page at most, only the newest 1000 posts reachable (as on Reddit). Unknown subreddit -> 404.
- The first page of a listing starts with the subreddit's stickied posts (`STICKIES`: old, out of date order,
  `"stickied": true`), beyond `limit`, as Reddit does on listings; the ~1000-post cap counts the others.
- Rate limit as Reddit's free tier: 1000 requests per 600 s window per token, reported in the
  `x-ratelimit-used/-remaining/-reset` headers praw paces itself by; over it -> 429.
Posts arrive at a per-subreddit rate; titles carry positive or negative words following a slow "mood";
a post's score grows with its age, so a later poll sees higher scores than an earlier one.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
import time
from collections.abc import Callable

import numpy as np

from crpbot_assets.replay.protocol import ReplayService, Request, Response

POSTS_PER_HOUR = {"bitcoin": 12.0, "cryptocurrency": 40.0, "ethereum": 6.0, "solana": 5.0}
LISTING_CAP, PAGE_MAX, WINDOW_S, WINDOW_REQUESTS = 1000, 100, 600, 1000
SUBJECTS = {"bitcoin": "Bitcoin", "cryptocurrency": "crypto", "ethereum": "Ethereum", "solana": "Solana"}
POSITIVE = [
    "is looking great",
    "to the moon, so bullish",
    "adoption keeps growing, love it",
    "hits a new high! Amazing",
    "gains are wonderful today",
    "is the best investment I made",
]
NEGATIVE = [
    "crash is terrible",
    "looks like a scam, so much fear",
    "dump wiped out my savings, awful",
    "is dead, worst week ever",
    "panic selling everywhere, horrible",
    "hack: users lost funds",
]
NEUTRAL = [
    "price discussion thread",
    "weekly questions",
    "how do I move coins to a wallet?",
    "what are the network fees today",
    "news roundup",
    "technical analysis for the week",
]


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rem = divmod(number, 36)
        out = digits[rem] + out
        if not number:
            return out


def hour_posts(subreddit: str, hour: int, seed: int = 0) -> list[dict]:
    """The posts of one subreddit created in UNIX hour `hour` (deterministic), oldest first."""
    index = sorted(POSTS_PER_HOUR).index(subreddit)
    rng = np.random.default_rng([seed, index, hour])
    mood = math.sin(hour / 97.0) + 0.6 * math.sin(hour / 13.0 + index)  # slow swings between fear and greed
    count = int(rng.poisson(POSTS_PER_HOUR[subreddit] * (1.2 + 0.3 * math.sin(hour / 5.0))))
    p_pos = 1 / (1 + math.exp(-1.5 * mood))
    posts = []
    for i, offset in enumerate(np.sort(rng.uniform(0, 3600, count))):
        kind = rng.uniform()
        pool = NEUTRAL if kind < 0.3 else POSITIVE if rng.uniform() < p_pos else NEGATIVE
        post_id = _base36((hour * 4 + index) * 512 + i)
        posts.append(
            {
                "id": post_id,
                "name": f"t3_{post_id}",
                "subreddit": subreddit,
                "subreddit_name_prefixed": f"r/{subreddit}",
                "title": f"{SUBJECTS[subreddit]} {pool[rng.integers(len(pool))]}",
                "created_utc": float(hour * 3600 + int(offset)),
                "final_score": float(rng.lognormal(2.0, 1.2)),
                "num_comments": int(rng.poisson(8)),
                "author": f"user{rng.integers(10**6)}",
                "stickied": False,
            }
        )
    return posts


STICKY_AGES_DAYS = (45.0, 400.0)  # the moderators' pinned posts, long before anything the listing reaches


def stickies(subreddit: str, now: float) -> list[dict]:
    """The subreddit's stickied posts as of `now` (old, newest of them not first)."""
    out = []
    for i, age in enumerate(STICKY_AGES_DAYS[::-1]):
        post_id = f"st{i}{subreddit[:3]}"
        created = float(int(now // 86400 - age) * 86400)
        out.append(
            {
                "id": post_id,
                "name": f"t3_{post_id}",
                "subreddit": subreddit,
                "subreddit_name_prefixed": f"r/{subreddit}",
                "title": f"{SUBJECTS[subreddit]} daily discussion and rules",
                "created_utc": created,
                "score": 500,
                "num_comments": 4000,
                "author": "AutoModerator",
                "stickied": True,
                "permalink": f"/r/{subreddit}/comments/{post_id}/",
            }
        )
    return out


def newest_posts(subreddit: str, now: float, seed: int = 0, cap: int = LISTING_CAP) -> list[dict]:
    """The `cap` newest posts created by `now`, newest first, scores as of `now`."""
    out, hour = [], int(now // 3600)
    while len(out) < cap:
        batch = [p for p in hour_posts(subreddit, hour, seed) if p["created_utc"] <= now]
        out.extend(reversed(batch))
        hour -= 1
    for post in out[:cap]:
        age_h = (now - post["created_utc"]) / 3600
        post["score"] = int(round(post["final_score"] * (1 - math.exp(-age_h / 6)))) + 1
        post["permalink"] = f"/r/{subreddit}/comments/{post['id']}/"
    return out[:cap]


def service(seed: int = 0, clock: Callable[[], float] = time.time) -> ReplayService:
    """`clock` is the replay's notion of now (tests freeze it so no post appears between two polls)."""
    tokens: dict[str, list[float]] = {}  # token -> [window start, used]
    lock = threading.Lock()

    def access_token(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        try:
            client_id, secret = base64.b64decode(auth.removeprefix("Basic ")).decode().split(":", 1)
        except ValueError:
            client_id = secret = ""
        if not auth.startswith("Basic ") or not client_id or secret == "invalid":
            return Response.json({"message": "Unauthorized", "error": 401}, 401)
        if request.form().get("grant_type") != "client_credentials":
            return Response.json({"error": "unsupported_grant_type"})
        token = hashlib.sha256(f"{client_id}:{secret}:{time.time_ns()}".encode()).hexdigest()[:32]
        with lock:
            tokens[token] = [time.monotonic(), 0.0]
        return Response.json(
            {"access_token": token, "token_type": "bearer", "expires_in": 86400, "scope": "*"}
        )

    def listing(request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("bearer ")
        with lock:
            window = tokens.get(token)
            if window is None:
                return Response.json({"message": "Unauthorized", "error": 401}, 401)
            now = time.monotonic()
            if now - window[0] >= WINDOW_S:
                window[:] = [now, 0.0]
            window[1] += 1
            used, reset = window[1], int(WINDOW_S - (now - window[0]))
        headers = {
            "x-ratelimit-used": str(int(used)),
            "x-ratelimit-remaining": f"{max(0, WINDOW_REQUESTS - used):.1f}",
            "x-ratelimit-reset": str(reset),
        }
        if used > WINDOW_REQUESTS:
            return Response.json({"message": "Too Many Requests", "error": 429}, 429, **headers)
        subreddit = request.match.group("subreddit").lower()
        if subreddit not in POSTS_PER_HOUR:
            return Response.json({"message": "Not Found", "error": 404, "reason": "banned"}, 404, **headers)
        limit = max(1, min(PAGE_MAX, int(request.query.get("limit", "25"))))
        posts = newest_posts(subreddit, clock(), seed)
        after = request.query.get("after")
        start = 0
        if after:
            names = [p["name"] for p in posts]
            start = names.index(after) + 1 if after in names else len(posts)
        page = posts[start : start + limit]
        pinned = stickies(subreddit, clock()) if not after else []
        children = [
            {"kind": "t3", "data": {k: v for k, v in p.items() if k != "final_score"}} for p in pinned + page
        ]
        if request.malformed:
            for child in children:
                child["data"]["created_utc"] = "yesterday"
        more = start + limit < len(posts)
        body = {
            "kind": "Listing",
            "data": {
                "after": page[-1]["name"] if page and more else None,
                "before": None,
                "dist": len(page),
                "children": children,
            },
        }
        return Response.json(body, **headers)

    return ReplayService(
        name="reddit",
        routes=[
            ("POST", r"/api/v1/access_token", access_token),
            ("GET", r"/r/(?P<subreddit>[A-Za-z0-9_]+)/new(?:\.json)?", listing),
        ],
    )
