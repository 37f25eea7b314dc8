"""Compute the feature catalogue on 1-minute candles, causally: bars first, then one lazy polars query. No Dagster.

Timing contract: the candle row at `ts` holds minute [ts, ts+1m) and is known at its close; the feature row at
`ts` uses only candles with timestamp <= ts.

Higher timeframes: 5m, 15m and 1h bars are aggregated from the 1m rows inside [start, start + tf) and become
usable at the row `start + tf - 1m` (the bar's last minute, at whose close the bar is complete), never earlier:
the 1h features at 10:37 come from the bar [09:00, 10:00); the bar [10:00, 11:00) is joined from row 10:59 on.
A bar joins each 1-minute row with an as-of (backward) join on that availability time.

Gap policy (no invented minutes): features are computed on the rows that exist. A missing minute is not
filled, interpolated or zero-volume padded; lags and windows count existing bars, so a window or return that
straddles a gap reaches further back in time. Higher-timeframe bars aggregate only the minutes present (a bar
with no minute does not exist) and expose their coverage (`*_coverage`); `m1_gap_minutes` and
`m1_coverage_60` tell the model where gaps were.

Warm-up: a value is null until its feature's lookback (catalogue) is satisfied, counted from the first row
given; `features_for_month` drops rows with any null, so a month computed from (previous month + month) keeps
every row whose lookbacks the previous month covers. Nothing is zero-filled. Only the previous month's last
`WARMUP_DAYS` (the longest lookback, 13.4 days, rounded up to whole days plus one day of slack for outages) are
computed; if rows are then dropped and earlier candles were given, the month is recomputed on all of them, so the
tail never drops a row the whole previous month would have kept. Day-aligned, the tail starts every higher
timeframe's bars on their boundaries.

Storage precision: computed in Float64, stored as Float32 (`FEATURES_SCHEMA`), cast once at the end, so what is
stored is a pure function of the Float64 values: causality and month-by-month equality hold bit for bit on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from crpbot_assets.features.catalogue import (
    CATALOGUE,
    FEATURE_NAMES,
    MAX_LOOKBACK_MINUTES,
    TIMEFRAME_MINUTES,
    TIMEFRAMES,
    Feature,
    TimeframeSpec,
)

CANDLE_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
TS_DTYPE = pl.Datetime("us", "UTC")
STORED_DTYPE = pl.Float32  # what `features` stores; computed in Float64
FEATURES_SCHEMA = {"ts": TS_DTYPE, **{name: STORED_DTYPE for name in FEATURE_NAMES}}
COMPUTED_SCHEMA = {"ts": TS_DTYPE, **{name: pl.Float64 for name in FEATURE_NAMES}}
WARMUP_DAYS = math.ceil(MAX_LOOKBACK_MINUTES / 1440) + 1  # previous-month tail computed as warm-up


class CandleInputError(ValueError):
    """The candles given to the feature computation break the candles contract."""


def validate_candles(candles: pl.DataFrame, where: str = "candles") -> None:
    """Columns, dtypes, and strictly increasing minute-aligned `ts`; a clear error naming `where` otherwise."""
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise CandleInputError(f"{where}: missing columns {missing} (have {candles.columns})")
    if candles.schema["ts"] != TS_DTYPE:
        raise CandleInputError(f"{where}: ts must be {TS_DTYPE}, got {candles.schema['ts']}")
    wrong = {c: str(candles.schema[c]) for c in CANDLE_COLUMNS[1:] if candles.schema[c] != pl.Float64}
    if wrong:
        raise CandleInputError(f"{where}: price/volume columns must be Float64, got {wrong}")
    if candles.height == 0:
        return
    stats = candles.select(
        unordered=(pl.col("ts").diff() <= pl.duration(minutes=0)).any(),
        unaligned=(pl.col("ts").dt.truncate("1m") != pl.col("ts")).any(),
        nulls=pl.any_horizontal(pl.col(CANDLE_COLUMNS).is_null()).any(),
    ).row(0, named=True)
    problems = [name for name, bad in stats.items() if bad]
    if problems:
        raise CandleInputError(
            f"{where}: ts must be strictly increasing, minute-aligned and non-null; "
            f"found {', '.join(problems)} rows"
        )


def empty_features() -> pl.DataFrame:
    """A stored features frame with no rows (e.g. a month before the symbol was listed)."""
    return pl.DataFrame(schema=FEATURES_SCHEMA)


def to_stored(features: pl.DataFrame) -> pl.DataFrame:
    """Computed (Float64) features as stored: Float32 feature columns, `ts` unchanged."""
    return features.with_columns(pl.col(FEATURE_NAMES).cast(STORED_DTYPE))


def warmup_start(month_start: datetime) -> datetime:
    """First candle minute computed as warm-up for the month starting at `month_start`."""
    return month_start - timedelta(days=WARMUP_DAYS)


def _masked(feature: Feature) -> pl.Expr:
    """The feature, null until its lookback (bars, current included) is satisfied."""
    return (
        pl.when(pl.col("_i") >= feature.lookback - 1).then(feature.expr).otherwise(None).alias(feature.name)
    )


def _with_features(bars: pl.LazyFrame, spec: TimeframeSpec) -> pl.LazyFrame:
    """Bars + the timeframe's features: helper columns level by level, then features stage by stage."""
    bars = bars.with_row_index("_i")
    for helpers in spec.helper_levels:
        bars = bars.with_columns(expr.alias(name) for name, expr in helpers.items())
    for stage in sorted({f.stage for f in spec.features}):
        bars = bars.with_columns(_masked(f) for f in spec.features if f.stage == stage)
    return bars


