"""CPU cost of one walk-forward month (fold dataset, LSTM training with and without sentiment, baselines,
prediction) and its projection to 7 years x 3 symbols.

Data: the replay's synthetic BTC-USD candles, features computed as the `features` asset does, hourly Fear &
Greed. Training is measured on `--windows` sampled windows for one epoch per variant at the production model
size (LstmConfig defaults) and extrapolated to the fold's full training windows x `--epochs`; everything else
is measured in full. Reference in the same run: the same month scored with the already-trained model (what a
re-run or a quarterly month costs). Run: .venv/bin/python benchmarks/bench_walk_forward.py [--device cuda]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from crpbot_assets.features.compute import compute_features
from crpbot_assets.replay import fear_greed, synthetic
from crpbot_assets.sentiment.fear_greed import hourly_index
from crpbot_assets.sentiment.features import assemble, hour_ends
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.artifacts import load_artifact, read_uri
from crpbot_assets.training.dataset import DatasetConfig, to_parquet_bytes
from crpbot_assets.training.pipes_main import run_training
from crpbot_assets.training.train import TrainConfig

FOLDS_7Y_3_SYMBOLS = 7 * 12 * 3


def world(first_month: datetime, test_month: datetime) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    end = wf.shift_months(test_month, 1)
    warm_up = wf.shift_months(first_month, -1)
    candles = synthetic.candles("BTC-USD", warm_up, end, sentiment_lead=0.0)
    features = compute_features(candles).filter(pl.col("ts") >= first_month).drop_nulls()
    rows = [(day, float(value)) for day, value in fear_greed.history(0, end)]
    daily = pl.DataFrame(
        rows, schema={"day": pl.Datetime("us", "UTC"), "fear_greed_index": pl.Float64}, orient="row"
    )
    hours = hour_ends(warm_up, end, now=end)
    empty = pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC")})
    sentiment = assemble(
        hours, empty, hourly_index(daily, hours, timedelta(hours=1), timedelta(hours=26)), empty
    )
    return candles, features, sentiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-months", type=int, default=3, help="trailing window measured (default 3)")
    parser.add_argument("--windows", type=int, default=20_000, help="training windows timed per variant")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="epochs assumed per fold")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    test_month = datetime(2020, 6, 1, tzinfo=UTC)
    config = wf.WalkForwardConfig(window_months=args.window_months)
    dataset_config = DatasetConfig()
    started = time.perf_counter()
    candles, features, sentiment = world(wf.shift_months(test_month, -args.window_months), test_month)
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    fold = wf.plan_fold(test_month, config, dataset_config)
    dataset = wf.fold_dataset(features, sentiment, candles, fold, dataset_config, "BTC-USD")
    part = wf.training_part(dataset)
    dataset_s = time.perf_counter() - started

    model = {**asdict(TrainConfig()), "epochs": 1, "patience": 1, "max_train_windows_per_epoch": args.windows}
    with tempfile.TemporaryDirectory() as tmp:
        data_uri = str(Path(tmp) / "fold.parquet")
        model_uri = str(Path(tmp) / "model.pt")
        Path(data_uri).write_bytes(to_parquet_bytes(part))
        started = time.perf_counter()
        meta = run_training(
            {
                "symbol": "BTC-USD",
                "dataset_uri": data_uri,
                "model_uri": model_uri,
                "config": {**model, "device": args.device},
            },
            lambda message: None,
        )
        train_s = time.perf_counter() - started
        artifact = load_artifact(read_uri(model_uri))
    started = time.perf_counter()
    frame, info = wf.predict_fold(dataset, artifact, candles)
    predict_s = time.perf_counter() - started

    per_sample = sum(1 / meta[f"{v}/samples_per_s"] for v in ("with_sentiment", "without_sentiment"))
    month_windows = info["train_windows"] / args.window_months
    full_train_12 = per_sample * month_windows * 12 * args.epochs
    month_12 = full_train_12 + (dataset_s + predict_s) * 12 / args.window_months
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"device {meta['device']} ({meta['device_name']}); window {args.window_months} months, test {test_month:%Y-%m}"
    )
    print(
        f"synthetic data + features: {load_s:.1f} s; fold dataset: {dataset_s:.1f} s ({dataset.frame.height:,} rows)"
    )
    print(
        f"training, {args.windows:,} windows x 1 epoch x 2 variants: {train_s:.1f} s "
        f"({meta['with_sentiment/samples_per_s']:,.0f} / {meta['without_sentiment/samples_per_s']:,.0f} samples/s)"
    )
    print(
        f"baselines + prediction of {info['test_rows']:,} test minutes (logistic, LightGBM {info['lgbm_rounds']} rounds on "
        f"{info['baseline_train_rows']:,} rows, 2 LSTMs): {predict_s:.1f} s  <- reference: a month whose model is stored"
    )
    print(
        f"projection, 12-month window ({month_windows * 12:,.0f} training windows, {args.epochs} epochs, 2 variants): "
        f"training {full_train_12 / 3600:.2f} h + the rest {month_12 - full_train_12:.0f} s = {month_12 / 3600:.2f} h per month; "
        f"ratio full month / stored-model month {month_12 / predict_s:.0f}x"
    )
    print(
        f"7 years x 3 symbols = {FOLDS_7Y_3_SYMBOLS} months: {FOLDS_7Y_3_SYMBOLS * month_12 / 3600:.0f} h sequential on this "
        f"device; quarterly retraining trains a third of the months: {(FOLDS_7Y_3_SYMBOLS / 3 * full_train_12 + FOLDS_7Y_3_SYMBOLS * (month_12 - full_train_12)) / 3600:.0f} h"
    )
    print(f"peak RSS {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
