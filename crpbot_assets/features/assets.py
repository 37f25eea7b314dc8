"""The `features` asset: the feature catalogue per symbol x month, warmed up on the previous month's candles."""

from collections.abc import Mapping

import dagster as dg
import polars as pl

from crpbot_assets.common import checks
from crpbot_assets.common.automation import on_input_update
from crpbot_assets.common.months import month_end, previous_month
from crpbot_assets.common.partitions import (
    previous_and_current_month,
    split_key,
    symbol_month_key,
    symbol_month_partitions,
)
from crpbot_assets.common.plots import line_plot
from crpbot_assets.common.ranges import event_log_kept_open, run_partitions
from crpbot_assets.common.symbols import is_listed, listed_at
from crpbot_assets.features.catalogue import (
    CATALOGUE,
    FEATURE_NAMES,
    MAX_LOOKBACK_MINUTES,
    catalogue_markdown,
)
from crpbot_assets.features.checks import FEATURES_CHECKS
from crpbot_assets.features.compute import empty_features, features_for_month

COLUMN_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("ts", "datetime[us, UTC]", description="minute; the row knows data up to its close")
    ]
    + [
        dg.TableColumn(
            f.name, "float32", description=f"{f.timeframe}, lookback {f.lookback} bars: {f.formula}"
        )
        for f in CATALOGUE
    ]
)


class MissingCandlesError(RuntimeError):
    """The month's own candles are not materialized."""


def _month_features(
    context: dg.AssetExecutionContext, key: str, candles: Mapping[str, pl.DataFrame], plot: bool
) -> pl.DataFrame:
    """Features of one partition from its own candles and (when materialized) the previous month's."""
    symbol, month = split_key(key)
    end = month_end(month)
    if not is_listed(symbol, end):
        reason = f"{symbol} was not listed before {listed_at(symbol):%Y-%m-%d}"
        context.add_asset_metadata({"listed": False, "explanation": reason, "rows": 0}, partition_key=key)
        return empty_features()
    if key not in candles:
        raise MissingCandlesError(
            f"features {key}: candles partition {key} is not materialized; materialize it first"
        )
    previous_key = str(symbol_month_key(symbol, previous_month(month)))
    previous = candles.get(previous_key)
    if previous is None:
        context.log.warning(
            f"features {key}: no candles for warm-up month {previous_key}; rows before every "
            "lookback is satisfied are dropped"
        )
    frames = [frame for frame in (previous, candles[key]) if frame is not None and frame.height]
    source = pl.concat(frames, how="vertical") if frames else candles[key]
    result = features_for_month(source, month, end, where=f"candles {previous_key} + {key}")
    frame = result.frame
    metadata = {
        "listed": True,
        "rows": frame.height,
        "features": len(FEATURE_NAMES),
        "candle_rows": result.month_rows,
        "warmup_partition": previous_key if previous is not None else "none",
        "warmup_rows": result.warmup_rows,
        "rows_dropped_before_lookback": result.dropped_rows,
        "first_ts": str(frame["ts"].min()) if frame.height else "none",
        "last_ts": str(frame["ts"].max()) if frame.height else "none",
    }
    if plot and frame.height:
        daily = frame.group_by(pl.col("ts").dt.date().alias("day"), maintain_order=True).agg(
            pl.col("h1_vol_24").mean(), pl.col("m1_vol_60").mean() * (60**0.5)
        )
        metadata["daily_volatility"] = line_plot(
            {"h1_vol_24": daily["h1_vol_24"].to_list(), "m1_vol_60 x sqrt(60)": daily["m1_vol_60"].to_list()},
            f"{key}: hourly log-return volatility (daily mean)",
            "day of month",
            "std of 1h log return",
        )
    context.add_asset_metadata(metadata, partition_key=key)
    return frame


@dg.asset(
    partitions_def=symbol_month_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "candles": dg.AssetIn(
            "candles",
            partition_mapping=previous_and_current_month,
            metadata={"allow_missing_partitions": True, "lazy_partitions": True},
            dagster_type=dg.Any,  # a LazyPartitions mapping (a range run reads each month when it needs it)
        )
    },
    kinds={"polars", "parquet"},
    group_name="features",
    automation_condition=on_input_update(),
    check_specs=checks.specs("features", FEATURES_CHECKS, symbol_month_partitions),
    metadata={
        "feature_catalogue": dg.MetadataValue.md(catalogue_markdown()),
        "dagster/column_schema": COLUMN_SCHEMA,
        "feature_count": len(FEATURE_NAMES),
        "longest_lookback_minutes": MAX_LOOKBACK_MINUTES,
    },
)
def features(context: dg.AssetExecutionContext, candles: Mapping[str, pl.DataFrame]):
    """Causal multi-timeframe features (1m, 5m, 15m, 1h) of one symbol-month: `ts` + one Float32 column per
    catalogue entry (metadata `feature_catalogue`; computed in Float64). Warmed up on the previous month's last
    days of candles, keeping this month's rows whose every lookback is satisfied. A row at `ts` uses candles up to the close of
    minute `ts`; a higher-timeframe bar is used only from its last minute on. Months before listing are empty.
    """
    # A range of partitions (single-run backfill) is computed in one process, each month exactly as a
    # one-partition run would, and written one file per partition. Dagster 1.13 gives such a run the partition
    # key range (`context.partition_keys`: the symbol x month product of the range) and, through
    # `previous_and_current_month`, the candles of every month of the range plus the month before it, as one
    # {partition_key: frame} mapping (the IO manager's rule for partitioned inputs), read lazily: a month's
    # candles are read when it (or the month after it) is computed, not all at once. A backfill of many
    # months x symbols becomes one run per key range: one per symbol for whole histories.
    plot = context.has_partition_key
    with event_log_kept_open(context):  # through the step-end records and the check evaluations
        value = run_partitions(
            context, lambda key: _month_features(context, key, candles, plot), checks=FEATURES_CHECKS
        )
        yield dg.Output(value)
        yield from checks.evaluate(context, value, FEATURES_CHECKS)
