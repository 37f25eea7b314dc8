"""Google Trends: overlap stitching onto one scale, and pytrends run for real against the replay."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest
import pytrends.request
import requests
from pytrends.request import TrendReq

from crpbot_assets.common.http import ApiError, RequestStats
from crpbot_assets.common.io_manager import partition_path
from crpbot_assets.replay import trends as replay_trends
from crpbot_assets.replay.protocol import Response
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.replay.trends import true_interest
from crpbot_assets.resources import file_resources
from crpbot_assets.sentiment.assets import google_trends_hourly
from crpbot_assets.sentiment.resources import GoogleTrendsResource
from crpbot_assets.sentiment.trends import StitchError, as_of_hour_ends, plan_windows, revisions, stitch
from crpbot_assets.sentiment.trends_client import TrendsError, TrendsPayloadError, _TrendReq

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


FROZEN = datetime(2026, 3, 10, 10, 30, tzinfo=UTC)
CLOCK = [FROZEN.timestamp()]  # the replay's and the client's now, moved by the tests below


@pytest.fixture(scope="module")
def frozen_trends_server():
    """One Trends replay for the module whose clock is CLOCK[0] (each start and stop of a server costs 0.5 s),
    allowing 100 requests/s: the tests using it are about time, not pace (the production pace is tested on
    the session replay by test_pytrends_hourly_windows_stitch_to_the_true_series)."""
    with ReplayServer([replay_trends.service(rate_per_s=100.0, burst=100, clock=lambda: CLOCK[0])]) as server:
        yield server


@pytest.fixture
def frozen_trends(frozen_trends_server):
    """The frozen Trends replay, its clock reset to FROZEN and its faults and counters cleared."""
    CLOCK[0] = FROZEN.timestamp()
    frozen_trends_server.clear()
    yield frozen_trends_server
    frozen_trends_server.clear()


def frozen_client(url: str, **overrides):
    client = trends_resource(url, **{"requests_per_s": 50.0, **overrides}).client()
    client.clock = lambda: CLOCK[0]
    return client


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC),  # the top of the hour: the 10:00 point has just begun
        datetime(2026, 3, 1, 10, 30, tzinfo=UTC),
        datetime(2026, 3, 1, 10, 59, 59, tzinfo=UTC),
    ],
)
def test_partial_points_are_dropped(frozen_trends, now):
    now_hour = datetime(2026, 3, 1, 10, tzinfo=UTC)
    CLOCK[0] = now.timestamp()  # the replay's now; the client keeps the real clock
    resource = trends_resource(
        frozen_trends.url, requests_per_s=50.0
    )  # 6 requests: within the replay's burst
    window = resource.client().window("Bitcoin", now_hour - timedelta(days=2), now_hour)
    past = resource.client().window("Bitcoin", now_hour - timedelta(days=3), now_hour - timedelta(days=1))
    assert window["ts"].max() == now_hour - H  # the running hour is partial, not final
    assert window.height == 48  # every complete hour of the two days, none dropped besides the running one
    assert past.height == 49 and past["ts"].max() == now_hour - timedelta(days=1)  # all final: all kept


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


# --- the real service's behaviour, reproduced by the replay by default ---------------------------------------


def test_cookie_page_is_a_404_with_nid_and_kept_as_pytrends_keeps_it(replay_server, monkeypatch):
    answer = requests.get(f"{replay_server.url}/trends/explore/?geo=US", timeout=5)
    assert answer.status_code == 404 and "NID" in answer.cookies
    # pytrends' own GetGoogleCookie (its module constant pointed at the replay) keeps the NID of that 404 ...
    monkeypatch.setattr(pytrends.request, "BASE_TRENDS_URL", f"{replay_server.url}/trends")
    assert list(TrendReq(hl="en-US", tz=0).GetGoogleCookie()) == ["NID"]
    monkeypatch.undo()
    # ... and so does crpbot's re-rooted client, whose windows then go through.
    assert list(_TrendReq(f"{replay_server.url}/trends", hl="en-US", tz=0).GetGoogleCookie()) == ["NID"]
    start = datetime(2024, 3, 1, tzinfo=UTC)
    assert trends_resource(replay_server.url).client().window("Bitcoin", start, start + H).height == 2


def _service_answering(path: str, response: Response):
    service = replay_trends.service()
    service.routes = [
        (method, pattern, (lambda request: response) if pattern.startswith(path) else handler)
        for method, pattern, handler in service.routes
    ]
    return service


def test_a_cookie_page_without_nid_and_fatal_answers_name_keyword_and_timeframe():
    start = datetime(2024, 3, 1, tzinfo=UTC)
    no_cookie = _service_answering("/trends/explore", Response(404, b"<html>not found</html>", "text/html"))
    with ReplayServer([no_cookie]) as server:
        stats = RequestStats()
        with pytest.raises(
            TrendsError,
            match=r"Google Trends 'Solana' 2024-03-01T00 2024-03-01T05: .*HTTP 404 without an NID cookie",
        ):
            trends_resource(server.url).client().window("Solana", start, start + 5 * H, stats=stats)
        assert stats.retries == 0
    refused = _service_answering(
        "/trends/api/explore", Response(400, b"<html>bad request</html>", "text/html")
    )
    with ReplayServer([refused]) as server:
        with pytest.raises(TrendsError, match=r"'Ethereum' 2024-03-01T00 2024-03-02T00: HTTP 400 from http"):
            trends_resource(server.url).client().window("Ethereum", start, start + 24 * H)


@pytest.mark.parametrize(
    ("days", "resolution", "period"),
    [(3, "hour", timedelta(hours=1)), (60, "day", timedelta(days=1)), (700, "week", timedelta(days=7))],
)
def test_resolution_follows_the_window_and_no_value_is_usable_before_its_period_ends(
    frozen_trends, days, resolution, period
):
    end = FROZEN.replace(minute=0)
    window = frozen_client(frozen_trends.url).window(
        "Bitcoin", end - timedelta(days=days), end, partial="flag"
    )
    steps = set(window["ts"].diff().drop_nulls().to_list())
    assert steps == {period}
    assert (window["period_end"] - window["ts"]).unique().to_list() == [period]
    # The period holding `now` is partial (flagged here, dropped by default); every other one has ended.
    assert window.filter(pl.col("partial"))["ts"].to_list() == [window["ts"].max()]
    assert window.filter(pl.col("period_end") > FROZEN)["partial"].all()
    final = frozen_client(frozen_trends.url).window("Bitcoin", end - timedelta(days=days), end)
    assert final.height == window.height - 1 and (final["period_end"] <= FROZEN).all()
    assert (final["retrieved_at"] == FROZEN).all()  # each kept value's period had ended when it was fetched
    if resolution == "week":
        assert set(window["ts"].dt.weekday()) == {7}  # Google's weeks start on Sunday


def test_hourly_stitching_refuses_daily_points(frozen_trends):
    client = frozen_client(frozen_trends.url, window_hours=24 * 20)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(
        TrendsError, match=r"'Solana' 2026-01-01T00 2026-01-21T00: Google answered daily points"
    ):
        client.hourly_interest("Solana", start, start + timedelta(days=30))


def test_a_window_of_the_past_has_no_partial_point(frozen_trends):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    window = frozen_client(frozen_trends.url).window("Ethereum", start, start + 24 * H, partial="flag")
    assert (
        window.height == 25 and not window["partial"].any()
    )  # pytrends' path without `isPartial` in the JSON


def test_recent_hours_are_revised_between_fetches(frozen_trends):
    start = FROZEN.replace(minute=0) - timedelta(days=5)
    end = FROZEN.replace(minute=0)
    first = frozen_client(frozen_trends.url).window("Bitcoin", start, end)
    CLOCK[0] += 6 * 3600
    later = frozen_client(frozen_trends.url).window("Bitcoin", start, end)
    moved = revisions(
        first, later.with_columns(pl.col("value") * first["value"].sum() / later["value"].sum())
    )
    by_age = moved.with_columns(((end - pl.col("ts")) / timedelta(hours=1)).alias("age_h"))
    recent = by_age.filter(pl.col("age_h") <= 12)["revision"].abs()
    old = by_age.filter(pl.col("age_h") >= 72)["revision"].abs()
    assert recent.max() > 0.03  # the last hours moved by several percent ...
    assert old.median() < 0.01  # ... hours days old only by Google's integer rounding


def test_the_month_in_progress_keeps_first_observations_usable_from_retrieval(
    frozen_trends, tmp_path, memory_instance
):
    month = datetime(2026, 3, 1, tzinfo=UTC)
    resource = _FrozenTrends(base_url=f"{frozen_trends.url}/trends", requests_per_s=50.0, base_delay_s=0.05)
    resources = {"google_trends": resource, **file_resources(str(tmp_path / "data"))}
    storage = resources["storage"]
    path = partition_path(dg.AssetKey("google_trends_hourly"), "2026-03-01") + ".parquet"
    dg.materialize(
        [google_trends_hourly], resources=resources, instance=memory_instance, partition_key="2026-03-01"
    )
    first = storage.storage.read_parquet(path)
    CLOCK[0] += 6 * 3600
    result = dg.materialize(
        [google_trends_hourly], resources=resources, instance=memory_instance, partition_key="2026-03-01"
    )
    second = storage.storage.read_parquet(path)
    refresh = FROZEN + timedelta(hours=6)
    assert first["ts"].max() == datetime(2026, 3, 10, 9, tzinfo=UTC)  # 10:00 was partial at 10:30
    assert (first["retrieved_at"] == FROZEN).all()
    assert second.head(first.height).equals(first)  # served values never change
    assert second["ts"].max() == datetime(2026, 3, 10, 15, tzinfo=UTC)
    assert (second.tail(6)["retrieved_at"] == refresh).all()
    meta = result.asset_materializations_for_node("google_trends_hourly")[0].metadata
    assert meta["hours"].value["Bitcoin"] == {"kept": first.height, "fetched": 6}
    assert meta["revision_hours"].value == 3 * 24 and meta["revision_max_abs_pct"].value > 1.0
    assert meta["preliminary_hours"].value == second.height
    # One scale: the new hours continue the stored ones (the true series x one factor, revisions aside).
    seconds = np.array([int(t.timestamp()) for t in second["ts"].to_list()])
    ratio = second["search_interest_btc"].to_numpy() / true_interest("Bitcoin", seconds)
    assert abs(ratio[-6:].mean() / ratio[: first.height - 24].mean() - 1) < 0.1

    # As of each hour end: nothing before the first retrieval; then the latest hour retrieved, for <= 8 h.
    hours = pl.datetime_range(month + H, month + timedelta(days=11), "1h", time_zone="UTC", eager=True)
    known = as_of_hour_ends(
        second, hours, datetime(2026, 4, 1, tzinfo=UTC), ["search_interest_btc"], timedelta(hours=8)
    )
    value = dict(zip(known["ts"].to_list(), known["search_interest_btc"].to_list()))
    at = dict(zip(second["ts"].to_list(), second["search_interest_btc"].to_list()))
    assert all(value[t] is None for t in value if t < FROZEN)
    assert value[datetime(2026, 3, 10, 11, tzinfo=UTC)] == at[datetime(2026, 3, 10, 9, tzinfo=UTC)]
    assert value[datetime(2026, 3, 10, 16, tzinfo=UTC)] == at[datetime(2026, 3, 10, 9, tzinfo=UTC)]
    assert value[datetime(2026, 3, 10, 17, tzinfo=UTC)] == at[datetime(2026, 3, 10, 15, tzinfo=UTC)]
    assert value[datetime(2026, 3, 11, 1, tzinfo=UTC)] is None  # 8.5 h after the last retrieval


def test_a_final_month_gives_each_hour_end_the_hour_just_ended():
    start = datetime(2024, 3, 1, tzinfo=UTC)
    trends = _series(start, 48, np.arange(48)).with_columns(
        pl.lit(datetime(2024, 4, 2, tzinfo=UTC)).cast(pl.Datetime("us", "UTC")).alias("retrieved_at")
    )
    hours = pl.datetime_range(start + H, start + 48 * H, "1h", time_zone="UTC", eager=True)
    known = as_of_hour_ends(
        trends.rename({"value": "x"}), hours, datetime(2024, 4, 1, tzinfo=UTC), ["x", "y"], timedelta(hours=8)
    )
    assert known["x"].to_list() == list(range(48)) and known["y"].null_count() == 48


class _FrozenTrends(GoogleTrendsResource):
    """The real resource and client, retrieving at CLOCK[0] (the frozen replay's now)."""

    def client(self):
        client = super().client()
        client.clock = lambda: CLOCK[0]
        return client
