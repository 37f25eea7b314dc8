"""Google Trends as pytrends 4.9.2 calls it, replayed with deterministic synthetic search interest.

Routes under `/trends` (pytrends' BASE_TRENDS_URL path):
- `GET /trends/explore/?geo=..` answers **HTTP 404 with a `Set-Cookie: NID=...` header**, as real Google does;
  API calls without the NID cookie get 429 (as Google does).
- `POST|GET /trends/api/explore?hl=&tz=&req={comparisonItem:[{keyword,time,geo}],category,property}` ->
  `)]}'` + newline + `{"widgets": [...]}`; the TIMESERIES widget carries a `request` and a `token`.
- `GET /trends/api/widgetdata/multiline?req=&token=&tz=` -> `)]}',` + newline + `{"default": {"timelineData":
  [{"time": "<unix s>", "value": [int], "hasData": [bool], "formattedValue": [..]}], "averages": []}}`.
Time frames are explicit `YYYY-MM-DDTHH YYYY-MM-DDTHH` or `YYYY-MM-DD YYYY-MM-DD`, read as UTC. The resolution
follows the window's length, as Google's does: hourly up to 7 days, daily up to 269 days, weekly (weeks from
Sunday) up to 5 years, monthly beyond; each point is stamped at its period's start. Every window is scaled so
its maximum is 100 (integers); the point whose period has not ended is `isPartial`. Recent values are revised
between fetches: an hour's value carries an error that shrinks with the hour's age at fetch time
(`REVISION` at age 0, 1/e after `REVISION_DECAY_H`) and changes every `REVISION_SLOT_S` of fetch time.
`true_interest()` is the unrevised, unscaled series the tests compare stitched results against. With the
synthetic world's sentiment lead on (replay/synthetic.py), every hour's interest also carries that hour's news
shock, exp(NEWS_SIZE x news), which drifts the keyword's coin in the next hour.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from crpbot_assets.replay import synthetic
from crpbot_assets.replay.protocol import ReplayService, Request, Response

KEYWORD_LEVELS = {"bitcoin": 100.0, "ethereum": 40.0, "solana": 12.0}
HOUR, DAY, WEEK = 3600, 86400, 7 * 86400
SECRET = "crpbot-replay"
REVISION = 0.15  # relative size of a just-ended hour's revision error
REVISION_DECAY_H = 12.0
REVISION_SLOT_S = 600  # fetches within the same 10 minutes see the same revision state
NEWS_SIZE = 0.6  # log-interest per unit of news, only while the sentiment lead is on (replay/synthetic.py)


def true_interest(keyword: str, hour_starts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Unscaled interest at the given UNIX hour starts: slow regimes x daily cycle x jitter (all deterministic)."""
    salt = _salt(keyword, seed)
    a, b, c, d = ((salt >> s) % 628 / 100 for s in (0, 7, 14, 21))
    h = hour_starts.astype(np.float64) / HOUR
    level = KEYWORD_LEVELS.get(keyword.lower(), 5.0 + salt % 20)
    slow = 0.5 * np.sin(h / 900 + a) + 0.3 * np.sin(h / 71 + b) + 0.1 * np.sin(h / 9.3 + c)
    jitter = 0.04 * np.sin(h * 12.9898 + d) * np.sin(h * 78.233)
    if synthetic.sentiment_lead_setting():
        jitter = jitter + NEWS_SIZE * synthetic.news(keyword, np.floor(h), seed)
    return level * np.exp(slow + jitter) * (1 + 0.25 * np.sin(2 * np.pi * h / 24 + d))


