"""Causal technical indicators as polars expressions over one bar series (any timeframe). No Dagster.

Every expression looks only at the current bar and earlier ones (`shift(k)` with k > 0, trailing rolling
windows, recursive EMAs), so it can be evaluated on a series truncated at any time with the same result.
Windows count bars that exist: a missing bar is not invented, the window simply reaches further back.
Degenerate denominators (a flat window, a zero range) give the indicator's neutral value, stated per function.
"""

from __future__ import annotations

import math

import polars as pl

EMA_TOLERANCE = 1e-8  # an EMA is "warm" once the weight left on its seed is below this


def ema_warmup(alpha: float) -> int:
    """Bars after which the seed of an EMA with smoothing `alpha` weighs less than EMA_TOLERANCE."""
    return math.ceil(math.log(EMA_TOLERANCE) / math.log(1.0 - alpha))


def span_alpha(span: int) -> float:
    return 2.0 / (span + 1.0)


def ema(x: pl.Expr, alpha: float) -> pl.Expr:
    """Recursive EMA y_t = a*x_t + (1-a)*y_(t-1), seeded with the first value (adjust=False)."""
    return x.ewm_mean(alpha=alpha, adjust=False)


def safe_div(num: pl.Expr, den: pl.Expr, neutral: float) -> pl.Expr:
    """num / den, or `neutral` where den == 0 (a flat window or a zero-range bar)."""
    return pl.when(den != 0).then(num / den).otherwise(pl.lit(neutral))


def log_return(close: pl.Expr, k: int) -> pl.Expr:
    """ln(close_t / close_(t-k))."""
    return (close / close.shift(k)).log()


def simple_return(close: pl.Expr, k: int) -> pl.Expr:
    return close / close.shift(k) - 1.0


def log_range_squared(high: pl.Expr, low: pl.Expr) -> pl.Expr:
    """ln(high / low)^2, the per-bar range term of the range-based volatility estimators."""
    return (high / low).log().pow(2)


def parkinson(range_squared: pl.Expr, n: int) -> pl.Expr:
    """Parkinson range volatility: sqrt(mean_n(ln(h/l)^2) / (4 ln 2))."""
    return (range_squared.rolling_mean(n) / (4.0 * math.log(2.0))).sqrt()


def garman_klass(range_squared: pl.Expr, o: pl.Expr, c: pl.Expr, n: int) -> pl.Expr:
    """Garman-Klass: sqrt(mean_n(0.5 ln(h/l)^2 - (2 ln 2 - 1) ln(c/o)^2)), clipped at 0 before the root."""
    per_bar = 0.5 * range_squared - (2.0 * math.log(2.0) - 1.0) * (c / o).log().pow(2)
    return per_bar.rolling_mean(n).clip(lower_bound=0.0).sqrt()


def wilder_gain(close: pl.Expr, n: int) -> pl.Expr:
    """Wilder EMA (alpha 1/n) of the close-to-close gains."""
    return ema(close.diff().clip(lower_bound=0.0), 1.0 / n)


def wilder_loss(close: pl.Expr, n: int) -> pl.Expr:
    """Wilder EMA (alpha 1/n) of the close-to-close losses (positive numbers)."""
    return ema((-close.diff()).clip(lower_bound=0.0), 1.0 / n)


def rsi(gain: pl.Expr, loss: pl.Expr) -> pl.Expr:
    """RSI in [0, 100] from Wilder-smoothed gains and losses: 100 G / (G + L); 50 when both are 0."""
    return safe_div(100.0 * gain, gain + loss, 50.0)


def stochastic_k(c: pl.Expr, lowest: pl.Expr, highest: pl.Expr) -> pl.Expr:
    """(c - lowest low) / (highest high - lowest low) over the window, in [0, 1]; 0.5 when the window is flat."""
    return safe_div(c - lowest, highest - lowest, 0.5)


