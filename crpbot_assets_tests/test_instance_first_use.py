"""A new DAGSTER_HOME (the repo's dagster.yaml) opened by several processes at the same instant stays usable.

With Dagster's plain sqlite storage, processes creating the tables at once each stamp alembic's version table:
`UNIQUE constraint failed: alembic_version`, then `Version table 'alembic_version' has more than one head
present` for every later command on that home. The project's storage creates them under a file lock
(`common/instance_storage.py`).
"""

import fcntl
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OPENERS = 4

# Imports first (the slow part), then blocks on the `go` file's lock, which the test holds: when it lets go,
# every process wakes at the same instant and creates the storage at once.
OPEN_AT_SIGNAL = """
import fcntl, sys
from pathlib import Path
import dagster as dg
ready, go = Path(sys.argv[1]), open(sys.argv[2])
ready.touch()
fcntl.flock(go, fcntl.LOCK_SH)
with dg.DagsterInstance.get() as instance:
    instance.get_runs(limit=1)
    instance.all_instigator_state()
    instance.event_log_storage.get_concurrency_keys()
print("opened")
"""


@pytest.mark.slow
def test_four_processes_opening_a_new_home_at_once_then_a_fifth_command_works(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the repo's dagster.yaml reads it
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    go = tmp_path / "go"
    gate = open(go, "w")  # noqa: SIM115 - released below
    fcntl.flock(gate, fcntl.LOCK_EX)
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(OPEN_AT_SIGNAL), str(tmp_path / f"ready-{i}"), str(go)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(OPENERS)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(OPENERS)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in openers), "openers did not start"
        time.sleep(0.05)
    time.sleep(0.5)  # each is now blocked on the lock
    gate.close()
    outputs = [p.communicate(timeout=120)[0] for p in openers]
    for process, output in zip(openers, outputs):
        assert process.returncode == 0 and "opened" in output, output[-3000:]

    fifth = subprocess.run(
        [BIN / "dagster", "run", "list"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert fifth.returncode == 0, fifth.stdout[-2000:] + fifth.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:  # and the home works for a run
        assert dg.materialize([dg.asset(name="probe")(lambda: 1)], instance=instance).success
        assert len(instance.get_runs()) == 1
