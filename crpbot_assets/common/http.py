"""Client-side request pacing and retries shared by every HTTP API client."""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import requests

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class ApiError(RuntimeError):
    """A request failed for good (after retries) or returned something unusable."""


class RateLimiter:
    """Token bucket: `rate` acquisitions per second on average, at most `burst` at once. Thread-safe."""

    def __init__(self, rate: float, burst: int = 1):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate, self.burst = rate, max(1, burst)
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            time.sleep(wait)


@dataclass
class RetryPolicy:
    """Bounded exponential back-off with full jitter; a server's Retry-After wins when longer."""

    max_attempts: int = 6
    base_delay_s: float = 0.25
    max_delay_s: float = 20.0
    timeout_s: float = 10.0

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
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@dataclass
class RequestStats:
    """Counters a resource reports as asset metadata."""

    requests: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, requests: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries


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
    last_problem = "no attempt made"
    for attempt in range(policy.max_attempts):
        if limiter:
            limiter.acquire()
        stats.add(requests=1)
        retry_after = None
        try:
            response = session.get(url, params=params, headers=headers, timeout=policy.timeout_s)
        except (requests.Timeout, requests.ConnectionError) as exc:
            last_problem = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code < 400:
                try:
                    return response.json()
                except ValueError as exc:
                    raise ApiError(f"{described}: response is not JSON ({exc}): {response.text[:200]!r}") from exc
            if response.status_code not in RETRYABLE_STATUS:
                raise ApiError(f"{described}: HTTP {response.status_code}: {response.text[:300]}")
            last_problem = f"HTTP {response.status_code}"
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if attempt + 1 < policy.max_attempts:
            stats.add(retries=1)
            pause = policy.delay(attempt, retry_after)
            if log:
                log(f"{described}: {last_problem}; retry {attempt + 1}/{policy.max_attempts - 1} in {pause:.2f}s")
            time.sleep(pause)
    raise ApiError(f"{described}: gave up after {policy.max_attempts} attempts; last problem: {last_problem}")
