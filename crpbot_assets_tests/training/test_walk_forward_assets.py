"""fold_model -> walk_forward_predictions -> walk_forward_report through Dagster and the local Pipes launcher:
a range run trains every fold of the run and commits each; the test month is scored by its own fold model;
unchanged inputs reuse the stored models."""

import hashlib

import dagster as dg
import pytest

from crpbot_assets.launchers.local import LocalTrainingLauncher
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.walk_forward_assets import FoldSettings, build_walk_forward_assets
from crpbot_assets_tests.training.conftest import MONTHS, materialize_upstream

FOLDS, PREDICTIONS, REPORT = build_walk_forward_assets(window_months=1)
SETTINGS = FoldSettings(
    model={
        "hidden_size": 8,
        "num_layers": 1,
        "sequence_length": 8,
        "batch_size": 256,
        "epochs": 2,
        "max_train_windows_per_epoch": 5_000,
        "cpu_threads": 1,
    },
    dataset={"feature_lookback_minutes": 60, "max_sequence_length": 16},
    baselines={"lgbm_rounds": 30, "max_train_rows": 20_000},
    val_fraction=0.2,
)
FEB = dg.MultiPartitionKey({"symbol": "BTC-USD", "month": MONTHS[1]})
MARCH = dg.MultiPartitionKey({"symbol": "BTC-USD", "month": "2019-03-01"})


def _folds(upstream, resources, instance, settings=SETTINGS):
    """One single-run range of fold_model: February (tested later) and March (its month has no data yet)."""
    return dg.materialize(
        [*upstream, FOLDS],
        selection=[FOLDS],
        tags={
            "dagster/asset_partition_range_start": str(FEB),
            "dagster/asset_partition_range_end": str(MARCH),
        },
        resources=resources,
        instance=instance,
        run_config=dg.RunConfig(ops={"fold_model": settings}),
    )


def _logs(instance, result) -> list[str]:
    return [e.message for e in instance.all_logs(result.run_id) if e.message]


@pytest.mark.slow
def test_fold_models_train_through_the_launcher_and_the_month_is_scored_by_its_own_fold(
    upstream, storage_resources, instance
):
    resources = {**storage_resources, "training_launcher": LocalTrainingLauncher()}
    files = storage_resources["storage"].storage
    materialize_upstream(upstream, resources, instance)
    first = _folds(upstream, resources, instance)
    assert first.success
    logs = _logs(instance, first)
    assert "training 2 jobs in one launch" in logs  # both folds, one launch
    assert sum(m.startswith("trained ") and "reused" not in m for m in logs) == 2
    records = instance.fetch_materializations(dg.AssetKey("fold_model"), limit=10).records
    by_key = {}
    for r in records:
        by_key.setdefault(r.partition_key, r.asset_materialization.metadata)
    feb = {k: v.value for k, v in by_key[str(FEB)].items()}
    assert feb["fold_month"] == "2019-02" and feb["training_window"].startswith("2019-01-01")
    assert feb["purge_minutes"] == 15 + 16 + 60 and feb["reused"] is False and feb["seeds"] == 1
    assert "reddit_sentiment_1h" not in feb["dropped_inputs"]  # the planted sentiment varies
    value = files.read_json("fold_model/symbol=BTC-USD/month=2019-02-01.json")
    data = files.read_bytes(value["model_path"])
    assert hashlib.sha256(data).hexdigest()[:12] == value["model_version"] == feb["model_version"]
    fold = wf.load_fold(data)
    assert set(fold["rules"]) == set(wf.TRADED_MODELS) and fold["inputs"] == value["inputs"]

    predicted = dg.materialize(
        [*upstream, FOLDS, PREDICTIONS],
        selection=[PREDICTIONS],
        partition_key=str(FEB),
        resources=resources,
        instance=instance,
    )
    assert predicted.success
    meta = predicted.asset_materializations_for_node("walk_forward_predictions")[0].metadata
    assert meta["model_version"].value == value["model_version"] and meta["test_rows"].value > 25_000
    frame = files.read_parquet("walk_forward_predictions/symbol=BTC-USD/month=2019-02-01.parquet")
    assert frame["ts"].min().month == 2 and {f"pos_{m}" for m in wf.TRADED_MODELS} <= set(frame.columns)
    assert {"lstm_up", "lstm_s0_up", "nosent_up", "logit_up", "lgbm_up", "trade_return"} <= set(frame.columns)

    report = dg.materialize(
        [*upstream, FOLDS, PREDICTIONS, REPORT],
        selection=[REPORT],
        partition_key="BTC-USD",
        resources=resources,
        instance=instance,
    )
    summary = report.asset_materializations_for_node("walk_forward_report")[0].metadata
    for model in wf.TRADED_MODELS:
        assert {f"net_return/{model}", f"max_drawdown/{model}", f"turnover/{model}"} <= set(summary)
    assert {"ic/lstm", "ic/logit", "ic/lgbm", "ic/persist", "verdict", "report page"} <= set(summary)
    assert "| buy and hold |" in summary["table"].value and "LSTM" in summary["verdict"].value

    # nothing changed upstream: every model is reused, nothing trains
    again = _folds(upstream, resources, instance)
    logs = _logs(instance, again)
    assert "2 of 2 training jobs already done: not trained again" in logs
    assert not any("in one launch" in m for m in logs)
    assert sum("already made; reused" in m for m in logs) == 2
    # a second seed: seed 0 is reused, only seed 1 of each fold trains
    two = _folds(upstream, resources, instance, SETTINGS.model_copy(update={"seeds": 2}))
    logs = _logs(instance, two)
    assert (
        "2 of 4 training jobs already done: not trained again" in logs
        and "training 2 jobs in one launch" in logs
    )
    assert sum(m.startswith("trained ") and "seed 1 (" in m and "reused" not in m for m in logs) == 2
    value = files.read_json("fold_model/symbol=BTC-USD/month=2019-02-01.json")
    assert value["seeds"] == 2 and len(wf.load_fold(files.read_bytes(value["model_path"]))["lstm"]) == 2
