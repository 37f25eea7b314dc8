"""Backfill the whole history of 3 symbols through `features` with its single-run backfill policy, and measure the
Dagster overhead against the pure computation of the same partitions in the same run.

    .venv/bin/python benchmarks/bench_features_backfill.py [--last-month 2026-11-01] [--symbols BTC-USD,...]
        [--instance sqlite|postgres] [--base DIR] [--keep]

`--instance sqlite` is the local default (a sqlite instance in a temporary folder); `--instance postgres` the
production one (deploy/dagster.yaml's storage) on a throw-away PostgreSQL server started here (Debian's package,
as CI installs it; run as the `postgres` user when this is root). `DAGSTER_EVENT_BATCH_SIZE` (Dagster's own
setting) batches the step-end records: set it in the environment to compare.

Candle partitions are seeded straight into the IO manager's storage from `replay.synthetic` (no HTTP). The runs
are the ones Dagster's asset-backfill daemon would request for "all partitions of features" (its
`build_run_requests_with_backfill_policies`: a single-run policy gives one run per partition-key range, and
Dagster splits a symbol x month subset into one month range per symbol), executed in process one after another.
Not included: the daemon's tick and a run launcher's process start (a few seconds per run in a deployment).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dagster._core.definitions.automation_tick_evaluation_context import (  # noqa: E402
    build_run_requests_with_backfill_policies,
)
from dagster._core.definitions.events import AssetKeyPartitionKey  # noqa: E402

from crpbot_assets.common.commits import COMMIT_TAG  # noqa: E402
from crpbot_assets.common.io_manager import PartitionedFileIOManager, partition_path  # noqa: E402
from crpbot_assets.common.months import month_end, previous_month  # noqa: E402
from crpbot_assets.common.partitions import split_key, symbol_month_key, symbol_month_partitions  # noqa: E402
from crpbot_assets.common.resources import StorageResource  # noqa: E402
from crpbot_assets.common.storage import Storage  # noqa: E402
from crpbot_assets.features.assets import features  # noqa: E402
from crpbot_assets.features.compute import features_for_month  # noqa: E402
from crpbot_assets.features.definitions import defs as features_defs  # noqa: E402
from crpbot_assets.replay import synthetic  # noqa: E402
from crpbot_assets_tests.postgres_server import USER, throwaway_postgres  # noqa: E402

warnings.filterwarnings("ignore")
CANDLES = dg.AssetSpec("candles", partitions_def=symbol_month_partitions)


def partition_keys(last_month: str) -> list[str]:
    return [
        k
        for k in symbol_month_partitions.get_partition_keys()
        if split_key(k)[1].strftime("%Y-%m-%d") <= last_month
    ]


def seed_candles(storage: Storage, keys: list[str]) -> dict[str, pl.DataFrame]:
    candles = {}
    for key in keys:
        symbol, month = split_key(key)
        candles[key] = synthetic.candles(symbol, month, month_end(month))
        storage.write_parquet(partition_path(dg.AssetKey("candles"), key) + ".parquet", candles[key])
    return candles


def pure_compute(candles: dict[str, pl.DataFrame], keys: list[str]) -> tuple[float, int, float]:
    """The same per-partition computation as the asset, on in-memory frames: no Dagster, no files.
    (wall seconds, rows, CPU seconds of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    rows = 0
    for key in keys:
        symbol, month = split_key(key)
        previous = str(symbol_month_key(symbol, previous_month(month)))
        frames = [f for f in (candles.get(previous), candles[key]) if f is not None and f.height]
        if frames:
            rows += features_for_month(pl.concat(frames), month, month_end(month)).frame.height
    return time.perf_counter() - start, rows, time.process_time() - cpu


def step_phases(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Seconds per phase of a run, from its event log timestamps."""
    events = [
        (e.timestamp, e.step_key, e.dagster_event.event_type_value)
        for e in instance.all_logs(run_id)
        if e.dagster_event
    ]
    at = defaultdict(dict)
    for ts, step, kind in events:
        at[step].setdefault(kind, ts)
    f = at["features"]
    run_events = [ts for ts, _, _ in events]
    return {
        "run creation (planned events)": f["STEP_START"] - min(run_events),
        "load candles": f["LOADED_INPUT"] - f["STEP_START"],
        "compute + commits": f["STEP_OUTPUT"] - f["LOADED_INPUT"],
        "step-end records": f["HANDLED_OUTPUT"] - f["STEP_OUTPUT"],
        "check evaluations": f["STEP_SUCCESS"] - f["HANDLED_OUTPUT"],
        "run total (event log)": max(run_events) - min(run_events),
    }


def range_timings(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """The range run's own account of its time (`common/ranges.py`: "features: seconds spent compute 1.0, ...")."""
    for entry in instance.all_logs(run_id):
        text = entry.user_message
        if text.startswith("features: seconds spent "):
            parts = text.removeprefix("features: seconds spent ").split(" (", 1)[0].split(", ")
            return {name: float(value) for name, value in (p.rsplit(" ", 1) for p in parts)}
    return {}  # code without that line


@contextmanager
def postgres_instance():
    """A Dagster instance on a throw-away PostgreSQL server on loopback (deploy/dagster.yaml's storage)."""
    postgres = {
        "hostname": "127.0.0.1",
        "username": USER,
        "password": "unused-with-trust",
        "db_name": "postgres",
        "scheme": "postgresql+psycopg2",
    }
    with throwaway_postgres("crpbot-bench-pg-") as port:
        overrides = {"storage": {"postgres": {"postgres_db": {**postgres, "port": port}}}}
        with dg.instance_for_test(overrides=overrides) as instance:
            yield instance


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--last-month", default="2026-11-01", help="last month partition included (YYYY-MM-01)"
    )
    parser.add_argument("--symbols", default="BTC-USD,ETH-USD,SOL-USD", help="comma-separated")
    parser.add_argument("--instance", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--base", help="storage folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the storage folder")
    args = parser.parse_args()
    base = args.base or tempfile.mkdtemp(prefix="crpbot-features-backfill-")
    storage = Storage(base)
    symbols = set(args.symbols.split(","))
    keys = [k for k in partition_keys(args.last_month) if split_key(k)[0] in symbols]
    print(f"{load()}; DAGSTER_EVENT_BATCH_SIZE={os.environ.get('DAGSTER_EVENT_BATCH_SIZE', 'unset')}")
    try:
        t0 = time.perf_counter()
        candles = seed_candles(storage, keys)
        candle_rows = sum(f.height for f in candles.values())
        print(
            f"seeded {len(keys)} candle partitions ({candle_rows:,} rows, {len(symbols)} symbols, "
            f"{min(k.split('|')[0] for k in keys)} .. {args.last_month}) in {time.perf_counter() - t0:.1f}s under {base}"
        )

        pure_before_s, pure_rows, pure_before_cpu = pure_compute(candles, keys)
        print(f"pure computation before the backfill: {pure_before_s:.1f}s", flush=True)
        instance_cm = postgres_instance() if args.instance == "postgres" else dg.instance_for_test()
        with instance_cm as instance:
            for key in keys:  # the seeded files count only with a record (common/commits.py)
                instance.report_runless_asset_event(dg.AssetMaterialization("candles", partition=key))
            definitions = dg.Definitions.merge(features_defs, dg.Definitions(assets=[CANDLES]))
            requests = build_run_requests_with_backfill_policies(
                asset_partitions=[AssetKeyPartitionKey(dg.AssetKey("features"), k) for k in keys],
                asset_graph=definitions.resolve_asset_graph(),
                dynamic_partitions_store=instance,
            )
            print(
                f"backfill of {len(keys)} features partitions -> {len(requests)} run(s) on "
                f"{type(instance.event_log_storage).__name__}: "
                + "; ".join(
                    f"{r.tags['dagster/asset_partition_range_start']} .. "
                    f"{r.tags['dagster/asset_partition_range_end']}"
                    for r in requests
                )
            )
            resources = {"io_manager": PartitionedFileIOManager(storage=StorageResource(base_uri=base))}
            backfill_start, backfill_cpu = time.perf_counter(), time.process_time()
            phases = defaultdict(float)
            inside = defaultdict(float)
            written = 0
            for request in requests:
                run_start = time.perf_counter()
                result = dg.materialize(
                    [CANDLES, features],
                    instance=instance,
                    tags=request.tags,
                    resources=resources,
                    selection=dg.AssetSelection.assets(features),
                )
                assert result.success, f"run for {request.tags} failed"
                events = [  # one per partition: the step-end records, not the range run's commit records
                    e
                    for e in result.get_asset_materialization_events()
                    if COMMIT_TAG not in (e.materialization.tags or {})
                ]
                written += sum(e.materialization.metadata["rows"].value for e in events)
                evaluations = result.get_asset_check_evaluations()
                checks_ok = all(e.passed for e in evaluations)
                assert len(evaluations) == 3 * len(events) * 2 // 3 + 2, (
                    "one evaluation per partition and check"
                )
                for name, seconds in step_phases(instance, result.run_id).items():
                    phases[name] += seconds
                for name, seconds in range_timings(instance, result.run_id).items():
                    inside[name] += seconds
                print(
                    f"  run {result.run_id[:8]}: {len(events)} partitions in {time.perf_counter() - run_start:.1f}s,"
                    f" checks {'passed' if checks_ok else 'FAILED'}",
                    flush=True,
                )
            backfill_s, backfill_cpu = (
                time.perf_counter() - backfill_start,
                time.process_time() - backfill_cpu,
            )
            runs = len(instance.get_run_records())

        pure_after_s, _, pure_after_cpu = pure_compute(candles, keys)
        pure_s, pure_cpu = min(pure_before_s, pure_after_s), min(pure_before_cpu, pure_after_cpu)
        assert pure_rows == written, f"pure computation kept {pure_rows} rows, the backfill wrote {written}"
        print(
            f"backfill: {runs} runs, {len(keys)} partitions, {written:,} feature rows in {backfill_s:.1f}s "
            f"({written / backfill_s:,.0f} rows/s)"
        )
        print(
            "  phases summed over runs (event log): " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
        )
        if inside:
            print(
                "  inside the range runs (ranges.py): "
                + ", ".join(f"{k} {v:.1f}s" for k, v in inside.items())
                + " (writes, checks, records on the commit thread)"
            )
        print(
            f"pure computation of the same partitions (no Dagster, no files): {pure_s:.1f}s best of before "
            f"{pure_before_s:.1f}s / after {pure_after_s:.1f}s "
            f"({pure_rows:,} rows, {pure_rows / pure_s:,.0f} rows/s)"
        )
        overhead = backfill_s - pure_s
        print(
            f"Dagster + storage overhead: {overhead:.1f}s = {overhead / pure_s:.0%} of pure compute "
            f"(backfill / pure = {backfill_s / pure_s:.2f}x) on {args.instance}; {load()}"
        )
        print(
            f"CPU time of this process: backfill {backfill_cpu:.1f}s / pure {pure_cpu:.1f}s = "
            f"{backfill_cpu / pure_cpu:.2f}x (not counting the time spent waiting for the disk or other processes)"
        )
    finally:
        if not args.keep and not args.base:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
