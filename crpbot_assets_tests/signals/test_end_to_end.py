"""End to end on the replay server: as the replay's clock moves through March 2024 (the month in progress of
this test), candles -> features -> signals -> paper_trades -> paper_portfolio gain exactly the new minutes, the
trades follow the signals with the stated fills and costs, and re-running changes nothing. The model in
`signals` is byte for byte the fold model of the month; a retrained `lstm_model` changes nothing downstream;
promotion, replacement and demotion are recorded with the version replaced.

fold_model and walk_forward_predictions are stand-ins with the real keys and partitions (training is tested in
training/): the fold model is a real artifact, the record of December..February is one where the LSTM beats
every baseline after costs (the default gate passes) or loses (it fails)."""

import hashlib
from datetime import timedelta
from functools import cache

import dagster as dg
import numpy as np
import polars as pl
import pytest

from crpbot_assets.candles.assets import candles as candles_asset
from crpbot_assets.common.partitions import split_key, symbol_month_key, symbol_month_partitions
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.definitions import defs
from crpbot_assets.features.assets import features as features_asset
from crpbot_assets.replay import coinbase
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.signals import ledger as lg
from crpbot_assets.signals.assets import paper_portfolio, paper_trades, promoted_model, signals
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.walk_forward_assets import fold_model_path, test_month_partitions
from crpbot_assets_tests.candles.conftest import FAST, fast_coinbase
from crpbot_assets_tests.signals.conftest import FEB, MARCH, SYMBOL, make_fold, march_candles, march_features
from crpbot_assets_tests.signals.test_promotion_alerts import record

CLOCK = [(MARCH + timedelta(days=4, hours=6)).timestamp()]
MARCH_KEY = symbol_month_key(SYMBOL, MARCH)
FEB_KEY = symbol_month_key(SYMBOL, FEB)
RECORD = {
    "won": record(0.004, months=("2023-12", "2024-01", "2024-02")),
    "lost": record(-0.004, months=("2023-12", "2024-01", "2024-02")),
}
WORLD = {"fold": 0, "record": "won"}  # what the stand-ins produce next


@cache
def fold_bytes(seed: int) -> bytes:
    """A real fold artifact on March's features (trained on first use, not at import: every worker imports)."""
    return wf.save_fold(make_fold(march_features(march_candles()), seed))


@dg.asset(name="fold_model", partitions_def=symbol_month_partitions)
def fold_model_stand_in(context: dg.AssetExecutionContext, storage: StorageResource) -> dict:
    symbol, month = split_key(context.partition_key)
    data = fold_bytes(WORLD["fold"])
    version = hashlib.sha256(data).hexdigest()[:12]
    path = fold_model_path(symbol, version)
    storage.storage.write_bytes(path, data)
    return {
        "fold_month": f"{month:%Y-%m}",
        "training_window": "2023-03-01 00:00 .. 2024-02-15 00:00",
        "model_version": version,
        "model_path": path,
        "model_uri": storage.storage.uri(path),
    }


