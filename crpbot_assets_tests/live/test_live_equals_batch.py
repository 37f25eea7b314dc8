"""What is evaluated is exactly what is deployed: crpbot-live's decisions and fills are the `signals` and
`paper_trades` assets' on the same minutes, across a month boundary, and its features are the `features` asset's.

The service runs in process on the replay (60x) from 23:43:50 on 30 November 2026 to 00:10:50 on 1 December,
having started mid-month (the rule's state caught up from 1 November). BTC-USD: November's fold decides on a
3-minute grid with a hysteresis rule, December's (another fold) on a 2-minute grid from flat. SOL-USD: November's
promotion is crpbot-demo's only (refused outside the demo: flat decisions), December's fold decides every minute.
Then the batch assets run through Dagster on the replay's candles of the same months, from each month's start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest

from crpbot_assets.common.io_manager import partition_path
from crpbot_assets.common.months import month_end, previous_month
from crpbot_assets.common.partitions import symbol_month_key, symbol_month_partitions
from crpbot_assets.features.assets import features as features_asset
from crpbot_assets.live.ledger import read_records
from crpbot_assets.live.service import LiveService
from crpbot_assets.replay import synthetic
from crpbot_assets.resources import file_resources
from crpbot_assets.signals import scoring
from crpbot_assets.signals.assets import paper_trades, signals
from crpbot_assets.training import walk_forward as wf
from crpbot_assets_tests.features.test_assets import CANDLES
from crpbot_assets_tests.live.conftest import World, live_fold, promote

pytestmark = pytest.mark.slow
NOVEMBER, DECEMBER = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
START = DECEMBER - timedelta(minutes=16, seconds=10)
RUN_S = 27 * 60
SYMBOLS = ["BTC-USD", "SOL-USD"]
DEMO_ONLY = {
    "demo_rule": True,
    "passes_configured_gate": False,
    "configured_gate_reason": "won 1 of the latest 3",
}
ASSETS = [
    CANDLES,
    dg.AssetSpec("sentiment_features", partitions_def=symbol_month_partitions),  # never materialized: nulls
    dg.AssetSpec("promoted_model", partitions_def=symbol_month_partitions),  # committed by promote()
    features_asset,
    signals,
    paper_trades,
]
FILL_FIELDS = ["fill_open", "half_spread_bps", "fill_price", "position", "model_version"]
SIZE_FIELDS = ["traded_units", "fee", "spread_cost", "units", "cash", "equity"]


def stored(files, asset: str, symbol: str, months) -> pl.DataFrame:
    """The months' partitions of `asset` as the IO manager stored them."""
    paths = [
        partition_path(dg.AssetKey(asset), str(symbol_month_key(symbol, m))) + ".parquet" for m in months
    ]
    return pl.concat([files.read_parquet(path) for path in paths])


