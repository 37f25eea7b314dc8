"""IO manager: one file per asset partition on local disk or S3, written atomically.

The loading rule, one for every input:
- a non-partitioned upstream asset arrives as its value;
- a partitioned upstream asset arrives as `dict[partition_key, value]`, keys sorted (chronological for month
  keys), however many partitions the mapping selects (one included). A partition never materialized fails the
  run, unless the input's metadata says `allow_missing_partitions=True`; then it is left out (and logged).
  Assets that want one frame call `concat_partitions`. An input whose metadata says `lazy_partitions=True`
  arrives as `LazyPartitions` instead: the same keys, decided the same way when the input is loaded (commit rule,
  missing partitions), each value read and schema-checked only when it is looked up and not kept, so a range run
  holds only the partitions it is working on.
Writing: a one-partition run returns the value; a range run (single-run backfill) goes through
`common/ranges.run_partitions`, which writes and records each partition as soon as it is computed and returns
`CommittedPartitions`; a plain {partition_key: value} is still written here, one file per partition.

Every load follows the commit rule (`common/commits.py`): a file its latest materialization record does not
describe (left by a killed run, or changed outside crpbot: the error says which it can tell) counts as not
materialized. Every stored frame is checked against its asset's `dagster/column_schema` metadata (column names
and dtypes, see `table_schema`); a mismatch names the partition, the column, the expected and the found dtype.

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

from collections.abc import Callable, Iterator, Mapping

import dagster as dg
import polars as pl

from crpbot_assets.common.commits import STAMP_KEY, describes, latest_records, why_not_described
from crpbot_assets.common.partitions import symbol_month_partitions
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import CorruptFileError, MissingFileError, Storage

SUFFIX_BY_TYPE = ((pl.DataFrame, ".parquet"), (bytes, ".bin"), (dict, ".json"))
SCHEMA_KEY = "dagster/column_schema"


class SchemaMismatchError(ValueError):
    """A stored partition's columns or dtypes differ from its asset's column schema."""


class CommittedPartitions(dict):
    """{partition_key: uri} of partitions a range run already wrote and recorded (`run_partitions`), with
    `problems`: {partition_key: {check name: problems found}} of the checks run on each frame before it was
    dropped (`common/checks.py`), and `timings`: seconds spent per phase (compute, writes, checks, records)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.problems: dict[str, dict[str, list[str]]] = {}
        self.timings: dict[str, float] = {}


def dtype_name(dtype: pl.DataType) -> str:
    """The type name a `dg.TableColumn` carries for a polars dtype: `float64`, `datetime[us, UTC]`, ..."""
    if isinstance(dtype, pl.Datetime):
        zone = f", {dtype.time_zone}" if dtype.time_zone else ""
        return f"datetime[{dtype.time_unit}{zone}]"
    return str(dtype).lower()


def table_schema(schema: pl.Schema | dict, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    """A `dagster/column_schema` value for a polars schema (what loads check stored frames against)."""
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, dtype_name(dtype), description=descriptions.get(name))
            for name, dtype in schema.items()
        ]
    )


def schema_problems(frame: pl.DataFrame, schema: dg.TableSchema) -> list[str]:
    """Each difference between `frame`'s columns and `schema`: missing, unexpected, or of another dtype."""
    expected = {column.name: column.type for column in schema.columns}
    found = {name: dtype_name(dtype) for name, dtype in frame.schema.items()}
    problems = [
        f"column {name!r} missing (expected {kind})" for name, kind in expected.items() if name not in found
    ]
    problems += [
        f"column {name!r} is {found[name]}, expected {kind}"
        for name, kind in expected.items()
        if name in found and found[name] != kind
    ]
    problems += [
        f"unexpected column {name!r} ({kind})" for name, kind in found.items() if name not in expected
    ]
    return problems


def _instance_or_none(context: dg.InputContext) -> dg.DagsterInstance | None:
    """The run's instance; None only for contexts built by hand without one (unit tests of the loading rule)."""
    try:
        return context.instance
    except dg.DagsterInvariantViolationError:
        return None


