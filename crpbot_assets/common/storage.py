"""Atomic file storage on local disk or S3 (pyarrow.fs); no Dagster import, so remote jobs can use it.

Local writes go to a temporary sibling `<name>.tmp-<host>-<pid>-<uuid>` renamed into place. A writer killed
before the rename leaves its temporary file; the next write to the same directory removes it: at once when its
writer was a process of this host that no longer exists, else once it is older than `tmp_grace_s` (a writer on
another host sharing the disk). A live writer's file survives. S3 puts are atomic by themselves.

`CRPBOT_STORAGE_TEST_HOOK` (tests only) stops a write at a chosen point so kill tests are deterministic:
`<stage>:<action>:<path substring>`, stage `mid-write` (half the bytes in the temporary file) or `after-write`
(renamed into place), action `pause` (write its pid to the file named by `CRPBOT_STORAGE_TEST_SIGNAL`, then
sleep until killed) or `enospc` (raise OSError(ENOSPC) as the OS does, without a file name: a full disk).

A failed local write raises the OS's error (same errno and type) naming the file it was writing.
"""

from __future__ import annotations

import errno
import io
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlparse

import polars as pl
import pyarrow.fs as pafs

from crpbot_assets.common.processes import process_alive


class CorruptFileError(RuntimeError):
    """A stored file exists but cannot be decoded."""


class MissingFileError(FileNotFoundError):
    """A stored file that was expected is absent."""


TMP_MARK = ".tmp-"
TMP_GRACE_S = 3600.0  # a temporary file untouched this long belongs to a dead writer
TEST_HOOK_ENV = "CRPBOT_STORAGE_TEST_HOOK"
TEST_SIGNAL_ENV = "CRPBOT_STORAGE_TEST_SIGNAL"


def _test_hook(stage: str, relative: str) -> None:
    """Tests only: pause (until killed) or fail with ENOSPC at `stage` of writing `relative`."""
    spec = os.environ.get(TEST_HOOK_ENV)
    if not spec:
        return
    hook_stage, action, needle = spec.split(":", 2)
    if hook_stage != stage or needle not in relative:
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if action == "pause":
        signal_path = os.environ[TEST_SIGNAL_ENV]  # renamed into place: once it exists, it holds the pid
        with open(f"{signal_path}.part", "w") as signal_file:
            signal_file.write(f"{stage} {relative} pid {os.getpid()}\n")
        os.replace(f"{signal_path}.part", signal_path)
        while True:
            time.sleep(60)
    raise ValueError(f"{TEST_HOOK_ENV}={spec!r}: action must be pause or enospc")


def temp_name(final: str) -> str:
    """The temporary sibling of `final` this process writes: names its host and process."""
    return f"{final}{TMP_MARK}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"


def _writer_is_gone(name: str) -> bool:
    """True when the temporary file `name` was written by a process of this host that has exited."""
    owner = name.split(TMP_MARK, 1)[1].rsplit("-", 2)
    if len(owner) != 3 or owner[0] != socket.gethostname() or not owner[1].isdigit():
        return False
    return not process_alive(int(owner[1]))


def sweep_stale_temps(directory: str, grace_s: float) -> list[str]:
    """Remove the `*.tmp-*` files in `directory` of dead writers (see the module docstring); returns their
    names."""
    removed = []
    cutoff = time.time() - grace_s
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if TMP_MARK not in entry.name or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if _writer_is_gone(entry.name) or entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.remove(entry.path)
                removed.append(entry.name)
        except FileNotFoundError:  # its writer finished or another sweep won
            continue
    return removed