def test_live_decisions_fills_and_features_are_the_batch_assets_across_a_month_boundary(
    tmp_path, features, instance
):
    data = tmp_path / "data"
    folds = {
        ("BTC-USD", NOVEMBER): (live_fold(features, seed=0, horizon=3), {}),
        ("BTC-USD", DECEMBER): (live_fold(features, seed=1, horizon=2), {}),
        ("SOL-USD", NOVEMBER): (live_fold(features, seed=2, decisive=True), DEMO_ONLY),
        ("SOL-USD", DECEMBER): (live_fold(features, seed=3, decisive=True), {}),
    }
    versions = {
        key: promote(data, key[0], fold, key[1], instance, **labels) for key, (fold, labels) in folds.items()
    }
    with World(speed=60, origin=START) as world:
        world.seed_cache(tmp_path, SYMBOLS, START - timedelta(minutes=30))
        # at 60x a virtual second is 17 ms: the limits leave room for a busy machine (the month's first minute
        # computes the previous month's features once)
        settings = world.settings(tmp_path, SYMBOLS, decide_within_s=600.0, stale_after_s=120.0)
        service = LiveService(settings, world.clock)
        try:
            service.load()
            summary = service.run(until=world.clock.now() + RUN_S)
        finally:
            service.close()
    records = read_records(service.ledger.path)
    assert summary["feed"]["skipped"].keys() <= {"no_window", "flat_off_grid"}, summary["feed"]["skipped"]
    changed = [a["message"] for a in service.alerts if a["kind"] == "model_changed"]
    assert len(changed) == 2 and all("2026-11" in m and "2026-12: fold model" in m for m in changed)

    # the batch: candles of October (warm-up) to the last minute the service saw, then features, signals and
    # paper_trades of November and December (December's ledger opens with November's last state)
    end = max(datetime.fromtimestamp(r["minute"] + 60, UTC) for r in records if r["kind"] == "decision")
    resources = file_resources(str(data))
    for symbol in SYMBOLS:
        for month in (previous_month(NOVEMBER), NOVEMBER, DECEMBER):
            candles = synthetic.candles(symbol, month, min(month_end(month), end), now=end)
            key = str(symbol_month_key(symbol, month))
            resources["io_manager"].commit_outside_run(instance, "candles", key, candles)
        for month in (NOVEMBER, DECEMBER):
            result = dg.materialize(
                ASSETS,
                selection=["features", "signals", "paper_trades"],
                partition_key=str(symbol_month_key(symbol, month)),
                resources=resources,
                instance=instance,
            )
            assert result.success
    files = resources["storage"].storage

    for symbol in SYMBOLS:
        decisions = [r for r in records if r["kind"] == "decision" and r["symbol"] == symbol]
        minutes = [r["minute"] for r in decisions]
        batch = stored(files, "signals", symbol, (NOVEMBER, DECEMBER))
        span = batch.filter(pl.col("ts").dt.epoch("s").is_between(minutes[0], minutes[-1]))
        # the same minutes: every row of signals in the span was decided live, and nothing else
        assert (
            span["ts"].dt.epoch("s").to_list() == minutes and span["ts"].min() < DECEMBER <= span["ts"].max()
        )
        live = [(r["grid"], r["signal"], r["model_version"]) for r in decisions]
        assert live == list(zip(span["decision"], span["position"], span["model_version"])), symbol
        scored = [r["p_up"] is not None for r in decisions]
        np.testing.assert_allclose(
            np.array([[r[c] for c in scoring.PROBABILITY_COLUMNS] for r, s in zip(decisions, scored) if s]),
            span.filter(pl.Series(scored)).select(scoring.PROBABILITY_COLUMNS).to_numpy(),
            atol=1e-6,
        )
        first_december = span.filter(pl.col("ts") >= DECEMBER).filter(pl.col("decision")).row(0, named=True)
        assert first_december["model_version"] == versions[symbol, DECEMBER]
        from_flat = scoring.score(  # December's fold from flat, whatever November's state
            stored(files, "features", symbol, (NOVEMBER, DECEMBER)),
            pl.DataFrame(),
            wf.load_fold(folds[symbol, DECEMBER][0]),
            "v",
            DECEMBER,
            first_december["ts"] + timedelta(minutes=1),
        )
        assert first_december["position"] == from_flat["position"][-1]

        # fills: the trades of paper_trades whose decisions the service made. BTC-USD: the batch ledger held
        # November's position from the month's start, the service what it started with (flat), so its first fill
        # (to the rule's position, which the batch held already) is its own; from then on both hold the same.
        fills = [r for r in records if r["kind"] == "fill" and r["symbol"] == symbol]
        if symbol == "BTC-USD":
            first, fills = fills[0], fills[1:]
            assert (
                first["position"]
                == span.filter(pl.col("ts").dt.epoch("s") == first["decision_minute"])["position"][0]
            )
        assert fills, f"{symbol}: no fill to compare"
        trades = stored(files, "paper_trades", symbol, (NOVEMBER, DECEMBER)).filter(pl.col("kind") == "trade")
        trades = trades.filter(
            pl.col("decision_ts").dt.epoch("s").is_between(fills[0]["decision_minute"], minutes[-1])
            & (pl.col("fill_ts").dt.epoch("s") <= fills[-1]["fill_minute"])
        )
        assert [f["decision_minute"] for f in fills] == trades["decision_ts"].dt.epoch("s").to_list()
        assert [f["fill_minute"] for f in fills] == trades["fill_ts"].dt.epoch("s").to_list()
        assert [tuple(f[k] for k in FILL_FIELDS) for f in fills] == trades.select(FILL_FIELDS).rows(), symbol
        if symbol == "SOL-USD":  # flat in both until December: the same capital, so the same sizes and cash
            assert all(r["signal"] == 0 for r in decisions if r["minute"] < DECEMBER.timestamp())
            assert [tuple(f[k] for k in SIZE_FIELDS) for f in fills] == trades.select(SIZE_FIELDS).rows()

    # the features the service decided on are the features asset's, bit for bit (Float32 as stored)
    for symbol in SYMBOLS:
        last = datetime.fromtimestamp(service.histories[symbol].last_minute(), UTC)
        live = service.features(symbol, last)
        batch = stored(files, "features", symbol, (NOVEMBER, DECEMBER)).filter(pl.col("ts") <= last)
        assert live.height > 40_000 and live["ts"][-1] == last
        assert live.equals(batch), symbol
