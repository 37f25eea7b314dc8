"""walk_forward_predictions -> walk_forward_report through Dagster and the local Pipes launcher; unchanged
inputs are not recomputed."""

import dagster as dg
import pytest

from crpbot_assets.launchers.local import LocalTrainingLauncher
from crpbot_assets.training.walk_forward_assets import WalkForwardSettings, build_walk_forward_assets
from crpbot_assets_tests.training.conftest import MONTHS, materialize_upstream

PREDICTIONS, REPORT = build_walk_forward_assets(window_months=1)
SETTINGS = WalkForwardSettings(
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


def _report(upstream, resources, instance):
    return dg.materialize(
        [*upstream, PREDICTIONS, REPORT],
        selection=[REPORT],
        partition_key="BTC-USD",
        resources=resources,
        instance=instance,
    )


KEY = dg.MultiPartitionKey({"symbol": "BTC-USD", "month": MONTHS[1]})


def _predict(upstream, resources, instance, settings=SETTINGS):
    return dg.materialize(
        [*upstream, PREDICTIONS],
        selection=[PREDICTIONS],
        partition_key=str(KEY),
        resources=resources,
        instance=instance,
        run_config=dg.RunConfig(ops={"walk_forward_predictions": settings}),
    )


@pytest.mark.slow
def test_walk_forward_month_trains_through_the_launcher_reports_and_is_not_recomputed(
    upstream, storage_resources, instance
):
    resources = {**storage_resources, "training_launcher": LocalTrainingLauncher()}
    materialize_upstream(upstream, resources, instance)
    first = _predict(upstream, resources, instance)
    assert first.success
    meta = first.asset_materializations_for_node("walk_forward_predictions")[0].metadata
    assert meta["reused"].value is False and meta["test_rows"].value > 25_000  # most minutes of February
    assert meta["train/with_sentiment/epochs_run"].value == 2 and meta["model_month"].value == "2019-02"
    assert meta["window"].value.startswith("2019-01-01") and meta["purge_minutes"].value == 15 + 16 + 60
    frame = storage_resources["storage"].storage.read_parquet(
        "walk_forward_predictions/symbol=BTC-USD/month=2019-02-01.parquet"
    )
    assert frame["ts"].min().month == 2 and {"lstm_up", "nosent_up", "logit_up", "lgbm_up"} <= set(
        frame.columns
    )

    again = _predict(
        upstream, resources, instance
    )  # nothing upstream changed: the stored predictions come back
    meta_again = again.asset_materializations_for_node("walk_forward_predictions")[0].metadata
    assert meta_again["reused"].value is True
    assert meta_again["inputs_fingerprint"].value == meta["inputs_fingerprint"].value
    logs = [e.message for e in instance.all_logs(again.run_id) if e.message]
    assert not any("training BTC-USD locally" in m for m in logs)
    versions = [
        r.asset_materialization.tags["dagster/data_version"]
        for r in instance.fetch_materializations(dg.AssetKey("walk_forward_predictions"), limit=2).records
    ]
    assert versions[0] == versions[1] == meta["inputs_fingerprint"].value

    report = _report(upstream, resources, instance)
    assert report.success
    summary = report.asset_materializations_for_node("walk_forward_report")[0].metadata
    assert summary["months"].value == 1 and "break-even fee" in summary["headline"].value
    assert "data:image/png;base64," in summary["equity plot"].value
    stored = storage_resources["storage"].storage.read_json("walk_forward_report/BTC-USD.json")
    assert set(stored["months"]) == {"2019-02"} and "ablation" in stored

    # A second training seed: seed 0's stored model is reused, only seed 1 trains; the ablation pairs both.
    two = _predict(upstream, resources, instance, SETTINGS.model_copy(update={"seeds": 2}))
    meta_two = two.asset_materializations_for_node("walk_forward_predictions")[0].metadata
    assert meta_two["reused"].value is False and meta_two["seeds"].value == 2
    assert meta_two["model_fingerprint"].value == meta["model_fingerprint"].value
    logs = [e.message for e in instance.all_logs(two.run_id) if e.message]
    assert sum("already trained; reused" in m for m in logs) == 1
    assert sum("training seed 1 (2/2)" in m for m in logs) == 1
    frame = storage_resources["storage"].storage.read_parquet(
        "walk_forward_predictions/symbol=BTC-USD/month=2019-02-01.parquet"
    )
    assert {"lstm_s1_up", "nosent_s1_up"} <= set(frame.columns)
    report = _report(upstream, resources, instance)
    assert (
        report.asset_materializations_for_node("walk_forward_report")[0].metadata["ablation seeds"].value == 2
    )
