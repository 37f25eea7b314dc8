"""crpbot-live on a real clock against the replay's WebSocket and REST candles: latency from a minute's close.

Starts the replay (REST candles at Coinbase's 10 requests/s, the market-data WebSocket) in this process, a fold
model of the production size promoted for the month in progress (and the next) in a temporary storage, as
`fold_model` and `promoted_model` store them: 3 LSTM seeds x (with, without sentiment), each 2 x 64 units over
60-minute windows of every catalogue feature (+ sentiment), logistic regression and a 300-tree LightGBM, all of
which `signals`' scoring evaluates each minute; the service's candle cache seeded as a previous run would have left
it; then `crpbot-live` as a child process for `--minutes` of real time, 3 symbols. The fold's decision grid is 1
minute here (production folds: 15) so that fills happen within a few minutes; every minute is scored either way.
Prints, from the forward ledger: close -> decision, close -> fill price observed (the next minute's first trade)
and close -> fill record (the fill minute's close: its range prices the spread, as in `paper_trades`), each p50,
p95 and max; the child's start-up (the rule's state caught up from the month's start) and its CPU time as a share
of one core while it traded; and, as its last line, `p95 close->decision <seconds> s`.
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

import dagster as dg
import numpy as np
import torch

from crpbot_assets.candles.client import SCHEMA
from crpbot_assets.common.io_manager import PartitionedFileIOManager
from crpbot_assets.common.months import month_end, month_start, previous_month
from crpbot_assets.common.partitions import symbol_month_key
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.features.catalogue import FEATURE_NAMES
from crpbot_assets.features.compute import warmup_start
from crpbot_assets.replay import coinbase, synthetic
from crpbot_assets.replay.coinbase_ws import CoinbaseFeed
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.sentiment.features import FEATURE_COLUMNS as SENTIMENT_COLUMNS
from crpbot_assets.signals import gate
from crpbot_assets.training import baselines as bl
from crpbot_assets.training import decisions as dc
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.model import LSTMClassifier
from crpbot_assets.training.train import TrainConfig
from crpbot_assets.training.walk_forward_assets import GPU_SEEDS, fold_model_path

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]
RULE = {"format": dc.RULE_FORMAT, "kind": "threshold", "mode": "long_short", "enter": 0.01, "exit": 0.0}


def lstm_variant(columns: list[str], seed: int) -> dict:
    """A production-size LSTM (untrained, seeded; latency does not depend on the weights' values), its head made
    decisive (never flat: down or up by one direction of the state) so positions change and fills happen."""
    config = TrainConfig()
    torch.manual_seed(seed)
    model = LSTMClassifier(len(columns), config.hidden_size, config.num_layers, config.dropout)
    with torch.no_grad():
        head = model.head[1]
        direction = head.weight[2] - head.weight[0]
        head.weight[0], head.weight[1], head.weight[2] = -20 * direction, 0 * direction, 20 * direction
        head.bias.copy_(torch.tensor([0.0, -50.0, 0.0]))
    return {
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


def production_fold() -> bytes:
    """A fold artifact (walk_forward.save_fold) of the production size: GPU_SEEDS seeds of both LSTM variants,
    baselines fitted on 20,000 rows where the class depends on two inputs (LightGBM keeps all 300 rounds)."""
    inputs = FEATURE_NAMES + list(SENTIMENT_COLUMNS)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, len(inputs)))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=len(x)) > -0.5).astype(int) + (x[:, 0] > 0.5)
    config = bl.BaselineConfig(lgbm_early_stopping=bl.BaselineConfig.lgbm_rounds)
    logistic = bl.fit_logistic(x, y, config, True)
    booster = bl.fit_lightgbm(x[:16_000], y[:16_000], x[16_000:], y[16_000:], config, True)
    fold = {
        "format": wf.FOLD_FORMAT,
        "symbol": "any",
        "inputs": inputs,
        "sequence_length": TrainConfig.sequence_length,
        "horizon_minutes": 1,
        "dead_zone_bps": 10.0,
        "scaler_mean": torch.zeros(len(inputs), dtype=torch.float64),
        "scaler_std": torch.ones(len(inputs), dtype=torch.float64),
        "clip": 10.0,
        "lstm": [
            {
                "with_sentiment": lstm_variant(inputs, k),
                "without_sentiment": lstm_variant(FEATURE_NAMES, 100 + k),
            }
            for k in range(GPU_SEEDS)
        ],
        "logit": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in logistic.items()},
        "lgbm": booster.model_to_string(),
        "majority": 1,
        "rules": {m: dict(RULE) for m in ("lstm", "logit", "lgbm", "persist")}
        | {"buy_and_hold": dc.hold_rule()},
        "fit_info": {"lgbm_rounds": booster.num_trees() // 3},
        "dropped_inputs": [],
    }
    return wf.save_fold(fold)


def promote(storage: Path, now: datetime) -> str:
    """The fold under its hash (`fold_model`'s path) and `promoted_model` of this month and the next, per symbol."""
    data = production_fold()
    version = hashlib.sha256(data).hexdigest()[:12]
    manager = PartitionedFileIOManager(storage=StorageResource(base_uri=str(storage)))
    for symbol in SYMBOLS:
        path = fold_model_path(symbol, version)
        manager.files.write_bytes(path, data)
        for month in (month_start(now), month_end(month_start(now))):
            value = {
                "symbol": symbol,
                "month": f"{month:%Y-%m}",
                "promoted": True,
                "model_version": version,
                "model_path": path,
                "model_uri": manager.files.uri(path),
                "fold_month": f"{month:%Y-%m}",
                "status": "promoted",
                "reason": "benchmark",
                **gate.labels(False, True, "benchmark"),
            }
            manager.write_partition(
                dg.AssetKey("promoted_model"), str(symbol_month_key(symbol, month)), value
            )
    print(f"fold model {version}: {len(data) / 1e6:.1f} MB", flush=True)
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
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    promote(storage, now)
    seed_cache(state, now)
    with ReplayServer([coinbase.service()]) as rest, CoinbaseFeed() as feed:
        command = [
            sys.executable, "-m", "crpbot_assets.live.cli", "--symbols", ",".join(SYMBOLS),
            "--ws-url", feed.url, "--rest-url", rest.url, "--storage-uri", str(storage), "--state-dir", str(state),
            "--minutes", str(args.minutes), "--no-dagster", "--reconcile-every-s", "60",
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
