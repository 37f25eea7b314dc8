"""The training assets end to end: upstream partitions -> dataset -> LocalTrainingLauncher (Pipes subprocess) -> evaluation."""

import json
import subprocess
import sys

import dagster as dg
import numpy as np
import pytest

from crpbot_assets.common.settings import REPO_ROOT
from crpbot_assets.launchers.local import LocalTrainingLauncher
from crpbot_assets.resources import resources_for
from crpbot_assets.training import dataset as ds
from crpbot_assets.training.artifacts import load_artifact
from crpbot_assets.training.assets import (
    DatasetSettings,
    EvaluationConfig,
    LstmConfig,
    dataset_relative_path,
    lstm_model,
    model_evaluation,
    model_relative_path,
    training_dataset,
)
from crpbot_assets.training.dataset import CLASSES
from crpbot_assets.training.definitions import defs as training_defs
from crpbot_assets_tests.training.conftest import materialize_upstream, upstream_assets
from crpbot_assets_tests.training.helpers import hand_backtest

TRAINING = [training_dataset, lstm_model, model_evaluation]
RUN_CONFIG = dg.RunConfig(
    ops={
        "training_dataset": DatasetSettings(feature_lookback_minutes=60, max_sequence_length=32),
        "lstm_model": LstmConfig(
            hidden_size=16,
            num_layers=1,
            sequence_length=16,
            batch_size=256,
            epochs=2,
            max_train_windows_per_epoch=5_000,
            cpu_threads=1,
        ),
        "model_evaluation": EvaluationConfig(fee_bps=25.0),
    }
)


@pytest.mark.slow
def test_training_graph_runs_through_the_local_pipes_launcher(upstream, storage_resources, instance):
    resources = {**storage_resources, "training_launcher": LocalTrainingLauncher()}
    materialize_upstream(upstream, resources, instance)
    result = dg.materialize(
        [*upstream, *TRAINING],
        selection=TRAINING,
        partition_key="BTC-USD",
        resources=resources,
        instance=instance,
        run_config=RUN_CONFIG,
    )
    assert result.success
    files = storage_resources["storage"].storage
    assert files.exists(dataset_relative_path("BTC-USD")) and files.exists(model_relative_path("BTC-USD"))

    by_asset = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }
    dataset_meta = by_asset["training_dataset"]
    assert (
        dataset_meta["train_rows"].value > dataset_meta["val_rows"].value > 0
        and dataset_meta["test_rows"].value > 0
    )
    assert dataset_meta["purge_minutes"].value == 15 + 32 + 60

    model_meta = by_asset["lstm_model"]
    assert model_meta["device"].value == "cpu"
    assert (
        model_meta["with_sentiment/features"].value == 5 + 7
        and model_meta["without_sentiment/features"].value == 5
    )
    assert model_meta["with_sentiment/samples_per_s"].value > 0
    assert len(model_meta["with_sentiment/history"].value) == 2
    assert "data:image/png;base64," in model_meta["loss_curve"].value

    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("BTC-USD/with_sentiment epoch 2/2" in m for m in logs)
    assert any("BTC-USD/without_sentiment epoch 1/2" in m for m in logs)

    evaluation = by_asset["model_evaluation"]
    assert evaluation["fee_bps"].value == 25.0
    # The net results are those of the configured fee (25 bps), recomputed by hand from the stored model.
    files = storage_resources["storage"].storage
    dataset = ds.from_parquet_bytes(files.read_bytes(dataset_relative_path("BTC-USD")))
    artifact = load_artifact(files.read_bytes(model_relative_path("BTC-USD")))
    for variant in ("with_sentiment", "without_sentiment"):
        expected = hand_backtest(dataset, artifact["variants"][variant], 25.0)
        for mode in ("long_short", "long_flat"):
            assert evaluation[f"{variant}/{mode}/total_return"].value == pytest.approx(
                expected[mode], abs=1e-4
            )
    stored = files.read_json("model_evaluation/BTC-USD.json")
    assert set(stored["variants"]) == {"with_sentiment", "without_sentiment"}
    accuracy = {}
    for variant in ("with_sentiment", "without_sentiment"):
        assert "equity" in evaluation[f"{variant}/equity_curve"].value
        # Each reported figure follows from its confusion matrix (rows = true class), counted here.
        report = stored["variants"][variant]
        matrix = np.array(report["model"]["confusion_matrix"])
        samples = report["model"]["samples"]
        support = matrix.sum(axis=1)
        assert matrix.shape == (3, 3) and matrix.sum() == samples
        accuracy[variant] = np.trace(matrix) / samples
        assert evaluation[f"{variant}/model/accuracy"].value == pytest.approx(accuracy[variant], abs=5e-5)
        recalls = [matrix[c, c] / support[c] for c in range(3) if support[c]]
        assert evaluation[f"{variant}/model/balanced_accuracy"].value == pytest.approx(
            sum(recalls) / len(recalls), abs=5e-5
        )
        # The majority baseline predicts one class for every window: its accuracy is that class's share.
        majority = np.array(report["majority_baseline"]["confusion_matrix"])
        predicted = CLASSES.index(report["majority_baseline"]["class"])
        assert (majority.sum(axis=1) == support).all() and majority[:, predicted].sum() == samples
        assert evaluation[f"{variant}/majority_baseline/accuracy"].value == pytest.approx(
            support[predicted] / samples, abs=5e-5
        )
        persistence = np.array(report["persistence_baseline"]["confusion_matrix"])
        assert (persistence.sum(axis=1) == support).all()
        assert evaluation[f"{variant}/persistence_baseline/accuracy"].value == pytest.approx(
            np.trace(persistence) / samples, abs=5e-5
        )
    assert stored["sentiment_ablation"]["accuracy_delta"] == pytest.approx(
        accuracy["with_sentiment"] - accuracy["without_sentiment"], abs=1e-9
    )
    # Both variants are judged on exactly the same test windows.
    samples = {v: stored["variants"][v]["model"]["samples"] for v in stored["variants"]}
    assert samples["with_sentiment"] == samples["without_sentiment"] > 0


