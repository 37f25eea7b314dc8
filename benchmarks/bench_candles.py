"""Candles ingestion at Coinbase's public rate limit, against a replay server enforcing that limit.

Prints achieved requests/s divided by the limit (goal >= 0.9) and rows/s for
  1. the client fetching one symbol-month, and
  2. the `candles` asset materializing a 3-month range of one symbol in ONE Dagster run
     (fetch + validation + parquet writes + asset checks + metadata plots).
Usage: .venv/bin/python benchmarks/bench_candles.py [--rate 10] [--symbol BTC-USD]
"""

import argparse
import tempfile
import time
import warnings
from datetime import UTC, datetime

warnings.filterwarnings("ignore")  # Dagster's beta/preview notices
import dagster as dg  # noqa: E402

from crpbot_assets.candles.assets import candles
from crpbot_assets.candles.resources import CoinbaseResource
from crpbot_assets.common.io_manager import PartitionedFileIOManager
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.replay import coinbase
from crpbot_assets.replay.server import ReplayServer


def report(label: str, requests: int, rows: int, seconds: float, limit: float) -> None:
    rate = requests / seconds
    print(
        f"{label:<42} {requests:>5} requests {rows:>8} rows {seconds:7.2f} s  "
        f"{rate:6.2f} req/s = {rate / limit:5.3f} x limit  {rows / seconds:9.0f} rows/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="server limit and client pacing, requests/s")
    parser.add_argument("--symbol", default="BTC-USD")
    args = parser.parse_args()
    with ReplayServer([coinbase.service(rate_per_s=args.rate, burst=15)]) as server:
        resource = CoinbaseResource(base_url=server.url, requests_per_second=args.rate)
        print(f"replay server {server.url}: limit {args.rate}/s (burst 15); client paced at {args.rate}/s")

        client = resource.client()
        start = datetime(2019, 1, 1, tzinfo=UTC)
        end = datetime(2019, 2, 1, tzinfo=UTC)
        result = client.fetch(args.symbol, start, end)
        report(
            f"client: {args.symbol} 2019-01 (1 month)",
            result.requests,
            result.frame.height,
            result.seconds,
            args.rate,
        )

        server.clear()
        with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test(temp_dir=tmp) as instance:
            started = time.perf_counter()
            run = dg.materialize(
                [candles],
                instance=instance,
                resources={
                    "coinbase": resource,
                    "io_manager": PartitionedFileIOManager(storage=StorageResource(base_uri=f"{tmp}/data")),
                },
                tags={
                    "dagster/asset_partition_range_start": f"2019-01-01|{args.symbol}",
                    "dagster/asset_partition_range_end": f"2019-03-01|{args.symbol}",
                },
            )
            seconds = time.perf_counter() - started
            metas = [e.materialization.metadata for e in run.get_asset_materialization_events()]
            requests, rows = int(server.stats["coinbase"]["requests"]), sum(m["rows"].value for m in metas)
            fetch_s = sum(m["requests"].value / m["requests_per_second"].value for m in metas)
            report("asset: 3 months, one run, fetch only", requests, rows, fetch_s, args.rate)
            report("asset: 3 months, one run, end to end", requests, rows, seconds, args.rate)
            print(
                f"429s from the server: {int(server.stats['coinbase'].get('rate_limited', 0))}; "
                f"runs: {len(instance.get_run_records())}; checks passed: "
                f"{all(e.passed for e in run.get_asset_check_evaluations())}"
            )


if __name__ == "__main__":
    main()
