"""The feature computation: no look-ahead (property-based), warm-up across months, gaps, and known values."""

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crpbot_assets.common.months import month_end
from crpbot_assets.features import indicators as ind
from crpbot_assets.features.catalogue import (
    CATALOGUE,
    FEATURE_NAMES,
    MAX_LOOKBACK_MINUTES,
)
from crpbot_assets.features.compute import (
    COMPUTED_SCHEMA,
    FEATURES_SCHEMA,
    WARMUP_DAYS,
    CandleInputError,
    compute_features,
    features_for_month,
    to_stored,
    warmup_start,
)
from crpbot_assets.replay import synthetic

UTC = UTC
START = datetime(2019, 1, 1, tzinfo=UTC)
DAYS = 16  # > the longest lookback (13.5 days) so every feature has defined values to compare
SHORTEST_MONTH_MINUTES = 28 * 1440


@pytest.fixture(scope="module")
def series() -> pl.DataFrame:
    return synthetic.candles(
        "SOL-USD", datetime(2021, 6, 1, tzinfo=UTC), datetime(2021, 6, 1 + DAYS, tzinfo=UTC)
    )


@pytest.fixture(scope="module")
def quarter() -> pl.DataFrame:
    """ETH Jan-Mar 2019: March warms up on February, the shortest month."""
    return synthetic.candles("ETH-USD", START, datetime(2019, 4, 1, tzinfo=UTC))


def bars(rows: list[tuple], start: datetime = START) -> pl.DataFrame:
    """Candles from (minute offset, open, high, low, close, volume) tuples."""
    return pl.DataFrame(
        {
            "ts": [start + timedelta(minutes=r[0]) for r in rows],
            **{
                c: [float(r[i + 1]) for r in rows]
                for i, c in enumerate(("open", "high", "low", "close", "volume"))
            },
        },
        schema={
            "ts": pl.Datetime("us", "UTC"),
            **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume")},
        },
    )


def causality_violations(compute, candles: pl.DataFrame, cut: datetime) -> list[str]:
    """Columns whose values at rows <= cut change when the data after `cut` is removed (the look-ahead detector)."""
    full = compute(candles).filter(pl.col("ts") <= cut)
    truncated = compute(candles.filter(pl.col("ts") <= cut))
    assert truncated["ts"].equals(full["ts"])
    return [c for c in full.columns if not truncated[c].equals(full[c], check_names=False)]


# ---------------------------------------------------------------------------------------------- causality

LATE = (DAYS - 2) * 24  # hours after which every feature, the 1h MACD signal included, has values
cut_offsets = st.one_of(
    st.integers(0, DAYS * 1440 - 1),  # anywhere
    st.integers(LATE * 60, DAYS * 1440 - 1),  # where every feature is defined
    st.builds(
        lambda h, m: h * 60 + m,
        st.integers(LATE, DAYS * 24 - 1),
        st.sampled_from([-2, -1, 0, 1, 4, 14, 58, 59]),
    ),
)


@settings(max_examples=30, deadline=None)
@given(
    cut=cut_offsets,
    hole_start=st.integers(0, DAYS * 1440 - 1),
    hole_minutes=st.sampled_from([0, 1, 7, 61, 150]),
)
def test_no_feature_looks_ahead(series, cut, hole_start, hole_minutes):
    """For a random cut t (bar edges favoured) and a random planted outage, every feature of every row <= t is
    identical whether or not the data after t exists."""
    first = series["ts"][0]
    candles = series.filter(
        ~pl.col("ts").is_between(
            first + timedelta(minutes=hole_start),
            first + timedelta(minutes=hole_start + hole_minutes),
            closed="left",
        )
    )
    assert causality_violations(compute_features, candles, first + timedelta(minutes=cut)) == []


@settings(max_examples=10, deadline=None)
@given(cut=cut_offsets)
def test_stored_features_do_not_look_ahead(series, cut):
    """The same property on what `features` stores (Float32), bit for bit."""

    def stored(candles: pl.DataFrame) -> pl.DataFrame:
        return to_stored(compute_features(candles))

    assert causality_violations(stored, series, series["ts"][0] + timedelta(minutes=cut)) == []


