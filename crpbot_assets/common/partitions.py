"""Partition definitions shared by every stage: symbol x month, and symbol alone."""

from datetime import datetime

import dagster as dg

from crpbot_assets.common.months import MONTH_KEY_FORMAT, month_key, month_window
from crpbot_assets.common.symbols import HISTORY_START, SYMBOLS

# end_offset=1 includes the month in progress, which the candles schedule keeps fresh.
month_partitions = dg.MonthlyPartitionsDefinition(
    start_date=HISTORY_START.strftime(MONTH_KEY_FORMAT), end_offset=1
)
symbol_partitions = dg.StaticPartitionsDefinition(SYMBOLS)
symbol_month_partitions = dg.MultiPartitionsDefinition(
    {"symbol": symbol_partitions, "month": month_partitions}
)

# symbol x month -> symbol x {month-1, month}: a month's features warm up on the previous month.
previous_and_current_month = dg.MultiPartitionMapping(
    {
        "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
        "month": dg.DimensionPartitionMapping(
            "month",
            dg.TimeWindowPartitionMapping(start_offset=-1, allow_nonexistent_upstream_partitions=True),
        ),
    }
)
# symbol -> every month of that symbol.
all_months_of_symbol = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="symbol")


def split_key(partition_key: str | dg.MultiPartitionKey) -> tuple[str, datetime]:
    """(symbol, month start in UTC) of a symbol x month partition key."""
    if not isinstance(partition_key, dg.MultiPartitionKey):
        partition_key = symbol_month_partitions.get_partition_key_from_str(partition_key)
    dims = partition_key.keys_by_dimension
    return dims["symbol"], month_window(dims["month"])[0]


def symbol_month_key(symbol: str, month_start: datetime) -> dg.MultiPartitionKey:
    """The partition key for `symbol` in the month starting at `month_start`."""
    return dg.MultiPartitionKey({"symbol": symbol, "month": month_key(month_start)})
