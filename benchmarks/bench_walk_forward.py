"""N walk-forward folds trained as ONE job (the multi-job runner a range launch uses), and the projection to the
full history: folds per hour, CPU (or GPU) utilisation, and 252 folds x 2 variants x 3 seeds.

    .venv/bin/python benchmarks/bench_walk_forward.py --folds 2 --device cpu [--window-months 3] [--seeds 1]
        [--windows 20000] [--epochs 2] [--concurrency N]
    .venv/bin/python benchmarks/bench_walk_forward.py --folds 24 --device cuda --window-months 12 --seeds 3

Data: the replay's synthetic BTC-USD candles, features as the `features` asset computes them, hourly Fear & Greed.
Each fold (consecutive test months) is built as `walk_forward_predictions` builds it (fold dataset, training
part written to parquet); its jobs (one per seed, each training the LSTM with and without sentiment at the
production model size) go to `training/job_runner.run_jobs` in one call, `--concurrency` at a time (default: 4
processes on CUDA, 1 on CPU). As each job ends, the fold's baselines and prediction (CPU work) run on a thread
while the next jobs train. `--windows` caps the training windows per epoch and `--epochs` fixes the epochs, so a
CPU run stays short; the projection scales the measured rates (training and validation windows per second of one
process, times the processes busy at once) to the full 12-month folds at 15 epochs, and adds the CPU work per
fold where it does not overlap.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import torch

from crpbot_assets.features.compute import compute_features
from crpbot_assets.replay import fear_greed, synthetic
from crpbot_assets.sentiment.fear_greed import hourly_index
from crpbot_assets.sentiment.features import assemble, hour_ends
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.artifacts import load_artifact, read_uri
from crpbot_assets.training.dataset import DatasetConfig, to_parquet_bytes
from crpbot_assets.training.job_runner import default_concurrency, run_jobs
from crpbot_assets.training.jobs import TrainingJob
from crpbot_assets.training.train import TrainConfig, window_ends

FULL_FOLDS, FULL_VARIANTS, FULL_SEEDS = 252, 2, 3  # 7 years x 3 symbols, with/without sentiment, seeds
FULL_WINDOW_MONTHS, FULL_EPOCHS = 12, TrainConfig.epochs


def world(first_month: datetime, end: datetime) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(candles, features, hourly sentiment) of the replay's BTC-USD from `first_month` to `end`."""
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


