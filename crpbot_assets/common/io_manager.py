"""IO manager: one file per asset partition on local disk or S3, written atomically.

The loading rule, one for every input:
- a non-partitioned upstream asset arrives as its value;
- a partitioned upstream asset arrives as `dict[partition_key, value]`, keys sorted (chronological for month
  keys), however many partitions the mapping selects (one included). A partition never materialized fails the
  run, unless the input's metadata says `allow_missing_partitions=True`; then it is left out (and logged).
  Assets that want one frame call `concat_partitions`.
Writing: a one-partition run returns the value, a range run (single-run backfill) {partition_key: value},
each written to its own partition's file.

Why not Dagster's `UPathIOManager` (dagster/_core/storage/upath_io_manager.py), on which dagster-polars'
`PolarsParquetIOManager` is built: its multi-partition loading is the same idea (a dict, the same
`allow_missing_partitions` metadata), but (1) its `handle_output` refuses an output covering several
partitions ("launch the backfill with a multi-run backfill policy"), and every stage here runs ranges as one
run; (2) it writes straight to the final path, while every write here must be atomic (temporary file +
rename, see `common/storage.py`); (3) it needs universal_pathlib/fsspec, which are not installed, where
`Storage` uses pyarrow's filesystems (local and S3), shared with the remote training job; (4) it hands a
single partition over as the bare value, not a one-entry dict, which is the case this rule removes.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from crpbot_assets.common.partitions import symbol_month_partitions
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import CorruptFileError, MissingFileError, Storage

SUFFIX_BY_TYPE = ((pl.DataFrame, ".parquet"), (bytes, ".bin"), (dict, ".json"))


def partition_path(asset_key: dg.AssetKey, partition_key: str | None) -> str:
    """Relative path (without suffix) of one asset partition: `asset/symbol=X/month=Y`."""
    base = "/".join(asset_key.path)
    if partition_key is None:
        return base
    if "|" in partition_key:  # multi-partition keys are "dim1|dim2" in sorted dimension order
        dims = symbol_month_partitions.get_partition_key_from_str(partition_key).keys_by_dimension
        return f"{base}/" + "/".join(f"{name}={dims[name]}" for name in ("symbol", "month"))
    return f"{base}/{partition_key}"


class PartitionedFileIOManager(dg.ConfigurableIOManager):
    """Stores polars frames as parquet, bytes as .bin and dicts as JSON in `storage`, one file per
    partition; loads by the module's rule (partitioned inputs: {partition_key: value}, keys sorted)."""

    storage: StorageResource

    @property
    def files(self) -> Storage:
        return self.storage.storage

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        if context.has_asset_partitions and not context.has_partition_key:
            self._write_partitions(context, obj)
            return
        key = context.partition_key if context.has_partition_key else None
        uri = self._write_one(context.asset_key, key, obj)
        context.add_output_metadata({"path": dg.MetadataValue.path(uri)})

    def _write_one(self, asset_key: dg.AssetKey, partition_key: str | None, obj) -> str:
        suffix = next((s for t, s in SUFFIX_BY_TYPE if isinstance(obj, t)), None)
        if suffix is None:
            raise TypeError(f"{asset_key.to_user_string()}: cannot store {type(obj).__name__}")
        storage = self.files
        write = {".parquet": storage.write_parquet, ".bin": storage.write_bytes, ".json": storage.write_json}[
            suffix
        ]
        return write(partition_path(asset_key, partition_key) + suffix, obj)

    def _write_partitions(self, context: dg.OutputContext, obj) -> None:
        """A multi-partition run's output: {partition_key: value} holding exactly the run's partitions."""
        name = context.asset_key.to_user_string()
        expected = {str(key) for key in context.asset_partition_keys}
        if not isinstance(obj, dict) or {str(key) for key in obj} != expected:
            got = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise TypeError(
                f"{name}: a run over {len(expected)} partitions must return a dict keyed by exactly "
                f"those partition keys; got {got}"
            )
        for key, value in obj.items():
            self._write_one(context.asset_key, str(key), value)
        context.add_output_metadata(
            {"path": dg.MetadataValue.path(self.files.uri(partition_path(context.asset_key, None)))}
        )

    def _load_one(self, asset_key: dg.AssetKey, partition_key: str | None):
        storage = self.files
        base = partition_path(asset_key, partition_key)
        where = (
            f"partition {partition_key!r} of " if partition_key else ""
        ) + f"asset {asset_key.to_user_string()}"
        for suffix, read in (
            (".parquet", storage.read_parquet),
            (".json", storage.read_json),
            (".bin", storage.read_bytes),
        ):
            if storage.exists(base + suffix):
                try:
                    return read(base + suffix)
                except CorruptFileError as exc:
                    raise CorruptFileError(f"{where}: {exc}") from exc
        raise MissingFileError(f"{where} is not materialized (no file at {storage.uri(base)}.*)")

    def load_input(self, context: dg.InputContext):
        asset_key = context.asset_key
        if not context.has_asset_partitions:
            return self._load_one(asset_key, None)
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        loaded = {}
        for key in sorted(context.asset_partition_keys):
            try:
                loaded[key] = self._load_one(asset_key, key)
            except MissingFileError:
                if not allow_missing:
                    raise
                context.log.warning(f"{asset_key.to_user_string()} partition {key} not materialized; skipped")
        return loaded


def concat_partitions(frames: dict[str, pl.DataFrame], empty: pl.DataFrame | None = None) -> pl.DataFrame:
    """The rows of every partition in one frame, in partition-key order; `empty` (default: no columns) when
    there is no partition. Empty partitions are left out unless all are empty, so a schema survives."""
    values = [frames[key] for key in sorted(frames)]
    if not values:
        return pl.DataFrame() if empty is None else empty
    return pl.concat([v for v in values if v.height] or values[:1], how="vertical_relaxed")
