"""Whether a process of this machine still runs, and since when (procfs; no Dagster, so storage can use it)."""

from __future__ import annotations

import os
from functools import cache

PID_REUSE_SLACK_S = 2.0  # a process started this long after it was recorded is another one with a reused pid


def process_alive(pid: int) -> bool:
    """True while process `pid` of this machine runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    stat = _stat_fields(pid)
    return stat is None or stat[0] != "Z"  # no procfs (macOS): kill(0) answered


def started_at(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), None when unknown (no procfs, or gone)."""
    stat = _stat_fields(pid)
    boot = _boot_time()
    if stat is None or boot is None:
        return None
    return boot + int(stat[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of /proc/<pid>/stat


def alive_since(pid: int, seen_at: float) -> bool:
    """True when the process that was `pid` at `seen_at` (seconds since the epoch) still runs: `pid` is
    alive and did not start after `seen_at` (a pid reused by a later process does not count)."""
    if not process_alive(pid):
        return False
    start = started_at(pid)
    return start is None or start <= seen_at + PID_REUSE_SLACK_S


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), None without them."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


@cache
def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as stat:
            return next(float(line.split()[1]) for line in stat if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
