"""The whole history through every stage, from empty storage, the way a user's backfill runs it.

    .venv/bin/python benchmarks/bench_full_history.py [--months N] [--symbols BTC-USD,ETH-USD] [--train-symbols S]

candles -> features -> sentiment (Fear & Greed, Reddit, Google Trends, sentiment_features) -> training_dataset,
then lstm_model and model_evaluation with a capped number of windows per epoch. Each stage is one or more
single-run ranges (one run per symbol where the backfill daemon would split them), executed with
`execute_in_process` in a child process of its own, so each stage's peak RSS is that of the process doing the
work (the training subprocess started by the local launcher is reported separately). The real IO manager,
storage and checks; the replay server on loopback with its rate limits raised (the candles line also says how
long the same requests take at Coinbase's real 10 requests/s). Per stage it prints wall time, peak RSS, rows,
bytes stored and requests made; then the features backfill against its pure computation measured in the same
run (in a child process too), with the pure computation repeated holding every month's result, as a range run
does, which is what makes compute inside a run slower than outside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
COINBASE_LIMIT_PER_S = 10.0  # Coinbase's public limit; what a real backfill is paced at
RAISED_PER_S = 2000.0  # the replay server's and clients' limit in this benchmark
TRAIN_CONFIG = {  # capped: the benchmark measures the pipeline, not model quality (bench_training.py does)
    "hidden_size": 32,
    "num_layers": 1,
    "sequence_length": 30,
    "epochs": 1,
    "max_train_windows_per_epoch": 20_000,
    "cpu_threads": 1,
}


def gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB"


# ----------------------------------------------------------------------------------------- child processes


def _resources(replay_url: str, storage_uri: str) -> dict:
    from crpbot_assets.candles.resources import CoinbaseResource
    from crpbot_assets.launchers.local import LocalTrainingLauncher
    from crpbot_assets.resources import file_resources, replay_resources
    from crpbot_assets.sentiment.resources import GoogleTrendsResource

    return {
        **file_resources(storage_uri),
        **replay_resources(replay_url),
        "coinbase": CoinbaseResource(
            base_url=replay_url, requests_per_second=RAISED_PER_S, burst=64, max_workers=16
        ),
        "google_trends": GoogleTrendsResource(
            base_url=f"{replay_url}/trends", requests_per_s=RAISED_PER_S, base_delay_s=0.05
        ),
        "training_launcher": LocalTrainingLauncher(),
    }


def run_stage(spec: dict) -> dict:
    """One stage's runs in this process (`execute_in_process`, one after another); figures as a dict."""
    import dagster as dg

    import crpbot_assets.candles.definitions as candles
    import crpbot_assets.features.definitions as features
    import crpbot_assets.sentiment.definitions as sentiment
    import crpbot_assets.training.definitions as training

    defs = dg.Definitions.merge(
        candles.defs,
        features.defs,
        sentiment.defs,
        training.defs,
        dg.Definitions(resources=_resources(spec["replay_url"], spec["storage_uri"])),
    )
    job = defs.resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.get()
    rows = 0
    partitions = 0
    checks_failed = []
    checks = 0
    run_seconds = 0.0
    for run in spec["runs"]:
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(a) for a in spec["assets"]],
            tags=run.get("tags") or {},
            run_config=run.get("run_config"),
            raise_on_error=False,
        )
        run_seconds += time.perf_counter() - started
        if not result.success:
            failures = [str(e.event_specific_data)[:2000] for e in result.get_step_failure_events()]
            raise SystemExit(f"{spec['name']}: run {result.run_id} failed: {failures}")
        # A range run records each partition twice (its commit record and the step-end record): count once.
        rows_by_partition = {}
        for event in result.get_asset_materialization_events():
            value = event.materialization.metadata.get("rows")
            rows_by_partition[(event.asset_key, event.partition)] = (
                int(value.value) if value is not None else 0
            )
        partitions += len(rows_by_partition)
        rows += sum(rows_by_partition.values())
        checks += len(result.get_asset_check_evaluations())
        checks_failed += [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
        print(f"  {spec['name']}: run {result.run_id[:8]} done", file=sys.stderr, flush=True)
    return {
        "rows": rows,
        "partitions": partitions,
        "checks": checks,
        "run_seconds": run_seconds,
        "checks_failed": checks_failed,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "children_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


def pure_features(spec: dict) -> dict:
    """The features of every partition computed from stored candles without Dagster or files: each month's
    result dropped (`keep` false) or held until the end like a range run's return value (`keep` true)."""
    import dagster as dg
    import polars as pl

    from crpbot_assets.common.io_manager import partition_path
    from crpbot_assets.common.months import month_end, previous_month
    from crpbot_assets.common.partitions import split_key, symbol_month_key
    from crpbot_assets.common.storage import Storage
    from crpbot_assets.features.compute import features_for_month

    storage = Storage(spec["storage_uri"])
    keys = spec["keys"]
    candles = {}
    for key in keys + [spec["warmup_key"]]:
        path = partition_path(dg.AssetKey("candles"), key) + ".parquet"
        if storage.exists(path):
            candles[key] = storage.read_parquet(path)
    held = []
    rows = 0
    start = time.perf_counter()
    for key in keys:
        symbol, month = split_key(key)
        previous = candles.get(str(symbol_month_key(symbol, previous_month(month))))
        frames = [f for f in (previous, candles.get(key)) if f is not None and f.height]
        if not frames:
            continue
        frame = features_for_month(pl.concat(frames), month, month_end(month)).frame
        rows += frame.height
        if spec["keep"]:
            held.append(frame)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": rows,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def child_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    figures = pure_features(spec) if spec.get("pure") else run_stage(spec)
    print("RESULT " + json.dumps(figures), flush=True)


# ------------------------------------------------------------------------------------------------ parent


def in_child(spec: dict, env: dict, log: Path) -> tuple[dict, float]:
    """Run `spec` in a fresh interpreter (its Dagster logs to `log`); (its figures, wall seconds including the
    interpreter start)."""
    start = time.perf_counter()
    with open(log, "a") as err:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            check=False,
        )
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"stage {spec.get('name')} failed (exit {proc.returncode}); its log ends:\n{tail}")
    return json.loads(lines[-1][len("RESULT ") :]), seconds


