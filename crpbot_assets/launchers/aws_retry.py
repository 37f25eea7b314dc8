"""AWS error codes and the retry rule of every EC2/S3 call the launcher makes.

Real AWS is eventually consistent and rate-limited: describe/terminate retry NotFound and throttling with bounded
back-off; a launch retries quota and capacity errors (nothing was launched, and waiting may help).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import botocore.exceptions

from crpbot_assets.common.http import RequestStats, RetryPolicy, call_with_retries

T = TypeVar("T")
NOT_FOUND = "InvalidInstanceID.NotFound"
THROTTLING = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"}
)
# quota and capacity: nothing was launched, and waiting may help (another run ends, AWS frees capacity)
CAPACITY = frozenset(
    {
        "VcpuLimitExceeded",
        "InsufficientInstanceCapacity",
        "InstanceLimitExceeded",
        "MaxSpotInstanceCountExceeded",
    }
)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (None for anything else)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def transient(exc: BaseException, codes: frozenset[str] = THROTTLING) -> bool:
    """Worth retrying: one of `codes`, or a connection/timeout error before AWS answered."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return error_code(exc) in codes
    return isinstance(exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError))


class NotYet(Exception):
    """A condition polled with back-off does not hold yet."""


def api_call(
    what: str,
    call: Callable[[], T],
    policy: RetryPolicy,
    stats: RequestStats,
    log: Callable[[str], None],
    codes: frozenset[str] = THROTTLING,
) -> T:
    """`call` with the back-off of `policy` for `codes`, throttling, connection errors and `NotYet`; then
    `ApiError` naming `what`."""
    return call_with_retries(
        what,
        call,
        lambda exc: isinstance(exc, NotYet) or transient(exc, codes | THROTTLING),
        policy,
        stats,
        log,
    )
