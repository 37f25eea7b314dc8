"""Training fixtures: planted upstream stand-ins for two months of BTC-USD.

Training tests run torch on one thread: tiny models gain nothing from more, and a single thread stays fast
when other test processes share the CPU (OpenMP threads spin and stall under oversubscription)."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest
import torch

from crpbot_assets.common.partitions import split_key, symbol_month_partitions
from crpbot_assets_tests.training.helpers import hourly_sentiment, planted


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


MONTHS = ("2019-01-01", "2019-02-01")
N_MINUTES = (31 + 28) * 1440


def _month_slice(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    symbol, start = split_key(key)
    end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return (
        frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end)) if symbol == "BTC-USD" else frame.clear()
    )


def upstream_assets(frames: dict[str, pl.DataFrame]) -> list[dg.AssetsDefinition]:
    """Stand-ins with the real upstream keys and partitions, writing `frames[name]` (BTC-USD only) through the
    shared IO manager. With no frames they only declare the upstream keys."""

    def stand_in(name: str) -> dg.AssetsDefinition:
        @dg.asset(name=name, partitions_def=symbol_month_partitions)
        def _stub(context: dg.AssetExecutionContext) -> pl.DataFrame:
            return _month_slice(frames[name], context.partition_key)

        return _stub

    return [stand_in(name) for name in ("candles", "features", "sentiment_features")]


@pytest.fixture(scope="module")
def upstream() -> list[dg.AssetsDefinition]:
    """Two months of planted BTC-USD candles/features and hourly sentiment (null for the first 20 days)."""
    candles, features = planted(N_MINUTES, seed=11)
    sentiment = hourly_sentiment(N_MINUTES, null_before_hours=24 * 20)
    return upstream_assets({"candles": candles, "features": features, "sentiment_features": sentiment})


def materialize_upstream(upstream, resources, instance):
    for month in MONTHS:
        key = dg.MultiPartitionKey({"symbol": "BTC-USD", "month": month})
        assert dg.materialize(upstream, partition_key=key, resources=resources, instance=instance).success