def test_training_without_a_dataset_fails_with_the_missing_uri(storage_resources, instance):
    resources = {**storage_resources, "training_launcher": LocalTrainingLauncher()}
    result = dg.materialize(
        [*upstream_assets({}), training_dataset, lstm_model],
        selection=[lstm_model],
        partition_key="ETH-USD",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = json.dumps([str(e.event_specific_data) for e in result.get_step_failure_events()])
    assert (
        "training_dataset for ETH-USD is not materialized" in failure
        and "training_dataset/ETH-USD.parquet" in failure
    )


@pytest.mark.slow
def test_entry_point_imports_no_dagster():
    code = (
        "import sys, crpbot_assets.training.pipes_main\n"
        "bad = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.'))\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


@pytest.mark.slow
def test_entry_point_outside_pipes_fails_clearly():
    run = subprocess.run(
        [sys.executable, "-m", "crpbot_assets.training.pipes_main"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "must be launched through Dagster Pipes" in run.stderr


def test_domain_definitions_resolve_with_shared_resources(storage_resources):
    defs = dg.Definitions.merge(
        training_defs,
        dg.Definitions(
            assets=upstream_assets({}),
            resources={**storage_resources, "training_launcher": LocalTrainingLauncher()},
        ),
    )
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    key = dg.AssetKey("training_dataset")
    assert {p.to_user_string() for p in graph.get(key).parent_keys} == {
        "candles",
        "features",
        "sentiment_features",
    }
    assert not training_defs.resources  # bound only in crpbot_assets/resources.py
    assert isinstance(resources_for("local")["training_launcher"], LocalTrainingLauncher)


@pytest.mark.parametrize("bad", [{"symbol": "BTC-USD"}, {"dataset_uri": "x", "model_uri": "y"}])
def test_entry_point_rejects_incomplete_extras(bad):
    from crpbot_assets.training.pipes_main import run_training

    with pytest.raises(ValueError, match="training extras lack"):
        run_training(bad, print)