def test_causality_test_is_not_vacuous(series):
    """Late in the series every feature has a value, so the property above compares real numbers for each one."""
    last = compute_features(series).tail(1440)
    assert [c for c in FEATURE_NAMES if last[c].null_count()] == []


def test_detector_catches_a_leaky_feature(series):
    """A classic bug - a 1h bar used from its first minute instead of its close - is caught."""

    def leaky(candles: pl.DataFrame) -> pl.DataFrame:
        hourly = candles.group_by_dynamic("ts", every="1h").agg(pl.col("close").last().alias("h1_close"))
        return candles.select("ts").join_asof(hourly, on="ts")

    assert causality_violations(leaky, series, series["ts"][0] + timedelta(hours=30, minutes=17)) == [
        "h1_close"
    ]


# ------------------------------------------------------------------------------------------ warm-up, months


def test_longest_lookback_fits_in_the_shortest_warmup_month():
    """Statically: the longest lookback leaves 5 days of slack (for outages) in a 28-day warm-up month."""
    assert MAX_LOOKBACK_MINUTES == max(
        f.lookback * {"1m": 1, "5m": 5, "15m": 15, "1h": 60}[f.timeframe] for f in CATALOGUE
    )
    assert MAX_LOOKBACK_MINUTES <= SHORTEST_MONTH_MINUTES - 5 * 1440


def test_every_feature_is_defined_after_the_longest_lookback(series):
    """Dynamically: with every hour present (minutes may be missing), the first row with every feature defined
    is the first row at or after the last minute of the longest lookback."""
    start = series["ts"][0]
    hours = series["ts"].dt.truncate("1h").n_unique()
    assert hours == (series["ts"][-1] - start) // timedelta(hours=1) + 1  # no hour wholly missing
    complete = compute_features(series).drop_nulls()
    ready = start + timedelta(minutes=MAX_LOOKBACK_MINUTES - 1)
    assert complete["ts"][0] == series.filter(pl.col("ts") >= ready)["ts"][0]


FLOAT32_ULP = 2.0**-23  # relative spacing of Float32: the stored values' resolution


@pytest.mark.parametrize("month", [datetime(2019, 2, 1, tzinfo=UTC), datetime(2019, 3, 1, tzinfo=UTC)])
def test_month_with_warmup_equals_whole_series(quarter, month):
    """Previous month + month, keeping the month's rows, equals the whole-history computation for every row
    (nothing dropped: the warm-up tail covers every lookback, after February included), to the stored
    precision: the tail's EMAs start later (seed weight < 1e-8) and rolling sums accumulate from another row."""
    whole = compute_features(quarter).filter(pl.col("ts").is_between(month, month_end(month), closed="left"))
    previous = month.replace(month=month.month - 1)
    result = features_for_month(
        quarter.filter(pl.col("ts").is_between(previous, month_end(month), closed="left")),
        month,
        month_end(month),
    )
    assert result.dropped_rows == 0 and result.frame.height == whole.height == result.month_rows
    assert (
        result.warmup_rows
        == quarter.filter(pl.col("ts").is_between(warmup_start(month), month, closed="left")).height
    )
    assert whole.null_count().sum_horizontal().item() == 0
    assert result.frame["ts"].equals(whole["ts"])
    assert dict(result.frame.schema) == FEATURES_SCHEMA
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(
            result.frame[name].to_numpy(), whole[name].to_numpy(), rtol=FLOAT32_ULP, atol=1e-9, err_msg=name
        )


def test_warmup_tail_is_the_longest_lookback_plus_slack():
    assert MAX_LOOKBACK_MINUTES <= (WARMUP_DAYS - 1) * 1440 < MAX_LOOKBACK_MINUTES + 1440
    assert warmup_start(datetime(2019, 3, 1, tzinfo=UTC)) == datetime(2019, 3, 1, tzinfo=UTC) - timedelta(
        days=WARMUP_DAYS
    )


