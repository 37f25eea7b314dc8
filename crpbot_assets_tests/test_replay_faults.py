"""Queued replay faults can be dropped over HTTP, so faults a run did not consume do not hit the next one."""

import requests

from crpbot_assets.replay.protocol import ReplayService, Response
from crpbot_assets.replay.server import ReplayServer


def test_queued_faults_are_dropped_by_delete_and_requests_then_pass():
    service = ReplayService("echo", [("GET", r"/ping", lambda request: Response.json("pong"))])
    with ReplayServer([service]) as server:
        queued = requests.post(
            f"{server.url}/_replay/faults", json={"service": "echo", "fault": "503", "count": 3}
        )
        assert queued.status_code == 200
        assert requests.get(f"{server.url}/ping").status_code == 503  # a run consumed one, then ended
        dropped = requests.delete(f"{server.url}/_replay/faults")
        assert dropped.status_code == 200 and dropped.json() == {"dropped": {"echo": 2}}
        assert [requests.get(f"{server.url}/ping").status_code for _ in range(3)] == [200, 200, 200]
        assert requests.delete(f"{server.url}/_replay/faults").json() == {"dropped": {}}
        assert server.stats["echo"]["requests"] == 4  # counters are kept (clear() resets those too)
