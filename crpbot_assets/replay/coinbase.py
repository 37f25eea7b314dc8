"""Coinbase Exchange public candles endpoint, replayed from the synthetic series.

Matches the real wire format: rows `[time, low, high, open, close, volume]`, newest first; both ends of
the window inclusive; more than 300 buckets -> 400; absent start/end -> the newest 300; a quiet minute
has no row; 10 requests/s per client with bursts of 15 -> 429. Like the real API it sometimes returns
one candle from just before `start` (clients must filter). Injectable faults beyond the server's: "malformed"
(a non-numeric field), "message" (HTTP 200 with `{"message": ...}` instead of candles) and "empty" (HTTP 200
with no rows, as for a page without trades).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from crpbot_assets.common.symbols import LISTED_AT
from crpbot_assets.replay import synthetic
from crpbot_assets.replay.protocol import ReplayService, Request, Response

GRANULARITIES = {60, 300, 900, 3600, 21600, 86400}
MAX_CANDLES = 300


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def service(
    seed: int = 0, rate_per_s: float = 10.0, burst: int = 15, clock: Callable[[], float] = time.time
) -> ReplayService:
    """`clock` is the replay's notion of now: only minutes completed by then are served (tests move it)."""

    def candles(request: Request) -> Response:
        product = request.match.group("product")
        if product not in LISTED_AT:
            return Response.error(404, "NotFound")
        try:
            granularity = int(request.query.get("granularity", "60"))
        except ValueError:
            return Response.error(400, "Unsupported granularity")
        if granularity != 60:  # the replay only holds 1-minute data
            return Response.error(
                400,
                "Unsupported granularity"
                if granularity not in GRANULARITIES
                else "replay serves granularity=60 only",
            )
        now = datetime.fromtimestamp(clock(), UTC).replace(second=0, microsecond=0)
        if "start" in request.query and "end" in request.query:
            try:
                start, end = _parse_time(request.query["start"]), _parse_time(request.query["end"])
            except ValueError:
                return Response.error(400, "invalid start/end")
            if (end - start) / timedelta(minutes=1) + 1 > MAX_CANDLES:
                return Response.error(
                    400,
                    "granularity too small for the requested time range. Count of aggregations requested exceeds 300",
                )
        else:
            start, end = now - timedelta(minutes=MAX_CANDLES - 1), now
        # Inclusive end; the real API occasionally leaks one bucket before start.
        leak = timedelta(minutes=1) if int(start.timestamp()) // 60 % 7 == 0 else timedelta(0)
        frame = synthetic.candles(product, start - leak, end + timedelta(minutes=1), seed, now=now)
        rows = [
            [int(ts.timestamp()), lo, hi, op, cl, vol] for ts, op, hi, lo, cl, vol in reversed(frame.rows())
        ]
        if request.malformed:
            rows = [[r[0], "not-a-number", *r[2:]] for r in rows] or [["garbage"]]
        if request.fault == "message":
            return Response.json({"message": "Internal error: try again later"})
        if request.fault == "empty":
            rows = []
        return Response.json(rows)

    return ReplayService(
        name="coinbase",
        routes=[("GET", r"/products/(?P<product>[^/]+)/candles", candles)],
        rate_per_s=rate_per_s,
        burst=burst,
        faults=("malformed", "message", "empty"),
    )
