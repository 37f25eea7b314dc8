"""Month arithmetic (common/months.py) against the partitions definition and hand-written calendars."""

from datetime import UTC, datetime

import pytest

from crpbot_assets.common.months import (
    last_complete_months,
    month_end,
    month_key,
    month_start,
    month_window,
    previous_month,
)
from crpbot_assets.common.partitions import month_partitions, split_key, symbol_month_key


def test_every_month_key_matches_the_partitions_definition():
    keys = month_partitions.get_partition_keys(current_time=datetime(2031, 3, 5, tzinfo=UTC))
    assert len(keys) > 140
    for previous_key, key in zip(keys, keys[1:]):
        window = month_partitions.time_window_for_partition_key(key)
        assert month_window(key) == (window.start, window.end)
        assert month_end(window.start) == window.end
        assert month_key(window.end - (window.end - window.start) / 2) == key
        assert month_key(previous_month(window.start)) == previous_key


def test_month_boundaries_by_hand():
    assert month_start(datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)) == datetime(
        2024, 2, 1, tzinfo=UTC
    )
    assert month_end(datetime(2023, 12, 1, tzinfo=UTC)) == datetime(2024, 1, 1, tzinfo=UTC)
    assert previous_month(datetime(2024, 1, 1, tzinfo=UTC)) == datetime(2023, 12, 1, tzinfo=UTC)
    assert month_key(datetime(2024, 3, 1, tzinfo=UTC)) == "2024-03-01"


def test_last_complete_months_excludes_the_month_in_progress():
    assert last_complete_months(3, datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)) == [
        datetime(2025, 11, 1, tzinfo=UTC),
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
    ]
    assert last_complete_months(0, datetime(2026, 2, 1, tzinfo=UTC)) == []


def test_symbol_month_keys_round_trip():
    key = symbol_month_key("ETH-USD", datetime(2020, 7, 1, tzinfo=UTC))
    assert str(key) == "2020-07-01|ETH-USD"
    assert split_key(str(key)) == ("ETH-USD", datetime(2020, 7, 1, tzinfo=UTC))


def test_a_key_that_is_not_a_month_start_is_rejected():
    with pytest.raises(ValueError, match="not the first day"):
        month_window("2020-07-02")
