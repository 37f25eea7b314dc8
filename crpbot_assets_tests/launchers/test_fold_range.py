# ruff: noqa: F811 (the fixtures imported from test_ec2)
"""A range of `fold_model` (24 months x 2 symbols) on the EC2 launcher against moto: every fold's LSTM trains in
ONE launch (one instance), and a range killed halfway resumes without training again what it finished. The real
asset, the real job runner in the simulated instance's subprocess, S3 storage on moto; only the machine is
simulated (`test_ec2.SimulatedInstance`)."""

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from crpbot_assets.common.partitions import symbol_month_key
from crpbot_assets.common.storage import Storage
from crpbot_assets.resources import file_resources
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.walk_forward_assets import FoldSettings, build_walk_forward_assets
from crpbot_assets_tests.launchers.test_ec2 import (  # noqa: F401, F811 (fixtures)
    BUCKET,
    DATA,
    SimulatedInstance,
    _all_instances,
    _failure_message,
    _last_modified,
    _launcher,
    _logs,
    _state,
    aws,
    dagster_instance,
)
from crpbot_assets_tests.training.helpers import hourly_sentiment, planted

pytestmark = pytest.mark.slow

FOLDS, _, _ = build_walk_forward_assets(window_months=1)
SYMBOLS = ("BTC-USD", "ETH-USD")
FIRST, MONTHS = datetime(2019, 1, 1, tzinfo=UTC), 24  # folds for 2019-02 .. 2021-01; 2019-01 is history
SETTINGS = FoldSettings(
    model={
        "hidden_size": 4,
        "num_layers": 1,
        "sequence_length": 8,
        "batch_size": 256,
        "epochs": 1,
        "max_train_windows_per_epoch": 1_000,
        "cpu_threads": 1,
        "sentiment_ablation": False,
    },
    dataset={"feature_lookback_minutes": 60, "max_sequence_length": 16},
    baselines={"lgbm_rounds": 5, "max_train_rows": 2_000},
    val_fraction=0.25,
    seeds=1,
)
DAYS = 10  # the last days of each month only (gaps are skipped, never filled): training and validation rows


def _months() -> list[datetime]:
    return [wf.shift_months(FIRST, k) for k in range(MONTHS + 1)]


@pytest.fixture
def upstream(aws, dagster_instance):
    """candles, features and sentiment_features of both symbols, committed to S3 as their assets commit them."""
    resources = file_resources(DATA)
    io_manager = resources["io_manager"]
    stand_ins = []
    for name in ("candles", "features", "sentiment_features"):

        @dg.asset(name=name, partitions_def=FOLDS.partitions_def)
        def stand_in() -> pl.DataFrame:  # declares the key; never materialized here
            raise AssertionError("committed outside runs")

        stand_ins.append(stand_in)
    for s, symbol in enumerate(SYMBOLS):
        for month in _months():
            n, start = DAYS * 1440, wf.shift_months(month, 1) - timedelta(days=DAYS)
            candles, features = planted(n, seed=10 * s + month.month, strength=2.0, start=start)
            frames = {
                "candles": candles,
                "features": features,
                "sentiment_features": hourly_sentiment(n - 120, seed=s, start=start),  # inside the month
            }
            for name, frame in frames.items():
                key = str(symbol_month_key(symbol, month))
                io_manager.commit_outside_run(dagster_instance, name, key, frame)
    return stand_ins, resources


def _range(aws, instance, tmp_path, upstream, scenario: str, interrupt_after_results: int | None = None):
    """One single-run range of fold_model over every symbol x month, the EC2 launcher, `scenario` playing the
    instance; with `interrupt_after_results`, the run is cancelled once that many jobs left a result in S3."""
    stand_ins, resources = upstream
    sim = SimulatedInstance(aws, tmp_path / f"instance-{scenario}", scenario)
    sim.start()
    watcher = None
    if interrupt_after_results:
        watcher = threading.Thread(
            target=_interrupt_after, args=(aws, interrupt_after_results, sim), daemon=True
        )
        watcher.start()
    months = _months()
    result = dg.materialize(
        [*stand_ins, FOLDS],
        selection=[FOLDS],
        instance=instance,
        raise_on_error=False,
        tags={
            "dagster/asset_partition_range_start": str(symbol_month_key(SYMBOLS[0], months[1])),
            "dagster/asset_partition_range_end": str(symbol_month_key(SYMBOLS[-1], months[-1])),
        },
        resources={
            **resources,
            "training_launcher": _launcher(aws, gpu_concurrency=2, jobs_max_runtime_s=600),
        },
        run_config=dg.RunConfig(ops={"fold_model": SETTINGS}),
    )
    sim.stopped.set()
    sim.join(timeout=120)
    assert sim.error is None, f"{sim.error}; the run: {'ok' if result.success else _failure_message(result)}"
    return result, sim


def _results(aws) -> list[str]:
    listed = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="data/walk_forward_models/").get("Contents", [])
    return [o["Key"] for o in listed if o["Key"].endswith(".result.json")]


def _interrupt_after(aws, count: int, sim) -> None:
    while not sim.stopped.wait(0.2):
        if len(_results(aws)) >= count:
            os.kill(
                os.getpid(), signal.SIGINT
            )  # the user cancels the run (the launcher terminates the instance)
            return


def _committed(instance) -> set[str]:
    return set(instance.get_materialized_partitions(FOLDS.key))


def test_a_24_month_2_symbol_range_is_one_launch_and_a_killed_range_resumes(
    aws, dagster_instance, tmp_path, upstream
):
    folds = MONTHS * len(SYMBOLS)
    cancelled, sim = _range(aws, dagster_instance, tmp_path / "a", upstream, "job-until-terminated", 6)
    assert not cancelled.success and _state(aws, sim.instance_id) == "terminated"
    assert _all_instances(aws) == [sim.instance_id]  # one launch for the whole range
    logs = _logs(dagster_instance, cancelled.run_id)
    assert f"training {folds} jobs in one launch" in logs
    time.sleep(1)  # a request the killed job had already sent may still land in moto's S3
    done = sorted(_results(aws))
    assert 6 <= len(done) < folds
    models = [key.removesuffix(".result.json") for key in done]
    stamps = {key: _last_modified(aws, f"s3://{BUCKET}/{key}") for key in models}

    resumed, sim2 = _range(aws, dagster_instance, tmp_path / "b", upstream, "job")
    assert resumed.success, _failure_message(resumed)
    assert len(_all_instances(aws)) == 2 and _state(aws, sim2.instance_id) == "terminated"
    logs = _logs(dagster_instance, resumed.run_id)
    assert f"{len(done)} of {folds} training jobs already done: not trained again" in logs
    assert f"training {folds - len(done)} jobs in one launch" in logs  # only what the kill left untrained
    assert {key: _last_modified(aws, f"s3://{BUCKET}/{key}") for key in models} == stamps  # not trained again
    assert len(_committed(dagster_instance)) == folds and len(_results(aws)) == folds
    value = Storage(DATA).read_json("fold_model/symbol=ETH-USD/month=2021-01-01.json")
    assert value["fold_month"] == "2021-01" and value["training_window"].startswith("2020-12-22")
    assert Storage(DATA).exists(value["model_path"])
