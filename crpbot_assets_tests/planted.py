"""Stand-in assets that return planted data and run a real asset's checks on it, as the asset does."""

import dagster as dg
import polars as pl

from crpbot_assets.common.checks import PartitionCheck, evaluate, specs
from crpbot_assets.common.partitions import symbol_month_partitions


def planted_asset(name: str, frame: pl.DataFrame, checks: list[PartitionCheck]) -> dg.AssetsDefinition:
    """An asset named `name` (symbol x month) returning `frame`, checked by `checks`."""

    @dg.asset(
        name=name,
        partitions_def=symbol_month_partitions,
        check_specs=specs(name, checks, symbol_month_partitions),
    )
    def planted(context: dg.AssetExecutionContext):
        yield dg.Output(frame)
        yield from evaluate(context, frame, checks)

    return planted
