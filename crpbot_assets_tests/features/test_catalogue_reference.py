"""Every catalogue feature, as wired in the catalogue, against an independent pandas implementation of the same
formulas (benchmarks/features_pandas_reference.py: rolling/ewm/resample/merge_asof, no polars) on random
candles with gaps, outages, flat stretches and zero volume. The indicator functions have their own known-value
tests; this catches a feature wired to the wrong column, window, timeframe or bar (e.g. shifted by one)."""

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crpbot_assets.features.catalogue import FEATURE_NAMES, MAX_LOOKBACK_MINUTES
from crpbot_assets.features.compute import TS_DTYPE, compute_features

REFERENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "features_pandas_reference.py"
START = datetime(2021, 3, 1, tzinfo=UTC)
DAYS = 21  # the longest lookback (13.4 days) + outages, then days of defined values for every feature
RTOL, ATOL = 1e-6, 1e-9
# Bollinger features divide by a rolling std of raw prices, where pandas' rolling variance loses ~1e-5 relative
# precision (benchmarks/bench_features.py measures it against numpy): compared with a looser absolute tolerance.
BOLLINGER_ATOL = 1e-4


def pandas_reference():
    spec = importlib.util.spec_from_file_location("features_pandas_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compute_features_pandas


def random_candles(seed: int) -> pl.DataFrame:
    """A random walk of 1m candles (valid OHLC), with random missing minutes, a 3-hour and a 26-hour outage,
    a flat hour (one price, constant volume) and an hour without volume."""
    rng = np.random.default_rng(seed)
    n = DAYS * 1440
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0.0, 2e-4, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 5e-4, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 5e-4, n)))
    volume = rng.exponential(2.0, n) * (rng.random(n) > 0.05)
    flat = slice(15 * 1440, 15 * 1440 + 60)
    open_[flat] = high[flat] = low[flat] = close[flat] = close[flat.start - 1]
    volume[flat] = 1.0
    volume[16 * 1440 : 16 * 1440 + 60] = 0.0
    keep = rng.random(n) > 0.03
    keep[3 * 1440 : 3 * 1440 + 180] = False
    keep[8 * 1440 + 17 : 9 * 1440 + 137] = False
    minutes = np.arange(n)[keep]
    return pl.DataFrame(
        {
            "ts": [START + timedelta(minutes=int(m)) for m in minutes],
            "open": open_[keep],
            "high": high[keep],
            "low": low[keep],
            "close": close[keep],
            "volume": volume[keep],
        },
        schema={"ts": TS_DTYPE, **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume")}},
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_every_catalogue_feature_equals_an_independent_pandas_computation(seed):
    candles = random_candles(seed)
    assert candles.height > MAX_LOOKBACK_MINUTES
    ours = compute_features(candles)
    theirs = pandas_reference()(candles.to_pandas())
    assert list(theirs.columns) == ["ts", *FEATURE_NAMES]
    assert ours["ts"].equals(pl.from_pandas(theirs["ts"]).cast(TS_DTYPE), check_names=False)
    wrong = {}
    for name in FEATURE_NAMES:
        a = ours[name].to_numpy().astype(float)
        b = theirs[name].to_numpy(dtype=float)
        defined = ~np.isnan(a)
        assert defined.sum() > 5_000 and np.nanstd(a) > 0, f"{name}: too few or constant values to compare"
        atol = BOLLINGER_ATOL if "_bb_" in name else ATOL
        if (defined != ~np.isnan(b)).any():
            wrong[name] = f"defined on other rows: first at {np.argmax(defined != ~np.isnan(b))}"
        elif not np.allclose(a[defined], b[defined], rtol=RTOL, atol=atol):
            worst = int(np.argmax(np.abs(a - b) - RTOL * np.abs(b)))
            wrong[name] = f"row {worst} ({ours['ts'][worst]}): {a[worst]!r} vs reference {b[worst]!r}"
    assert not wrong, wrong