def test_outage_in_the_warmup_tail_falls_back_to_the_whole_previous_month(quarter):
    """Three days missing inside the tail would drop the month's first rows; the month is recomputed on the
    whole previous month instead, keeping every row, identical to computing on all of it."""
    month = datetime(2019, 3, 1, tzinfo=UTC)
    tail_start = warmup_start(month)
    candles = quarter.filter(
        pl.col("ts").is_between(datetime(2019, 2, 1, tzinfo=UTC), month_end(month), closed="left")
        & ~pl.col("ts").is_between(tail_start + timedelta(days=2), tail_start + timedelta(days=5))
    )
    assert features_for_month(
        candles.filter(pl.col("ts") >= tail_start), month, month_end(month)
    ).dropped_rows
    result = features_for_month(candles, month, month_end(month))
    expected = to_stored(compute_features(candles).filter(pl.col("ts") >= month).drop_nulls())
    assert result.dropped_rows == 0 and result.frame.equals(expected)
    assert result.warmup_rows == candles.filter(pl.col("ts") < month).height


def test_short_warmup_drops_rows_instead_of_filling(quarter):
    """With 5 days of warm-up the month's first rows lack lookback: they are dropped, not zero-filled, and every
    row kept still equals the whole-history value."""
    month = datetime(2019, 3, 1, tzinfo=UTC)
    whole = compute_features(quarter).filter(pl.col("ts") >= month)
    result = features_for_month(
        quarter.filter(pl.col("ts") >= month - timedelta(days=5)), month, month_end(month)
    )
    assert result.dropped_rows > 0 and result.frame.height == whole.height - result.dropped_rows
    first_kept = result.frame["ts"][0]
    assert first_kept - (month - timedelta(days=5)) >= timedelta(minutes=MAX_LOOKBACK_MINUTES - 1)
    kept = whole.filter(pl.col("ts") >= first_kept)
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(
            result.frame[name].to_numpy(), kept[name].to_numpy(), rtol=FLOAT32_ULP, atol=1e-9, err_msg=name
        )


def test_values_are_null_exactly_until_lookback(series):
    """Before its lookback a feature is null (marked), never a number; 1m features from their lookback on."""
    frame = compute_features(series)
    for feature in (f for f in CATALOGUE if f.timeframe == "1m"):
        assert frame[feature.name][: feature.lookback - 1].null_count() == feature.lookback - 1, feature.name
        assert frame[feature.name][feature.lookback - 1 :].null_count() == 0, feature.name


def test_month_rows_only_and_schema(quarter):
    month = datetime(2019, 2, 1, tzinfo=UTC)
    frame = features_for_month(quarter, month, month_end(month)).frame  # March candles given: ignored
    assert dict(frame.schema) == FEATURES_SCHEMA and len(FEATURE_NAMES) >= 50
    assert frame["ts"].min() >= month and frame["ts"].max() < month_end(month)


def test_empty_candles_give_an_empty_frame_with_the_schema():
    empty = bars([])
    assert dict(compute_features(empty).schema) == COMPUTED_SCHEMA
    result = features_for_month(empty, START, month_end(START))
    assert result.frame.height == 0 and dict(result.frame.schema) == FEATURES_SCHEMA


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.drop("volume"), "missing columns"),
        (lambda f: f.with_columns(pl.col("close").cast(pl.Float32)), "Float64"),
        (lambda f: f.reverse(), "strictly increasing"),
        (lambda f: f.with_columns(pl.col("ts") + timedelta(seconds=30)), "minute-aligned"),
    ],
)
def test_bad_candles_are_rejected_with_the_source_named(series, mutate, message):
    with pytest.raises(CandleInputError, match=message) as info:
        compute_features(mutate(series.head(100)), where="candles 2021-06-01|SOL-USD")
    assert "2021-06-01|SOL-USD" in str(info.value)


# ------------------------------------------------------------------------------------------- gap policy


def test_gaps_are_not_filled_and_are_reported():
    rows = [(0, 10, 11, 9, 10, 1), (1, 10, 11, 9, 11, 1), (5, 11, 12, 10, 12, 1)]  # minutes 2-4 missing
    frame = compute_features(bars(rows))
    assert frame.height == 3  # no invented rows
    assert frame["m1_gap_minutes"].to_list() == [None, 0.0, 3.0]
    assert frame["m1_logret_1"][2] == pytest.approx(
        math.log(12 / 11)
    )  # return over the existing previous row


