"""Batch size and learning rate per device: does a larger batch with a scaled learning rate reach the same
validation loss? Measured on CPU with a small model on the replay world; it sets `train.DEVICE_DEFAULTS`.

    .venv/bin/python benchmarks/bench_batch_lr.py [--months 3] [--seeds 5] [--windows 40000]

Data: the replay's synthetic BTC-USD candles (the same world `bench_walk_forward.py` uses: features as the
`features` asset computes them, hourly Fear & Greed), one walk-forward fold's training rows. Model: hidden 16,
1 layer, sequence 30 (small, so many trainings fit on a CPU). Each setting trains with `--seeds` seeds under the
same early stopping (15 epochs, patience 3), `--windows` training windows per epoch. Reported per setting: the
best validation loss (mean and standard deviation over seeds), the paired difference to the reference (batch
1024, learning rate 1e-3, the CPU default) with its standard error, epochs to the best, and seconds per epoch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime

from bench_walk_forward import world

from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.dataset import DatasetConfig
from crpbot_assets.training.train import TrainConfig, make_windows, pick_device, train_model

SETTINGS = [  # (batch size, learning rate): the reference first
    (1024, 1e-3),
    (4096, 1e-3),
    (4096, 2e-3),
    (4096, 4e-3),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=3, help="training window of the fold (months)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--windows", type=int, default=40_000, help="training windows per epoch")
    parser.add_argument(
        "--lrs", default="", help="comma-separated learning rates at batch 4096 (default: 1e-3, 2e-3, 4e-3)"
    )
    args = parser.parse_args()
    print("load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    test_month = datetime(2020, 6, 1, tzinfo=UTC)
    candles, features, sentiment = world(
        wf.shift_months(test_month, -args.months), wf.shift_months(test_month, 1)
    )
    dataset_config = DatasetConfig()
    fold = wf.plan_fold(test_month, wf.WalkForwardConfig(window_months=args.months), dataset_config)
    part = wf.training_part(wf.fold_dataset(features, sentiment, candles, fold, dataset_config, "BTC-USD"))
    device = pick_device("cpu")
    base = TrainConfig(
        hidden_size=16, num_layers=1, sequence_length=30, max_train_windows_per_epoch=args.windows
    )
    windows = make_windows(part, part.feature_columns, base.sequence_length, device)
    print(
        f"fold {test_month:%Y-%m}, {args.months}-month window: {len(windows.ends['train']):,} train / "
        f"{len(windows.ends['val']):,} validation windows; {args.windows:,} windows per epoch, {args.seeds} seeds"
    )
    settings = [SETTINGS[0], *((4096, float(x)) for x in args.lrs.split(","))] if args.lrs else SETTINGS
    best: dict[tuple, list[float]] = {}
    for batch, lr in settings:
        losses, epochs, seconds = [], [], []
        for seed in range(args.seeds):
            started = time.perf_counter()
            result = train_model(windows, replace(base, batch_size=batch, learning_rate=lr, seed=seed))
            losses.append(min(h["val_loss"] for h in result.history))
            epochs.append(result.best_epoch)
            seconds.append((time.perf_counter() - started) / len(result.history))
        best[(batch, lr)] = losses
        reference = best[settings[0]]
        diffs = [a - b for a, b in zip(losses, reference)]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 and any(diffs) else 0.0
        print(
            f"batch {batch:5d}, lr {lr:.0e}: best val loss {statistics.mean(losses):.4f} "
            f"(sd {statistics.stdev(losses):.4f} over seeds); minus reference {statistics.mean(diffs):+.4f} "
            f"(se {se:.4f}); best epoch {statistics.mean(epochs):.1f}; {statistics.mean(seconds):.1f} s/epoch",
            flush=True,
        )
    print("load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
