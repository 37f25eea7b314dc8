"""Deterministic synthetic 1-minute candles: a seeded random walk with volatility clustering and gaps.

Every UTC day is generated independently from (seed, symbol, day), bridged between daily anchor
prices so days join continuously; any window is reproducible without generating the whole history.

Sentiment lead (off by default): with `sentiment_lead` L > 0 (argument, or the environment variable
CRPBOT_SYNTHETIC_SENTIMENT_LEAD read at each call), every hour has a "news" shock z(h) (standard normal,
deterministic in seed, keyword and hour; `news`). The replayed Google search interest of the symbol's keyword
(replay/trends.py) carries it, x(h) x exp(NEWS_SIZE x z(h)), and each minute of the next hour drifts by
L x LEAD_PER_MINUTE x z(h) of that minute's volatility. The pipeline's `search_interest_*` value of hour h is
usable from the hour's end, so a model that reads it knows the sign of the next hour's drift: a weak lead of
sentiment on later returns at the label's horizon (L = 1 moves the 15-minute return's mean by about
0.2 x z of its standard deviation; over a month the search interest's log is about 0.9 correlated with z, the rest
being its slow regimes and daily cycle). The shock is independent from hour to hour, so prices before the hour do
not reveal it; within the hour, its returns gradually do (a model without sentiment catches up late).
With L = 0 prices and sentiment are unrelated, as before. The walk-forward ablation test
(crpbot_assets_tests/training/test_walk_forward_ablation.py) runs L = 2 and L = 0.

Lead delay (world kind; argument, or CRPBOT_SYNTHETIC_SENTIMENT_LEAD_DELAY, default 0): with delay D the news of
hour h drifts hour h + 1 + D instead of h + 1. D = 0 is the "level" world: the input row of the minute (its
last completed hour's search interest) carries the drift's sign, so a model of the last row (logistic
regression, LightGBM) can use the lead as well as a sequence model. D = 1 is the "memory" world: while hour
h + 2 drifts, the last row shows hour h + 1's interest (unrelated to the drift); the news of hour h is visible
only in rows 61 to 120 minutes back, so only a model that reads a window of more than 60 rows (the LSTM) knows
the drift before the hour's own prices reveal it. The gate benchmark (benchmarks/bench_gate.py) uses both.

Probe lead (the "sequence" world; off by default; argument `probe_lead`, or CRPBOT_SYNTHETIC_PROBE_LEAD, a drift
per minute in units of the symbol's typical minute volatility): a large trader's execution desk probes the book
at the top of the hour on the side of its parent order and works the order in the hour's last quarter, and the
probe is the only trace. Each UTC hour's first quarter holds a probe with chance PROBE_P (sign s = +-1, in one of
its three 5-minute bars; `probes`): the bar's first four minutes move by s x PROBE_SIZE x sigma x (+1, -1, -1, +1),
a whipsaw that ends where it started, and the 15 minutes from the start of the hour's last quarter (minutes
:46..:00, the span a decision at :45 holds) drift by s x L x the typical minute volatility each. Every sum of
returns or closes containing the four minutes cancels, the whipsaw's high and low reach +-PROBE_SIZE sigma
whichever its sign, and every 5-minute (15-minute, hour) bar's close is unchanged: at the :45 decision the probe
lies 31 to 45 rows back, inside every 1-minute window of 50 rows or more and outside every shorter one, so no
last-row feature of the catalogue carries its sign (up to EMA tails of order 1e-3 of it), while an LSTM reading
64 rows sees the four minutes' order. The drift accumulates on top of the daily bridge (`_probe_level`), so it
adds volatility but no intraday trend (inside the bridge, each day's summed drift would become one).
"""

from __future__ import annotations

import os
import zlib
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np
import polars as pl

from crpbot_assets.common.symbols import HISTORY_START, SYMBOLS, listed_at