def test_higher_timeframe_bar_is_used_only_from_its_last_minute():
    """Hour 8 closes at 100, hour 9 at 110, hour 10 at 121 (minute 10:59 present)."""
    rows = [
        (m, c, c, c, c, 1) for h, c in ((8, 100), (9, 110), (10, 121)) for m in range(h * 60, h * 60 + 60)
    ]
    frame = compute_features(bars(rows))

    def at(hh, mm):
        return frame.filter(pl.col("ts") == START + timedelta(hours=hh, minutes=mm))["h1_logret_1"].item()

    assert at(9, 58) is None  # only the 08:00 bar is complete: one bar, lookback is two
    assert at(9, 59) == pytest.approx(math.log(110 / 100))  # the 09:00 bar completes at the close of 09:59
    assert at(10, 37) == pytest.approx(math.log(110 / 100))  # 10:37 sees the bar that closed at 10:00
    assert at(10, 58) == pytest.approx(math.log(110 / 100))
    assert at(10, 59) == pytest.approx(math.log(121 / 110))
    assert frame.filter(pl.col("ts") == START + timedelta(hours=9, minutes=59))["h1_coverage"].item() == 1.0


def test_incomplete_higher_timeframe_bar_counts_only_present_minutes():
    rows = [(m, 10, 11, 9, 10 + m, 2) for m in range(0, 15) if m not in (3, 4, 5)]  # 12 of 15 minutes
    frame = compute_features(bars(rows))
    assert frame["m15_coverage"][-1] == pytest.approx(12 / 15)
    assert frame["m15_coverage"][:-1].null_count() == frame.height - 1  # not usable before 00:14


# ------------------------------------------------------------------------------------------ known values


def ev(frame: pl.DataFrame, expr: pl.Expr) -> list:
    return frame.select(expr.alias("x"))["x"].to_list()


def test_known_returns_and_candle_shape():
    frame = bars([(0, 100, 101, 99, 100, 1), (1, 10, 15, 9, 12, 1), (2, 12, 12, 12, 12, 1)])
    c, o, h, l = pl.col("close"), pl.col("open"), pl.col("high"), pl.col("low")
    assert ev(frame, ind.simple_return(c, 1))[1:] == pytest.approx([12 / 100 - 1, 0.0])
    assert ev(frame, ind.log_return(c, 2))[2] == pytest.approx(math.log(12 / 100))
    assert ev(frame, ind.body_ratio(o, h, l, c))[1:] == pytest.approx([2 / 6, 0.0])  # zero-range bar -> 0
    assert ev(frame, ind.upper_wick(o, h, l, c))[1] == pytest.approx(3 / 6)
    assert ev(frame, ind.lower_wick(o, h, l, c))[1] == pytest.approx(1 / 6)


def test_known_wilder_rsi():
    """closes 1, 2, 1, 3, alpha 1/2: G = 1, .5, 1.25; L = 0, .5, .25 -> RSI 100, 50, 83.33."""
    frame = bars([(i, x, x, x, x, 1) for i, x in enumerate([1, 2, 1, 3])])
    c = pl.col("close")
    assert ev(frame, ind.rsi(ind.wilder_gain(c, 2), ind.wilder_loss(c, 2)))[1:] == pytest.approx(
        [100.0, 50.0, 250 / 3]
    )
    flat = bars([(i, 5, 5, 5, 5, 1) for i in range(3)])
    assert ev(flat, ind.rsi(ind.wilder_gain(c, 2), ind.wilder_loss(c, 2)))[1:] == [50.0, 50.0]