def williams_r(c: pl.Expr, lowest: pl.Expr, highest: pl.Expr) -> pl.Expr:
    """(c - highest high) / (highest high - lowest low) over the window, in [-1, 0]; -0.5 when flat."""
    return safe_div(c - highest, highest - lowest, -0.5)


def bollinger_pctb(c: pl.Expr, mean: pl.Expr, std: pl.Expr, k: float = 2.0) -> pl.Expr:
    """%B = (c - (m - k s)) / (2 k s), m/s the window mean and population std of close; 0.5 when s == 0."""
    return safe_div(c - (mean - k * std), 2.0 * k * std, 0.5)


def bollinger_width(mean: pl.Expr, std: pl.Expr, k: float = 2.0) -> pl.Expr:
    """Band width (2 k s) / m."""
    return 2.0 * k * std / mean


def true_range(h: pl.Expr, l: pl.Expr, c: pl.Expr) -> pl.Expr:
    """max(h - l, |h - c_prev|, |l - c_prev|); h - l on the first bar."""
    prev = c.shift(1)
    return pl.max_horizontal(h - l, (h - prev).abs(), (l - prev).abs())


def natr(h: pl.Expr, l: pl.Expr, c: pl.Expr, n: int) -> pl.Expr:
    """Normalised ATR: Wilder EMA (alpha 1/n) of the true range, divided by close."""
    return ema(true_range(h, l, c), 1.0 / n) / c


def macd(c: pl.Expr, fast: int = 12, slow: int = 26) -> pl.Expr:
    """(EMA_fast(c) - EMA_slow(c)) / c: MACD line scaled to a fraction of price."""
    return (ema(c, span_alpha(fast)) - ema(c, span_alpha(slow))) / c


def zscore(x: pl.Expr, mean: pl.Expr, std: pl.Expr) -> pl.Expr:
    """(x - mean) / std over the window; 0 when the window is flat."""
    return safe_div(x - mean, std, 0.0)


def signed_volume(c: pl.Expr, v: pl.Expr) -> pl.Expr:
    """On-balance-volume increment: sign(c - c_prev) * volume."""
    return c.diff().sign() * v


def obv_slope(signed_volume_sum: pl.Expr, volume_sum: pl.Expr) -> pl.Expr:
    """Change of on-balance volume over the window per unit of volume traded, in [-1, 1]; 0 without volume."""
    return safe_div(signed_volume_sum, volume_sum, 0.0)


def typical_value(h: pl.Expr, l: pl.Expr, c: pl.Expr, v: pl.Expr) -> pl.Expr:
    """Typical price (h + l + c) / 3 times volume."""
    return (h + l + c) / 3.0 * v


def vwap_distance(c: pl.Expr, typical_value_sum: pl.Expr, volume_sum: pl.Expr) -> pl.Expr:
    """c / VWAP - 1 with VWAP = sum(typical value) / sum(volume) over the window; 0 without volume."""
    return safe_div(c * volume_sum, typical_value_sum, 1.0) - 1.0


def body_ratio(o: pl.Expr, h: pl.Expr, l: pl.Expr, c: pl.Expr) -> pl.Expr:
    """(c - o) / (h - l) in [-1, 1]; 0 for a zero-range bar."""
    return safe_div(c - o, h - l, 0.0)


def upper_wick(o: pl.Expr, h: pl.Expr, l: pl.Expr, c: pl.Expr) -> pl.Expr:
    """(h - max(o, c)) / (h - l) in [0, 1]; 0 for a zero-range bar."""
    return safe_div(h - pl.max_horizontal(o, c), h - l, 0.0)


def lower_wick(o: pl.Expr, h: pl.Expr, l: pl.Expr, c: pl.Expr) -> pl.Expr:
    """(min(o, c) - l) / (h - l) in [0, 1]; 0 for a zero-range bar."""
    return safe_div(pl.min_horizontal(o, c) - l, h - l, 0.0)