MINUTES_PER_DAY = 1440
# (price at listing in crpbot's history, daily volatility, typical 1-minute volume in coins)
PROFILES = {"BTC-USD": (6400.0, 0.035, 8.0), "ETH-USD": (200.0, 0.045, 90.0), "SOL-USD": (32.0, 0.06, 900.0)}
MISSING_MINUTE_P = {"BTC-USD": 0.002, "ETH-USD": 0.004, "SOL-USD": 0.01}
OUTAGE_P = 0.02  # chance a day holds one 10-60 minute outage (no rows)
ANCHOR_DAYS = 365 * 12
COLUMNS = ("ts", "open", "high", "low", "close", "volume")
SENTIMENT_LEAD_ENV = "CRPBOT_SYNTHETIC_SENTIMENT_LEAD"
SENTIMENT_LEAD_DELAY_ENV = "CRPBOT_SYNTHETIC_SENTIMENT_LEAD_DELAY"
PROBE_LEAD_ENV = "CRPBOT_SYNTHETIC_PROBE_LEAD"


def _rng(seed: int, symbol: str, *salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, SYMBOLS.index(symbol), *salt])


@lru_cache(maxsize=16)
def _daily_anchors(symbol: str, seed: int) -> np.ndarray:
    """Log price at 00:00 UTC of each day since the symbol's listing (a drifting daily random walk)."""
    price, daily_vol, _ = PROFILES[symbol]
    steps = _rng(seed, symbol, 0).standard_t(df=4, size=ANCHOR_DAYS) * daily_vol / np.sqrt(2) + 0.0004
    return np.log(price) + np.concatenate([[0.0], np.cumsum(steps)])


# --- sentiment lead (module docstring) -------------------------------------------------------------------
NEWS_KEYWORD = {"BTC-USD": "bitcoin", "ETH-USD": "ethereum", "SOL-USD": "solana"}  # replay/trends.py keywords
LEAD_PER_MINUTE = 0.05  # a minute's drift per unit of news and of L, in units of the minute's volatility


def news(keyword: str, hours: np.ndarray, seed: int = 0) -> np.ndarray:
    """The news shock of each UNIX hour in `hours` (standard normal; one generator per keyword and UTC day)."""
    hours = np.asarray(hours, dtype=np.int64)
    days = hours // 24
    out = np.empty(len(hours))
    salt = zlib.crc32(keyword.lower().encode())
    for day in np.unique(days):
        chosen = days == day
        out[chosen] = np.random.default_rng([seed, salt, int(day)]).standard_normal(24)[
            hours[chosen] - day * 24
        ]
    return out


def _lead_drift(
    symbol: str, day_start: datetime, seed: int, lead: float, sigma: np.ndarray, delay: int = 0
) -> np.ndarray:
    """Each minute's drift of the day from `day_start`: L x LEAD_PER_MINUTE x sigma x the news of the hour
    1 + `delay` hours before the minute's hour."""
    first_hour = int(day_start.timestamp()) // 3600 - 1 - delay
    shocks = news(NEWS_KEYWORD[symbol], np.arange(first_hour, first_hour + 24), seed)
    return lead * LEAD_PER_MINUTE * sigma * np.repeat(shocks, 60)


def sentiment_lead_setting(value: float | None = None) -> float:
    """The lead strength: `value` when given, else CRPBOT_SYNTHETIC_SENTIMENT_LEAD (default 0: off)."""
    return float(os.environ.get(SENTIMENT_LEAD_ENV, "0") if value is None else value)


def sentiment_lead_delay_setting(value: int | None = None) -> int:
    """The lead's delay in hours: `value` when given, else CRPBOT_SYNTHETIC_SENTIMENT_LEAD_DELAY (default 0)."""
    delay = int(os.environ.get(SENTIMENT_LEAD_DELAY_ENV, "0") if value is None else value)
    if delay < 0:
        raise ValueError(f"the sentiment lead's delay must be >= 0 hours, got {delay}")
    return delay


# --- probe lead (module docstring) ----------------------------------------------------------------------
PROBE_P = 0.5  # chance an hour holds a probe (12 a day on average)
PROBE_SIZE = 4.0  # the whipsaw's step, in units of the minute's volatility
PROBE_PATTERN = np.array([1.0, -1.0, -1.0, 1.0])
PROBE_AHEAD = 3  # quarters from a probe to its drift


