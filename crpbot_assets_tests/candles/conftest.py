"""Candles fixtures: a fast replay server (for tests not about pacing) and tampered variants of it."""

import json

import pytest

from crpbot_assets.candles.resources import CoinbaseResource
from crpbot_assets.replay import coinbase
from crpbot_assets.replay.server import ReplayServer, Response

FAST = {"rate_per_s": 2000.0, "burst": 200}


def fast_coinbase(server: ReplayServer, **overrides) -> CoinbaseResource:
    """A resource pointed at `server`, paced far above 10/s so full months take about half a second: each answer
    of the replay waits ~40 ms on its socket (headers and body go in two writes), so 16 requests in flight."""
    config = {
        "requests_per_second": 400.0,
        "max_workers": 16,
        "base_delay_s": 0.01,
        "timeout_s": 2.0,
        **overrides,
    }
    return CoinbaseResource(base_url=server.url, **config)


def tampered_service(tamper) -> coinbase.ReplayService:
    """The Coinbase replay whose JSON rows pass through `tamper(rows) -> rows` (planted bad data)."""
    service = coinbase.service(**FAST)
    ((method, pattern, handler),) = service.routes

    def tampered(request):
        response = handler(request)
        return Response.json(tamper(json.loads(response.body))) if response.status == 200 else response

    service.routes = [(method, pattern, tampered)]
    return service


@pytest.fixture(scope="module")
def fast_server():
    with ReplayServer([coinbase.service(**FAST)], hang_s=3.0) as server:
        yield server


@pytest.fixture
def fast(fast_server):
    fast_server.clear()
    return fast_server
