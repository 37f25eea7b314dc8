"""Shared fixtures: a replay server on loopback and an isolated Dagster instance + storage per test."""

import os
import shutil
import tempfile

import dagster as dg
import pytest

from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.resources import file_resources

MEMORY_TEMP_ROOT = "/dev/shm"


def _temporary_files_in_memory() -> None:
    """Temporary files of this process (pytest's tmp_path too) go to /dev/shm when it is writable with room to
    spare: the tests' sqlite instances and parquet files then wait for no disk flush, which on this shared disk
    made the same tests 2-5x slower, and by how much varied with the other users' load. An explicit TMPDIR
    wins."""
    if os.environ.get("TMPDIR") or not os.access(MEMORY_TEMP_ROOT, os.W_OK):
        return
    stat = os.statvfs(MEMORY_TEMP_ROOT)
    if stat.f_bavail * stat.f_frsize >= 4 * 2**30:
        tempfile.tempdir = MEMORY_TEMP_ROOT


_temporary_files_in_memory()


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


@pytest.fixture(scope="session")
def empty_sqlite_home(tmp_path_factory):
    """The files of a new, empty sqlite instance, made once: creating its tables costs 0.3-2 s per instance on
    this disk, copying them a few milliseconds."""
    home = tmp_path_factory.mktemp("empty_dagster_home")
    with dg.instance_for_test(temp_dir=str(home)):
        pass
    return home


@pytest.fixture
def instance(tmp_path, empty_sqlite_home):
    """A fresh sqlite instance of this test's own (DAGSTER_HOME points at it while the test runs): for tests
    that need pools, schedule storage or other processes reading the same instance."""
    home = tmp_path / "dagster_home"
    shutil.copytree(empty_sqlite_home, home, dirs_exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def memory_instance(tmp_path, monkeypatch):
    """An in-memory instance (Dagster's ephemeral one: the same SQL storage on an in-memory sqlite database),
    about ten times cheaper per run than `instance`, for tests that need neither pools nor schedule storage
    nor a second process. DAGSTER_HOME points at this test's own folder, as with `instance`, so file locks and
    the file rate limiter stay the test's own."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "yes")
    with dg.DagsterInstance.ephemeral(tempdir=str(home)) as inst:
        yield inst


@pytest.fixture
def storage_resources(tmp_path):
    """io_manager + storage resources writing under this test's tmp dir."""
    return file_resources(str(tmp_path / "data"))