def stored_files(storage_uri: str, assets: list[str]) -> dict[Path, int]:
    """Size of every stored file of `assets` (a folder per partitioned asset, `asset.*` otherwise)."""
    root = Path(storage_uri)
    paths = [p for a in assets for p in (*root.glob(f"{a}.*"), *(root / a).rglob("*"))]
    return {p: p.stat().st_size for p in paths if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--symbols", default="BTC-USD,ETH-USD,SOL-USD")
    parser.add_argument("--months", type=int, help="only the last N complete months (default: whole history)")
    parser.add_argument(
        "--last-month", default=None, help="last month partition (YYYY-MM-01; default: last complete)"
    )
    parser.add_argument(
        "--train-symbols", default=None, help="symbols for lstm_model/model_evaluation (default: --symbols)"
    )
    parser.add_argument("--base", help="folder for storage and DAGSTER_HOME (default: temporary, removed)")
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return

    from crpbot_assets.common.months import last_complete_months, month_key, previous_month
    from crpbot_assets.common.partitions import symbol_month_key, symbol_month_partitions
    from crpbot_assets.common.symbols import HISTORY_START
    from crpbot_assets.replay import coinbase, fear_greed, reddit, trends
    from crpbot_assets.replay.server import ReplayServer

    symbols = args.symbols.split(",")
    train_symbols = (args.train_symbols or args.symbols).split(",")
    last = (
        datetime.strptime(args.last_month, "%Y-%m-%d").replace(tzinfo=UTC)
        if args.last_month
        else last_complete_months(1, datetime.now(UTC))[0]
    )
    all_months = sorted(
        {
            datetime.strptime(k.keys_by_dimension["month"], "%Y-%m-%d").replace(tzinfo=UTC)
            for k in symbol_month_partitions.get_partition_keys()
        }
    )
    months = [m for m in all_months if HISTORY_START <= m <= last]
    if args.months:
        months = months[-args.months :]
    first = months[0]
    base = Path(args.base or tempfile.mkdtemp(prefix="crpbot-full-history-"))
    storage_uri = str(base / "data")
    env = {**os.environ, "DAGSTER_HOME": str(base / "home"), "PYTHONPATH": str(REPO), "CRPBOT_ENV": "local"}
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    log = base / "stages.log"

    def key(symbol: str, month: datetime) -> str:
        return str(symbol_month_key(symbol, month))

    def rng(a: str, b: str) -> dict:
        return {"tags": {"dagster/asset_partition_range_start": a, "dagster/asset_partition_range_end": b}}

    # Candles start one month early: the first month's features warm up on it.
    candle_first = previous_month(first) if first > HISTORY_START else first
    stages = [
        ("candles", ["candles"], [rng(key(s, candle_first), key(s, last)) for s in symbols]),
        ("features", ["features"], [rng(key(s, first), key(s, last)) for s in symbols]),
        ("fear_greed_index", ["fear_greed_index"], [{}]),
        (
            "reddit_posts + google_trends_hourly",
            ["reddit_posts", "google_trends_hourly"],
            [rng(month_key(first), month_key(last))],
        ),
        (
            "reddit_hourly + sentiment_features",
            ["reddit_hourly", "sentiment_features"],
            [rng(key(symbols[0], first), key(symbols[-1], last))],
        ),
    ]
    # Under ~6 months the default embargo (13.4-day lookback) leaves no room for three segments (as in the demo).
    dataset_config = {"feature_lookback_minutes": 1440} if len(months) < 6 else {}
    stages += [
        (
            f"training_dataset {s}",
            ["training_dataset"],
            [
                {
                    "tags": {"dagster/partition": s},
                    "run_config": {"ops": {"training_dataset": {"config": dataset_config}}},
                }
            ],
        )
        for s in symbols
    ]
    stages += [
        (
            f"lstm_model + model_evaluation {s}",
            ["lstm_model", "model_evaluation"],
            [
                {
                    "tags": {"dagster/partition": s},
                    "run_config": {"ops": {"lstm_model": {"config": TRAIN_CONFIG}}},
                }
            ],
        )
        for s in train_symbols
    ]
    services = [
        coinbase.service(rate_per_s=RAISED_PER_S, burst=200),
        fear_greed.service(rate_per_s=RAISED_PER_S, burst=200),
        reddit.service(),
        trends.service(rate_per_s=RAISED_PER_S, burst=200),
    ]
    print(
        f"whole history: {len(symbols)} symbols x {len(months)} months ({first:%Y-%m}..{last:%Y-%m}; candles "
        f"from {candle_first:%Y-%m}), storage {storage_uri}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    table = []
    try:
        with ReplayServer(services) as replay:
            for name, assets, runs in stages:
                before = {svc: dict(values) for svc, values in replay.stats.items()}
                files_before = stored_files(storage_uri, assets)
                spec = {
                    "name": name,
                    "assets": assets,
                    "runs": runs,
                    "replay_url": replay.url,
                    "storage_uri": storage_uri,
                }
                figures, seconds = in_child(spec, env, log)
                requests = {
                    svc: int(values.get("requests", 0) - before.get(svc, {}).get("requests", 0))
                    for svc, values in replay.stats.items()
                }
                requests = {svc: n for svc, n in requests.items() if n}
                written = {
                    p: n for p, n in stored_files(storage_uri, assets).items() if files_before.get(p) != n
                }
                size = sum(written.values())
                files = len(written)
                row = {
                    "stage": name,
                    "runs": len(runs),
                    "seconds": seconds,
                    **figures,
                    "bytes": size,
                    "files": files,
                    "requests": requests,
                }
                table.append(row)
                extra = ""
                if "coinbase" in requests:
                    extra = (
                        f"; at Coinbase's {COINBASE_LIMIT_PER_S:g} req/s the same requests take "
                        f"{requests['coinbase'] / COINBASE_LIMIT_PER_S / 60:.1f} min"
                    )
                training = (
                    f", training subprocess peak {gb(figures['children_peak_rss'])}"
                    if "lstm_model" in assets
                    else ""
                )
                print(
                    f"{name}: {len(runs)} run(s), {figures['partitions']} partitions, {seconds:.1f}s "
                    f"({figures['run_seconds']:.1f}s in runs, the rest interpreter start and imports), "
                    f"peak RSS {gb(figures['peak_rss'])}{training}, {figures['rows']:,} rows, "
                    f"{size / 1e6:,.1f} MB in {files} files, {figures['checks']} check results, requests {requests or 'none'}{extra}"
                    + (f", FAILED CHECKS {figures['checks_failed']}" if figures["checks_failed"] else ""),
                    flush=True,
                )

        # The features backfill against its pure computation, one child process per symbol like the runs.
        feature_row = next(r for r in table if r["stage"] == "features")
        pure = {"seconds": 0.0, "rows": 0, "peak_rss": 0}
        held = None
        for s in symbols:
            spec = {
                "pure": True,
                "keep": False,
                "storage_uri": storage_uri,
                "keys": [key(s, m) for m in months],
                "warmup_key": key(s, candle_first),
            }
            figures, _ = in_child(spec, env, log)
            pure = {k: max(pure[k], figures[k]) if k == "peak_rss" else pure[k] + figures[k] for k in pure}
            if s == symbols[0]:
                held, _ = in_child({**spec, "keep": True}, env, log)
                alone = figures
        assert pure["rows"] == feature_row["rows"], (pure["rows"], feature_row["rows"])
        print(
            f"features backfill {feature_row['run_seconds']:.1f}s in runs vs pure computation "
            f"{pure['seconds']:.1f}s of the same {pure['rows']:,} rows: "
            f"**{feature_row['run_seconds'] / pure['seconds']:.2f}x**; peak RSS of a range run "
            f"{gb(feature_row['peak_rss'])} vs pure {gb(pure['peak_rss'])}"
        )
        print(
            f"pure computation of {symbols[0]} holding every month's result (as a range run's return value): "
            f"{held['seconds']:.1f}s vs {alone['seconds']:.1f}s dropping each "
            f"({held['seconds'] / alone['seconds']:.2f}x), peak RSS {gb(held['peak_rss'])} vs {gb(alone['peak_rss'])}"
        )
        total = sum(r["seconds"] for r in table)
        print(
            f"total {total / 60:.1f} min over {len(table)} stages; largest process peak "
            f"{gb(max(r['peak_rss'] for r in table))}; this (parent) process peak "
            f"{gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}"
        )
    finally:
        if not args.base:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
