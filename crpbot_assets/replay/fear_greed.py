"""alternative.me Crypto Fear & Greed Index, replayed: `GET /fng/?limit=N&format=json`.

Wire format as recorded: every value a string, `timestamp` = 00:00 UTC of the day (UNIX seconds), newest
first, `time_until_update` only on the newest entry; history from 2018-02-01 with the real gap
2018-04-14..16. `limit=0` returns everything. A "malformed" fault returns a non-numeric value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np

from crpbot_assets.replay.protocol import ReplayService, Request, Response

FIRST_DAY = datetime(2018, 2, 1, tzinfo=UTC)
MISSING_DAYS = {datetime(2018, 4, d, tzinfo=UTC) for d in (14, 15, 16)}
BANDS = ((25, "Extreme Fear"), (46, "Fear"), (54, "Neutral"), (75, "Greed"), (100, "Extreme Greed"))


def classify(value: int) -> str:
    """The band alternative.me labels a value with."""
    return next(label for upper, label in BANDS if value <= upper)


SERIES_DAYS = 366 * 30


@lru_cache(maxsize=4)
def _values(seed: int) -> np.ndarray:
    """A mean-reverting walk in 1..99, one value per day since FIRST_DAY (deterministic in seed)."""
    rng = np.random.default_rng([seed, 0xF6])
    values, level = np.empty(SERIES_DAYS, dtype=np.int64), 50.0
    for i, shock in enumerate(rng.normal(0, 7, SERIES_DAYS)):
        level = float(np.clip(level + 0.12 * (50 - level) + shock, 1, 99))
        values[i] = round(level)
    return values


def history(seed: int = 0, today: datetime | None = None) -> list[tuple[datetime, int]]:
    """(day, value) pairs oldest first, up to `today` (UTC), without the days the real series lacks."""
    today = (today or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    days = (today - FIRST_DAY).days + 1
    values = _values(seed)
    return [
        (FIRST_DAY + timedelta(days=i), int(values[i]))
        for i in range(days)
        if FIRST_DAY + timedelta(days=i) not in MISSING_DAYS
    ]


def service(
    seed: int = 0, rate_per_s: float = 1.0, burst: int = 60, clock: Callable[[], float] = time.time
) -> ReplayService:
    """60 requests/minute per client, as alternative.me documents. `clock` is the replay's notion of now (tests
    fix it, so that "today" cannot change between the request and the assertion)."""

    def fng(request: Request) -> Response:
        if request.query.get("format", "json") != "json":
            return Response(200, b"fng_value,fng_classification,date\n", "text/csv")
        try:
            limit = int(request.query.get("limit", "1"))
        except ValueError:
            return Response.json(
                {"name": "Fear and Greed Index", "data": [], "metadata": {"error": "Invalid limit"}}
            )
        now = datetime.fromtimestamp(clock(), UTC)
        rows = history(seed, now)[::-1]
        rows = rows if limit == 0 else rows[:limit]
        data = [
            {"value": str(v), "value_classification": classify(v), "timestamp": str(int(day.timestamp()))}
            for day, v in rows
        ]
        if data:
            tomorrow = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
            data[0]["time_until_update"] = str(int((tomorrow - now).total_seconds()))
        if request.malformed and data:
            data[len(data) // 2]["value"] = "n/a"
        return Response.json({"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}})

    return ReplayService(
        name="fear_greed", routes=[("GET", r"/fng/?", fng)], rate_per_s=rate_per_s, burst=burst
    )
