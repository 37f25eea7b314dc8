"""The walk-forward procedure end to end in one process: fold model -> test month -> record (benchmarks and slow
tests; the assets run the same functions through Dagster and the training launcher).

For each month M: the fold model (walk_forward.fold_training_data: rows before M, inputs that varied in
training; the LSTM seeds trained by `pipes_main.run_training`, the launcher's own entry point, in this process;
walk_forward.fit_fold: baselines and decision rules on validation), then M scored with it
(walk_forward.score_fold). The record feeds the verdict (verdict.py) and the promotion gate
(signals/promotion.py).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from crpbot_assets.training import baselines as bl
from crpbot_assets.training import decisions as dc
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.artifacts import load_artifact, read_uri
from crpbot_assets.training.dataset import Dataset, DatasetConfig, to_parquet_bytes
from crpbot_assets.training.pipes_main import run_training


@dataclass(frozen=True)
class ProcedureConfig:
    window: wf.WalkForwardConfig = wf.WalkForwardConfig()
    dataset: DatasetConfig = DatasetConfig()
    model: dict = field(
        default_factory=dict
    )  # training options (TrainConfig fields, sentiment_ablation, ...)
    seeds: int = 1
    baselines: bl.BaselineConfig = bl.BaselineConfig()
    decisions: dc.DecisionConfig = dc.DecisionConfig()


def train_seeds(part: Dataset, model: dict, seeds: int, workdir: Path, log=lambda m: None) -> list[dict]:
    """The LSTM artifacts of seeds model.seed .. + seeds - 1 trained on `part` (as the launcher's job would)."""
    data = workdir / "part.parquet"
    data.write_bytes(to_parquet_bytes(part))
    artifacts = []
    for k in range(seeds):
        options = {**model, "seed": int(model.get("seed", 0)) + k}
        target = workdir / f"seed{k}.pt"
        extras = {
            "symbol": part.symbol,
            "dataset_uri": str(data),
            "model_uri": str(target),
            "config": options,
        }
        run_training(extras, log)
        artifacts.append(load_artifact(read_uri(str(target))))
    return artifacts


def fold_model(
    features: pl.DataFrame,
    sentiment: pl.DataFrame,
    candles: pl.DataFrame,
    month: datetime,
    config: ProcedureConfig,
    symbol: str = "",
    log=lambda m: None,
) -> dict:
    """The fold model for `month` (walk_forward.fit_fold's artifact plus `dropped_inputs`)."""
    fold = wf.plan_fold(month, config.window, config.dataset)
    dataset, dropped = wf.fold_training_data(features, sentiment, candles, fold, config.dataset, symbol)
    with tempfile.TemporaryDirectory() as workdir:
        artifacts = train_seeds(wf.training_part(dataset), config.model, config.seeds, Path(workdir))
    fitted = wf.fit_fold(dataset, artifacts, candles, config.baselines, config.decisions, log)
    return {**fitted, "dropped_inputs": dropped}


def scored_month(
    features: pl.DataFrame,
    sentiment: pl.DataFrame,
    candles: pl.DataFrame,
    month: datetime,
    fold: dict,
    symbol: str = "",
) -> pl.DataFrame:
    """Month `month` scored with its fold model from the month and the one before it (what the
    walk_forward_predictions asset reads): the walk-forward predictions."""
    end = wf.shift_months(month, 1)

    def inside(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter((pl.col("ts") >= wf.shift_months(month, -1)) & (pl.col("ts") < end))

    rows = wf.month_rows(inside(features), inside(sentiment), inside(candles), fold)
    return wf.score_rows(rows, fold, inside(candles), month, end)[0]


def record(
    features: pl.DataFrame,
    sentiment: pl.DataFrame,
    candles: pl.DataFrame,
    months: list[datetime],
    config: ProcedureConfig,
    symbol: str = "",
    log=lambda m: None,
) -> tuple[dict[str, pl.DataFrame], dict[str, dict]]:
    """({"YYYY-MM": walk-forward predictions}, {"YYYY-MM": fold model}) of `months`."""
    frames, folds = {}, {}
    for month in months:
        label = f"{month:%Y-%m}"
        folds[label] = fold_model(features, sentiment, candles, month, config, symbol, log)
        frames[label] = scored_month(features, sentiment, candles, month, folds[label], symbol)
        log(f"{label}: lstm rule {folds[label]['rules']['lstm']['reason']}")
    return frames, folds


# The procedure at CPU size, for measurements on replay worlds (benchmarks/bench_gate.py and the slow gate test):
# 2-month windows, a 1-day feature embargo, a small LSTM reading 64 rows (more than an hour), one seed, no ablation.
CPU_SIZED = ProcedureConfig(
    window=wf.WalkForwardConfig(window_months=2, val_fraction=0.2),
    dataset=DatasetConfig(feature_lookback_minutes=1440, max_sequence_length=64),
    model={
        "hidden_size": 32,
        "num_layers": 1,
        "dropout": 0.0,
        "sequence_length": 64,
        "batch_size": 256,
        "learning_rate": 3e-3,
        "epochs": 6,
        "patience": 2,
        "max_train_windows_per_epoch": 20_000,
        "cpu_threads": 1,
        "sentiment_ablation": False,
    },
    seeds=1,
    baselines=bl.BaselineConfig(lgbm_rounds=100, max_train_rows=30_000),
    decisions=dc.DecisionConfig(),
)
