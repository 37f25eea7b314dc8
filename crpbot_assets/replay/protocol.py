"""What the replay server and its services exchange: requests, responses and a service's description.

Its own module so that each service imports these types without importing the server (which imports every
service): no import circle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    client: str
    match: re.Match | None = None
    fault: str | None = (
        None  # a queued service fault (one of the service's `faults`) the handler must act out
    )

    @property
    def malformed(self) -> bool:
        """A queued "malformed" fault: the handler must answer with a broken payload."""
        return self.fault == "malformed"

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value, status: int = 200, **headers) -> Response:
        return cls(status, json.dumps(value).encode(), headers=headers)

    @classmethod
    def error(cls, status: int, message: str, **headers) -> Response:
        return cls.json({"message": message}, status, **headers)


Handler = Callable[[Request], Response]


@dataclass
class ReplayService:
    """One external API: a name, (method, path regex, handler) routes, a per-client rate limit and the faults
    its handlers act out beyond the server's generic ones (e.g. Coinbase's "message" and "empty")."""

    name: str
    routes: list[tuple[str, str, Handler]]
    rate_per_s: float | None = None
    burst: int = 1
    faults: tuple[str, ...] = ("malformed",)
