"""How much training the CPU-sized LSTM needs to learn the probe lead (`replay/synthetic.py`, the "sequence" world
of bench_gate.py) from the 1-minute return sequence alone.

The LSTM of `procedure.CPU_SIZED` (1 layer, 32 units, 64 rows, batch 256, Adam 3e-3), trained on the world's
2019-01..02 minutes with one input, the 1-minute log return (divided by its std), labels as the dataset's (the
forward 15-minute return, dead zone 10 bps), windows drawn at random, `per_epoch` a pass; after each pass, the
correlation of its score P(up) - P(down) at March's decision minutes with the planted probe sign and with the
forward return. (In bench_gate the same LSTM reads all 80-odd inputs for 6 passes of 20,000 windows.)

Run: nice -n 10 .venv/bin/python benchmarks/bench_probe_learning.py [--world 1000] [--epochs 40]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime

import numpy as np
import torch

from crpbot_assets.replay import synthetic
from crpbot_assets.training.model import LSTMClassifier

LENGTH, HORIZON, DEAD_ZONE = 64, 15, 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--per-epoch", type=int, default=20_000)
    parser.add_argument(
        "--probe", type=float, default=1.5, help="probe lead (drift per minute, volatilities)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    candles = synthetic.candles(
        "BTC-USD",
        datetime(2019, 1, 1, tzinfo=UTC),
        datetime(2019, 4, 1, tzinfo=UTC),
        args.world,
        sentiment_lead=0,
        probe_lead=args.probe,
    )
    ts, close = candles["ts"].dt.epoch("s").to_numpy(), candles["close"].to_numpy()
    returns = np.diff(np.log(close), prepend=np.log(close[0]))
    split = int(np.searchsorted(ts, datetime(2019, 3, 1, tzinfo=UTC).timestamp()))
    inputs = torch.tensor(returns / returns[:split].std(), dtype=torch.float32)
    forward = np.full(len(close), np.nan)
    forward[:-HORIZON] = close[HORIZON:] / close[:-HORIZON] - 1
    labels = torch.tensor(np.where(forward > DEAD_ZONE, 2, np.where(forward < -DEAD_ZONE, 0, 1)))
    train = np.arange(LENGTH, split - HORIZON)
    test = np.arange(split, len(close) - HORIZON)
    grid = test[ts[test] % 900 == 0]
    sign, _ = synthetic.probes("BTC-USD", ts[grid] // 900 - synthetic.PROBE_AHEAD, args.world)

    def windows(ends: np.ndarray) -> torch.Tensor:
        return torch.stack([inputs[e - LENGTH + 1 : e + 1] for e in ends]).unsqueeze(-1)

    model = LSTMClassifier(1, hidden_size=32, num_layers=1, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng, started = np.random.default_rng(0), time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        ends = rng.choice(train, args.per_epoch, replace=False)
        for i in range(0, len(ends), 256):
            batch = ends[i : i + 256]
            optimizer.zero_grad()
            loss_fn(model(windows(batch)), labels[batch]).backward()
            optimizer.step()
        with torch.no_grad():
            p = torch.softmax(model(windows(grid)), -1).numpy()
        score = p[:, 2] - p[:, 0]
        print(
            f"pass {epoch:3d} ({epoch * args.per_epoch:,} windows): corr(score, probe sign) "
            f"{np.corrcoef(score, sign)[0, 1]:+.3f}, corr(score, forward return) "
            f"{np.corrcoef(score, forward[grid])[0, 1]:+.3f}; {time.perf_counter() - started:.0f}s",
            flush=True,
        )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
