"""IO manager: one file per asset partition on local disk or S3, written atomically."""

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
    """Stores polars frames as parquet, bytes as .bin and dicts as JSON under `base_uri`.

    Loading several upstream partitions returns one frame concatenated in partition order
    (dicts/bytes: a {partition_key: value} mapping); an input annotated as a `dict` always gets the
    {partition_key: value} mapping. An input with metadata `allow_missing_partitions=True` skips
    partitions never materialized. A run over several partitions (single-run backfill) returns a
    {partition_key: value} mapping, and each value is written to its own partition's file.
    """

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
        storage, base = self.files, partition_path(asset_key, partition_key)
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
        keys = sorted(context.asset_partition_keys)
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        loaded = {}
        for key in keys:
            try:
                loaded[key] = self._load_one(asset_key, key)
            except MissingFileError:
                if not allow_missing:
                    raise
                context.log.warning(f"{asset_key.to_user_string()} partition {key} not materialized; skipped")
        if _wants_mapping(context):
            return loaded
        values = list(loaded.values())
        if values and all(isinstance(v, pl.DataFrame) for v in values):
            non_empty = [v for v in values if v.height] or values[:1]
            return pl.concat(non_empty, how="vertical_relaxed")
        if not values and len(keys) > 0 and allow_missing:
            return pl.DataFrame()
        return loaded if len(keys) != 1 else values[0]


def _wants_mapping(context: dg.InputContext) -> bool:
    """Whether the input is annotated as a dict (one value per partition key)."""
    try:
        typing_type = context.dagster_type.typing_type
    except dg.DagsterInvariantViolationError:  # contexts built without a type (build_input_context)
        return False
    return typing_type is dict or getattr(typing_type, "__origin__", None) is dict