def test_known_oscillators_and_bands():
    frame = bars([(0, 1, 2, 1, 1, 1), (1, 2, 3, 1.5, 2, 1), (2, 3, 4, 2, 3, 1)])
    h, l, c = pl.col("high"), pl.col("low"), pl.col("close")
    lo, hi = l.rolling_min(3), h.rolling_max(3)
    assert ev(frame, ind.stochastic_k(c, lo, hi))[2] == pytest.approx((3 - 1) / (4 - 1))
    assert ev(frame, ind.williams_r(c, lo, hi))[2] == pytest.approx((3 - 4) / (4 - 1))
    s = math.sqrt(2 / 3)  # population std of 1, 2, 3
    mean, std = c.rolling_mean(3), c.rolling_std(3, ddof=0)
    assert ev(frame, ind.bollinger_pctb(c, mean, std))[2] == pytest.approx((3 - (2 - 2 * s)) / (4 * s))
    assert ev(frame, ind.bollinger_width(mean, std))[2] == pytest.approx(4 * s / 2)
    flat = bars([(i, 5, 5, 5, 5, 1) for i in range(3)])
    assert ev(flat, ind.stochastic_k(c, lo, hi))[2] == 0.5 and ev(flat, ind.williams_r(c, lo, hi))[2] == -0.5
    assert ev(flat, ind.bollinger_pctb(c, mean, std))[2] == 0.5


def test_known_volume_and_range_indicators():
    frame = bars(
        [(0, 10, 10, 10, 10, 1), (1, 10, 11, 10, 11, 2), (2, 11, 11, 10, 10.5, 3), (3, 10.5, 12.5, 10, 12, 4)]
    )
    o, h, l, c, v = (pl.col(x) for x in ("open", "high", "low", "close", "volume"))
    sv = ind.signed_volume(c, v)
    assert ev(frame, sv)[1:] == [2.0, -3.0, 4.0]
    assert ev(frame, ind.obv_slope(sv.rolling_sum(3), v.rolling_sum(3)))[3] == pytest.approx((2 - 3 + 4) / 9)
    tv = ind.typical_value(h, l, c, v)
    vwap = (11 + 10 + 11) / 3 * 2 + (11 + 10 + 10.5) / 3 * 3 + (12.5 + 10 + 12) / 3 * 4
    assert ev(frame, ind.vwap_distance(c, tv.rolling_sum(3), v.rolling_sum(3)))[3] == pytest.approx(
        12 / (vwap / 9) - 1
    )
    # true ranges: 0, 1, 1, 2.5 (h - l, and |h - c_prev| for the last bar = 12.5 - 10.5 = 2 < 2.5)
    assert ev(frame, ind.true_range(h, l, c)) == pytest.approx([0.0, 1.0, 1.0, 2.5])
    atr = [0.0, 0.5, 0.75, 1.625]  # Wilder EMA alpha 1/2
    assert ev(frame, ind.natr(h, l, c, 2)) == pytest.approx([a / x for a, x in zip(atr, [10, 11, 10.5, 12])])
    r2 = math.log(11 / 10) ** 2  # bar 1's ln(h/l)^2 = ln(c/o)^2; bar 0 is flat
    assert ev(frame, ind.parkinson(ind.log_range_squared(h, l), 2))[1] == pytest.approx(
        math.sqrt(r2 / 2 / (4 * math.log(2)))
    )
    gk = (0.5 - (2 * math.log(2) - 1)) * r2 / 2
    assert ev(frame, ind.garman_klass(ind.log_range_squared(h, l), o, c, 2))[1] == pytest.approx(
        math.sqrt(gk)
    )


def test_known_ema_and_warmup():
    frame = bars([(i, x, x, x, x, 1) for i, x in enumerate([10, 20, 20])])
    assert ev(frame, ind.ema(pl.col("close"), 0.5)) == pytest.approx([10.0, 15.0, 17.5])
    # the seed's weight (1 - a)^n drops below the tolerance exactly at the warm-up length
    w = ind.ema_warmup(0.5)
    assert 0.5**w < ind.EMA_TOLERANCE <= 0.5 ** (w - 1)


def test_calendar_features():
    monday_6am = datetime(2024, 1, 1, 6, tzinfo=UTC)
    frame = compute_features(bars([(0, 1, 1, 1, 1, 1)], monday_6am))
    assert frame["cal_hour_sin"].item() == pytest.approx(1.0) and frame[
        "cal_hour_cos"
    ].item() == pytest.approx(0, abs=1e-12)
    assert frame["cal_dow_sin"].item() == pytest.approx(0, abs=1e-12) and frame[
        "cal_dow_cos"
    ].item() == pytest.approx(1.0)
