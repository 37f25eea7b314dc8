"""How much Google Trends revises recent hours, measured on the replay server's data through the real client.

For several fetch times T, fetches the 7 days before T (hourly), fetches the same window again `later` hours on,
puts the second fetch on the first one's scale (ratio of sums over the hours at least 3 days old, which no
longer move) and prints the relative revision |v_later / v_first - 1| by the hour's age at the first fetch:
median, 90th percentile and maximum. The reference row is the oldest hours (rounding only). These are the
sizes a month in progress carries (it keeps first observations) against a backfilled month's final values.
Usage: .venv/bin/python benchmarks/trends_revisions.py [--fetches 8]
"""

import argparse
import warnings
from datetime import UTC, datetime, timedelta

warnings.filterwarnings("ignore")
import polars as pl  # noqa: E402

from crpbot_assets.replay import trends as replay_trends  # noqa: E402
from crpbot_assets.replay.server import ReplayServer  # noqa: E402
from crpbot_assets.sentiment.trends import revisions  # noqa: E402
from crpbot_assets.sentiment.trends_client import TrendsClient  # noqa: E402

AGES = [(0, 6), (6, 24), (24, 72), (72, 168)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetches", type=int, default=8, help="first-fetch times (a day apart)")
    args = parser.parse_args()
    clock = [0.0]
    rows = []
    with ReplayServer(
        [replay_trends.service(rate_per_s=1000.0, burst=100, clock=lambda: clock[0])]
    ) as server:
        client = TrendsClient(f"{server.url}/trends", requests_per_s=500.0)
        client.clock = lambda: clock[0]
        for i in range(args.fetches):
            now = datetime(2026, 2, 1, 10, tzinfo=UTC) + timedelta(days=i, hours=7 * i)
            start = now - timedelta(days=7)
            for later in (1, 6, 24):
                clock[0] = now.timestamp()
                first = client.window("Bitcoin", start, now)
                clock[0] = (now + timedelta(hours=later)).timestamp()
                second = client.window("Bitcoin", start, now)
                settled = pl.col("ts") <= now - timedelta(days=3)
                scale = first.filter(settled)["value"].sum() / second.filter(settled)["value"].sum()
                moved = revisions(first, second.with_columns(pl.col("value") * scale))
                rows.append(
                    moved.with_columns(
                        ((now - pl.col("ts")) / timedelta(hours=1) - 1).alias("age_h"),
                        pl.lit(later).alias("later"),
                    )
                )
    table = pl.concat(rows).with_columns(pl.col("revision").abs())
    print(
        f"{'refetched after':>15} {'hour age at 1st fetch':>22} {'hours':>6} {'median %':>9} {'p90 %':>7} {'max %':>7}"
    )
    for later in (1, 6, 24):
        for low, high in AGES:
            part = table.filter(
                (pl.col("later") == later) & pl.col("age_h").is_between(low, high, closed="left")
            )
            r = part["revision"]
            print(
                f"{later:>13} h {f'{low}-{high} h':>22} {r.len():>6} {100 * r.median():9.2f} "
                f"{100 * r.quantile(0.9):7.2f} {100 * r.max():7.2f}"
            )


if __name__ == "__main__":
    main()