def _column_schema(context: dg.InputContext) -> dg.TableSchema | None:
    """The upstream asset's `dagster/column_schema` metadata, if it declares one."""
    upstream = context.upstream_output
    schema = (upstream.definition_metadata or {}).get(SCHEMA_KEY) if upstream is not None else None
    return schema.schema if isinstance(schema, dg.TableSchemaMetadataValue) else schema


def partition_path(asset_key: dg.AssetKey, partition_key: str | None) -> str:
    """Relative path (without suffix) of one asset partition: `asset/symbol=X/month=Y`."""
    base = "/".join(asset_key.path)
    if partition_key is None:
        return base
    if "|" in partition_key:  # multi-partition keys are "dim1|dim2" in sorted dimension order
        dims = symbol_month_partitions.get_partition_key_from_str(partition_key).keys_by_dimension
        return f"{base}/" + "/".join(f"{name}={dims[name]}" for name in ("symbol", "month"))
    return f"{base}/{partition_key}"


class LazyPartitions(Mapping):
    """{partition_key: value} of a partitioned input whose values are read when looked up (`lazy_partitions`
    input metadata): keys sorted, each read checked like an eager load; the last `keep` values read are kept,
    so a month read as one partition's warm-up and then as the next partition's own is read once."""

    def __init__(self, keys: list[str], read: Callable[[str], object], keep: int = 2):
        self._keys = keys
        self._known = set(keys)
        self._read = read
        self._keep = keep
        self._recent: dict[str, object] = {}

    def __getitem__(self, key: str):
        if key not in self._known:
            raise KeyError(key)
        if key not in self._recent:
            if len(self._recent) >= self._keep:
                self._recent.pop(next(iter(self._recent)))
            self._recent[key] = self._read(key)
        return self._recent[key]

    def __contains__(self, key: object) -> bool:  # without reading the value
        return key in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _where(asset_key: dg.AssetKey, partition_key: str | None) -> str:
    prefix = f"partition {partition_key!r} of " if partition_key else ""
    return f"{prefix}asset {asset_key.to_user_string()}"


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
        context.add_output_metadata(self.write_partition(context.asset_key, key, obj))

    def write_partition(
        self, asset_key: dg.AssetKey, partition_key: str | None, obj
    ) -> dict[str, dg.MetadataValue]:
        """Write one partition atomically; returns the metadata its record must carry (path and stamp)."""
        suffix = next((s for t, s in SUFFIX_BY_TYPE if isinstance(obj, t)), None)
        if suffix is None:
            raise TypeError(f"{asset_key.to_user_string()}: cannot store {type(obj).__name__}")
        storage = self.files
        write = {".parquet": storage.write_parquet, ".bin": storage.write_bytes, ".json": storage.write_json}[
            suffix
        ]
        relative = partition_path(asset_key, partition_key) + suffix
        uri = write(relative, obj)
        return {"path": dg.MetadataValue.path(uri), STAMP_KEY: dg.MetadataValue.text(storage.stamp(relative))}

    def commit_outside_run(
        self, instance: dg.DagsterInstance, asset_key: dg.AssetKey | str, partition_key: str | None, obj
    ) -> None:
        """Write a partition and record its materialization outside any run (seeding, imports, tests): the
        commit rule's two steps, so loads accept the file."""
        asset_key = dg.AssetKey.from_coercible(asset_key)
        metadata = self.write_partition(asset_key, partition_key, obj)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key, partition=partition_key, metadata=metadata)
        )

    def _write_partitions(self, context: dg.OutputContext, obj) -> None:
        """A multi-partition run's output: {partition_key: value} (or `CommittedPartitions`, already written)
        holding exactly the run's partitions."""
        name = context.asset_key.to_user_string()
        expected = {str(key) for key in context.asset_partition_keys}
        if not isinstance(obj, dict) or {str(key) for key in obj} != expected:
            got = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise TypeError(
                f"{name}: a run over {len(expected)} partitions must return a dict keyed by exactly "
                f"those partition keys; got {got}"
            )
        if not isinstance(obj, CommittedPartitions):
            for key, value in obj.items():
                self.write_partition(context.asset_key, str(key), value)
        context.add_output_metadata(
            {"path": dg.MetadataValue.path(self.files.uri(partition_path(context.asset_key, None)))}
        )

    def stored_file(self, asset_key: dg.AssetKey, partition_key: str | None) -> tuple[str, str] | None:
        """(relative path, stamp) of a partition's stored file, None when there is none."""
        base = partition_path(asset_key, partition_key)
        for suffix in (".parquet", ".json", ".bin"):
            stamp = self.files.stamp(base + suffix)
            if stamp is not None:
                return base + suffix, stamp
        return None

    def is_committed(self, asset_key: dg.AssetKey, partition_key: str | None, record) -> bool:
        """True when `record` (the partition's latest materialization) describes the file on disk."""
        stored = self.stored_file(asset_key, partition_key)
        return stored is not None and describes(record, stored[1])

    def _committed_file(self, asset_key: dg.AssetKey, partition_key: str | None, records: dict | None) -> str:
        """The relative path of a partition's committed file; MissingFileError when there is none (no file, or
        a file its latest record does not describe; `records` None: no instance, any file counts)."""
        storage = self.files
        where = _where(asset_key, partition_key)
        stored = self.stored_file(asset_key, partition_key)
        if stored is None:
            base = partition_path(asset_key, partition_key)
            raise MissingFileError(f"{where} is not materialized (no file at {storage.uri(base)}.*)")
        relative, stamp = stored
        if records is not None and not describes(records.get(partition_key), stamp):
            why = why_not_described(records.get(partition_key), stamp, storage.damaged(relative))
            raise MissingFileError(
                f"{where} is not materialized: {storage.uri(relative)} has no materialization record "
                f"describing it ({why}); materialize the partition again"
            )
        return relative

    def _load_one(
        self,
        asset_key: dg.AssetKey,
        partition_key: str | None,
        records: dict | None,
        schema: dg.TableSchema | None,
    ):
        """One partition's value; `records` (latest records by partition, None: no instance) decide whether
        a stored file is committed, `schema` whether a frame has the asset's columns."""
        storage = self.files
        where = _where(asset_key, partition_key)
        relative = self._committed_file(asset_key, partition_key, records)
        read = {".parquet": storage.read_parquet, ".json": storage.read_json, ".bin": storage.read_bytes}
        try:
            value = read[relative[relative.rindex(".") :]](relative)
        except CorruptFileError as exc:
            raise CorruptFileError(f"{where}: {exc}") from exc
        if schema is not None and isinstance(value, pl.DataFrame):
            problems = schema_problems(value, schema)
            if problems:
                raise SchemaMismatchError(
                    f"{where} ({storage.uri(relative)}) does not match the asset's {SCHEMA_KEY}: "
                    + "; ".join(problems)
                )
        return value

    def load_input(self, context: dg.InputContext):
        asset_key = context.asset_key
        instance = _instance_or_none(context)
        schema = _column_schema(context)
        if not context.has_asset_partitions:
            records = latest_records(instance, asset_key, None) if instance else None
            return self._load_one(asset_key, None, records, schema)
        input_metadata = context.definition_metadata or {}
        allow_missing = bool(input_metadata.get("allow_missing_partitions"))
        keys = sorted(context.asset_partition_keys)
        records = latest_records(instance, asset_key, keys) if instance else None
        lazy = bool(input_metadata.get("lazy_partitions"))

        def load(key: str):
            return self._load_one(asset_key, key, records, schema)

        found = {}
        for key in keys:  # a lazy input checks the commit rule now and reads later
            try:
                found[key] = self._committed_file(asset_key, key, records) if lazy else load(key)
            except MissingFileError as exc:
                if not allow_missing:
                    raise
                context.log.warning(f"{asset_key.to_user_string()} partition {key} skipped: {exc}")
        return LazyPartitions(list(found), load) if lazy else found


def concat_partitions(frames: dict[str, pl.DataFrame], empty: pl.DataFrame | None = None) -> pl.DataFrame:
    """The rows of every partition in one frame, in partition-key order; `empty` (default: no columns) when
    there is no partition. Empty partitions are left out unless all are empty, so a schema survives."""
    values = [frames[key] for key in sorted(frames)]
    if not values:
        return pl.DataFrame() if empty is None else empty
    return pl.concat([v for v in values if v.height] or values[:1], how="vertical_relaxed")
