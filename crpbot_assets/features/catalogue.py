"""The feature catalogue: every feature's name, timeframe, lookback, formula and polars expression, in one place.

`lookback` counts bars of the feature's timeframe, the current bar included, that must exist before the value is
defined; earlier rows are null (see `compute.py`). For EMA-based features it is the number of bars after which
the EMA's seed weighs less than `indicators.EMA_TOLERANCE`, so a value computed from a month of warm-up equals
the value computed from the whole history to that tolerance.

Stage-2 features are built from stage-1 feature columns of the same timeframe (already null before their own
lookback), e.g. the MACD signal line is the EMA of the MACD column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from crpbot_assets.features import indicators as ind

TIMEFRAME_MINUTES = {"1m": 1, "5m": 5, "15m": 15, "1h": 60}
PREFIX = {"1m": "m1", "5m": "m5", "15m": "m15", "1h": "h1"}

O, H, L, C, V = (pl.col(name) for name in ("open", "high", "low", "close", "volume"))
TS = pl.col("ts")
BAR_MINUTES = pl.col("minutes_present")  # 1m rows aggregated into a higher-timeframe bar


@dataclass(frozen=True)
class Feature:
    name: str
    timeframe: str
    lookback: int
    formula: str
    expr: pl.Expr
    stage: int = 1

    @property
    def lookback_minutes(self) -> int:
        """Minutes of gap-free history, the current row included, the value needs."""
        return self.lookback * TIMEFRAME_MINUTES[self.timeframe]


class Helpers(dict):
    """Intermediate columns (rolling windows, EMAs) shared by several features, computed once per timeframe."""

    def __call__(self, name: str, expr: pl.Expr) -> pl.Expr:
        self.setdefault(name, expr)
        return pl.col(name)


def _w(alpha: float) -> int:
    return ind.ema_warmup(alpha)


def _timeframe_features(tf: str, hp: Helpers) -> dict[str, Feature]:
    """Feature constructors shared by every timeframe, keyed by a short id; each timeframe picks a subset."""
    p = PREFIX[tf]

    def f(name, lookback, formula, expr, stage=1):
        return Feature(f"{p}_{name}", tf, lookback, formula, expr, stage)

    derived = {
        "r1": ind.log_return(C, 1),
        "lv": V.log1p(),
        "sv": ind.signed_volume(C, V),
        "tv": ind.typical_value(H, L, C, V),
    }  # per-bar series some windows aggregate

    def roll(how: str, col: str, n: int, **kwargs) -> pl.Expr:
        """A shared rolling window (`how` = mean/std/min/max/sum) over a candle column or a derived series."""
        base = hp(f"_{col}", derived[col]) if col in derived else pl.col(col)
        return hp(f"_{col}_{how}_{n}", getattr(base, f"rolling_{how}")(n, **kwargs))

    macd_lb = _w(ind.span_alpha(26))
    signal_lb = macd_lb + _w(ind.span_alpha(9)) - 1
    made = {}
    for k in (1, 4, 5, 12, 15, 24, 60, 240):
        expr = hp("_r1", derived["r1"]) if k == 1 else ind.log_return(C, k)
        made[f"logret_{k}"] = f(f"logret_{k}", k + 1, f"ln(close_t / close_(t-{k}))", expr)
    made["ret_1"] = f("ret_1", 2, "close_t / close_(t-1) - 1", ind.simple_return(C, 1))
    for n in (12, 16, 24, 15, 60, 240):
        made[f"vol_{n}"] = f(
            f"vol_{n}", n + 1, f"std_{n}(ln(close_t / close_(t-1))) (ddof=1)", roll("std", "r1", n)
        )
    range2 = hp("_hl2", ind.log_range_squared(H, L))
    for n in (16, 30):
        made[f"parkinson_{n}"] = f(
            f"parkinson_{n}", n, f"sqrt(mean_{n}(ln(high/low)^2) / (4 ln 2))", ind.parkinson(range2, n)
        )
    for n in (24, 30):
        made[f"garman_klass_{n}"] = f(
            f"garman_klass_{n}",
            n,
            f"sqrt(max(0, mean_{n}(0.5 ln(high/low)^2 - (2 ln 2 - 1) ln(close/open)^2)))",
            ind.garman_klass(range2, O, C, n),
        )
    for span in (9, 21):
        made[f"ema_dist_{span}"] = f(
            f"ema_dist_{span}",
            _w(ind.span_alpha(span)),
            f"close / EMA_{span}(close) - 1 (alpha 2/({span}+1), seeded with first close)",
            C / ind.ema(C, ind.span_alpha(span)) - 1.0,
        )
    for n in (20, 50, 200):
        made[f"sma_dist_{n}"] = f(
            f"sma_dist_{n}", n, f"close / mean_{n}(close) - 1", C / roll("mean", "close", n) - 1.0
        )
    made["macd"] = f("macd", macd_lb, "(EMA_12(close) - EMA_26(close)) / close", ind.macd(C))
    made["macd_signal"] = f(
        "macd_signal", signal_lb, f"EMA_9({p}_macd)", ind.ema(pl.col(f"{p}_macd"), ind.span_alpha(9)), stage=2
    )
    made["macd_hist"] = f(
        "macd_hist",
        signal_lb,
        f"{p}_macd - {p}_macd_signal",
        pl.col(f"{p}_macd") - pl.col(f"{p}_macd_signal"),
        stage=3,
    )
    gain, loss = hp("_gain_14", ind.wilder_gain(C, 14)), hp("_loss_14", ind.wilder_loss(C, 14))
    made["rsi_14"] = f(
        "rsi_14",
        _w(1 / 14) + 1,
        "100 G/(G+L); G, L = Wilder EMA_14 (alpha 1/14) of gains, losses of close; 50 if flat",
        ind.rsi(gain, loss),
    )
    made["stoch_k_14"] = f(
        "stoch_k_14",
        14,
        "(close - min_14(low)) / (max_14(high) - min_14(low)); 0.5 if flat",
        ind.stochastic_k(C, roll("min", "low", 14), roll("max", "high", 14)),
    )
    made["stoch_d_14_3"] = f(
        "stoch_d_14_3", 16, f"mean_3({p}_stoch_k_14)", pl.col(f"{p}_stoch_k_14").rolling_mean(3), stage=2
    )
    for n in (14, 60):
        made[f"williams_r_{n}"] = f(
            f"williams_r_{n}",
            n,
            f"(close - max_{n}(high)) / (max_{n}(high) - min_{n}(low)); -0.5 if flat",
            ind.williams_r(C, roll("min", "low", n), roll("max", "high", n)),
        )
    bb_mean, bb_std = roll("mean", "close", 20), roll("std", "close", 20, ddof=0)
    made["bb_pctb_20"] = f(
        "bb_pctb_20",
        20,
        "(close - (m - 2s)) / 4s; m, s = mean_20, population std_20 of close; 0.5 if s = 0",
        ind.bollinger_pctb(C, bb_mean, bb_std),
    )
    made["bb_width_20"] = f(
        "bb_width_20",
        20,
        "4s / m; m, s = mean_20, population std_20 of close",
        ind.bollinger_width(bb_mean, bb_std),
    )
    made["natr_14"] = f(
        "natr_14",
        _w(1 / 14) + 1,
        "Wilder EMA_14 (alpha 1/14) of true range max(h-l, |h-c_prev|, |l-c_prev|) / close",
        ind.natr(H, L, C, 14),
    )
    for n in (24, 48, 60):
        made[f"volume_z_{n}"] = f(
            f"volume_z_{n}",
            n,
            f"(ln(1+volume) - mean_{n}) / std_{n} of ln(1+volume) (ddof=1); 0 if flat",
            ind.zscore(hp("_lv", derived["lv"]), roll("mean", "lv", n), roll("std", "lv", n)),
        )
    for n in (24, 30):
        made[f"obv_slope_{n}"] = f(
            f"obv_slope_{n}",
            n + 1,
            f"sum_{n}(sign(close - close_prev) volume) / sum_{n}(volume); 0 if no volume",
            ind.obv_slope(roll("sum", "sv", n), roll("sum", "volume", n)),
        )
    made["vwap_dist_60"] = f(
        "vwap_dist_60",
        60,
        "close * sum_60(volume) / sum_60((high+low+close)/3 * volume) - 1; 0 if no volume",
        ind.vwap_distance(C, roll("sum", "tv", 60), roll("sum", "volume", 60)),
    )
    made["body"] = f("body", 1, "(close - open) / (high - low); 0 if high = low", ind.body_ratio(O, H, L, C))
    made["upper_wick"] = f(
        "upper_wick",
        1,
        "(high - max(open, close)) / (high - low); 0 if high = low",
        ind.upper_wick(O, H, L, C),
    )
    made["lower_wick"] = f(
        "lower_wick",
        1,
        "(min(open, close) - low) / (high - low); 0 if high = low",
        ind.lower_wick(O, H, L, C),
    )
    made["coverage"] = f(
        "coverage",
        1,
        f"1m rows present in the bar / {TIMEFRAME_MINUTES[tf]}",
        BAR_MINUTES / TIMEFRAME_MINUTES[tf],
    )
    return made


_EPOCH_MINUTE = TS.dt.epoch("us") // 60_000_000
_MINUTE_OF_DAY = _EPOCH_MINUTE % 1440
_WEEKDAY = (_EPOCH_MINUTE // 1440 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0


def _cyclic(position: pl.Expr, period: int, fn) -> pl.Expr:
    """fn(2 pi position / period) for an integer position, looked up in a table of `period` values."""
    return pl.lit(pl.Series([fn(2 * math.pi * k / period) for k in range(period)])).gather(position)


_MINUTE_ONLY = [
    Feature(
        "m1_gap_minutes",
        "1m",
        2,
        "minutes between this row and the previous row - 1 (0 when none is missing)",
        (_EPOCH_MINUTE.diff() - 1).cast(pl.Float64),
    ),
    Feature(
        "m1_coverage_60",
        "1m",
        60,
        "60 / minutes spanned by the last 60 rows (1 when none is missing)",
        60.0 / (_EPOCH_MINUTE - _EPOCH_MINUTE.shift(59) + 1).cast(pl.Float64),
    ),
    Feature(
        "cal_hour_sin",
        "1m",
        1,
        "sin(2 pi minute_of_day / 1440) of ts (UTC)",
        _cyclic(_MINUTE_OF_DAY, 1440, math.sin),
    ),
    Feature(
        "cal_hour_cos",
        "1m",
        1,
        "cos(2 pi minute_of_day / 1440) of ts (UTC)",
        _cyclic(_MINUTE_OF_DAY, 1440, math.cos),
    ),
    Feature(
        "cal_dow_sin",
        "1m",
        1,
        "sin(2 pi weekday / 7) of ts (UTC), Monday = 0",
        _cyclic(_WEEKDAY, 7, math.sin),
    ),
    Feature(
        "cal_dow_cos",
        "1m",
        1,
        "cos(2 pi weekday / 7) of ts (UTC), Monday = 0",
        _cyclic(_WEEKDAY, 7, math.cos),
    ),
]

_SELECTION = {
    "1m": [
        "ret_1",
        "logret_1",
        "logret_5",
        "logret_15",
        "logret_60",
        "logret_240",
        "vol_15",
        "vol_60",
        "vol_240",
        "parkinson_30",
        "garman_klass_30",
        "ema_dist_9",
        "ema_dist_21",
        "sma_dist_50",
        "sma_dist_200",
        "macd",
        "macd_signal",
        "macd_hist",
        "rsi_14",
        "stoch_k_14",
        "stoch_d_14_3",
        "williams_r_60",
        "bb_pctb_20",
        "bb_width_20",
        "natr_14",
        "volume_z_60",
        "obv_slope_30",
        "vwap_dist_60",
        "body",
        "upper_wick",
        "lower_wick",
    ],
    "5m": [
        "logret_1",
        "logret_12",
        "vol_12",
        "rsi_14",
        "ema_dist_21",
        "macd",
        "bb_pctb_20",
        "natr_14",
        "volume_z_48",
        "stoch_k_14",
    ],
    "15m": [
        "logret_1",
        "logret_4",
        "vol_16",
        "parkinson_16",
        "rsi_14",
        "ema_dist_21",
        "macd",
        "bb_pctb_20",
        "bb_width_20",
        "williams_r_14",
        "coverage",
    ],
    "1h": [
        "logret_1",
        "logret_4",
        "logret_24",
        "vol_24",
        "garman_klass_24",
        "rsi_14",
        "sma_dist_50",
        "macd",
        "macd_signal",
        "natr_14",
        "volume_z_24",
        "obv_slope_24",
        "bb_pctb_20",
        "coverage",
    ],
}


@dataclass(frozen=True)
class TimeframeSpec:
    """The features of one timeframe and the helper columns they read, in evaluation order (levels)."""

    timeframe: str
    features: list[Feature]
    helper_levels: list[dict[str, pl.Expr]]


def _helper_levels(features: list[Feature], hp: Helpers) -> list[dict[str, pl.Expr]]:
    """The helpers the features need, grouped so each level reads only columns of earlier levels."""
    level: dict[str, int] = {}

    def visit(name: str) -> int:
        if name not in level:
            level[name] = 1 + max((visit(r) for r in hp[name].meta.root_names() if r in hp), default=-1)
        return level[name]

    for feature in features:
        for root in feature.expr.meta.root_names():
            if root in hp:
                visit(root)
    return [
        {n: hp[n] for n, lv in level.items() if lv == k} for k in range(max(level.values(), default=-1) + 1)
    ]


def _build() -> dict[str, TimeframeSpec]:
    specs = {}
    for tf, ids in _SELECTION.items():
        hp = Helpers()
        made = _timeframe_features(tf, hp)
        features = [made[i] for i in ids] + (_MINUTE_ONLY if tf == "1m" else [])
        specs[tf] = TimeframeSpec(tf, features, _helper_levels(features, hp))
    return specs


TIMEFRAMES: dict[str, TimeframeSpec] = _build()
CATALOGUE: list[Feature] = [f for tf in TIMEFRAME_MINUTES for f in TIMEFRAMES[tf].features]
FEATURE_NAMES: list[str] = [f.name for f in CATALOGUE]
# Minutes of gap-free history (the current row included) after which every feature is defined: a feature of
# `lookback` bars of `tf` minutes is first defined at the last minute of its lookback-th bar.
MAX_LOOKBACK_MINUTES: int = max(f.lookback_minutes for f in CATALOGUE)

if len(set(FEATURE_NAMES)) != len(FEATURE_NAMES):
    raise ValueError("duplicate feature names in the feature catalogue")


def catalogue_rows() -> list[dict]:
    """The catalogue as plain rows (for metadata and documentation)."""
    return [
        {
            "name": f.name,
            "timeframe": f.timeframe,
            "lookback_bars": f.lookback,
            "lookback_minutes": f.lookback_minutes,
            "formula": f.formula,
        }
        for f in CATALOGUE
    ]


def catalogue_markdown() -> str:
    lines = [
        "| feature | timeframe | lookback (bars) | lookback (minutes) | formula |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| `{r['name']}` | {r['timeframe']} | {r['lookback_bars']} | {r['lookback_minutes']} | {r['formula']} |"
        for r in catalogue_rows()
    ]
    return "\n".join(lines)
