"""Training assets per symbol: training_dataset -> lstm_model (through the launcher) -> model_evaluation.

The dataset and model are files next to the IO manager's (`training_dataset/<symbol>.parquet`,
`lstm_model/<symbol>.pt` under the shared storage), because the training job reads and writes them by URI
wherever it runs. The job writes its model to a run-scoped key (`lstm_model_runs/<run id>/<symbol>.pt`); the asset
promotes it to `lstm_model/<symbol>.pt` only when the job succeeded, so a late job of a failed or cancelled run
cannot replace the model the last successful materialization describes.
"""

import dataclasses
import typing
from typing import Optional, Protocol

import dagster as dg
import polars as pl
import pydantic

from crpbot_assets.common.automation import MODEL_FRESHNESS, on_retrain_cron
from crpbot_assets.common.io_manager import concat_partitions, partition_path
from crpbot_assets.common.partitions import all_months_of_symbol, symbol_partitions
from crpbot_assets.common.plots import line_plot
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.training import dataset as ds
from crpbot_assets.training.artifacts import load_artifact
from crpbot_assets.training.config_check import DataLimits, TrainingConfigError, validate_training_config
from crpbot_assets.training.evaluation import DEFAULT_FEE_BPS, evaluate_artifact, report
from crpbot_assets.training.train import TrainConfig

GROUP = "training"


def dataset_relative_path(symbol: str) -> str:
    return partition_path(dg.AssetKey("training_dataset"), symbol) + ".parquet"


def model_relative_path(symbol: str) -> str:
    return partition_path(dg.AssetKey("lstm_model"), symbol) + ".pt"


def run_model_relative_path(symbol: str, run_id: str) -> str:
    """Where one run's training job writes its model (promoted to model_relative_path on success)."""
    return f"lstm_model_runs/{run_id}/{symbol}.pt"


# EC2 GPU instances at once (one per lstm_model step): sized by the instance's pool limit (deploy/README.md).
GPU_POOL = "ec2_gpu"


def _all_months(key: str) -> dg.AssetIn:
    return dg.AssetIn(
        key=dg.AssetKey(key),
        partition_mapping=all_months_of_symbol,
        metadata={"allow_missing_partitions": True},
    )


def _config_from(name: str, source: type, doc: str, **extra: tuple) -> type[dg.Config]:
    """A Dagster Config class with the fields and defaults of the dataclass `source` (one source of truth)."""
    hints = typing.get_type_hints(source)
    fields = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(source)}
    return pydantic.create_model(
        name, __base__=dg.Config, __doc__=doc, __module__=__name__, **fields, **extra
    )


DatasetSettings = _config_from(
    "DatasetSettings",
    ds.DatasetConfig,
    "Label and split settings: crpbot_assets.training.dataset.DatasetConfig (purge gap = horizon + max sequence length "
    "+ feature lookback, by default the feature catalogue's longest).",
)


@dg.asset(
    partitions_def=symbol_partitions,
    ins={
        "features": _all_months("features"),
        "sentiment_features": _all_months("sentiment_features"),
        "candles": _all_months("candles"),
    },
    kinds={"polars", "parquet"},
    group_name=GROUP,
    automation_condition=on_retrain_cron(),
)
def training_dataset(
    context: dg.AssetExecutionContext,
    config: DatasetSettings,
    storage: StorageResource,
    features: dict[str, pl.DataFrame],
    sentiment_features: dict[str, pl.DataFrame],
    candles: dict[str, pl.DataFrame],
) -> dg.MaterializeResult:
    """All months of `features` joined causally with hourly `sentiment_features`, labelled with the forward
    N-minute direction (down/flat/up), split by time with purge gaps, scaler fitted on the training rows.
    `candles` supply the close prices the labels and the persistence baseline are computed from."""
    symbol = context.partition_key
    features = concat_partitions(features)
    sentiment_features = concat_partitions(sentiment_features)
    candles = concat_partitions(candles)
    context.log.info(
        f"{symbol}: {features.height:,} feature rows, {sentiment_features.height:,} sentiment hours, {candles.height:,} candles"
    )
    dataset = ds.build_dataset(
        features, sentiment_features, candles, ds.DatasetConfig(**config.model_dump()), symbol
    )
    relative = dataset_relative_path(symbol)
    uri = storage.storage.write_with(relative, lambda out: ds.write_parquet(dataset, out))
    size = storage.storage.size(relative)
    summary = ds.summary(dataset)
    context.log.info(f"{symbol}: wrote {dataset.frame.height:,} rows ({size / 1e6:.1f} MB) to {uri}")
    return dg.MaterializeResult(
        metadata={
            "uri": dg.MetadataValue.path(uri),
            "bytes": size,
            "rows": dataset.frame.height,
            "features": len(dataset.feature_columns),
            **{f"{name}_rows": summary[name]["labelled_rows"] for name in ds.SPLITS},
            **{
                f"{name}_range": f"{summary[name]['first_ts']} .. {summary[name]['last_ts']}"
                for name in ds.SPLITS
            },
            "purge_minutes": summary["purge_minutes"],
            "max_sequence_length": dataset.config.max_sequence_length,
            "purged_rows": summary["purged_rows"],
            "summary": dg.MetadataValue.json(summary),
        }
    )


