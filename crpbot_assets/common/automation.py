"""Declarative automation shared by the stages: when a partition is recomputed without anyone launching it.

Built only from Dagster's own `AutomationCondition` operands (serializable, so the daemon evaluates them).
Candles are kept fresh by their schedule; everything downstream follows its inputs, and the training chain
follows a cron (CRPBOT_RETRAIN_CRON, weekly by default).
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from crpbot_assets.common.settings import retrain_cron

AC = dg.AutomationCondition


def _guards(trigger: dg.AutomationCondition) -> dg.AutomationCondition:
    # A partition computed before is recomputed even if one input partition is missing (features[M] whose
    # warm-up month M-1 was never fetched); a partition never computed waits until every input exists, so
    # the month after a backfill's last month (its own candles still missing) is not requested to fail.
    return (
        trigger.since_last_handled()
        & (~AC.missing() | ~AC.any_deps_missing())
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    )


def on_input_update() -> dg.AutomationCondition:
    """Any partition, of any month (not only the latest), recomputes after one of its input partitions
    updates: features[M] after candles[M] or candles[M-1], reddit_hourly[M] after reddit_posts[M]."""
    return _guards(AC.any_deps_updated()).with_label("on_input_update")


def on_input_update_latest_only_for(*whole_history_assets: str) -> dg.AutomationCondition:
    """Like `on_input_update`, except that updates of the named unpartitioned assets (refreshed whole, e.g.
    the daily Fear & Greed history) only recompute the latest month, not every month of history."""
    whole = dg.AssetSelection.assets(*whole_history_assets)
    trigger = AC.any_deps_updated().ignore(whole) | (
        AC.in_latest_time_window() & AC.any_deps_updated().allow(whole)
    )
    return _guards(trigger).with_label(
        f"on_input_update (latest month only for {', '.join(whole_history_assets)})"
    )


def on_retrain_cron() -> dg.AutomationCondition:
    """Once per tick of CRPBOT_RETRAIN_CRON (default weekly), after every input updated since that tick."""
    return AC.on_cron(retrain_cron(), "UTC")


# Freshness (Dagster 1.13's `FreshnessPolicy`, shown in the UI's asset health): the time since an asset's
# latest materialization, of any partition; for candles and sentiment that is the month in progress, which
# only the hourly schedule / the sensors and automation refresh.
CANDLES_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=3), warn_window=timedelta(hours=2)
)
SENTIMENT_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=8), warn_window=timedelta(hours=2)
)
MODEL_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(days=8), warn_window=timedelta(days=7, hours=12)
)
