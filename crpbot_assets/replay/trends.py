"""Google Trends as pytrends 4.9.2 calls it, replayed with deterministic synthetic search interest.

Routes under `/trends` (pytrends' BASE_TRENDS_URL path):
- `GET /trends/explore/?geo=..` sets the `NID` cookie; API calls without it get 429 (as Google does).
- `POST|GET /trends/api/explore?hl=&tz=&req={comparisonItem:[{keyword,time,geo}],category,property}` ->
  `)]}'` + newline + `{"widgets": [...]}`; the TIMESERIES widget carries a `request` and a `token`.
- `GET /trends/api/widgetdata/multiline?req=&token=&tz=` -> `)]}',` + newline + `{"default": {"timelineData":
  [{"time": "<unix s>", "value": [int], "hasData": [bool], "formattedValue": [..]}], "averages": []}}`.
Time frames are explicit `YYYY-MM-DDTHH YYYY-MM-DDTHH` (hourly points, windows up to 7 days) or
`YYYY-MM-DD YYYY-MM-DD` (daily up to 269 days, weekly beyond), read as UTC. Every window is scaled so its
maximum is 100 (values rounded to integers); the point whose period has not ended is `isPartial`.
`true_interest()` is the unscaled series the tests compare stitched results against.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime

import numpy as np

from crpbot_assets.replay.protocol import ReplayService, Request, Response

KEYWORD_LEVELS = {"bitcoin": 100.0, "ethereum": 40.0, "solana": 12.0}
HOUR, DAY, WEEK = 3600, 86400, 7 * 86400
SECRET = "crpbot-replay"


def true_interest(keyword: str, hour_starts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Unscaled interest at the given UNIX hour starts: slow regimes x daily cycle x jitter (all deterministic)."""
    salt = int(hashlib.sha256(f"{seed}:{keyword.lower()}".encode()).hexdigest()[:8], 16)
    a, b, c, d = ((salt >> s) % 628 / 100 for s in (0, 7, 14, 21))
    h = hour_starts.astype(np.float64) / HOUR
    level = KEYWORD_LEVELS.get(keyword.lower(), 5.0 + salt % 20)
    slow = 0.5 * np.sin(h / 900 + a) + 0.3 * np.sin(h / 71 + b) + 0.1 * np.sin(h / 9.3 + c)
    jitter = 0.04 * np.sin(h * 12.9898 + d) * np.sin(h * 78.233)
    return level * np.exp(slow + jitter) * (1 + 0.25 * np.sin(2 * np.pi * h / 24 + d))


def _parse_time(text: str) -> tuple[float, bool]:
    """UNIX seconds of one end of a time frame, and whether it was given to the hour."""
    hourly = "T" in text
    fmt = "%Y-%m-%dT%H" if hourly else "%Y-%m-%d"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp(), hourly


def parse_timeframe(timeframe: str) -> tuple[float, float, int]:
    """(start, end, bucket seconds) of an explicit time frame; ValueError for anything else."""
    parts = timeframe.split()
    if len(parts) != 2:
        raise ValueError(f"unsupported time frame {timeframe!r}")
    (start, hourly), (end, _) = _parse_time(parts[0]), _parse_time(parts[1])
    if end <= start:
        raise ValueError(f"time frame {timeframe!r} ends before it starts")
    span = end - start
    if hourly and span <= 7 * DAY:
        return start, end, HOUR
    return start, end, DAY if span <= 269 * DAY else WEEK


