"""End to end on the replay server: as the replay's clock moves through March 2024 (the month in progress of
this test), candles -> features -> signals -> paper_trades -> paper_portfolio gain exactly the new minutes, the
trades follow the signals with the stated fills and costs, and re-running changes nothing.

lstm_model and walk_forward_report are stand-ins with the real keys (training is tested in training/): the
model is a real artifact, the report passes the default rule."""

from datetime import timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest

from crpbot_assets.candles.assets import candles as candles_asset
from crpbot_assets.common.partitions import symbol_month_key, symbol_month_partitions, symbol_partitions
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.features.assets import features as features_asset
from crpbot_assets.replay import coinbase
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.signals import ledger as lg
from crpbot_assets.signals.assets import paper_portfolio, paper_trades, promoted_model, signals
from crpbot_assets.training.assets import model_relative_path
from crpbot_assets_tests.candles.conftest import FAST, fast_coinbase
from crpbot_assets_tests.signals.conftest import (
    FEB,
    MARCH,
    SYMBOL,
    make_artifact,
    march_candles,
    march_features,
)
from crpbot_assets_tests.signals.test_promotion_alerts import report

CLOCK = [(MARCH + timedelta(days=4, hours=6)).timestamp()]
MARCH_KEY = symbol_month_key(SYMBOL, MARCH)
FEB_KEY = symbol_month_key(SYMBOL, FEB)
ARTIFACT = make_artifact(march_features(march_candles()))


@dg.asset(name="lstm_model", partitions_def=symbol_partitions)
def lstm_model_stand_in(storage: StorageResource) -> dg.MaterializeResult:
    storage.storage.write_bytes(model_relative_path(SYMBOL), ARTIFACT)
    return dg.MaterializeResult()


@dg.asset(name="walk_forward_report", partitions_def=symbol_partitions)
def report_stand_in() -> dict:
    return report([0.02, 0.01, 0.03])


SENTIMENT = dg.AssetSpec("sentiment_features", partitions_def=symbol_month_partitions)  # never materialized
PIPELINE = [candles_asset, features_asset, signals, paper_trades, paper_portfolio]
ASSETS = [lstm_model_stand_in, report_stand_in, promoted_model, SENTIMENT, *PIPELINE]


@pytest.fixture(scope="module")
def server():
    with ReplayServer([coinbase.service(**FAST, clock=lambda: CLOCK[0])], hang_s=3.0) as replay:
        yield replay


def _run(selection, partition, resources, instance):
    result = dg.materialize(
        ASSETS, selection=selection, partition_key=partition, resources=resources, instance=instance
    )
    assert result.success
    return result