@dataclass(frozen=True)
class Storage:
    """Files under `base_uri` (a local path or `s3://bucket/prefix`); every write is all-or-nothing."""

    base_uri: str
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    tmp_grace_s: float = TMP_GRACE_S

    @property
    def is_s3(self) -> bool:
        return self.base_uri.startswith("s3://")

    def _fs_and_root(self) -> tuple[pafs.FileSystem, str]:
        if self.is_s3:
            parsed = urlparse(self.base_uri)
            kwargs = {"region": self.s3_region or os.environ.get("AWS_REGION", "us-east-1")}
            endpoint = (
                self.s3_endpoint_url
                or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL")
            )
            if endpoint:
                url = urlparse(endpoint)
                kwargs.update(endpoint_override=url.netloc, scheme=url.scheme or "https")
            return pafs.S3FileSystem(**kwargs), f"{parsed.netloc}{parsed.path}".rstrip("/")
        return pafs.LocalFileSystem(), os.path.abspath(self.base_uri)

    def lock_folder(self) -> str | None:
        """Where locks on this storage's files live (`common/locks.py`): `.locks/` under a local base, so every
        process of every instance sharing the folder shares them; None on S3, which has no file lock (the
        caller's per-instance default applies)."""
        return None if self.is_s3 else os.path.join(os.path.abspath(self.base_uri), ".locks")

    def uri(self, relative: str) -> str:
        """Full URI of a relative path, for metadata and for remote jobs."""
        return f"{self.base_uri.rstrip('/')}/{relative}"

    def exists(self, relative: str) -> bool:
        return self._file_info(relative) is not None

    def _file_info(self, relative: str) -> pafs.FileInfo | None:
        fs, root = self._fs_and_root()
        info = fs.get_file_info(f"{root}/{relative}")
        return info if info.type == pafs.FileType.File else None

    def stamp(self, relative: str) -> str | None:
        """`size:mtime_ns` of a stored file (None when absent): which write of the file is on disk."""
        info = self._file_info(relative)
        return None if info is None else f"{info.size}:{info.mtime_ns}"

    def size(self, relative: str) -> int | None:
        """Size in bytes of a stored file (None when absent)."""
        info = self._file_info(relative)
        return None if info is None else info.size

    def write_with(self, relative: str, write: Callable[[BinaryIO], None]) -> str:
        """Write atomically what `write(file)` writes into a binary file: a temporary sibling renamed into
        place (S3 puts are atomic already), so a large file streams to disk without its bytes in memory. Stale
        temporary files of killed writers in the same directory are removed first."""
        fs, root = self._fs_and_root()
        final = f"{root}/{relative}"
        if self.is_s3:  # S3 has no directories (creating them would leave marker objects)
            with fs.open_output_stream(final) as out:
                write(out)
            return self.uri(relative)
        directory = final.rsplit("/", 1)[0]
        tmp = temp_name(final)
        try:
            fs.create_dir(directory, recursive=True)
            sweep_stale_temps(directory, self.tmp_grace_s)
            with open(tmp, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except OSError as exc:  # e.g. ENOSPC, which names no file: say which one, and that nothing changed
            raise OSError(
                exc.errno,
                f"{exc.strerror or exc} writing {final} (not written; a previous version is unchanged)",
            ) from exc
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        _test_hook("after-write", relative)
        return self.uri(relative)

    def write_bytes(self, relative: str, data: bytes) -> str:
        """Write `data` atomically (`write_with`)."""

        def write(out: BinaryIO) -> None:
            view = memoryview(data)
            out.write(view[: len(data) // 2])
            _test_hook("mid-write", relative)
            out.write(view[len(data) // 2 :])

        return self.write_with(relative, write)

    def read_bytes(self, relative: str) -> bytes:
        fs, root = self._fs_and_root()
        try:
            with fs.open_input_stream(f"{root}/{relative}") as src:
                return src.read()
        except (FileNotFoundError, OSError) as exc:
            if not self.exists(relative):
                raise MissingFileError(f"no stored file at {self.uri(relative)}") from exc
            raise

    def write_parquet(self, relative: str, frame: pl.DataFrame) -> str:
        buffer = io.BytesIO()
        # zstd level 1, chosen by measurement (features, 1 M rows of Float32; 2 cores, load 4): 0.32 s and
        # 135.7 MB, against 0.41 s / 133.3 MB at zstd's default level 3, 0.26 s / 158 MB lz4, 0.26 s / 164 MB
        # snappy; statistics and row-group size changed nothing measurable (a month is one row group).
        frame.write_parquet(buffer, compression="zstd", compression_level=1, statistics=True)
        return self.write_bytes(relative, buffer.getvalue())

    def read_parquet(self, relative: str) -> pl.DataFrame:
        data = self.read_bytes(relative)
        try:
            return pl.read_parquet(io.BytesIO(data))
        except Exception as exc:  # polars raises ComputeError/OSError variants for bad files
            raise CorruptFileError(f"corrupt parquet file {self.uri(relative)}: {exc}") from exc

    def damaged(self, relative: str) -> bool:
        """True when a stored parquet or JSON file cannot be decoded (truncated, overwritten); other files and
        absent ones are not judged (False). Reads the file: for error messages, not for every load."""
        decode = {".parquet": self.read_parquet, ".json": self.read_json}.get(os.path.splitext(relative)[1])
        if decode is None or not self.exists(relative):
            return False
        try:
            decode(relative)
        except CorruptFileError:
            return True
        return False

    def write_json(self, relative: str, value: dict) -> str:
        return self.write_bytes(relative, json.dumps(value, indent=2, default=str).encode())

    def read_json(self, relative: str) -> dict:
        data = self.read_bytes(relative)
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise CorruptFileError(f"corrupt JSON file {self.uri(relative)}: {exc}") from exc
