"""Synthetic inputs for the training tests and benchmark: candles, features and hourly sentiment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from crpbot_assets.training.dataset import SENTIMENT_COLUMNS, DatasetConfig

START = datetime(2019, 1, 1, tzinfo=UTC)
# Small purge so a few weeks of data still split into three segments.
SMALL_CONFIG = DatasetConfig(feature_lookback_minutes=60, max_sequence_length=32)


def minutes(n: int, start: datetime = START) -> pl.Series:
    return pl.datetime_range(
        start, start + timedelta(minutes=n - 1), "1m", time_unit="us", time_zone="UTC", eager=True
    ).alias("ts")


def planted(
    n: int,
    seed: int = 0,
    noise_features: int = 4,
    strength: float = 1.0,
    drop_p: float = 0.002,
    start: datetime = START,
    pattern_from: datetime | None = None,
):
    """(candles, features): a persistent latent signal `s` (a feature) drives the next minutes' returns.

    r[t+1] = strength * 4e-4 * s[t] + N(0, 1e-3), s AR(1) with phi 0.9: the sign of s predicts the 15-minute
    forward return. Other features are pure noise. About `drop_p` of the minutes are missing. With
    `pattern_from`, returns before that instant ignore `s` (the pattern starts then).
    """
    rng = np.random.default_rng(seed)
    s = np.zeros(n)
    shocks = rng.normal(0, 1, n)
    for t in range(1, n):  # test data only; fine as a loop over 1e5 numbers
        s[t] = 0.9 * s[t - 1] + np.sqrt(1 - 0.81) * shocks[t]
    ts = minutes(n, start)
    active = np.ones(n) if pattern_from is None else (ts >= pattern_from).to_numpy().astype(float)
    returns = np.concatenate([[0.0], strength * 4e-4 * s[:-1]]) * active + rng.normal(0, 1e-3, n)
    close = 100.0 * np.exp(np.cumsum(returns))
    keep = rng.random(n) >= drop_p
    candles = pl.DataFrame(
        {
            "ts": ts,
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": np.ones(n),
        }
    ).filter(pl.Series(keep))
    features = pl.DataFrame(
        {"ts": ts, "signal": s, **{f"noise_{i}": rng.normal(0, 1, n) for i in range(noise_features)}}
    )
    return candles, features.filter(pl.Series(keep))


def hourly_sentiment(
    n_minutes: int, seed: int = 1, null_before_hours: int = 0, start: datetime = START
) -> pl.DataFrame:
    """Hourly rows (ts = end of hour) of the seven sentiment columns from `start`; nulls for the first hours if
    asked."""
    rng = np.random.default_rng(seed)
    hours = n_minutes // 60 + 2
    ts = pl.datetime_range(
        start + timedelta(hours=1),
        start + timedelta(hours=hours),
        "1h",
        time_unit="us",
        time_zone="UTC",
        eager=True,
    )
    values = {c: rng.normal(50, 10, len(ts)) for c in SENTIMENT_COLUMNS}
    frame = pl.DataFrame({"ts": ts, **values})
    if null_before_hours:
        mask = pl.int_range(0, pl.len()) < null_before_hours
        frame = frame.with_columns(
            [pl.when(mask).then(None).otherwise(pl.col(c)).alias(c) for c in SENTIMENT_COLUMNS]
        )
    return frame


def hand_backtest(dataset, variant: dict, fee_bps: float) -> dict[str, float]:
    """Total net return per strategy at `fee_bps`, recomputed by hand from the variant's test predictions
    (independent of evaluation.backtest/costs.py): grid minutes only, a skipped grid period re-enters from flat."""
    from crpbot_assets.training.artifacts import build_model, variant_dataset
    from crpbot_assets.training.train import make_windows, predict

    data = variant_dataset(dataset, variant)
    length = int(variant["config"]["sequence_length"])
    windows = make_windows(data, variant["feature_columns"], length)
    ends = windows.ends["test"]
    predicted = predict(build_model(variant), windows, ends).argmax(axis=1)
    test = dataset.frame[ends.numpy()]
    minute = test["ts"].dt.epoch("s").to_numpy() // 60
    horizon = dataset.config.horizon_minutes
    on_grid = minute % horizon == 0
    out = {}
    for mode, mapping in (("long_short", {0: -1.0, 1: 0.0, 2: 1.0}), ("long_flat", {0: 0.0, 1: 0.0, 2: 1.0})):
        equity, held, last_minute = 1.0, 0.0, None
        for cls, fwd, m in zip(predicted[on_grid], test["fwd_return"].to_numpy()[on_grid], minute[on_grid]):
            position = mapping[int(cls)]
            if last_minute is not None and m - last_minute != horizon:
                traded = abs(held) + abs(position)  # flat in between: leave, then enter
            else:
                traded = abs(position - held)
            equity *= 1 + position * fwd - traded * fee_bps / 1e4
            held, last_minute = position, m
        out[mode] = equity - 1
    return out
