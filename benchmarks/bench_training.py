"""Training throughput: the full training loop vs the same model on pre-built in-memory batches (pure compute).

    .venv/bin/python benchmarks/bench_training.py                  # CPU, production model defaults
    .venv/bin/python benchmarks/bench_training.py --device cuda    # on a GPU machine (AMP, fused Adam), bigger sample
    .venv/bin/python benchmarks/bench_training.py --device cuda --full-epoch   # + one real epoch over 1 M windows

The full loop is `train_model` (per-epoch shuffling, one gather per batch from the unfold view of the whole
scaled matrix, forward/backward/step, loss accumulation). Pure compute replays the very same batches, already
gathered into separate contiguous tensors on the device, through an identical model/optimizer step. Both are
timed in alternating rounds after a warm-up, so both meet the same background load on a shared machine; the
ratio of total throughputs is the headline. Goal: loop >= 90 % of pure compute.
Epoch time for 1 M windows is extrapolated from the measured loop throughput unless `--full-epoch` runs it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crpbot_assets.features.catalogue import FEATURE_NAMES  # noqa: E402
from crpbot_assets.training.dataset import SENTIMENT_COLUMNS, DatasetConfig, build_dataset  # noqa: E402
from crpbot_assets.training.train import (  # noqa: E402
    DEVICE_DEFAULTS,
    TrainConfig,
    Windows,
    class_weights,
    make_windows,
    new_trainer,
    pick_device,
    train_model,
    train_step,
)


def synthetic_dataset(rows: int, n_features: int, seed: int = 0):
    """A random-walk symbol with `n_features` technical columns and hourly sentiment, through build_dataset."""
    rng = np.random.default_rng(seed)
    start = datetime(2019, 1, 1, tzinfo=UTC)
    ts = pl.datetime_range(
        start, start + timedelta(minutes=rows - 1), "1m", time_unit="us", time_zone="UTC", eager=True
    ).alias("ts")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, rows)))
    features = pl.DataFrame(
        {"ts": ts, **{f"f{i:02d}": rng.normal(0, 1, rows).astype(np.float32) for i in range(n_features)}}
    )
    hours = pl.datetime_range(
        start + timedelta(hours=1),
        ts[-1] + timedelta(hours=1),
        "1h",
        time_unit="us",
        time_zone="UTC",
        eager=True,
    )
    sentiment = pl.DataFrame({"ts": hours, **{c: rng.normal(0, 1, len(hours)) for c in SENTIMENT_COLUMNS}})
    candles = pl.DataFrame({"ts": ts, "close": close})
    return build_dataset(features, sentiment, candles, DatasetConfig(feature_lookback_minutes=60))


def pure_compute(
    batches: list[tuple[torch.Tensor, torch.Tensor]], config: TrainConfig, n_features: int, weights, device
) -> float:
    """Seconds for a fresh model's forward/backward/step over pre-built batches (the same step as train_model)."""
    torch.manual_seed(config.seed)
    model, criterion, optimizer, scaler = new_trainer(n_features, config, weights, device)
    total = torch.zeros((), device=device)
    started = time.perf_counter()
    for xb, yb in batches:
        total += train_step(model, xb, yb, criterion, optimizer, scaler) * len(yb)
    float(total)  # synchronise, as train_model does once per epoch
    return time.perf_counter() - started