def timeline(keywords: list[str], timeframe: str, seed: int = 0, now: float | None = None) -> list[dict]:
    """The timelineData Google returns for `keywords` (jointly scaled) over `timeframe`."""
    start, end, bucket = parse_timeframe(timeframe)
    now = time.time() if now is None else now
    last = min(end, now)
    starts = np.arange(start, last + (HOUR if bucket == HOUR else 0), bucket)
    starts = starts[starts <= last]
    hours = np.arange(start, (starts[-1] if len(starts) else start) + bucket, HOUR)
    raw = np.array([true_interest(kw, hours, seed) for kw in keywords]).reshape(len(keywords), -1)
    per = bucket // HOUR
    buckets = raw[:, : len(starts) * per].reshape(len(keywords), len(starts), per).mean(axis=2)
    scaled = np.rint(100 * buckets / buckets.max()) if buckets.size else buckets
    rows = []
    for i, ts in enumerate(starts):
        values = [int(v) for v in scaled[:, i]]
        row = {
            "time": str(int(ts)),
            "formattedTime": datetime.fromtimestamp(ts, UTC).strftime("%b %d, %Y at %H:%M"),
            "value": values,
            "hasData": [v > 0 for v in values],
            "formattedValue": [str(v) for v in values],
        }
        if ts + bucket > now:
            row["isPartial"] = True
        rows.append(row)
    return rows


def _token(request: dict) -> str:
    return hashlib.sha256((SECRET + json.dumps(request, sort_keys=True)).encode()).hexdigest()[:32]


def _prefixed(prefix: str, value: dict) -> Response:
    return Response(200, (prefix + "\n" + json.dumps(value)).encode(), "application/json; charset=utf-8")


def service(seed: int = 0, rate_per_s: float = 5.0, burst: int = 10) -> ReplayService:
    """Google throttles hard and without documentation; the replay allows 5 requests/s, bursts of 10."""

    def cookie(request: Request) -> Response:
        nid = hashlib.sha256(f"{request.client}:{time.time_ns()}".encode()).hexdigest()[:24]
        return Response(
            200,
            b"<html>explore</html>",
            "text/html; charset=utf-8",
            {"Set-Cookie": f"NID=511={nid}; Path=/; HttpOnly"},
        )

    def needs_cookie(request: Request) -> Response | None:
        if "NID=" not in request.headers.get("cookie", ""):
            return Response(429, b"<html>unusual traffic</html>", "text/html")
        return None

    def explore(request: Request) -> Response:
        if refused := needs_cookie(request):
            return refused
        try:
            req = json.loads(request.query["req"])
            items = req["comparisonItem"]
            timeframe = items[0]["time"]
            keywords = [item["keyword"] for item in items]
            parse_timeframe(timeframe)
        except (KeyError, IndexError, ValueError) as exc:
            return Response(400, f"bad explore request: {exc}".encode(), "text/html")
        widget_request = {
            "time": timeframe,
            "keywords": keywords,
            "geo": items[0].get("geo", ""),
            "locale": request.query.get("hl", "en-US"),
            "requestOptions": {
                "property": req.get("property", ""),
                "backend": "CM",
                "category": req.get("category", 0),
            },
        }
        widgets = [
            {
                "id": "TIMESERIES",
                "title": "Interest over time",
                "request": widget_request,
                "token": _token(widget_request),
            },
            {"id": "GEO_MAP", "title": "Interest by region", "request": {}, "token": "geo"},
        ]
        return _prefixed(")]}'", {"widgets": widgets})

    def multiline(request: Request) -> Response:
        if refused := needs_cookie(request):
            return refused
        try:
            widget_request = json.loads(request.query["req"])
        except (KeyError, ValueError) as exc:
            return Response(400, f"bad widget request: {exc}".encode(), "text/html")
        if request.query.get("token") != _token(widget_request):
            return Response(401, b"<html>invalid token</html>", "text/html")
        rows = timeline(widget_request["keywords"], widget_request["time"], seed)
        if request.malformed:
            rows = [{**row, "value": ["lots"]} for row in rows]
        return _prefixed(")]}',", {"default": {"timelineData": rows, "averages": []}})

    return ReplayService(
        name="google_trends",
        routes=[
            ("GET", r"/trends/explore/?", cookie),
            ("POST", r"/trends/api/explore", explore),
            ("GET", r"/trends/api/explore", explore),
            ("GET", r"/trends/api/widgetdata/multiline", multiline),
        ],
        rate_per_s=rate_per_s,
        burst=burst,
    )
