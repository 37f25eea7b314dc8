"""Atomic file storage on local disk or S3 (pyarrow.fs); no Dagster import, so remote jobs can use it."""

from __future__ import annotations

import io
import json
import os
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import polars as pl
import pyarrow.fs as pafs


class CorruptFileError(RuntimeError):
    """A stored file exists but cannot be decoded."""


class MissingFileError(FileNotFoundError):
    """A stored file that was expected is absent."""


@dataclass(frozen=True)
class Storage:
    """Files under `base_uri` (a local path or `s3://bucket/prefix`); every write is all-or-nothing."""

    base_uri: str
    s3_endpoint_url: str | None = None
    s3_region: str | None = None

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

    def uri(self, relative: str) -> str:
        """Full URI of a relative path, for metadata and for remote jobs."""
        return f"{self.base_uri.rstrip('/')}/{relative}"

    def exists(self, relative: str) -> bool:
        fs, root = self._fs_and_root()
        return fs.get_file_info(f"{root}/{relative}").type == pafs.FileType.File

    def write_bytes(self, relative: str, data: bytes) -> str:
        """Write atomically: a temporary sibling renamed into place (S3 puts are atomic already)."""
        fs, root = self._fs_and_root()
        final = f"{root}/{relative}"
        if self.is_s3:  # S3 has no directories (creating them would leave marker objects)
            with fs.open_output_stream(final) as out:
                out.write(data)
            return self.uri(relative)
        fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        tmp = f"{final}.tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return self.uri(relative)

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
        frame.write_parquet(buffer, compression="zstd", statistics=True)
        return self.write_bytes(relative, buffer.getvalue())

    def read_parquet(self, relative: str) -> pl.DataFrame:
        data = self.read_bytes(relative)
        try:
            return pl.read_parquet(io.BytesIO(data))
        except Exception as exc:  # polars raises ComputeError/OSError variants for bad files
            raise CorruptFileError(f"corrupt parquet file {self.uri(relative)}: {exc}") from exc

    def write_json(self, relative: str, value: dict) -> str:
        return self.write_bytes(relative, json.dumps(value, indent=2, default=str).encode())

    def read_json(self, relative: str) -> dict:
        data = self.read_bytes(relative)
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise CorruptFileError(f"corrupt JSON file {self.uri(relative)}: {exc}") from exc