class TrainingLauncher(Protocol):
    def run(self, context: dg.AssetExecutionContext, extras: dict) -> dg.PipesClientCompletedInvocation: ...


LstmConfig = _config_from(
    "LstmConfig",
    TrainConfig,
    "Model and optimisation hyper-parameters (crpbot_assets.training.train.TrainConfig), passed to the training "
    "entry point unchanged; plus sentiment_ablation (also train without the seven sentiment features, same "
    "artifact), device (None: CUDA when the training machine has it, else CPU) and cpu_threads (None: every "
    "usable core; 1 can be steadier on a busy shared CPU).",
    sentiment_ablation=(bool, True),
    device=(Optional[str], None),
    cpu_threads=(Optional[int], None),
)


def _loss_plot(result: dg.MaterializeResult) -> dict:
    curves = {}
    for key, value in (result.metadata or {}).items():
        if key.endswith("/history"):
            variant = key.rsplit("/", 1)[0]
            history = value.value if isinstance(value, dg.MetadataValue) else value
            curves[f"{variant} train"] = [h["train_loss"] for h in history]
            curves[f"{variant} val"] = [h["val_loss"] for h in history]
    return {"loss_curve": line_plot(curves, "Cross-entropy per epoch", "epoch", "loss")} if curves else {}


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[training_dataset],
    kinds={"pytorch"},
    group_name=GROUP,
    pool=GPU_POOL,
    automation_condition=on_retrain_cron(),
    freshness_policy=MODEL_FRESHNESS,
)
def lstm_model(
    context: dg.AssetExecutionContext,
    config: LstmConfig,
    storage: StorageResource,
    training_launcher: dg.ResourceParam[TrainingLauncher],
) -> dg.MaterializeResult:
    """LSTM direction classifier per symbol, trained by the `training_launcher` (a local subprocess by default,
    a GPU instance in prod); with `sentiment_ablation` the same model without the seven sentiment features is
    trained too and stored in the same artifact."""
    # Every launcher runs the same entry point, `python -m crpbot_assets.training.pipes_main`. The config is
    # validated before anything is launched: first alone, then sequence_length against the dataset's record.
    symbol = context.partition_key
    where = f"lstm_model {symbol}"
    _validate(config.model_dump(), DataLimits(), where)
    if not storage.storage.exists(dataset_relative_path(symbol)):  # fail here, not after launching a machine
        raise dg.Failure(
            f"training_dataset for {symbol} is not materialized: no file at {storage.storage.uri(dataset_relative_path(symbol))}"
        )
    _validate(config.model_dump(), dataset_limits(context.instance, symbol), where)
    extras = {
        "symbol": symbol,
        "dataset_uri": storage.storage.uri(dataset_relative_path(symbol)),
        "model_uri": storage.storage.uri(run_model_relative_path(symbol, context.run_id)),
        "config": config.model_dump(),
    }
    result = training_launcher.run(context, extras).get_materialize_result()
    # promoted only now that the job succeeded
    trained = storage.storage.read_bytes(run_model_relative_path(symbol, context.run_id))
    model_uri = storage.storage.write_bytes(model_relative_path(symbol), trained)
    context.log.info(f"{symbol}: promoted {extras['model_uri']} to {model_uri}")
    return dg.MaterializeResult(
        asset_key=result.asset_key,
        metadata={
            **(result.metadata or {}),
            **_loss_plot(result),
            "model_uri": dg.MetadataValue.path(model_uri),
            "run_model_uri": dg.MetadataValue.path(extras["model_uri"]),
        },
        data_version=result.data_version,
        tags=result.tags,
    )


