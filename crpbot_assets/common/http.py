"""Request pacing and retries shared by every HTTP API client (and the replay server's rate limits).

Retries: crpbot keeps this small loop (`call_with_retries`) rather than urllib3's `Retry` or tenacity.
- urllib3's `Retry` retries inside the transport adapter, below the token bucket: a retried request would skip
  `RateLimiter.acquire()` and burst past Coinbase's 10 requests/s, and its retries are invisible to the
  `RequestStats` counters the assets report. pytrends cannot use it either (its own `Retry(method_whitelist=)`
  crashes with urllib3 2, so pytrends runs with retries=0).
- tenacity would wrap the same three decisions (which errors, how long, how often) in a new dependency for one
  25-line loop that every client already shares.
- Exactly one layer retries each failure. Plain HTTP (Coinbase, alternative.me) and pytrends retry only here.
  Under praw, prawcore already retries 5xx answers and connection errors/read timeouts twice on its own; the
  Reddit client therefore retries only what prawcore does not (429 Too Many Requests), so a 5xx is never
  retried 3 x 4 times. See `sentiment.reddit_client`.

Pacing: `RateLimiter` is the one token bucket. Clients block on `acquire()`; the replay server asks
`try_acquire()` and answers 429 with the returned wait as Retry-After.
"""

from __future__ import annotations

import email.utils
import fcntl
import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import requests

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
T = TypeVar("T")


class ApiError(RuntimeError):
    """A request failed for good (after retries) or returned something unusable."""


class RateLimiter:
    """Token bucket: `rate` acquisitions per second on average, at most `burst` at once. Thread-safe."""

    def __init__(self, rate: float, burst: int = 1):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def try_acquire(self) -> float:
        """Take a token if one is available (returns 0.0), else the seconds until one will be (takes nothing)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate

    def acquire(self) -> None:
        """Block until a token is taken."""
        while wait := self.try_acquire():
            time.sleep(wait)


class SharedRateLimiter:
    """Token bucket shared by every process and thread of this machine that uses the same `path`: its state
    (tokens, last refill, wall clock) lives in a small JSON file updated under an exclusive `flock`, so
    concurrent runs (a backfill and the schedule) share one API limit instead of each taking all of it."""

    def __init__(self, path: str | Path, rate: float, burst: int = 1):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.path = Path(path)
        self.rate = rate
        self.burst = max(1, burst)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _take(self) -> float:
        """Take a token if one is there (0.0), else the seconds until one will be."""
        with open(self.path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            handle.seek(0)
            try:
                state = json.loads(handle.read() or "{}")
            except json.JSONDecodeError:  # a torn write cannot happen under the lock; start over if edited
                state = {}
            now = time.time()
            last = min(float(state.get("last", now)), now)
            tokens = min(self.burst, float(state.get("tokens", self.burst)) + (now - last) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            if not wait:
                tokens -= 1
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"tokens": tokens, "last": now}))
            handle.flush()
            return wait

    def acquire(self) -> None:
        while wait := self._take():
            time.sleep(wait)


def rate_limiter(service: str, rate: float, burst: int = 1) -> RateLimiter | SharedRateLimiter:
    """The limiter for one external API: shared by every process of the Dagster instance (a file under
    `$DAGSTER_HOME/rate_limits/`) when DAGSTER_HOME is set, else this process's own."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return RateLimiter(rate, burst)
    return SharedRateLimiter(Path(home) / "rate_limits" / f"{service}.json", rate, burst)


@dataclass
class RetryPolicy:
    """Bounded exponential back-off with full jitter; a server's Retry-After wins when longer.

    `max_attempts` bounds retries of errors; with `max_rate_limited_wait_s`, 429s (sustained contention) are
    retried beyond it for as long as the total back-off stays within that many seconds."""

    max_attempts: int = 6
    base_delay_s: float = 0.25
    max_delay_s: float = 20.0
    timeout_s: float = 10.0
    max_rate_limited_wait_s: float | None = None

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))
        return max(backoff, retry_after or 0.0)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass
class RequestStats:
    """Counters a resource reports as asset metadata."""

    requests: int = 0
    retries: int = 0
    waited_s: float = 0.0  # back-off slept before retries, summed over threads
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, requests: int = 0, retries: int = 0, waited_s: float = 0.0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.waited_s += waited_s


class RetryableStatus(Exception):
    """An HTTP answer worth retrying (429/5xx), with the server's Retry-After if it sent one."""

    def __init__(self, status: int, retry_after: float | None):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def call_with_retries(
    what: str,
    call: Callable[[], T],
    retryable: Callable[[Exception], float | None | bool],
    policy: RetryPolicy,
    stats: RequestStats,
    log=None,
) -> T:
    """Run `call`, retrying exceptions `retryable` accepts (it returns Retry-After seconds, None or True for
    "retry", False for "fatal") with the policy's bounded jittered back-off; then an ApiError naming `what`
    with the attempts made and the time waited."""
    problem = "no attempt made"
    attempt = 0
    waited = 0.0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified by `retryable`
            verdict = retryable(exc)
            if verdict is False:
                raise
            problem = str(exc) if isinstance(exc, RetryableStatus) else f"{type(exc).__name__}: {exc}"
            retry_after = verdict if isinstance(verdict, float) else None
            rate_limited = isinstance(exc, RetryableStatus) and exc.status == 429
        pause = policy.delay(min(attempt - 1, 30), retry_after)
        budget = policy.max_rate_limited_wait_s
        if rate_limited and budget is not None:
            give_up = waited + pause > budget
        else:
            give_up = attempt >= policy.max_attempts
        if give_up:
            raise ApiError(
                f"{what}: gave up after {attempt} attempts; last problem: {problem} ({waited:.1f}s of back-off)"
            )
        stats.add(retries=1, waited_s=pause)
        if log:
            log(f"{what}: {problem}; retry {attempt} in {pause:.2f}s ({waited + pause:.1f}s waited so far)")
        time.sleep(pause)
        waited += pause


def _http_retryable(exc: Exception) -> float | None | bool:
    if isinstance(exc, RetryableStatus):
        return exc.retry_after
    return None if isinstance(exc, (requests.Timeout, requests.ConnectionError)) else False


def get_json(
    session: requests.Session,
    url: str,
    *,
    params: dict | None = None,
    headers: dict | None = None,
    limiter: RateLimiter | None = None,
    policy: RetryPolicy | None = None,
    stats: RequestStats | None = None,
    log=None,
):
    """GET `url` and decode JSON, pacing by `limiter`, retrying 429/5xx/timeouts per `policy`."""
    policy = policy or RetryPolicy()
    stats = stats if stats is not None else RequestStats()
    described = f"GET {url} params={params or {}}"

    def attempt():
        if limiter:
            limiter.acquire()
        stats.add(requests=1)
        response = session.get(url, params=params, headers=headers, timeout=policy.timeout_s)
        if response.status_code in RETRYABLE_STATUS:
            raise RetryableStatus(
                response.status_code, parse_retry_after(response.headers.get("Retry-After"))
            )
        if response.status_code >= 400:
            raise ApiError(f"{described}: HTTP {response.status_code}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(f"{described}: response is not JSON ({exc}): {response.text[:200]!r}") from exc

    return call_with_retries(described, attempt, _http_retryable, policy, stats, log)
