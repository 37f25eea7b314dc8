"""A throw-away PostgreSQL server on loopback (Debian's package), for the deploy test and the features-backfill
benchmark: the production instance's storage, started and stopped by the caller."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "dagster"  # trust authentication: any password works


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is needed (Debian package postgresql)")
    return found


@contextmanager
def throwaway_postgres(prefix: str = "crpbot-pg-") -> Iterator[int]:
    """Start a server (as the postgres user when we are root) on a free port; yield the port; stop it and
    delete its files."""
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix=prefix))
    if as_user:
        shutil.chown(data, "postgres", "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = str(data / "db")
    try:
        subprocess.run(
            [*as_user, _pg_bin("initdb"), "-D", db, "-U", USER, "--auth=trust"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*as_user, _pg_bin("pg_ctl"), "-D", db, "-l", str(data / "log"), "-w", "start"]
            + ["-o", f"-p {port} -k {data} -h 127.0.0.1"],
            check=True,
            capture_output=True,
        )
        yield port
    finally:
        if os.path.exists(db):
            subprocess.run(
                [*as_user, _pg_bin("pg_ctl"), "-D", db, "-m", "immediate", "stop"], capture_output=True
            )
        shutil.rmtree(data, ignore_errors=True)
