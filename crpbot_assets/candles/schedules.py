"""Keeps the month in progress fresh: an hourly run per listed symbol for the current month's partition."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from crpbot_assets.candles.assets import candles
from crpbot_assets.common.months import month_end, month_start, previous_month
from crpbot_assets.common.partitions import symbol_month_key, symbol_month_partitions
from crpbot_assets.common.symbols import SYMBOLS, is_listed

candles_job = dg.define_asset_job(
    "candles_job",
    selection=dg.AssetSelection.assets(candles),
    partitions_def=symbol_month_partitions,
    description="Candles (and their checks) for the selected symbol-month partitions.",
)


@dg.schedule(
    job=candles_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def candles_current_month_schedule(context: dg.ScheduleEvaluationContext):
    """Hourly (at :05): re-fetch the month in progress for every symbol listed by then. The first run of a
    month also re-fetches the previous month, whose last run stopped before its final hour."""
    now = context.scheduled_execution_time or datetime.now(UTC)
    now = now.astimezone(UTC)
    month = month_start(now)
    months = [month]
    if now - month < timedelta(hours=1):
        months.insert(0, previous_month(month))
    requests = [
        dg.RunRequest(
            run_key=f"{symbol}|{m:%Y-%m}|{now:%Y-%m-%dT%H:%M}", partition_key=symbol_month_key(symbol, m)
        )
        for m in months
        for symbol in SYMBOLS
        if is_listed(symbol, min(month_end(m), now))
    ]
    return requests or dg.SkipReason(f"no symbol is listed at {now:%Y-%m-%d %H:%M}")
