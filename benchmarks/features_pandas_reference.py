"""A straightforward pandas implementation of the feature catalogue, written independently of the polars code.

It is the reference the feature benchmark compares speed against and checks numbers with: same formulas, same
bar timing (a higher-timeframe bar joins from its last minute on), same warm-up rule (null until the catalogue's
lookback is met), vectorised pandas (rolling / ewm / resample / merge_asof), no polars.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from crpbot_assets.features.catalogue import CATALOGUE

LN2 = math.log(2.0)


def _safe_div(num: pd.Series, den: pd.Series, neutral: float) -> pd.Series:
    return (num / den).where(den != 0, neutral)


def _ema(x: pd.Series, alpha: float) -> pd.Series:
    return x.ewm(alpha=alpha, adjust=False).mean()


def _bar_features(b: pd.DataFrame, tf: str) -> dict[str, pd.Series]:
    """Every feature any timeframe may select, on bars `b` (open/high/low/close/volume[/minutes_present])."""
    o, h, l, c, v = b["open"], b["high"], b["low"], b["close"], b["volume"]
    r1 = np.log(c / c.shift(1))
    out = {}
    for k in (1, 4, 5, 12, 15, 24, 60, 240):
        out[f"logret_{k}"] = np.log(c / c.shift(k))
    out["ret_1"] = c / c.shift(1) - 1.0
    for n in (12, 15, 16, 24, 60, 240):
        out[f"vol_{n}"] = r1.rolling(n).std()
    hl2 = np.log(h / l) ** 2
    for n in (16, 30):
        out[f"parkinson_{n}"] = np.sqrt(hl2.rolling(n).mean() / (4 * LN2))
    gk = 0.5 * hl2 - (2 * LN2 - 1) * np.log(c / o) ** 2
    for n in (24, 30):
        out[f"garman_klass_{n}"] = np.sqrt(gk.rolling(n).mean().clip(lower=0))
    for span in (9, 21):
        out[f"ema_dist_{span}"] = c / _ema(c, 2 / (span + 1)) - 1
    for n in (20, 50, 200):
        out[f"sma_dist_{n}"] = c / c.rolling(n).mean() - 1
    macd = (_ema(c, 2 / 13) - _ema(c, 2 / 27)) / c
    out["macd"] = macd
    delta = c.diff()
    gain, loss = _ema(delta.clip(lower=0), 1 / 14), _ema((-delta).clip(lower=0), 1 / 14)
    out["rsi_14"] = _safe_div(100 * gain, gain + loss, 50.0)
    for n in (14, 60):
        lo, hi = l.rolling(n).min(), h.rolling(n).max()
        out[f"stoch_k_{n}"] = _safe_div(c - lo, hi - lo, 0.5)
        out[f"williams_r_{n}"] = _safe_div(c - hi, hi - lo, -0.5)
    m, s = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
    out["bb_pctb_20"] = _safe_div(c - (m - 2 * s), 4 * s, 0.5)
    out["bb_width_20"] = 4 * s / m
    prev = c.shift(1)
    tr = pd.concat([h - l, (h - prev).abs(), (l - prev).abs()], axis=1).max(axis=1)
    out["natr_14"] = _ema(tr, 1 / 14) / c
    lv = np.log1p(v)
    for n in (24, 48, 60):
        out[f"volume_z_{n}"] = _safe_div(lv - lv.rolling(n).mean(), lv.rolling(n).std(), 0.0)
    sv = np.sign(delta) * v
    for n in (24, 30):
        out[f"obv_slope_{n}"] = _safe_div(sv.rolling(n).sum(), v.rolling(n).sum(), 0.0)
    vsum, tvsum = v.rolling(60).sum(), ((h + l + c) / 3 * v).rolling(60).sum()
    out["vwap_dist_60"] = _safe_div(c * vsum, tvsum, 1.0) - 1
    rng = h - l
    out["body"] = _safe_div(c - o, rng, 0.0)
    out["upper_wick"] = _safe_div(h - np.maximum(o, c), rng, 0.0)
    out["lower_wick"] = _safe_div(np.minimum(o, c) - l, rng, 0.0)
    if "minutes_present" in b:
        out["coverage"] = b["minutes_present"] / {"5m": 5, "15m": 15, "1h": 60}[tf]
    return out


def _stage2(frame: dict[str, pd.Series], prefix: str) -> None:
    """Features computed from other (already warm-up-masked) features of the same timeframe."""
    if f"{prefix}_macd" in frame:
        frame[f"{prefix}_macd_signal"] = _ema(frame[f"{prefix}_macd"], 2 / 10)
        frame[f"{prefix}_macd_hist"] = frame[f"{prefix}_macd"] - frame[f"{prefix}_macd_signal"]
    if f"{prefix}_stoch_k_14" in frame:
        frame[f"{prefix}_stoch_d_14_3"] = frame[f"{prefix}_stoch_k_14"].rolling(3).mean()


def _timeframe(b: pd.DataFrame, tf: str, prefix: str, wanted: list) -> pd.DataFrame:
    raw = {f"{prefix}_{k}": s for k, s in _bar_features(b, tf).items()}
    index = np.arange(len(b))
    lookback = {f.name: f.lookback for f in wanted}
    out = {}
    stage1 = [f for f in wanted if f.stage == 1]
    for f in stage1:
        out[f.name] = raw[f.name].where(index >= lookback[f.name] - 1)
    _stage2(out, prefix)
    for f in wanted:
        if f.stage > 1:
            out[f.name] = out[f.name].where(index >= lookback[f.name] - 1)
    return pd.DataFrame({f.name: out[f.name] for f in wanted}, index=b.index)


def compute_features_pandas(candles: pd.DataFrame) -> pd.DataFrame:
    """`candles` with a `ts` column (tz-aware, sorted) -> `ts` + every catalogue feature, in catalogue order."""
    df = candles.set_index("ts")
    by_tf = {tf: [f for f in CATALOGUE if f.timeframe == tf] for tf in ("1m", "5m", "15m", "1h")}
    minute = _timeframe(
        df, "1m", "m1", [f for f in by_tf["1m"] if not f.name.startswith(("cal_", "m1_gap", "m1_cov"))]
    )
    epoch_min = (df.index.astype("int64") // 60_000_000).to_numpy()
    minute["m1_gap_minutes"] = pd.Series(epoch_min, index=df.index).diff() - 1
    span = pd.Series(epoch_min, index=df.index)
    minute["m1_coverage_60"] = 60.0 / (span - span.shift(59) + 1)
    tod, dow = (epoch_min % 1440).astype(float), ((epoch_min // 1440 + 3) % 7).astype(float)
    minute["cal_hour_sin"], minute["cal_hour_cos"] = (
        np.sin(2 * np.pi * tod / 1440),
        np.cos(2 * np.pi * tod / 1440),
    )
    minute["cal_dow_sin"], minute["cal_dow_cos"] = np.sin(2 * np.pi * dow / 7), np.cos(2 * np.pi * dow / 7)
    out = minute.reset_index()
    for tf, prefix, rule, minutes in (
        ("5m", "m5", "5min", 5),
        ("15m", "m15", "15min", 15),
        ("1h", "h1", "1h", 60),
    ):
        bars = df.resample(rule, closed="left", label="left").agg(
            {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
        )
        bars["minutes_present"] = df["close"].resample(rule, closed="left", label="left").count()
        bars = bars[bars["minutes_present"] > 0]
        feats = _timeframe(bars, tf, prefix, by_tf[tf])
        feats["usable_at"] = feats.index + pd.Timedelta(minutes=minutes - 1)
        out = pd.merge_asof(
            out, feats.reset_index(drop=True), left_on="ts", right_on="usable_at", direction="backward"
        ).drop(columns="usable_at")
    return out[["ts"] + [f.name for f in CATALOGUE]]
