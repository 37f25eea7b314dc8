"""The replay server's place in the project: no import circle, and nothing the product runs needs it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import crpbot_assets
from crpbot_assets.common.http import RateLimiter
from crpbot_assets.replay.protocol import ReplayService, Request, Response
from crpbot_assets.replay.server import ReplayServer

PACKAGE = Path(crpbot_assets.__file__).parent


def _module_imports() -> dict[str, set[str]]:
    """crpbot_assets module -> the crpbot_assets modules it imports (any depth in the file, lazy ones included)."""
    modules = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crpbot_assets"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("crpbot_assets"))
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle_in_the_package():
    graph = _module_imports()
    assert "crpbot_assets.replay.protocol" in graph["crpbot_assets.replay.trends"]  # the graph sees imports
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]  # the detector detects
    assert _cycles(graph) == []


def test_only_the_demo_and_the_replay_itself_import_the_replay():
    importers = {
        name
        for name, imported in _module_imports().items()
        if any(m.startswith("crpbot_assets.replay") for m in imported)
    }
    assert {n for n in importers if not n.startswith("crpbot_assets.replay")} == {"crpbot_assets.demo"}


@pytest.mark.slow
def test_what_production_runs_imports_without_the_replay_package():
    """The definitions, the training entry point and the EC2 job import with `crpbot_assets.replay` blocked."""
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "crpbot_assets.replay" or name.startswith("crpbot_assets.replay."):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import crpbot_assets.definitions, crpbot_assets.training.pipes_main, crpbot_assets.launchers.ec2_job
print(sorted(m for m in sys.modules if m.startswith("crpbot_assets.")).__len__())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 20  # the product really was imported


def test_server_limits_with_the_clients_token_bucket():
    limiter = RateLimiter(rate=2.0, burst=2)
    assert limiter.try_acquire() == 0.0 and limiter.try_acquire() == 0.0
    wait = limiter.try_acquire()
    assert 0.4 < wait <= 0.5  # the third token is due 1/rate after the burst, nothing taken meanwhile
    assert 0.4 < limiter.try_acquire() <= 0.5

    service = ReplayService("echo", [("GET", r"/ping", lambda request: Response.json("pong"))], 2.0, 2)
    with ReplayServer([service]) as server:
        statuses = [server.dispatch(_get("/ping")).status for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_faults_are_checked_against_the_service():
    service = ReplayService("echo", [("GET", r"/ping", lambda request: Response.json(request.fault))])
    with ReplayServer([service]) as server:
        with pytest.raises(ValueError, match=r"unknown fault 'empty' for echo"):
            server.inject("echo", "empty")
        server.inject("echo", "malformed")
        assert server.dispatch(_get("/ping")).body == b'"malformed"'
        assert server.dispatch(_get("/ping")).body == b"null"


def _get(path: str) -> Request:
    return Request("GET", path, {}, {}, b"", "127.0.0.1")