def dataset_limits(instance: dg.DagsterInstance, symbol: str) -> DataLimits:
    """What the latest `training_dataset` materialization of `symbol` allows (none known without a record)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=training_dataset.key, asset_partitions=[symbol]), limit=1
    ).records
    if not records:
        return DataLimits()
    metadata = records[0].asset_materialization.metadata
    rows = {name: metadata[f"{name}_rows"].value for name in ds.SPLITS if f"{name}_rows" in metadata}
    smallest = min(rows, key=rows.get) if rows else ""
    max_length = metadata.get("max_sequence_length")
    return DataLimits(
        max_sequence_length=max_length.value if max_length is not None else None,
        smallest_split_rows=rows.get(smallest),
        smallest_split=smallest,
    )


def _validate(values: dict, limits: DataLimits, where: str) -> None:
    try:
        validate_training_config(values, limits, where)
    except TrainingConfigError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc


class EvaluationConfig(dg.Config):
    fee_bps: float = DEFAULT_FEE_BPS  # per unit of position traded; Coinbase Advanced entry-tier taker fee


def _confusion_markdown(matrix: list[list[int]]) -> str:
    header = "| true \\ predicted | " + " | ".join(ds.CLASSES) + " |\n|---|---|---|---|\n"
    return header + "\n".join(
        f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(ds.CLASSES, matrix)
    )


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[training_dataset, lstm_model],
    kinds={"pytorch", "json"},
    group_name=GROUP,
    automation_condition=on_retrain_cron(),
)
def model_evaluation(
    context: dg.AssetExecutionContext, config: EvaluationConfig, storage: StorageResource
) -> dg.Output[dict]:
    """Test-segment accuracy/balanced accuracy/confusion matrix vs majority and persistence baselines, a fee-aware
    long/flat and long/short backtest, and the sentiment ablation side by side. The JSON report is the value."""
    symbol = context.partition_key
    files = storage.storage
    dataset = ds.from_parquet_bytes(
        files.read_bytes(dataset_relative_path(symbol)), files.uri(dataset_relative_path(symbol))
    )
    artifact = load_artifact(
        files.read_bytes(model_relative_path(symbol)), files.uri(model_relative_path(symbol))
    )
    results = evaluate_artifact(dataset, artifact, config.fee_bps)
    summary = report(results, config.fee_bps)
    metadata: dict = {"fee_bps": config.fee_bps}
    for name, r in results.items():
        for what in ("model", "majority_baseline", "persistence_baseline"):
            metadata[f"{name}/{what}/accuracy"] = round(r[what]["accuracy"], 4)
            metadata[f"{name}/{what}/balanced_accuracy"] = round(r[what]["balanced_accuracy"], 4)
        metadata[f"{name}/confusion_matrix"] = dg.MetadataValue.md(
            _confusion_markdown(r["model"]["confusion_matrix"])
        )
        for mode, bt in r["backtest"].items():
            for stat in ("total_return", "sharpe", "max_drawdown", "trades"):
                metadata[f"{name}/{mode}/{stat}"] = (
                    round(bt[stat], 4) if isinstance(bt[stat], float) else bt[stat]
                )
            metadata[f"{name}/{mode}/gross_total_return"] = round(
                r["backtest_gross"][mode]["total_return"], 4
            )
        curves = {mode: bt["equity"].tolist() for mode, bt in r["backtest"].items()}
        curves["buy & hold"] = r["buy_and_hold"]["equity"].tolist()
        metadata[f"{name}/equity_curve"] = line_plot(
            curves,
            f"{symbol} {name}: test equity after {config.fee_bps:g} bps fees",
            "time",
            "equity",
            x=r["grid_ts"].to_list(),
        )
        context.log.info(
            f"{symbol}/{name}: accuracy {r['model']['accuracy']:.4f} (majority {r['majority_baseline']['accuracy']:.4f}, "
            f"persistence {r['persistence_baseline']['accuracy']:.4f}), long/short {r['backtest']['long_short']['total_return']:+.2%}"
        )
    for key, value in summary.get("sentiment_ablation", {}).items():
        metadata[f"sentiment_ablation/{key}"] = round(value, 4)
    return dg.Output(summary, metadata=metadata)
