"""Jobs users launch from the UI or the demo: market data (symbol x month) then training (per symbol)."""

import dagster as dg

from crpbot_assets.common.partitions import symbol_month_partitions, symbol_partitions

market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=dg.AssetSelection.assets("candles", "features", "reddit_hourly", "sentiment_features"),
    partitions_def=symbol_month_partitions,
    description="Candles, features and hourly sentiment for the selected symbol-months, one run per range.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("training"),
    partitions_def=symbol_partitions,
    description="Dataset, LSTM model and evaluation of one symbol, from every month materialized upstream.",
)

defs = dg.Definitions(jobs=[market_data_job, training_job])
