"""Cross-process locks for read-modify-write of one stored partition (every run of an instance shares them)."""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_dir() -> Path:
    """`$DAGSTER_HOME/locks` (shared by the instance's runs), else a per-machine temporary folder."""
    home = os.environ.get("DAGSTER_HOME")
    return Path(home) / "locks" if home else Path(tempfile.gettempdir()) / "crpbot-locks"


@contextmanager
def exclusive(name: str, log=None) -> Iterator[float]:
    """Hold the machine-wide lock `name` (blocking); yields the seconds spent waiting for it."""
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock")
    started = time.monotonic()
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"waiting for lock {name} (another run is writing it)")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
