"""crpbot-live on a real clock against the replay's WebSocket and REST candles: latency from a minute's close.

Starts the replay (REST candles at Coinbase's 10 requests/s, the market-data WebSocket) in this process, a promoted
model of the production size (2 x 64 LSTM, 60-minute windows, every catalogue feature + sentiment) in a temporary
storage, the service's candle cache seeded as a previous run would have left it, then `crpbot-live` as a child
process for `--minutes` of real time, 3 symbols, deciding every minute (`--rebalance-minutes 1`, so fills happen).
Prints, from the forward ledger: close -> decision, close -> fill price observed (the next minute's first trade)
and close -> fill record (the fill minute's close: its range prices the spread, as in `paper_trades`), each p50,
p95 and max; the child's CPU time as a share of one core while it traded (start-up excluded, shown apart); and,
as its last line, `p95 close->decision <seconds> s`.
Usage: .venv/bin/python benchmarks/bench_live.py [--minutes 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from crpbot_assets.candles.client import SCHEMA
from crpbot_assets.common.months import month_start, previous_month
from crpbot_assets.features.catalogue import FEATURE_NAMES
from crpbot_assets.features.compute import warmup_start
from crpbot_assets.replay import coinbase, synthetic
from crpbot_assets.replay.coinbase_ws import CoinbaseFeed
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.sentiment.features import FEATURE_COLUMNS as SENTIMENT_COLUMNS
from crpbot_assets.training.artifacts import save_artifact
from crpbot_assets.training.model import LSTMClassifier
from crpbot_assets.training.train import TrainConfig

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]


def promote_model(storage: Path) -> str:
    """A production-size model (untrained, seeded; latency does not depend on the weights' values)."""
    config = TrainConfig()
    columns = FEATURE_NAMES + list(SENTIMENT_COLUMNS)
    torch.manual_seed(0)
    model = LSTMClassifier(len(columns), config.hidden_size, config.num_layers, config.dropout)
    with torch.no_grad():  # decisive (never flat: down or up by one direction of the state), so fills happen
        head = model.head[1]
        direction = head.weight[2] - head.weight[0]
        head.weight[0], head.weight[1], head.weight[2] = -20 * direction, 0 * direction, 20 * direction
        head.bias.copy_(torch.tensor([0.0, -50.0, 0.0]))
    variant = {
        "state_dict": model.state_dict(),
        "config": asdict(config),
        "feature_columns": columns,
        "scaler_mean": torch.zeros(len(columns), dtype=torch.float64),
        "scaler_std": torch.ones(len(columns), dtype=torch.float64),
        "clip": 10.0,
        "history": [],
        "best_epoch": 0,
        "device": "cpu",
    }
    for symbol in SYMBOLS:
        data = save_artifact({"with_sentiment": variant}, symbol)
        version = hashlib.sha256(data).hexdigest()[:12]
        (storage / "promoted_models" / symbol).mkdir(parents=True, exist_ok=True)
        (storage / "promoted_models" / symbol / f"{version}.pt").write_bytes(data)
        (storage / "promoted_model").mkdir(exist_ok=True)
        value = {"symbol": symbol, "promoted": True, "model_version": version, "model_uri": ""}
        (storage / "promoted_model" / f"{symbol}.json").write_text(json.dumps(value))
    return version


def seed_cache(state: Path, until: datetime) -> None:
    start = warmup_start(previous_month(month_start(until)))
    (state / "candles").mkdir(parents=True, exist_ok=True)
    for symbol in SYMBOLS:
        frame = synthetic.candles(symbol, start, until, now=until).cast(SCHEMA)
        frame.write_parquet(state / "candles" / f"{symbol}.parquet")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def line(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<38} (none)"
    a = np.asarray(values)
    return (
        f"{label:<38} n={len(a):>3}  p50 {np.percentile(a, 50):7.3f} s  p95 {np.percentile(a, 95):7.3f} s  "
        f"max {a.max():7.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    storage, state = tmp / "data", tmp / "live"
    promote_model(storage)
    seed_cache(state, datetime.now(UTC).replace(second=0, microsecond=0))
    with ReplayServer([coinbase.service()]) as rest, CoinbaseFeed() as feed:
        command = [
            sys.executable, "-m", "crpbot_assets.live.cli", "--symbols", ",".join(SYMBOLS),
            "--ws-url", feed.url, "--rest-url", rest.url, "--storage-uri", str(storage), "--state-dir", str(state),
            "--rebalance-minutes", "1", "--minutes", str(args.minutes), "--no-dagster", "--reconcile-every-s", "60",
        ]  # fmt: skip
        started = time.monotonic()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready_cpu = ready_at = None
        output = []
        for text in child.stdout:
            output.append(text)
            if ready_cpu is None and "crpbot-live:" in text and "from ws://" in text:
                ready_cpu, ready_at = cpu_seconds(child.pid), time.monotonic()
                print(
                    f"service ready after {ready_at - started:.1f} s (start-up CPU {ready_cpu:.1f} s)",
                    flush=True,
                )
        _, status, usage = os.wait4(child.pid, 0)
        ended = time.monotonic()
    if status != 0 or ready_cpu is None:
        sys.exit("crpbot-live failed:\n" + "".join(output[-40:]))
    (tmp / "live.log").write_text("".join(output))
    print(f"service log: {tmp / 'live.log'}")
    records = [json.loads(x) for x in (state / "ledger.jsonl").read_text().splitlines()]
    decisions = [r for r in records if r["kind"] == "decision"]
    fills = [r for r in records if r["kind"] == "fill"]
    cpu = usage.ru_utime + usage.ru_stime - ready_cpu
    share = cpu / (ended - ready_at)
    load = os.getloadavg()
    print(
        f"crpbot-live, {len(SYMBOLS)} symbols, {args.minutes:g} min of real clock; load average {load[0]:.2f} {load[1]:.2f}"
    )
    print(line("close -> decision", [r["latency_s"] for r in decisions]))
    print(
        line(
            "close -> fill price observed",
            [f["open_observed_at"] - f["decision_minute"] - 60 for f in fills if f["open_observed_at"]],
        )
    )
    print(line("close -> fill record", [f["recorded_at"] - f["decision_minute"] - 60 for f in fills]))
    print(f"{'CPU while trading':<38} {cpu:.2f} s over {ended - ready_at:.0f} s = {share:.1%} of one core")
    print(
        f"{'peak RSS':<38} {usage.ru_maxrss / 1024:.0f} MB; this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    status = json.loads((state / "status.json").read_text())
    found = {
        k: sum(v["reconciliation"][k] for v in status["symbols"].values()) for k in ("equal", "different")
    }
    print(f"{'socket bars vs REST (reconciled)':<38} {found['equal']} equal, {found['different']} different")
    p95 = float(np.percentile([r["latency_s"] for r in decisions], 95)) if decisions else float("nan")
    print(f"p95 close->decision {p95:.3f} s")


if __name__ == "__main__":
    main()
