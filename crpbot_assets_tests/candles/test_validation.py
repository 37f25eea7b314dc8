"""Pure candle invariants: expected windows (listing, month in progress) and the check rules."""

from datetime import UTC, datetime, timedelta

import polars as pl

from crpbot_assets.candles.client import empty_frame
from crpbot_assets.candles.validation import (
    coverage,
    daily_coverage,
    expected_window,
    ohlc_problems,
    timestamp_problems,
)
from crpbot_assets.replay import synthetic

UTC = UTC
FEB, MAR = datetime(2019, 2, 1, tzinfo=UTC), datetime(2019, 3, 1, tzinfo=UTC)


def test_expected_window_respects_listing_and_the_minute_in_progress():
    assert expected_window("BTC-USD", FEB) == (FEB, MAR)
    start, end = expected_window("SOL-USD", FEB)
    assert start >= end  # before listing: nothing to fetch
    june = datetime(2021, 6, 1, tzinfo=UTC)
    now = datetime(2021, 6, 10, 12, 34, 56, tzinfo=UTC)
    assert expected_window("SOL-USD", june, now=now) == (june, datetime(2021, 6, 10, 12, 34, tzinfo=UTC))
    start, end = expected_window("BTC-USD", datetime(2021, 7, 1, tzinfo=UTC), now=now)
    assert start >= end  # a month that has not started


def test_valid_month_has_no_problems_and_counts_gaps():
    frame = synthetic.candles("ETH-USD", FEB, MAR)
    assert timestamp_problems(frame, FEB) == [] and ohlc_problems(frame) == []
    present, expected, share = coverage(frame, FEB, MAR)
    assert present == frame.height and expected == 28 * 1440 and 0.95 < share < 1
    days = daily_coverage(frame, FEB, MAR)
    assert days.height == 28 and abs(days["coverage"].sum() * 1440 - frame.height) < 1e-6
    assert timestamp_problems(empty_frame(), FEB) == [] and coverage(empty_frame(), FEB, FEB)[2] == 1.0


def test_daily_coverage_measures_a_partial_day_against_its_own_minutes():
    now = datetime(2019, 2, 11, 12, 0, tzinfo=UTC)  # the month in progress: today has 720 minutes so far
    frame = synthetic.candles("ETH-USD", FEB, now)
    days = daily_coverage(frame, FEB, now)
    assert days.height == 11 and days["day"].to_list()[-1] == datetime(2019, 2, 11, tzinfo=UTC)
    last_day = frame.filter(pl.col("ts") >= datetime(2019, 2, 11, tzinfo=UTC)).height
    assert days["coverage"][-1] == last_day / 720 and days["coverage"].min() > 0.9


def test_ohlc_rules_name_each_violation():
    frame = synthetic.candles("BTC-USD", FEB, MAR).head(10)
    bad = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.col("high") * 2).otherwise(pl.col("low")).alias("low"),
        pl.when(pl.int_range(pl.len()) == 2).then(-1.0).otherwise(pl.col("volume")).alias("volume"),
        pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("close")).alias("close"),
    )
    problems = " | ".join(ohlc_problems(bad))
    assert "low > min(open, close): 1 rows" in problems and "negative volume: 1 rows" in problems
    assert "null or non-finite values: 1 rows" in problems
    assert ohlc_problems(frame.with_columns(pl.col("open").cast(pl.Float32)))[0].startswith("schema")


def test_month_bounds_are_checked_at_their_exact_minutes():
    """[first minute, next month's first minute): a row at 2019-03-01 00:00 belongs to March, not February,
    however close; 2019-02-28 23:59 and 2019-02-01 00:00 are February's own."""
    minute = timedelta(minutes=1)
    row = synthetic.candles("BTC-USD", FEB, MAR).head(1)

    def at(*moments: datetime) -> pl.DataFrame:
        return pl.concat([row.with_columns(pl.lit(m).cast(row.schema["ts"]).alias("ts")) for m in moments])

    assert timestamp_problems(at(FEB, MAR - minute), FEB) == []
    for outside in (MAR, FEB - minute):
        problems = timestamp_problems(
            at(FEB, MAR - minute, outside) if outside == MAR else at(outside, FEB), FEB
        )
        assert problems == [f"outside the month 2019-02: 1 rows (e.g. {outside})"], problems