class GpuSampler(threading.Thread):
    """`nvidia-smi` utilisation every second while training runs (None without nvidia-smi)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(1.0):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))

    def summary(self) -> str:
        if shutil.which("nvidia-smi") is None:
            return "GPU utilisation: not measured (no nvidia-smi on this machine)"
        if not self.samples:
            return "GPU utilisation: no samples"
        return f"GPU utilisation {statistics.mean(self.samples):.0f} % mean over {len(self.samples)} one-second samples"


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the runner's spawned trainers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=2, help="consecutive test months trained as one job")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--window-months", type=int, default=3, help="trailing window of each fold")
    parser.add_argument("--seeds", type=int, default=1, help="jobs per fold (each: both variants)")
    parser.add_argument("--windows", type=int, default=20_000, help="training windows per epoch (0: all)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per variant (no early stop)")
    parser.add_argument("--concurrency", type=int, default=None, help="jobs at once (default: per device)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    concurrency = args.concurrency or default_concurrency(args.device)
    print("load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f"; {cores} cores")
    first_test = datetime(2020, 6, 1, tzinfo=UTC)
    tests = [wf.shift_months(first_test, k) for k in range(args.folds)]
    config = wf.WalkForwardConfig(window_months=args.window_months)
    dataset_config = DatasetConfig()

    started = time.perf_counter()
    candles, features, sentiment = world(
        wf.shift_months(first_test, -args.window_months), wf.shift_months(tests[-1], 1)
    )
    print(f"synthetic world (candles, features, sentiment): {time.perf_counter() - started:.1f} s")

    work = Path(tempfile.mkdtemp(prefix="crpbot-bench-wf-"))
    model = {
        **asdict(TrainConfig()),
        "epochs": args.epochs,
        "patience": args.epochs,
        "max_train_windows_per_epoch": args.windows or None,
        "sentiment_ablation": True,
        "device": args.device,
    }
    started = time.perf_counter()
    folds, jobs = {}, []
    for test in tests:
        fold = wf.plan_fold(test, config, dataset_config)
        dataset = wf.fold_dataset(features, sentiment, candles, fold, dataset_config, "BTC-USD")
        part = wf.training_part(dataset)
        path = work / f"fold-{test:%Y-%m}.parquet"
        path.write_bytes(to_parquet_bytes(part))  # staged once, shared by the fold's seeds
        folds[f"{test:%Y-%m}"] = dataset
        for seed in range(args.seeds):
            jobs.append(
                TrainingJob(
                    id=f"BTC-USD|{test:%Y-%m}|seed{seed}",
                    dataset_uri=str(path),
                    model_uri=str(work / f"model-{test:%Y-%m}-{seed}.pt"),
                    fingerprint=f"bench-{test:%Y-%m}-{seed}",
                    config={**model, "seed": seed},
                    symbol="BTC-USD",
                )
            )
    dataset_s = time.perf_counter() - started
    rows = statistics.mean(d.frame.height for d in folds.values())
    print(
        f"fold datasets: {dataset_s:.1f} s for {args.folds} folds ({rows:,.0f} rows each, {args.window_months}-month window)"
    )

    trained = {"windows": 0, "train_s": 0.0, "val_s": 0.0, "val_passes": 0}
    predict_s, lock = [], threading.Lock()
    predictions = ThreadPoolExecutor(1, thread_name_prefix="predict")
    pending = []

    def predict(job: TrainingJob) -> None:  # the fold's CPU work, overlapping the jobs still training
        t0 = time.perf_counter()
        frame, info = wf.predict_fold(
            folds[job.id.split("|")[1]], load_artifact(read_uri(job.model_uri)), candles
        )
        with lock:
            predict_s.append(time.perf_counter() - t0)

    def report(job: TrainingJob, record: dict | None, error: str | None) -> None:
        if error:
            raise RuntimeError(f"{job.id}: {error}")
        for variant in ("with_sentiment", "without_sentiment"):
            for epoch in record["metadata"][f"{variant}/history"]["raw_value"]:
                trained["windows"] += epoch["windows"]
                trained["train_s"] += epoch["train_seconds"]
                trained["val_s"] += epoch["val_seconds"]
                trained["val_passes"] += 1
        if job.id.endswith("seed0"):
            pending.append(predictions.submit(predict, job))

    sampler = GpuSampler()
    if args.device == "cuda":
        sampler.start()
    cpu0, started = cpu_seconds(), time.perf_counter()
    failed = run_jobs(jobs, report, lambda message: None, concurrency)
    train_wall = time.perf_counter() - started
    for future in pending:
        future.result()
    total_wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    sampler.stopped.set()
    assert not failed, failed

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU x {cores}"
    first = folds[tests[0].strftime("%Y-%m")]
    val_windows = len(fold_windows(first, "val"))
    train_rate = trained["windows"] / trained["train_s"]  # windows/s of one training process
    val_rate = val_windows * trained["val_passes"] / trained["val_s"]
    busy = (trained["train_s"] + trained["val_s"]) / train_wall  # trainings running at once, on average
    print(
        f"device {args.device} ({device_name}); {len(jobs)} jobs ({args.folds} folds x {args.seeds} seeds, 2 variants "
        f"each) as one job, {concurrency} at a time"
    )
    print(
        f"training: {train_wall:.1f} s wall for {trained['windows']:,} training windows ({args.epochs} epochs x "
        f"{args.windows or 'all'} per epoch x 2 variants per job) and {trained['val_passes']} validation passes over "
        f"{val_windows:,} windows; per process {train_rate:,.0f} training / {val_rate:,.0f} validation windows/s, "
        f"{busy:.2f} processes busy on average"
    )
    print(
        f"baselines + prediction: {statistics.mean(predict_s):.1f} s per fold on a thread, overlapping the training; "
        f"everything done {total_wall - train_wall:.1f} s after the last job"
    )
    print(
        f"CPU utilisation {cpu / (total_wall * cores):.0%} of {cores} cores ({cpu:.0f} CPU-s in {total_wall:.0f} s); "
        + (sampler.summary() if args.device == "cuda" else "GPU: none")
    )
    print(f"folds per hour as measured (capped epochs and windows): {args.folds * 3600 / total_wall:.1f}")

    # the projection: full 12-month folds at 15 epochs (early stopping usually ends sooner: an upper bound)
    full_train, full_val = full_fold_windows(first_test, dataset_config)
    per_epoch_s = full_train / train_rate + full_val / val_rate
    training_h = FULL_FOLDS * FULL_SEEDS * FULL_VARIANTS * FULL_EPOCHS * per_epoch_s / busy / 3600
    cpu_h = (
        FULL_FOLDS
        * (dataset_s / args.folds * FULL_WINDOW_MONTHS / args.window_months + statistics.mean(predict_s))
        / 3600
    )
    print(
        f"projection, {FULL_FOLDS} folds x {FULL_VARIANTS} variants x {FULL_SEEDS} seeds ({full_train:,.0f} training "
        f"+ {full_val:,.0f} validation windows per 12-month fold, {FULL_EPOCHS} epochs, {busy:.2f} at once): training "
        f"{training_h:,.1f} h + fold datasets, baselines and prediction {cpu_h:,.1f} h of CPU work = {max(training_h, cpu_h):,.1f} h "
        f"if they overlap, {training_h + cpu_h:,.1f} h if not, on this {args.device}"
    )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB (this process)")
    shutil.rmtree(work, ignore_errors=True)


def full_fold_windows(test: datetime, dataset_config: DatasetConfig) -> tuple[int, int]:
    """(training, validation) windows of a full 12-month fold for `test`, counted on its dataset (no training):
    the purge gaps are fixed lengths, so a shorter measured window does not scale to it."""
    config = wf.WalkForwardConfig(window_months=FULL_WINDOW_MONTHS)
    candles, features, sentiment = world(wf.shift_months(test, -FULL_WINDOW_MONTHS), test)
    fold = wf.plan_fold(test, config, dataset_config)
    dataset = wf.fold_dataset(features, sentiment, candles, fold, dataset_config, "BTC-USD", with_test=False)
    return len(fold_windows(dataset, "train")), len(fold_windows(dataset, "val"))


def fold_windows(dataset, split: str) -> list:
    """The windows of a fold's `split` at the production sequence length."""
    frame = dataset.frame
    ends = window_ends(
        frame["row_valid"].to_numpy(),
        frame["label"].is_not_null().to_numpy(),
        frame["split"].to_numpy(),
        TrainConfig.sequence_length,
    )
    return list(ends[split])


if __name__ == "__main__":
    main()
