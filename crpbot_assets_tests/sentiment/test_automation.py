"""Schedules and the domain's Definitions."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pytest

from crpbot_assets.common.settings import REPO_ROOT
from crpbot_assets.resources import resources_for
from crpbot_assets.sentiment.definitions import defs
from crpbot_assets.sentiment.schedules import fear_greed_daily, google_trends_refresh

UTC = UTC


def test_fear_greed_schedule_runs_daily_after_publication(memory_instance):
    context = dg.build_schedule_context(
        instance=memory_instance, scheduled_execution_time=datetime(2026, 5, 3, 1, 15, tzinfo=UTC)
    )
    (request,) = fear_greed_daily.evaluate_tick(context).run_requests
    assert fear_greed_daily.cron_schedule == "15 1 * * *" and fear_greed_daily.execution_timezone == "UTC"
    assert request.partition_key is None


def _context(instance, when: datetime):
    repository = dg.Definitions.merge(
        defs, dg.Definitions(resources=resources_for("local"))
    ).get_repository_def()
    return dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=repository
    )


def test_trends_schedule_refreshes_the_month_in_progress(memory_instance):
    mid = _context(memory_instance, datetime(2026, 5, 17, 6, 20, tzinfo=UTC))
    assert [r.partition_key for r in google_trends_refresh.evaluate_tick(mid).run_requests] == ["2026-05-01"]
    first_day = _context(memory_instance, datetime(2026, 6, 1, 0, 20, tzinfo=UTC))
    requests = google_trends_refresh.evaluate_tick(first_day).run_requests
    assert [r.partition_key for r in requests] == [
        "2026-05-01",
        "2026-06-01",
    ]  # May's last hours complete on June 1st
    assert len({r.run_key for r in requests}) == 2


def test_definitions_load_with_the_local_resources():
    merged = dg.Definitions.merge(defs, dg.Definitions(resources=resources_for("local")))
    dg.Definitions.validate_loadable(merged)
    keys = {k.to_user_string() for k in merged.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "fear_greed_index",
        "reddit_posts",
        "reddit_hourly",
        "google_trends_hourly",
        "sentiment_features",
    }
    assert {"fear_greed", "reddit", "google_trends"} <= set(merged.resources)
    assert not defs.resources  # bound only in crpbot_assets/resources.py


@pytest.mark.slow
def test_prod_resources_use_real_hosts_and_env_credentials():
    code = (
        "from crpbot_assets.definitions import defs; r = defs.resources;"
        "print(r['reddit'].base_url, r['reddit'].client_id, r['fear_greed'].base_url, r['google_trends'].base_url);"
        "print(r['reddit'].missing_variables())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDDIT_")} | {
        "CRPBOT_ENV": "prod",
        "PYTHONPATH": str(REPO_ROOT),
    }
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        check=True,
    )
    hosts, missing = out.stdout.strip().splitlines()
    assert (
        hosts == "https://oauth.reddit.com None https://api.alternative.me https://trends.google.com/trends"
    )
    assert missing == "['REDDIT_CLIENT_ID', 'REDDIT_CLIENT_SECRET', 'REDDIT_USER_AGENT']"