@dg.asset(name="walk_forward_predictions", partitions_def=test_month_partitions)
def predictions_stand_in(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return RECORD[WORLD["record"]][f"{split_key(context.partition_key)[1]:%Y-%m}"]


SENTIMENT = dg.AssetSpec("sentiment_features", partitions_def=symbol_month_partitions)  # never materialized
PIPELINE = [candles_asset, features_asset, signals, paper_trades, paper_portfolio]
ASSETS = [fold_model_stand_in, predictions_stand_in, promoted_model, SENTIMENT, *PIPELINE]
GATE = [fold_model_stand_in, predictions_stand_in, promoted_model]


@pytest.fixture(scope="module")
def server():
    with ReplayServer([coinbase.service(**FAST, clock=lambda: CLOCK[0])], hang_s=3.0) as replay:
        yield replay


def _run(selection, partition, resources, instance, assets=ASSETS):
    result = dg.materialize(
        assets, selection=selection, partition_key=partition, resources=resources, instance=instance
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


def _record(resources, instance, assets=ASSETS) -> None:
    for month in ("2023-12-01", "2024-01-01", "2024-02-01"):
        _run(
            ["walk_forward_predictions"],
            dg.MultiPartitionKey({"symbol": SYMBOL, "month": month}),
            resources,
            instance,
            assets,
        )


def test_signals_and_paper_trades_follow_the_replay_clock(server, storage_resources, memory_instance):
    resources = {**storage_resources, "coinbase": fast_coinbase(server)}
    files = storage_resources["storage"].storage
    _run(["candles"], FEB_KEY, resources, memory_instance)
    _run(
        ["features"], FEB_KEY, resources, memory_instance
    )  # warms up March's first windows (no January: fewer rows)
    WORLD.update(fold=0, record="won")
    _record(resources, memory_instance)
    _run(["fold_model"], MARCH_KEY, resources, memory_instance)
    promoted = _meta(_run(["promoted_model"], MARCH_KEY, resources, memory_instance), "promoted_model")
    assert promoted["status"] == "promoted" and promoted["fold_month"] == "2024-03"
    assert promoted["judged_months"] == "2023-12, 2024-01, 2024-02" and promoted["lower_bound"] > 0
    stored_fold = files.read_json(f"fold_model/symbol={SYMBOL}/month=2024-03-01.json")
    assert promoted["model_version"] == stored_fold["model_version"]

    first = _tick(resources, memory_instance)
    stored_signals = files.read_parquet("signals/symbol=BTC-USD/month=2024-03-01.parquet")
    month_features = files.read_parquet("features/symbol=BTC-USD/month=2024-03-01.parquet")
    # a signal for every feature minute with a complete window (sequence_length 10: February rows fill it)
    assert stored_signals["ts"].equals(month_features["ts"])
    assert stored_signals["ts"].max() < MARCH + timedelta(days=4, hours=6)
    # the version in signals is the fold model of the month being scored, byte for byte
    assert first["signals"]["model_version"] == promoted["model_version"] == stored_fold["model_version"]
    assert (
        hashlib.sha256(files.read_bytes(stored_fold["model_path"])).hexdigest()[:12]
        == stored_fold["model_version"]
    )
    assert set(stored_signals["model_version"]) == {stored_fold["model_version"]}
    assert first["paper_trades"]["new_trades"] > 0

    CLOCK[0] += 3 * 3600  # three hours later
    second = _tick(resources, memory_instance)
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
    again = _tick(resources, memory_instance)
    assert again["signals"]["new_signals"] == 0 and again["paper_trades"]["new_trades"] == 0
    assert files.read_parquet("signals/symbol=BTC-USD/month=2024-03-01.parquet").equals(later_signals)
    assert files.read_parquet("paper_trades/symbol=BTC-USD/month=2024-03-01.parquet").equals(ledger)
    assert files.read_parquet("paper_portfolio/symbol=BTC-USD/month=2024-03-01.parquet").equals(portfolio)

    # demoted (the record now says the LSTM loses): signals turn to flat decisions, the ledger closes
    WORLD.update(record="lost")
    _record(resources, memory_instance)
    demoted = _meta(_run(["promoted_model"], MARCH_KEY, resources, memory_instance), "promoted_model")
    assert demoted["status"] == "demoted" and demoted["previous_model_version"] == promoted["model_version"]
    CLOCK[0] += 3600
    flat = _tick(resources, memory_instance)
    assert flat["signals"]["status"].startswith("no promoted model (flat)")
    assert flat["signals"]["model_version"] == "none" and flat["signals"]["latest_position"] == 0
    closed = files.read_parquet("paper_trades/symbol=BTC-USD/month=2024-03-01.parquet")
    assert closed.head(ledger.height).equals(ledger) and closed["position"][-1] == 0
    if ledger["position"][-1] != 0:  # a position was open: closed by a fill of the flat signals
        assert closed["model_version"][-1] == "none"


def test_promotion_replacement_and_demotion_are_recorded(storage_resources, memory_instance):
    resources = storage_resources
    WORLD.update(fold=0, record="won")
    _record(resources, memory_instance, GATE)
    _run(["fold_model"], MARCH_KEY, resources, memory_instance, GATE)
    first = _meta(_run(["promoted_model"], MARCH_KEY, resources, memory_instance, GATE), "promoted_model")
    again = _meta(_run(["promoted_model"], MARCH_KEY, resources, memory_instance, GATE), "promoted_model")
    assert first["status"] == "promoted" and again["status"] == "kept"
    assert again["model_version"] == again["previous_model_version"] == first["model_version"]
    WORLD.update(fold=1)  # the fold is remade (other weights): the new version replaces the old one
    _run(["fold_model"], MARCH_KEY, resources, memory_instance, GATE)
    replaced = _meta(_run(["promoted_model"], MARCH_KEY, resources, memory_instance, GATE), "promoted_model")
    assert replaced["status"] == "promoted" and replaced["previous_model_version"] == first["model_version"]
    assert replaced["model_version"] != first["model_version"]
    WORLD.update(record="lost")  # the record now says the LSTM loses: demoted, the replaced version recorded
    _record(resources, memory_instance, GATE)
    demoted = _meta(_run(["promoted_model"], MARCH_KEY, resources, memory_instance, GATE), "promoted_model")
    assert demoted["status"] == "demoted" and demoted["model_version"] == ""
    assert demoted["previous_model_version"] == replaced["model_version"] and demoted["gate_passed"] is False
    again = _meta(_run(["promoted_model"], MARCH_KEY, resources, memory_instance, GATE), "promoted_model")
    assert again["status"] == "none promoted" and again["previous_model_version"] == ""


def test_a_retrained_lstm_model_changes_nothing_downstream():
    graph = defs.resolve_asset_graph()
    downstream = dg.AssetSelection.assets("lstm_model").downstream().resolve(graph)
    assert {k.to_user_string() for k in downstream} == {"lstm_model", "model_evaluation"}
    upstream = dg.AssetSelection.assets("signals").upstream().resolve(graph)
    assert dg.AssetKey("fold_model") in upstream and dg.AssetKey("lstm_model") not in upstream
