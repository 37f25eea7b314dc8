"""Shared fixtures: a replay server on loopback and an isolated Dagster instance + storage per test."""

import dagster as dg
import pytest

from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.resources import file_resources


@pytest.fixture(scope="session")
def replay():
    """One replay server (every service) for the session; faults and counters are cleared per test."""
    with ReplayServer(hang_s=3.0) as server:
        yield server


@pytest.fixture
def replay_server(replay):
    replay.clear()
    yield replay
    replay.clear()


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster_home").mkdir(exist_ok=True)  # instance_for_test writes dagster.yaml into it
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as inst:
        yield inst


@pytest.fixture
def storage_resources(tmp_path):
    """io_manager + storage resources writing under this test's tmp dir."""
    return file_resources(str(tmp_path / "data"))
