"""The probe lead (replay/synthetic.py, the "sequence" world of benchmarks/bench_gate.py): at the 15-minute
decision minutes no last-row feature carries the drift's sign, while a statistic of the sequence 31-45 rows back
predicts it; and the lead is off by default."""

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from crpbot_assets.features.catalogue import FEATURE_NAMES
from crpbot_assets.features.compute import compute_features
from crpbot_assets.replay import synthetic

START, END, SEED = datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 1, 15, tzinfo=UTC), 3


def _decision_rows(probe_lead: float) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """(features, forward 15-minute log return, probe sign of the quarter three before) at decision minutes."""
    candles = synthetic.candles("BTC-USD", START, END, SEED, sentiment_lead=0, probe_lead=probe_lead)
    rows = (
        compute_features(candles)
        .join(
            candles.select("ts", (pl.col("close").shift(-15) / pl.col("close")).log().alias("fwd")), on="ts"
        )
        .filter(pl.col("ts").dt.epoch("s") % 900 == 0)
        .drop_nulls("fwd")
    )
    sign, _ = synthetic.probes("BTC-USD", rows["ts"].dt.epoch("s").to_numpy() // 900 - 3, SEED)
    return rows, rows["fwd"].to_numpy(), sign


def _whipsaw(candles: pl.DataFrame, ts: pl.Series) -> np.ndarray:
    """The sequence statistic: at each decision minute t, sum over the 5-minute bars starting 45, 40 and 35
    minutes back of r(b) - r(b+1) - r(b+2) + r(b+3), r the 1-minute log return (only rows at or before t)."""
    minute = candles["ts"].dt.epoch("s").to_numpy() // 60
    r = np.full(minute.max() - minute.min() + 1, np.nan)
    r[minute - minute.min()] = np.log(candles["close"].to_numpy() / candles["open"].to_numpy())
    t = ts.dt.epoch("s").to_numpy() // 60 - minute.min()
    return sum(
        np.nansum([w * r[t - lag + k] for k, w in enumerate(synthetic.PROBE_PATTERN)], axis=0)
        for lag in (45, 40, 35)
    )


@pytest.fixture
def frequent_probes(monkeypatch):
    """Every hour holds a probe (more probes, a sharper test); the generator's caches cleared."""
    monkeypatch.setattr(synthetic, "PROBE_P", 1.0)
    synthetic._day.cache_clear(), synthetic._drift_signs.cache_clear()
    yield
    synthetic._day.cache_clear(), synthetic._drift_signs.cache_clear()


def test_probe_lead_is_invisible_to_the_last_row_and_visible_to_the_sequence(frequent_probes):
    rows, fwd, sign = _decision_rows(1.5)
    assert np.corrcoef(sign, fwd)[0, 1] > 0.6  # the lead is there
    candles = synthetic.candles("BTC-USD", START, END, SEED, sentiment_lead=0, probe_lead=1.5)
    assert np.corrcoef(_whipsaw(candles, rows["ts"]), fwd)[0, 1] > 0.4  # and the sequence carries it
    # the last row does not carry the probe's sign (a faint drift, so that its noise hides nothing)
    rows, _, sign = _decision_rows(0.01)
    probed = sign != 0
    for name in FEATURE_NAMES:
        values = rows[name].to_numpy()[probed]
        known = np.isfinite(values)
        if known.sum() > 300 and np.std(values[known]) > 0:
            # about 330 probes: a correlation's standard error is about 0.055
            assert abs(np.corrcoef(values[known], sign[probed][known])[0, 1]) < 0.25, name


def test_probe_lead_off_by_default_leaves_the_world_unchanged(monkeypatch):
    monkeypatch.delenv(synthetic.PROBE_LEAD_ENV, raising=False)
    default = synthetic.candles("BTC-USD", START, datetime(2019, 1, 2, tzinfo=UTC), SEED, sentiment_lead=0)
    assert default.equals(
        synthetic.candles(
            "BTC-USD", START, datetime(2019, 1, 2, tzinfo=UTC), SEED, sentiment_lead=0, probe_lead=0
        )
    )
    monkeypatch.setenv(synthetic.PROBE_LEAD_ENV, "1.5")
    probed = synthetic.candles("BTC-USD", START, datetime(2019, 1, 2, tzinfo=UTC), SEED, sentiment_lead=0)
    assert not probed["close"].equals(default["close"])
    assert probed["volume"].equals(default["volume"])  # the probe moves prices only
