"""The IO manager's loading rule: partitioned inputs always arrive as {partition_key: value}, keys sorted."""

import dagster as dg
import polars as pl
import pytest

from crpbot_assets.common.io_manager import PartitionedFileIOManager, concat_partitions
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
