"""The code location as Dagster tools see it: CLI validation and the webserver's GraphQL API."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Every test here starts `dagster` or `dagster-webserver` as a real process.
pytestmark = pytest.mark.slow
EXPECTED_ASSETS = {
    "candles",
    "features",
    "sentiment_features",
    "training_dataset",
    "lstm_model",
    "model_evaluation",
}


def _env(tmp_path, **extra) -> dict:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    return {**os.environ, "DAGSTER_HOME": str(home), "CRPBOT_STORAGE_URI": str(tmp_path / "data"), **extra}


@pytest.mark.parametrize("crpbot_env", ["local", "public", "prod"])
def test_definitions_validate(tmp_path, crpbot_env):
    result = subprocess.run(
        [BIN / "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=_env(tmp_path, CRPBOT_ENV=crpbot_env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_environment_is_rejected(tmp_path):
    result = subprocess.run(
        [BIN / "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=_env(tmp_path, CRPBOT_ENV="staging"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "CRPBOT_ENV='staging'" in result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_webserver_serves_the_asset_graph(tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [BIN / "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                nodes = _graphql(
                    url,
                    "{ assetNodes { assetKey { path } isPartitioned "
                    "partitionKeysByDimension { name partitionKeys } dependencyKeys { path } } }",
                )
                if nodes.get("data", {}).get("assetNodes"):
                    break
            except OSError:
                pass
            assert server.poll() is None, "dagster-webserver exited"
            assert time.monotonic() < deadline, "dagster-webserver did not serve the asset graph in time"
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    by_key = {"/".join(node["assetKey"]["path"]): node for node in nodes["data"]["assetNodes"]}
    assert EXPECTED_ASSETS <= set(by_key)
    candles = by_key["candles"]
    dims = {d["name"]: d["partitionKeys"] for d in candles["partitionKeysByDimension"]}
    assert candles["isPartitioned"] and set(dims["symbol"]) == {"BTC-USD", "ETH-USD", "SOL-USD"}
    assert dims["month"][0] == "2018-11-01"
    assert {"candles"} <= {"/".join(d["path"]) for d in by_key["features"]["dependencyKeys"]}