def probes(symbol: str, quarters: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(sign in {-1, 0, +1}, 5-minute bar 0..2) of each UNIX quarter hour in `quarters` (one generator per UTC
    day; independent of every other draw of the world)."""
    quarters = np.asarray(quarters, dtype=np.int64)
    days = quarters // 96
    sign, bar = np.zeros(len(quarters)), np.zeros(len(quarters), dtype=np.int64)
    for day in np.unique(days):
        rng = _rng(seed, symbol, 7, int(day))
        present, up, where = rng.random(96) < PROBE_P, rng.random(96) < 0.5, rng.integers(0, 3, 96)
        present &= np.arange(96) % 4 == 0  # an hour's first quarter
        chosen = days == day
        offsets = quarters[chosen] - day * 96
        sign[chosen] = np.where(present, np.where(up, 1.0, -1.0), 0.0)[offsets]
        bar[chosen] = where[offsets]
    return sign, bar


def _probe_whipsaws(symbol: str, day_start: datetime, seed: int) -> np.ndarray:
    """Each minute's whipsaw return of the day from `day_start` (UTC midnight), in units of its volatility; every
    whipsaw lies inside one 5-minute bar and sums to zero."""
    first_quarter = int(day_start.timestamp()) // 900
    sign, bar = probes(symbol, np.arange(first_quarter, first_quarter + 96), seed)
    added = np.zeros(MINUTES_PER_DAY)
    for q in np.flatnonzero(sign):
        start = 15 * q + 5 * bar[q]
        added[start : start + 4] = sign[q] * PROBE_SIZE * PROBE_PATTERN
    return added


@lru_cache(maxsize=4096)
def _drift_signs(symbol: str, day_index: int, seed: int) -> np.ndarray:
    """Each minute's drift sign of day `day_index` after listing: minute k drifts with the probe of the quarter
    PROBE_AHEAD before the quarter of minute k - 1 (the span a decision at a quarter's start holds)."""
    first_quarter = int((listed_at(symbol) + timedelta(days=day_index)).timestamp()) // 900
    sign, _ = probes(symbol, first_quarter + (np.arange(MINUTES_PER_DAY) - 1) // 15 - PROBE_AHEAD, seed)
    sign.flags.writeable = False
    return sign


def _probe_level(symbol: str, day_index: int, seed: int, lead: float) -> np.ndarray:
    """The log-price shift the drift has accumulated since listing at the start of the day and after each of its
    minutes. It rides on top of the daily bridge (not inside it, where it would turn each day's summed drift into
    a predictable intraday trend), in units of the symbol's typical minute volatility."""
    _, daily_vol, _ = PROFILES[symbol]
    before = sum(float(_drift_signs(symbol, d, seed).sum()) for d in range(day_index))
    scale = lead * daily_vol / np.sqrt(MINUTES_PER_DAY)
    return scale * (before + np.concatenate([[0.0], np.cumsum(_drift_signs(symbol, day_index, seed))]))


def probe_lead_setting(value: float | None = None) -> float:
    """The probe lead's drift per minute (units of volatility): `value`, else CRPBOT_SYNTHETIC_PROBE_LEAD (0: off)."""
    lead = float(os.environ.get(PROBE_LEAD_ENV, "0") if value is None else value)
    if lead < 0:
        raise ValueError(f"the probe lead must be >= 0, got {lead}")
    return lead


@lru_cache(maxsize=256)
def _day(
    symbol: str,
    day_index: int,
    seed: int,
    sentiment_lead: float = 0.0,
    delay: int = 0,
    probe_lead: float = 0.0,
) -> tuple[np.ndarray, ...]:
    """Arrays (minute offsets, open, high, low, close, volume) for day `day_index` after listing."""
    _, daily_vol, base_volume = PROFILES[symbol]
    anchors = _daily_anchors(symbol, seed)
    rng = _rng(seed, symbol, 1, day_index)
    # Volatility clustering: an AR(1) log-volatility per hour, held through the hour.
    log_vol = np.empty(24)
    log_vol[0] = rng.normal(0, 0.5)
    for hour in range(1, 24):
        log_vol[hour] = 0.85 * log_vol[hour - 1] + rng.normal(0, 0.3)
    sigma = daily_vol / np.sqrt(MINUTES_PER_DAY) * np.exp(np.repeat(log_vol, 60) - 0.2)
    steps = rng.standard_t(df=5, size=MINUTES_PER_DAY) * sigma * np.sqrt(3 / 5)
    if sentiment_lead:
        steps = steps + _lead_drift(
            symbol, listed_at(symbol) + timedelta(days=day_index), seed, sentiment_lead, sigma, delay
        )
    if probe_lead:
        steps = steps + _probe_whipsaws(symbol, listed_at(symbol) + timedelta(days=day_index), seed) * sigma
    walk = np.cumsum(steps)
    target = anchors[day_index + 1] - anchors[day_index]
    bridge = (
        anchors[day_index] + walk - np.arange(1, MINUTES_PER_DAY + 1) / MINUTES_PER_DAY * (walk[-1] - target)
    )
    start = anchors[day_index]
    if probe_lead:
        level = _probe_level(symbol, day_index, seed, probe_lead)
        start, bridge = start + level[0], bridge + level[1:]
    close = np.exp(bridge)
    open_ = np.concatenate([[np.exp(start)], close[:-1]])
    wick = np.exp(np.abs(rng.normal(0, 1, (2, MINUTES_PER_DAY))) * sigma * 0.6)
    high = np.maximum(open_, close) * wick[0]
    low = np.minimum(open_, close) / wick[1]
    volume = base_volume * np.exp(rng.normal(0, 0.6, MINUTES_PER_DAY)) * (sigma / sigma.mean())
    keep = rng.random(MINUTES_PER_DAY) >= MISSING_MINUTE_P[symbol]
    if rng.random() < OUTAGE_P:
        start = int(rng.integers(0, MINUTES_PER_DAY - 60))
        keep[start : start + int(rng.integers(10, 61))] = False
    minutes = np.flatnonzero(keep)
    return minutes, open_[keep], high[keep], low[keep], close[keep], volume[keep]


def candles(
    symbol: str,
    start: datetime,
    end: datetime,
    seed: int = 0,
    now: datetime | None = None,
    sentiment_lead: float | None = None,
    lead_delay: int | None = None,
    probe_lead: float | None = None,
) -> pl.DataFrame:
    """Candles with start <= ts < end (UTC, minute-aligned), oldest first; nothing before listing or after `now`.
    `sentiment_lead`, `lead_delay`, `probe_lead`: see the module docstring (None: from the environment, default
    off / 0)."""
    lead = sentiment_lead_setting(sentiment_lead)
    delay = sentiment_lead_delay_setting(lead_delay) if lead else 0
    probe = probe_lead_setting(probe_lead)
    listing = listed_at(symbol)
    first, last = max(start, listing), min(end, now or datetime.now(UTC))
    parts, day = [], (first - listing).days
    while listing + timedelta(days=day) < last:
        if day >= ANCHOR_DAYS:
            raise ValueError(f"synthetic history for {symbol} ends {ANCHOR_DAYS} days after listing")
        day_start = int((listing + timedelta(days=day)).timestamp())
        minutes, o, h, l, c, v = _day(symbol, day, seed, lead, delay, probe)
        ts = day_start + minutes * 60
        mask = (ts >= first.timestamp()) & (ts < last.timestamp())
        parts.append((ts[mask], o[mask], h[mask], l[mask], c[mask], v[mask]))
        day += 1
    arrays = [np.concatenate([p[i] for p in parts]) if parts else np.empty(0) for i in range(6)]
    frame = pl.DataFrame({name: values for name, values in zip(COLUMNS, arrays)})
    return frame.with_columns(
        pl.from_epoch(pl.col("ts").cast(pl.Int64), time_unit="s").dt.replace_time_zone("UTC")
    )


def history(symbol: str, months: int, seed: int = 0) -> pl.DataFrame:
    """`months` whole months of candles from the symbol's listing (for benchmarks)."""
    start = max(HISTORY_START, listed_at(symbol))
    end_year, end_month = divmod(start.month - 1 + months, 12)
    return candles(symbol, start, start.replace(year=start.year + end_year, month=end_month + 1), seed)
