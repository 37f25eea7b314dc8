"""The traded symbols and their listing dates: the single source of truth."""

from datetime import UTC, datetime

HISTORY_START = datetime(2018, 11, 1, tzinfo=UTC)

# First minute each product traded on Coinbase within crpbot's history.
LISTED_AT: dict[str, datetime] = {
    "BTC-USD": HISTORY_START,
    "ETH-USD": HISTORY_START,
    "SOL-USD": datetime(2021, 6, 1, tzinfo=UTC),
}
SYMBOLS: list[str] = list(LISTED_AT)


class UnknownSymbolError(ValueError):
    """Raised for a product id crpbot does not track."""


def listed_at(symbol: str) -> datetime:
    """Listing time of `symbol`; a clear error for anything not in SYMBOLS."""
    try:
        return LISTED_AT[symbol]
    except KeyError:
        raise UnknownSymbolError(f"unknown symbol {symbol!r}; known symbols: {', '.join(SYMBOLS)}") from None


def is_listed(symbol: str, month_end: datetime) -> bool:
    """Whether `symbol` traded at any time before `month_end` (exclusive)."""
    return listed_at(symbol) < month_end
