"""One clock for the live feed, its replay and the live service: real time, or real time run faster.

`Clock(speed=1)` is the wall clock. A faster clock (tests) maps wall time t to `origin + speed x (t - wall_origin)`:
every process given the same spec (`CRPBOT_LIVE_CLOCK=speed@origin@wall_origin`, all unix seconds) reads the
same virtual time, so the replay's trades, its REST candles and the service's minute closes stay consistent.
Durations the service waits (heartbeat staleness, back-off) are virtual seconds too: a compressed run is the
same program on a shorter day.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

CLOCK_ENV = "CRPBOT_LIVE_CLOCK"


@dataclass(frozen=True)
class Clock:
    speed: float = 1.0
    origin: float | None = None  # virtual unix seconds at `wall_origin`
    wall_origin: float = field(default_factory=time.time)

    def __post_init__(self):
        if self.speed <= 0:
            raise ValueError(f"clock speed must be positive, got {self.speed}")

    def now(self) -> float:
        """Virtual unix seconds."""
        wall = time.time()
        if self.speed == 1.0 and self.origin is None:
            return wall
        origin = self.wall_origin if self.origin is None else self.origin
        return origin + self.speed * (wall - self.wall_origin)

    def wall_seconds(self, virtual_seconds: float) -> float:
        """Real seconds that `virtual_seconds` take."""
        return virtual_seconds / self.speed

    def sleep(self, virtual_seconds: float) -> None:
        if virtual_seconds > 0:
            time.sleep(virtual_seconds / self.speed)

    def spec(self) -> str:
        origin = self.wall_origin if self.origin is None else self.origin
        return f"{self.speed!r}@{origin!r}@{self.wall_origin!r}"

    @classmethod
    def parse(cls, spec: str) -> Clock:
        try:
            speed, origin, wall = (float(part) for part in spec.split("@"))
        except ValueError as exc:
            raise ValueError(
                f"{CLOCK_ENV}={spec!r}: expected speed@origin@wall_origin (unix seconds)"
            ) from exc
        return cls(speed, origin, wall)

    @classmethod
    def from_env(cls) -> Clock:
        spec = os.environ.get(CLOCK_ENV)
        return cls.parse(spec) if spec else cls()


def fast_clock(speed: float, origin: float) -> Clock:
    """A clock reading `origin` now and running `speed` times faster than real time."""
    return Clock(speed, origin, time.time())
