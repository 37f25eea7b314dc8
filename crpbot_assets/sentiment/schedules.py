"""Schedules: Fear & Greed once a day after publication; Google Trends for the month in progress."""

from datetime import timedelta

import dagster as dg

from crpbot_assets.common.months import month_key
from crpbot_assets.sentiment.assets import fear_greed_index, google_trends_hourly

fear_greed_daily = dg.ScheduleDefinition(
    name="fear_greed_daily",
    cron_schedule="15 1 * * *",
    execution_timezone="UTC",
    target=[fear_greed_index],
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="alternative.me publishes each day's index at 00:00 UTC; fetch it at 01:15 UTC.",
)


@dg.schedule(
    name="google_trends_refresh",
    cron_schedule="20 */6 * * *",
    execution_timezone="UTC",
    target=[google_trends_hourly],
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def google_trends_refresh(context: dg.ScheduleEvaluationContext):
    """Every 6 hours: the month in progress; during a month's first day also the month just ended, so its
    last hours are completed."""
    now = context.scheduled_execution_time
    months = {month_key(now)}
    if now.day == 1:
        months.add(month_key(now - timedelta(days=1)))
    for month in sorted(months):
        yield dg.RunRequest(run_key=f"google_trends:{month}:{now:%Y%m%dT%H%M}", partition_key=month)