def _salt(keyword: str, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{keyword.lower()}".encode()).hexdigest()[:8], 16)


def served_interest(keyword: str, hour_starts: np.ndarray, now: float, seed: int = 0) -> np.ndarray:
    """What a fetch at `now` sees for the given hours: the true interest with the revision error of their age."""
    age_h = np.maximum(0.0, (now - (hour_starts + HOUR)) / HOUR)
    slot = int(now // REVISION_SLOT_S)
    phase = (_salt(keyword, seed) % 1000) / 7.0
    noise = np.sin(hour_starts / HOUR * 12.9898 + slot * 78.233 + phase) * np.cos(
        hour_starts / HOUR * 4.1414 + slot
    )
    return true_interest(keyword, hour_starts, seed) * (
        1 + REVISION * np.exp(-age_h / REVISION_DECAY_H) * noise
    )


def _parse_time(text: str) -> float:
    fmt = "%Y-%m-%dT%H" if "T" in text else "%Y-%m-%d"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()


def resolution_of(span_s: float) -> str:
    """Google's resolution for a window of `span_s` seconds."""
    days = span_s / DAY
    return "hour" if days <= 7 else "day" if days <= 269 else "week" if days <= 5 * 365.25 else "month"


def parse_timeframe(timeframe: str) -> tuple[float, float, str]:
    """(start, end, resolution) of an explicit time frame; ValueError for anything else."""
    parts = timeframe.split()
    if len(parts) != 2:
        raise ValueError(f"unsupported time frame {timeframe!r}")
    start = _parse_time(parts[0])
    end = _parse_time(parts[1])
    if end <= start:
        raise ValueError(f"time frame {timeframe!r} ends before it starts")
    return start, end, resolution_of(end - start)


def periods(start: float, end: float, resolution: str) -> list[tuple[float, float]]:
    """(period start, period end) of every period from the one holding `start` to the one holding `end`."""
    first = datetime.fromtimestamp(start, UTC)
    if resolution == "hour":
        first = first.replace(minute=0, second=0, microsecond=0)
    else:
        first = first.replace(hour=0, minute=0, second=0, microsecond=0)
    if resolution == "week":
        first -= timedelta(days=(first.weekday() + 1) % 7)  # back to Sunday
    elif resolution == "month":
        first = first.replace(day=1)
    out = []
    while first.timestamp() <= end:
        if resolution == "month":
            following = first + timedelta(days=calendar.monthrange(first.year, first.month)[1])
        else:
            following = first + timedelta(seconds={"hour": HOUR, "day": DAY, "week": WEEK}[resolution])
        out.append((first.timestamp(), following.timestamp()))
        first = following
    return out


def timeline(keywords: list[str], timeframe: str, seed: int = 0, now: float | None = None) -> list[dict]:
    """The timelineData Google returns at `now` for `keywords` (jointly scaled) over `timeframe`."""
    start, end, resolution = parse_timeframe(timeframe)
    now = time.time() if now is None else now
    spans = [(a, b) for a, b in periods(start, min(end, now), resolution) if a <= now]
    means = np.zeros((len(keywords), len(spans)))
    for j, (a, b) in enumerate(spans):
        hours = np.arange(a, min(b, now), HOUR)
        hours = hours if len(hours) else np.array([a])
        means[:, j] = [served_interest(kw, hours, now, seed).mean() for kw in keywords]
    scaled = np.rint(100 * means / means.max()) if means.size else means
    rows = []
    for j, (a, b) in enumerate(spans):
        values = [int(v) for v in scaled[:, j]]
        row = {
            "time": str(int(a)),
            "formattedTime": datetime.fromtimestamp(a, UTC).strftime("%b %d, %Y at %H:%M"),
            "value": values,
            "hasData": [v > 0 for v in values],
            "formattedValue": [str(v) for v in values],
        }
        if b > now:
            row["isPartial"] = True
        rows.append(row)
    return rows


def _token(request: dict) -> str:
    return hashlib.sha256((SECRET + json.dumps(request, sort_keys=True)).encode()).hexdigest()[:32]


def _prefixed(prefix: str, value: dict) -> Response:
    return Response(200, (prefix + "\n" + json.dumps(value)).encode(), "application/json; charset=utf-8")


def service(
    seed: int = 0, rate_per_s: float = 5.0, burst: int = 10, clock: Callable[[], float] = time.time
) -> ReplayService:
    """Google throttles hard and without documentation; the replay allows 5 requests/s, bursts of 10.
    `clock` is the replay's notion of now (tests move it to watch revisions and partial points)."""

    def cookie(request: Request) -> Response:
        # Real Google answers this page 404 and sets the cookie anyway (no Domain: the replay is not .google.com).
        nid = hashlib.sha256(f"{request.client}:{time.time_ns()}".encode()).hexdigest()[:24]
        return Response(
            404,
            b"<!DOCTYPE html><html lang=en><title>Error 404 (Not Found)!!1</title></html>",
            "text/html; charset=UTF-8",
            {"Set-Cookie": f"NID=511={nid}; expires=Sat, 01-Jan-2039 00:00:00 GMT; path=/; HttpOnly"},
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
        rows = timeline(widget_request["keywords"], widget_request["time"], seed, clock())
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