def _meta(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


def _tick(resources, instance) -> dict:
    """The hourly refresh of the month in progress, then everything downstream (what automation requests)."""
    _run(["candles"], MARCH_KEY, resources, instance)
    _run(["features"], MARCH_KEY, resources, instance)
    result = _run(["signals", "paper_trades", "paper_portfolio"], MARCH_KEY, resources, instance)
    return {name: _meta(result, name) for name in ("signals", "paper_trades", "paper_portfolio")}


def test_signals_and_paper_trades_follow_the_replay_clock(server, storage_resources, instance):
    resources = {**storage_resources, "coinbase": fast_coinbase(server)}
    files = storage_resources["storage"].storage
    _run(["candles"], FEB_KEY, resources, instance)
    _run(
        ["features"], FEB_KEY, resources, instance
    )  # warms up March's first windows (no January: fewer rows)
    _run(["lstm_model", "walk_forward_report"], SYMBOL, resources, instance)
    promoted = _meta(_run(["promoted_model"], SYMBOL, resources, instance), "promoted_model")
    assert promoted["status"] == "promoted" and promoted["model_version"]

    first = _tick(resources, instance)
    stored_signals = files.read_parquet("signals/symbol=BTC-USD/month=2024-03-01.parquet")
    month_features = files.read_parquet("features/symbol=BTC-USD/month=2024-03-01.parquet")
    # a signal for every feature minute with a complete window (sequence_length 10: February rows fill it)
    assert stored_signals["ts"].equals(month_features["ts"])
    assert stored_signals["ts"].max() < MARCH + timedelta(days=4, hours=6)
    assert first["signals"]["model_version"] == promoted["model_version"]
    assert first["paper_trades"]["new_trades"] > 0

    CLOCK[0] += 3 * 3600  # three hours later
    second = _tick(resources, instance)
    later_signals = files.read_parquet("signals/symbol=BTC-USD/month=2024-03-01.parquet")
    later_features = files.read_parquet("features/symbol=BTC-USD/month=2024-03-01.parquet")
    new = later_signals.filter(pl.col("ts") > stored_signals["ts"].max())
    expected_new = later_features.filter(pl.col("ts") > stored_signals["ts"].max())["ts"]
    assert new["ts"].equals(expected_new) and new.height == second["signals"]["new_signals"] > 150
    assert later_signals.head(stored_signals.height).equals(stored_signals)  # nothing rescored

    # the trades follow the signals: grid decisions whose position changes, filled at the next candle's open
    ledger = files.read_parquet("paper_trades/symbol=BTC-USD/month=2024-03-01.parquet")
    candles = files.read_parquet("candles/symbol=BTC-USD/month=2024-03-01.parquet")
    trades = ledger.filter(pl.col("kind") == "trade")
    grid = later_signals.filter(pl.col("ts").dt.minute() % 15 == 0)
    changes = grid.filter(pl.col("position") != pl.col("position").shift(1).fill_null(0))
    filled = changes.filter(pl.col("ts") < candles["ts"].max())
    assert trades["decision_ts"].equals(filled["ts"].alias("decision_ts"))
    fill = trades.select("fill_ts").join(candles.rename({"ts": "fill_ts"}), on="fill_ts", how="left")
    assert (trades["fill_ts"] - trades["decision_ts"] >= timedelta(minutes=1)).all()
    spread = 0.25 * (fill["high"] - fill["low"]) / fill["close"] * 1e4
    np.testing.assert_allclose(trades["half_spread_bps"], spread, rtol=1e-12)
    np.testing.assert_allclose(
        trades["fill_price"], fill["open"] * (1 + np.sign(trades["traded_units"]) * spread / 1e4), rtol=1e-12
    )
    np.testing.assert_allclose(
        trades["fee"], trades["traded_units"].abs() * trades["fill_price"] * 60 / 1e4, rtol=1e-12
    )
    # incremental ticks == one pass over everything known now
    one_pass = lg.advance(
        lg.empty_ledger(), None, later_signals, candles, MARCH, MARCH + timedelta(days=31), lg.PaperConfig()
    )
    assert ledger.equals(one_pass)
    assert second["paper_portfolio"]["as_of"] == str(candles["ts"].max())

    # re-running the tick changes nothing
    portfolio = files.read_parquet("paper_portfolio/symbol=BTC-USD/month=2024-03-01.parquet")
    again = _tick(resources, instance)
    assert again["signals"]["new_signals"] == 0 and again["paper_trades"]["new_trades"] == 0
    assert files.read_parquet("signals/symbol=BTC-USD/month=2024-03-01.parquet").equals(later_signals)
    assert files.read_parquet("paper_trades/symbol=BTC-USD/month=2024-03-01.parquet").equals(ledger)
    assert files.read_parquet("paper_portfolio/symbol=BTC-USD/month=2024-03-01.parquet").equals(portfolio)


def test_no_promotion_means_no_signals_and_the_reason_is_shown(server, storage_resources, instance):
    resources = {**storage_resources, "coinbase": fast_coinbase(server)}
    _run(["lstm_model"], SYMBOL, resources, instance)

    @dg.asset(name="walk_forward_report", partitions_def=symbol_partitions)
    def failing_report() -> dict:
        return report([-0.02, 0.01, -0.03])

    result = dg.materialize(
        [lstm_model_stand_in, failing_report, promoted_model],
        selection=["walk_forward_report", "promoted_model"],
        partition_key=SYMBOL,
        resources=resources,
        instance=instance,
    )
    meta = _meta(result, "promoted_model")
    assert meta["status"] == "none promoted"
    assert "beat the best baseline (lgbm) in 1 of the latest 3" in meta["reason"]
