"""Month arithmetic in UTC, the one place every stage asks "which month, where does it end, which key".

No Dagster import, so the pure compute modules and the remote training job can use it. Month keys are the
`month` dimension's keys of `common.partitions.month_partitions` ("YYYY-MM-01"); a test checks these
functions against that partitions definition's `time_window_for_partition_key` over the whole history.
"""

from __future__ import annotations

from datetime import UTC, datetime

MONTH_KEY_FORMAT = "%Y-%m-%d"


def month_start(instant: datetime) -> datetime:
    """First instant (UTC) of the month containing `instant`."""
    return instant.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_end(start: datetime) -> datetime:
    """First instant of the month after the one starting at `start`."""
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def previous_month(start: datetime) -> datetime:
    """First instant of the month before the one starting at `start` (where a month's warm-up begins)."""
    if start.month == 1:
        return start.replace(year=start.year - 1, month=12)
    return start.replace(month=start.month - 1)


def month_key(instant: datetime) -> str:
    """Partition key ("YYYY-MM-01") of the month containing `instant`."""
    return month_start(instant).strftime(MONTH_KEY_FORMAT)


def month_window(key: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the month partition `key` ("YYYY-MM-01")."""
    start = datetime.strptime(key, MONTH_KEY_FORMAT).replace(tzinfo=UTC)
    if start.day != 1:
        raise ValueError(f"month key {key!r} is not the first day of a month")
    return start, month_end(start)


def last_complete_months(count: int, now: datetime) -> list[datetime]:
    """Starts of the `count` most recent whole months before `now`, oldest first."""
    months = []
    current = month_start(now)
    for _ in range(count):
        current = previous_month(current)
        months.append(current)
    return months[::-1]
