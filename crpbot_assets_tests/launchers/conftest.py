"""One moto environment for every launcher test: moto's AWS server on loopback (one per session) and, per test,
an empty moto state with the AWS environment pointing at it (credentials, region, endpoint) and boto3's default
session rebuilt from it, so every client the code under test creates talks to moto."""

from types import SimpleNamespace

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto(moto_server, monkeypatch):
    """Empty moto state and this process's AWS environment on it; `env` is that environment (for subprocesses)."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()  # moto's state is global
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_server,
    }
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_EC2", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    boto3.setup_default_session()  # the code's clients come from it: tests register botocore hooks on it
    yield SimpleNamespace(url=moto_server, env=env)
    boto3.DEFAULT_SESSION = None