def higher_timeframe_bars(candles: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """OHLCV bars per higher timeframe, labelled by window start, built from the 1m rows present (a window without
    rows has no bar; `minutes_present` counts the rows in each). Each is aggregated from the previous one."""
    bars = candles.select(CANDLE_COLUMNS).with_columns(minutes_present=pl.lit(1, pl.UInt32))
    out = {}
    for tf in ("5m", "15m", "1h"):
        bars = bars.group_by_dynamic(
            "ts", every=f"{TIMEFRAME_MINUTES[tf]}m", closed="left", label="left"
        ).agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("minutes_present").sum(),
        )
        out[tf] = bars
    return out


def _features_query(candles: pl.DataFrame) -> pl.LazyFrame:
    """One query: the 1m features, and each higher timeframe's features joined as of their bar's last minute."""
    out = _with_features(candles.lazy().select(CANDLE_COLUMNS), TIMEFRAMES["1m"])
    for tf, bars in higher_timeframe_bars(candles).items():
        minutes = TIMEFRAME_MINUTES[tf]
        usable = _with_features(bars.lazy(), TIMEFRAMES[tf]).select(
            (pl.col("ts") + pl.duration(minutes=minutes - 1)).alias("_usable_at"),
            *(f.name for f in TIMEFRAMES[tf].features),
        )
        out = out.join_asof(
            usable, left_on="ts", right_on="_usable_at", strategy="backward", check_sortedness=False
        ).drop("_usable_at")
    return out.select("ts", *FEATURE_NAMES)


def compute_features(candles: pl.DataFrame, where: str = "candles") -> pl.DataFrame:
    """`ts` + every catalogue feature for every candle row; null where a lookback is not yet satisfied.

    The bars are aggregated first (small frames), then one lazy query computes every timeframe's features, its
    independent columns in parallel. It runs on polars' in-memory engine: the faster one here, and its rolling
    kernels give bit-identical results for a prefix of the series (the streaming engine splits windows into
    morsels and can differ in the last bit, which would blur the exact look-ahead test).
    """
    validate_candles(candles, where)
    if candles.height == 0:
        return pl.DataFrame(schema=COMPUTED_SCHEMA)
    return _features_query(candles).collect(engine="in-memory")


@dataclass(frozen=True)
class MonthResult:
    frame: pl.DataFrame  # stored form (FEATURES_SCHEMA)
    warmup_rows: int  # candle rows before the month used for warm-up
    month_rows: int  # candle rows inside the month
    dropped_rows: int  # month rows dropped because some lookback was not yet satisfied


def features_for_month(
    candles: pl.DataFrame, month_start: datetime, month_end: datetime, where: str = "candles"
) -> MonthResult:
    """Stored features (Float32) for the rows in [month_start, month_end), computed on `candles` (warm-up rows +
    month rows): on the last `WARMUP_DAYS` before the month, or on every row given when that tail would drop
    rows the whole input keeps.

    Rows where any feature's lookback is not satisfied are dropped, never filled. Candles after `month_end`
    are ignored (they could only leak the future).
    """
    validate_candles(candles, where)
    if candles.height:
        candles = candles.filter(pl.col("ts") < month_end)
    tail = candles.filter(pl.col("ts") >= warmup_start(month_start)) if candles.height else candles
    result = _month(tail, month_start, where)
    if result.dropped_rows and tail.height < candles.height:
        result = _month(candles, month_start, where)
    return result


def _month(candles: pl.DataFrame, month_start: datetime, where: str) -> MonthResult:
    features = compute_features(candles, where)
    in_month = features.filter(pl.col("ts") >= month_start)
    complete = in_month.drop_nulls()
    return MonthResult(
        to_stored(complete),
        warmup_rows=features.height - in_month.height,
        month_rows=in_month.height,
        dropped_rows=in_month.height - complete.height,
    )


__all__ = [
    "CATALOGUE",
    "FEATURE_NAMES",
    "FEATURES_SCHEMA",
    "CandleInputError",
    "MonthResult",
    "WARMUP_DAYS",
    "compute_features",
    "empty_features",
    "features_for_month",
    "higher_timeframe_bars",
    "to_stored",
    "validate_candles",
    "warmup_start",
]
