"""The IO manager's loading rule: partitioned inputs always arrive as {partition_key: value}, keys sorted."""

import dagster as dg
import polars as pl
import pytest

from crpbot_assets.common.io_manager import (
    SCHEMA_KEY,
    LazyPartitions,
    PartitionedFileIOManager,
    SchemaMismatchError,
    concat_partitions,
    partition_path,
    table_schema,
)
from crpbot_assets.common.partitions import symbol_month_partitions
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import MissingFileError

KEY = dg.AssetKey("candles")
JAN = "2019-01-01|BTC-USD"
FEB = "2019-02-01|BTC-USD"
MAR = "2019-03-01|BTC-USD"


@pytest.fixture
def manager(tmp_path):
    manager = PartitionedFileIOManager(storage=StorageResource(base_uri=str(tmp_path)))
    for value, key in ((2, MAR), (0, JAN)):  # written out of order; February never
        context = dg.build_output_context(
            asset_key=KEY, partition_key=key, asset_partitions_def=symbol_month_partitions
        )
        manager.handle_output(context, pl.DataFrame({"v": [value]}))
    return manager


def _input(metadata=None, **partitions):
    return dg.build_input_context(
        asset_key=KEY,
        asset_partitions_def=symbol_month_partitions,
        definition_metadata=metadata,
        **partitions,
    )


def test_one_partition_arrives_as_a_one_entry_dict(manager):
    loaded = manager.load_input(_input(partition_key=JAN))
    assert list(loaded) == [JAN] and loaded[JAN]["v"].to_list() == [0]


def test_a_missing_partition_fails_unless_the_input_allows_it(manager):
    whole = dg.PartitionKeyRange(JAN, MAR)
    with pytest.raises(MissingFileError, match="2019-02-01"):
        manager.load_input(_input(asset_partition_key_range=whole))
    loaded = manager.load_input(_input({"allow_missing_partitions": True}, asset_partition_key_range=whole))
    assert list(loaded) == [JAN, MAR]  # sorted, February skipped
    assert concat_partitions(loaded)["v"].to_list() == [0, 2]


def test_concat_partitions_orders_by_key_and_keeps_a_schema():
    empty = pl.DataFrame(schema={"v": pl.Int64})
    frames = {MAR: pl.DataFrame({"v": [2]}), JAN: pl.DataFrame({"v": [0]}), FEB: empty}
    assert concat_partitions(frames)["v"].to_list() == [0, 2]
    assert concat_partitions({FEB: empty}).schema == empty.schema
    assert concat_partitions({}, empty=empty).schema == empty.schema
    assert concat_partitions({}).width == 0


def test_a_lazy_input_checks_keys_at_load_and_reads_each_value_when_looked_up(manager):
    whole = dg.PartitionKeyRange(JAN, MAR)
    with pytest.raises(MissingFileError, match="2019-02-01"):  # missing partitions fail at load, as eager
        manager.load_input(_input({"lazy_partitions": True}, asset_partition_key_range=whole))
    lazy = manager.load_input(
        _input({"lazy_partitions": True, "allow_missing_partitions": True}, asset_partition_key_range=whole)
    )
    assert isinstance(lazy, LazyPartitions)
    assert list(lazy) == [JAN, MAR] and len(lazy) == 2 and FEB not in lazy and lazy.get(FEB) is None
    # Written after the load: what a lookup returns is read at the lookup.
    manager.files.write_parquet(partition_path(KEY, MAR) + ".parquet", pl.DataFrame({"v": [7]}))
    assert lazy[MAR]["v"].to_list() == [7]
    assert concat_partitions(dict(lazy))["v"].to_list() == [0, 7]


def test_a_lazy_lookup_checks_the_schema_and_names_the_partition(manager):
    schema = table_schema({"v": pl.Int64})
    upstream = dg.build_output_context(asset_key=KEY, definition_metadata={SCHEMA_KEY: schema})
    manager.files.write_parquet(partition_path(KEY, MAR) + ".parquet", pl.DataFrame({"w": [1]}))
    lazy = manager.load_input(
        dg.build_input_context(
            asset_key=KEY,
            asset_partitions_def=symbol_month_partitions,
            asset_partition_key_range=dg.PartitionKeyRange(JAN, MAR),
            definition_metadata={"lazy_partitions": True, "allow_missing_partitions": True},
            upstream_output=upstream,
        )
    )
    assert lazy[JAN]["v"].to_list() == [0]
    with pytest.raises(SchemaMismatchError, match=r"2019-03-01\|BTC-USD.*column 'v' missing"):
        lazy[MAR]
