"""The `candles` asset: Coinbase 1-minute candles per symbol x month."""

import dagster as dg
import polars as pl

from crpbot_assets.candles.checks import CANDLES_CHECKS
from crpbot_assets.candles.client import CandlesClient, empty_frame
from crpbot_assets.candles.resources import CoinbaseResource
from crpbot_assets.candles.validation import coverage, daily_coverage, expected_window
from crpbot_assets.common import checks
from crpbot_assets.common.automation import CANDLES_FRESHNESS
from crpbot_assets.common.io_manager import table_schema
from crpbot_assets.common.months import month_end
from crpbot_assets.common.partitions import split_key, symbol_month_partitions
from crpbot_assets.common.plots import line_plot
from crpbot_assets.common.ranges import run_partitions
from crpbot_assets.common.symbols import is_listed, listed_at

MAX_PLOTS_PER_RUN = 24  # a whole-history backfill skips the per-partition coverage plots


def _fetch_partition(
    context: dg.AssetExecutionContext, client: CandlesClient, key: str, plot: bool
) -> pl.DataFrame:
    """Fetch one symbol-month and attach its metadata to that partition's materialization."""
    symbol, month = split_key(key)
    start, end = expected_window(symbol, month)
    if start >= end:
        listed = is_listed(symbol, month_end(month))
        reason = (
            "month has not started"
            if listed
            else f"{symbol} was not listed on Coinbase before {listed_at(symbol):%Y-%m-%d}"
        )
        context.log.info(f"{key}: no candles ({reason})")
        context.add_asset_metadata(
            {"listed": listed, "explanation": reason, "rows": 0, "window_complete": not listed},
            partition_key=key,
        )
        return empty_frame()

    last_logged = [0]

    def progress(done: int, total: int) -> None:
        if done == total or done - last_logged[0] >= max(1, total // 10):
            last_logged[0] = done
            context.log.info(f"{key}: {done}/{total} pages fetched")

    result = client.fetch(symbol, start, end, progress=progress, log=context.log.warning)
    frame = result.frame
    present, expected, share = coverage(frame, start, end)
    metadata = {
        "listed": True,
        "rows": present,
        "first_ts": str(frame["ts"].min()) if present else "none",
        "last_ts": str(frame["ts"].max()) if present else "none",
        "window": f"[{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC",
        "window_complete": end == month_end(month),
        "missing_minutes": expected - present,
        "coverage": round(share, 6),
        "pages": result.pages,
        "empty_pages": result.empty_pages,
        "requests": result.requests,
        "retries": result.retries,
        "retry_wait_s": result.retry_wait_s,
        "requests_per_second": round(result.requests / max(result.seconds, 1e-9), 2),
    }
    days = daily_coverage(frame, start, end) if plot else None
    if days is not None and days.height > 1:
        metadata["daily_coverage"] = line_plot(
            {"coverage": days["coverage"].to_list()},
            f"{key}: share of minutes present per day",
            "day of month",
            "share",
        )
    context.add_asset_metadata(metadata, partition_key=key)
    context.log.info(
        f"{key}: {present} rows, {expected - present} missing minutes, "
        f"{result.requests} requests ({result.retries} retries, {result.retry_wait_s:.1f}s of back-off) "
        f"in {result.seconds:.1f}s"
    )
    return frame


@dg.asset(
    partitions_def=symbol_month_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"polars", "parquet"},
    group_name="candles",
    metadata={"dagster/column_schema": table_schema(empty_frame().schema)},
    pool="coinbase",
    freshness_policy=CANDLES_FRESHNESS,
    check_specs=checks.specs("candles", CANDLES_CHECKS, symbol_month_partitions),
)
def candles(context: dg.AssetExecutionContext, coinbase: CoinbaseResource):
    """Coinbase Exchange 1-minute candles of one symbol-month: `ts` (UTC, minute-aligned, sorted, unique),
    `open, high, low, close, volume` (Float64). Minutes without trades are absent, never filled. Months
    before a symbol's listing are empty frames with metadata `listed: False`.
    """
    # A range of partitions (single-run backfill) runs in one process and commits month by month; re-running
    # it skips the months already stored whose window was complete (`common/ranges.py`).
    plot = len(context.partition_keys) <= MAX_PLOTS_PER_RUN
    client = coinbase.client()
    try:
        value = run_partitions(
            context,
            lambda key: _fetch_partition(context, client, key, plot),
            resume_if=lambda recorded: recorded.get("window_complete") is True,
            checks=CANDLES_CHECKS,
        )
    finally:
        client.close()
    yield dg.Output(value)
    yield from checks.evaluate(context, value, CANDLES_CHECKS)
