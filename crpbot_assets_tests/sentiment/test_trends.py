"""Google Trends: overlap stitching onto one scale, and pytrends run for real against the replay."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crpbot_assets.common.http import ApiError, RequestStats
from crpbot_assets.replay.trends import true_interest
from crpbot_assets.sentiment.trends import StitchError, plan_windows, stitch
from crpbot_assets.sentiment.trends_client import TrendsPayloadError

from .conftest import trends_resource

UTC = UTC
H = timedelta(hours=1)


def _series(start: datetime, hours: int, values) -> pl.DataFrame:
    ts = pl.datetime_range(start, start + (hours - 1) * H, "1h", time_zone="UTC", eager=True)
    return pl.DataFrame({"ts": ts, "value": np.asarray(values, dtype=float)})


def _windows(truth: pl.DataFrame, plan, factors, rounded=False) -> list[pl.DataFrame]:
    out = []
    for (a, b), k in zip(plan, factors):
        w = truth.filter(pl.col("ts").is_between(a, b)).with_columns(pl.col("value") * k)
        out.append(w.with_columns(pl.col("value").round(0)) if rounded else w)
    return out


def test_plan_covers_the_range_with_overlaps():
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    plan = plan_windows(start, end, timedelta(days=7), timedelta(days=1))
    assert plan[0][0] == start and plan[-1][1] == end
    assert all(b - a <= timedelta(days=7) for a, b in plan)
    assert all(prev[1] - nxt[0] == timedelta(days=1) for prev, nxt in zip(plan, plan[1:]))


def test_stitching_recovers_one_scale_from_known_factors():
    rng = np.random.default_rng(7)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    truth = _series(start, 24 * 30, np.exp(np.cumsum(rng.normal(0, 0.05, 24 * 30))) * 10)
    plan = plan_windows(start, start + (24 * 30 - 1) * H, timedelta(days=7), timedelta(days=1))
    factors = [0.5, 3.0, 1.7, 0.25, 9.0, 1.1][: len(plan)]
    stitched = stitch(_windows(truth, plan, factors))
    assert stitched["ts"].to_list() == truth["ts"].to_list()
    np.testing.assert_allclose(
        stitched["value"].to_numpy(), truth["value"].to_numpy() * factors[0], rtol=1e-12
    )
    # Google's integer rounding: still one scale, within the quantisation error.
    rounded = stitch(
        _windows(
            truth,
            plan,
            [100 / truth.filter(pl.col("ts").is_between(a, b))["value"].max() for a, b in plan],
            rounded=True,
        )
    )
    ratio = rounded["value"].to_numpy() / truth["value"].to_numpy()
    assert np.std(ratio) / np.mean(ratio) < 0.02


def test_anchor_puts_the_series_on_the_anchors_scale():
    start = datetime(2024, 1, 1, tzinfo=UTC)
    truth = _series(start, 24 * 10, np.linspace(20, 80, 24 * 10))
    anchor = truth.filter(pl.col("ts") < start + 2 * 24 * H).with_columns(pl.col("value") * 4.0)
    plan = plan_windows(start + 24 * H, start + (24 * 10 - 1) * H, timedelta(days=7), timedelta(days=1))
    stitched = stitch(_windows(truth, plan, [0.3, 7.0]), anchor=anchor)
    joined = stitched.join(truth, on="ts", suffix="_true")
    np.testing.assert_allclose(joined["value"] / joined["value_true"], 4.0, rtol=1e-12)


def test_windows_without_usable_overlap_fail_clearly():
    start = datetime(2024, 1, 1, tzinfo=UTC)
    a = _series(start, 48, np.ones(48))
    b = _series(start + 24 * H, 48, np.r_[np.zeros(24), np.ones(24)])
    with pytest.raises(StitchError, match="window 1 .* no overlapping non-zero points"):
        stitch([a, b])


def test_pytrends_hourly_windows_stitch_to_the_true_series(replay_server):
    resource, stats = trends_resource(replay_server.url), RequestStats()
    start, end = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 14, tzinfo=UTC)
    series = resource.client().hourly_interest("Ethereum", start, end, stats=stats)
    assert (
        series["ts"].to_list() == pl.datetime_range(start, end, "1h", time_zone="UTC", eager=True).to_list()
    )
    truth = true_interest("Ethereum", np.array([int(t.timestamp()) for t in series["ts"].to_list()]))
    ratio = series["value"].to_numpy() / truth
    assert np.std(ratio) / np.mean(ratio) < 0.02  # one scale across both windows (integer rounding aside)
    windows = plan_windows(start, end, timedelta(hours=168), timedelta(hours=24))
    assert (
        len(windows) == 2 and stats.requests == 3 * len(windows) and stats.retries == 0
    )  # cookie+explore+multiline
    # A later stretch anchored on this one continues the same scale.
    later = resource.client().hourly_interest("Ethereum", end, end + timedelta(days=5), anchor=series)
    later_ratio = later["value"].to_numpy() / true_interest(
        "Ethereum", np.array([int(t.timestamp()) for t in later["ts"].to_list()])
    )
    assert abs(np.mean(later_ratio) / np.mean(ratio) - 1) < 0.02


def test_partial_points_are_dropped(replay_server):
    now_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    window = (
        trends_resource(replay_server.url).client().window("Bitcoin", now_hour - timedelta(days=2), now_hour)
    )
    assert window["ts"].max() == now_hour - H  # the running hour is partial, not final


def test_429s_are_retried_with_backoff_then_a_clear_error(replay_server):
    resource, stats = trends_resource(replay_server.url), RequestStats()
    start = datetime(2024, 3, 1, tzinfo=UTC)
    replay_server.inject("google_trends", "429", 2)
    window = resource.client().window("Solana", start, start + timedelta(days=2), stats=stats)
    assert window.height == 49 and stats.retries == 2
    replay_server.inject("google_trends", "429", 20)
    with pytest.raises(
        ApiError,
        match=r"Google Trends 'Solana' 2024-03-01T00 2024-03-03T00: gave up after 3 "
        r"attempts; last problem: TooManyRequestsError.*429",
    ):
        trends_resource(replay_server.url, max_attempts=3).client().window(
            "Solana", start, start + timedelta(days=2)
        )


def test_malformed_interest_is_not_retried(replay_server):
    # Faults hit the next requests in order: cookie and explore ignore "malformed", the interest payload breaks.
    replay_server.inject("google_trends", "malformed", 3)
    stats, start = RequestStats(), datetime(2024, 3, 1, tzinfo=UTC)
    with pytest.raises(TrendsPayloadError, match=r"'Solana' 2024-03-01T00 2024-03-02T00: malformed interest"):
        trends_resource(replay_server.url).client().window(
            "Solana", start, start + timedelta(days=1), stats=stats
        )
    assert stats.retries == 0
