"""The replay HTTP server: loopback stand-ins for the external APIs, with rate limits and injectable faults.

Each external API is a `ReplayService` (its routes and its own rate limit); the server routes requests,
enforces per-client limits with 429 + Retry-After, and applies faults queued through `inject()` or
`POST /_replay/faults {"service", "fault", "count"}`; `DELETE /_replay/faults` (or `clear_faults()`) drops
those still queued. Generic faults: "429", "500", "503", "timeout" (hang past the client's timeout); each
service adds its own (`ReplayService.faults`: "malformed" everywhere, and
Coinbase's "message" and "empty"). Without injected faults every service already behaves as the real one
does where crpbot knows it (see README.md in this folder, the fidelity table).

A development and test double: nothing the product runs (definitions, the training entry point, the EC2 job)
imports this package.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from crpbot_assets.common.http import RateLimiter
from crpbot_assets.replay import coinbase, fear_greed, reddit, trends
from crpbot_assets.replay.protocol import Handler, ReplayService, Request, Response

__all__ = ["ReplayServer", "ReplayService", "Request", "Response", "default_services", "main"]
GENERIC_FAULTS = ("429", "500", "503", "timeout")  # acted out by the server for every service


class _TokenBuckets:
    """Server-side limits: one `RateLimiter` (the clients' token bucket) per (service, client)."""

    def __init__(self):
        self._limiters: dict[tuple[str, str], RateLimiter] = {}
        self._lock = threading.Lock()

    def take(self, service: ReplayService, client: str) -> float:
        """0.0 when the request may pass, else the seconds until the client's next token."""
        if not service.rate_per_s:
            return 0.0
        with self._lock:
            limiter = self._limiters.setdefault(
                (service.name, client), RateLimiter(service.rate_per_s, service.burst)
            )
        return limiter.try_acquire()


class ReplayServer:
    """Serves `services` on loopback; use as a context manager or start()/stop()."""

    def __init__(
        self,
        services: list[ReplayService] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        hang_s: float = 30.0,
    ):
        self.services = services if services is not None else default_services()
        self.hang_s = hang_s
        self._faults: dict[str, deque[str]] = defaultdict(deque)
        self._buckets = _TokenBuckets()
        self._lock = threading.Lock()
        self.stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.request_log: list[tuple[float, str, str, int]] = []  # (monotonic time, path, method, status)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._routes = [
            (svc, method, re.compile(pattern + r"\Z"), handler)
            for svc in self.services
            for method, pattern, handler in svc.routes
        ]
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ReplayServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="replay-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def inject(self, service: str, fault: str, count: int = 1) -> None:
        """Make the next `count` requests to `service` fail with `fault`."""
        known = {s.name: s for s in self.services}
        if service not in known:
            raise ValueError(f"unknown service {service!r}; serving {sorted(known)}")
        allowed = GENERIC_FAULTS + known[service].faults
        if fault not in allowed:
            raise ValueError(f"unknown fault {fault!r} for {service}; choose from {allowed}")
        with self._lock:
            self._faults[service].extend([fault] * count)

    def clear(self) -> None:
        """Forget queued faults, counters and the request log."""
        self.clear_faults()
        with self._lock:
            self.stats.clear()
            self.request_log.clear()

    def clear_faults(self) -> dict[str, int]:
        """Drop every queued fault (those a finished run did not consume); returns how many per service."""
        with self._lock:
            dropped = {service: len(queue) for service, queue in self._faults.items() if queue}
            self._faults.clear()
        return dropped

    def _next_fault(self, service: str) -> str | None:
        with self._lock:
            queue = self._faults.get(service)
            return queue.popleft() if queue else None

    def _control(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/_replay/faults":
            try:
                spec = json.loads(request.body or b"{}")
                self.inject(spec["service"], str(spec["fault"]), int(spec.get("count", 1)))
            except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
                return Response.error(
                    400, f"bad fault spec {request.body[:200]!r}: {type(exc).__name__}: {exc}"
                )
            return Response.json({"queued": spec})
        if request.method == "DELETE" and request.path == "/_replay/faults":
            return Response.json({"dropped": self.clear_faults()})
        if request.path == "/_replay/stats":
            return Response.json({name: dict(values) for name, values in self.stats.items()})
        return Response.error(404, f"no control endpoint {request.path}")

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/_replay/"):
            return self._control(request)
        for svc, method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                return self._serve(svc, handler, request, match)
        return Response.error(404, f"replay server has no route for {request.method} {request.path}")

    def _count(self, service: str, counter: str) -> None:
        with self._lock:  # handler threads run concurrently: `+=` on a shared dict is not atomic
            self.stats[service][counter] += 1

    def _serve(self, svc: ReplayService, handler: Handler, request: Request, match: re.Match) -> Response:
        with self._lock:
            stats = self.stats[svc.name]
            self._in_flight[svc.name] += 1
            stats["requests"] += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], self._in_flight[svc.name])
        try:
            wait = self._buckets.take(svc, request.client)
            if wait:
                self._count(svc.name, "rate_limited")
                return Response.error(429, "Too Many Requests", **{"Retry-After": f"{max(wait, 0.05):.2f}"})
            fault = self._next_fault(svc.name)
            if fault in ("429", "500", "503"):
                self._count(svc.name, f"fault_{fault}")
                headers = {"Retry-After": "0.1"} if fault == "429" else {}
                return Response.error(int(fault), f"injected fault {fault}", **headers)
            if fault == "timeout":
                self._count(svc.name, "fault_timeout")
                time.sleep(self.hang_s)
            request.match = match
            request.fault = fault if fault in svc.faults else None
            return handler(request)
        finally:
            with self._lock:
                self._in_flight[svc.name] -= 1

    def _handler_class(self):
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK wait

            def _handle(self):
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command,
                    parsed.path,
                    {k: v[-1] for k, v in parse_qs(parsed.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                    self.client_address[0],
                )
                try:
                    response = server.dispatch(request)
                except Exception as exc:  # a bug in a replay handler: answer 500 rather than hang the client
                    response = Response.error(500, f"replay handler error: {type(exc).__name__}: {exc}")
                with server._lock:
                    server.request_log.append(
                        (time.monotonic(), request.path, request.method, response.status)
                    )
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", response.content_type)
                    self.send_header("Content-Length", str(len(response.body)))
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (e.g. its timeout fired during a "timeout" fault)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *args):
                pass

        return _Handler


def default_services(seed: int = 0) -> list[ReplayService]:
    """Every service crpbot talks to, with deterministic data from `seed`."""
    return [coinbase.service(seed), fear_greed.service(seed), reddit.service(seed), trends.service(seed)]


def main(argv: list[str] | None = None) -> None:
    """Console entry point `crpbot-replay`: serve every replayed API until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ws-port", type=int, default=8766, help="Coinbase market-data WebSocket; 0: none")
    args = parser.parse_args(argv)
    server = ReplayServer(default_services(args.seed), args.host, args.port)
    print(
        f"crpbot replay server on {server.url} (services: {', '.join(s.name for s in server.services)})",
        flush=True,
    )
    if args.ws_port:
        from crpbot_assets.replay.coinbase_ws import CoinbaseFeed

        feed = CoinbaseFeed(args.seed, host=args.host, port=args.ws_port).start()
        print(f"crpbot replay Coinbase WebSocket on {feed.url}", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
