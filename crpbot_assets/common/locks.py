"""Cross-process locks (`flock`) for read-modify-write of one stored file, and for one-time set-up.

A lock is a file in a folder: every process that opens the same file shares it, whichever Dagster instance it
belongs to. Locks on stored partitions live with the files (`Storage.lock_folder()`: beside them on local disk),
so every instance sharing a storage folder shares them; others default to `$DAGSTER_HOME/locks`.
"""

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
    """`$DAGSTER_HOME/locks` (shared by the instance's processes), else a per-machine temporary folder."""
    home = os.environ.get("DAGSTER_HOME")
    return Path(home) / "locks" if home else Path(tempfile.gettempdir()) / "crpbot-locks"


@contextmanager
def exclusive(name: str, log=None, folder: str | Path | None = None) -> Iterator[float]:
    """Hold the lock `name` of `folder` (default `lock_dir()`), blocking; yields the seconds spent waiting.
    A process killed while holding it releases it (the kernel drops a dead process's flocks)."""
    folder = Path(folder) if folder is not None else lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock")
    started = time.monotonic()
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"waiting for lock {name} ({path}: another process holds it)")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