def data_path_split(
    windows: Windows, order: torch.Tensor, config: TrainConfig, weights, device
) -> tuple[float, float]:
    """Median milliseconds per batch of the loop's data path (gather) and of the model step, timed alternately."""
    torch.manual_seed(config.seed)
    model, criterion, optimizer, scaler = new_trainer(windows.x.shape[1], config, weights, device)
    sync = torch.cuda.synchronize if scaler.is_enabled() else (lambda: None)
    gather, step = [], []
    for start in range(0, len(order), config.batch_size):
        sync()
        t0 = time.perf_counter()
        xb, yb = windows.batch(order[start : start + config.batch_size])
        sync()
        t1 = time.perf_counter()
        train_step(model, xb, yb, criterion, optimizer, scaler)
        sync()
        gather.append(t1 - t0)
        step.append(time.perf_counter() - t1)
    return statistics.median(gather[1:] or gather) * 1e3, statistics.median(step[1:] or step) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=None, help="dataset rows (default: 300k CPU, 1.6M CUDA)")
    parser.add_argument(
        "--windows",
        type=int,
        default=None,
        help="training windows per measured epoch (default 2048 CPU, 200k CUDA)",
    )
    parser.add_argument(
        "--features",
        type=int,
        default=len(FEATURE_NAMES),
        help="technical features (+7 sentiment; default: the catalogue's)",
    )
    parser.add_argument("--hidden", type=int, default=TrainConfig.hidden_size)
    parser.add_argument("--layers", type=int, default=TrainConfig.num_layers)
    parser.add_argument("--seq", type=int, default=TrainConfig.sequence_length)
    parser.add_argument(
        "--batch", type=int, default=None, help="batch size (default: the device's, train.DEVICE_DEFAULTS)"
    )
    parser.add_argument("--repeats", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: every usable core)")
    parser.add_argument(
        "--full-epoch", action="store_true", help="also run one real epoch over 1M training windows"
    )
    parser.add_argument(
        "--deterministic", action="store_true", help="torch's deterministic mode (TrainConfig.deterministic)"
    )
    args = parser.parse_args()

    device = pick_device(args.device, args.threads)
    cuda = device.type == "cuda"
    rows = args.rows or (1_600_000 if cuda or args.full_epoch else 300_000)
    per_epoch = args.windows or (200_000 if cuda else 2_048)
    batch = args.batch or DEVICE_DEFAULTS[device.type]["batch_size"]
    config = TrainConfig(
        hidden_size=args.hidden,
        num_layers=args.layers,
        sequence_length=args.seq,
        batch_size=batch,
        epochs=2,
        patience=10,
        max_train_windows_per_epoch=per_epoch,
        deterministic=args.deterministic,
    )
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}")
    _, _, optimizer, scaler = new_trainer(4, config, None, device)
    print(
        f"optimizer: Adam fused={bool(optimizer.defaults.get('fused'))}; AMP (fp16 autocast + GradScaler) "
        f"{'on' if scaler.is_enabled() else 'off'}; deterministic {config.deterministic}"
    )
    print(
        f"model: LSTM hidden {config.hidden_size} x {config.num_layers} layers, sequence {config.sequence_length}, "
        f"batch {config.batch_size}, {args.features + 7} features"
    )

    started = time.perf_counter()
    dataset = synthetic_dataset(rows, args.features)
    built = time.perf_counter() - started
    started = time.perf_counter()
    windows = make_windows(dataset, dataset.feature_columns, config.sequence_length, device)
    staged = time.perf_counter() - started
    n_train = len(windows.ends["train"])
    print(
        f"data: {rows:,} rows -> {n_train:,} train windows; build_dataset {built:.2f}s, scale+index+to-device {staged:.2f}s"
    )

    # The batches of one shuffled epoch, pre-gathered into their own contiguous tensors on the device.
    order = windows.ends["train"][
        torch.randperm(n_train, generator=torch.Generator().manual_seed(1))[:per_epoch].to(device)
    ]
    batches = [
        tuple(t.contiguous() for t in windows.batch(order[i : i + batch])) for i in range(0, per_epoch, batch)
    ]
    weights = class_weights(windows.y, windows.ends["train"])
    # Rounds alternate one loop epoch (train_model: fresh model, shuffle, gather, step) and one pure-compute
    # epoch (fresh model, same step, pre-built batches) so both meet the same background load; a short
    # validation set keeps the rounds small (validation is timed separately below).
    short_val = Windows(
        windows.x, windows.y, {**windows.ends, "val": windows.ends["val"][:64]}, windows.length
    )
    one_epoch = replace(config, epochs=1)
    n_features = windows.x.shape[1]
    train_model(short_val, one_epoch), pure_compute(batches, config, n_features, weights, device)  # warm-up
    loop_s, pure_s = [], []
    for repeat in range(args.repeats):
        loop_s.append(train_model(short_val, one_epoch).history[0]["train_seconds"])
        pure_s.append(pure_compute(batches, config, n_features, weights, device))
        print(
            f"  round {repeat + 1}: loop {per_epoch / loop_s[-1]:,.0f} samples/s, pure compute {per_epoch / pure_s[-1]:,.0f} samples/s"
        )
    loop, pure = per_epoch * args.repeats / sum(loop_s), per_epoch * args.repeats / sum(pure_s)
    ratios = [p / l for l, p in zip(loop_s, pure_s)]
    print(
        f"training loop   : {loop:,.0f} samples/s over {args.repeats} rounds of {per_epoch:,} windows (best round {per_epoch / min(loop_s):,.0f})"
    )
    print(f"pure compute    : {pure:,.0f} samples/s (best round {per_epoch / min(pure_s):,.0f})")
    print(
        f"loop / pure     : {statistics.median(ratios):.3f} median of per-round ratios; {loop / pure:.3f} total; "
        f"{min(pure_s) / min(loop_s):.3f} best vs best (goal >= 0.90)"
    )
    sample = windows.ends["train"][
        torch.randperm(n_train, generator=torch.Generator().manual_seed(2))[: 16 * batch].to(device)
    ]
    gather_ms, step_ms = data_path_split(windows, sample, config, weights, device)
    print(
        f"per batch       : data path (shuffled gather from the unfold view) {gather_ms:.2f} ms vs model step {step_ms:.1f} ms "
        f"(medians, interleaved) -> the data path costs {gather_ms / (gather_ms + step_ms):.2%} of a loop step"
    )
    result = train_model(windows, replace(config, epochs=1, max_train_windows_per_epoch=batch))
    val_rate = len(windows.ends["val"]) / result.history[-1]["val_seconds"]
    print(f"validation pass : {val_rate:,.0f} windows/s (no grad)")
    median_loop = statistics.median(per_epoch / t for t in loop_s)
    print(
        f"1M-window epoch : {1e6 / median_loop:,.1f} s training, extrapolated from the median loop round "
        f"({median_loop:,.0f} samples/s); {1e6 / batch * (gather_ms + step_ms) / 1e3:,.1f} s from the per-batch medians"
    )
    if args.full_epoch:
        if n_train < 1_000_000:
            raise SystemExit(f"--full-epoch needs >= 1M train windows; have {n_train:,} (raise --rows)")
        full = train_model(windows, replace(config, epochs=1, max_train_windows_per_epoch=1_000_000))
        h = full.history[0]
        print(
            f"1M-window epoch : {h['train_seconds']:.2f} s measured (first epoch, includes warm-up), "
            f"+ {h['val_seconds']:.2f} s validation over {len(windows.ends['val']):,} windows"
        )


if __name__ == "__main__":
    main()
