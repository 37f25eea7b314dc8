"""Walk-forward assets: walk_forward_predictions (symbol x test month) -> walk_forward_report (per symbol).

Not recomputing unchanged months: the predictions asset has a `code_version` and reports a content
`data_version` (a hash of the fold's rows, scaler and settings). Before training, it compares that hash with the
partition's latest materialization: equal -> the stored predictions are returned as they are, nothing trains.
A fold's model is stored under the hash of its training rows and settings, so a quarter's months (quarterly
retraining) and re-runs reuse it instead of training again. Automation (`eager`) asks for a month when an
input month was re-materialized; the hash check makes that cheap when the data did not actually change.
The predictions' month dimension holds complete months only (the month in progress is never a test month).
"""

import time

import dagster as dg
import polars as pl

from crpbot_assets.common.io_manager import partition_path
from crpbot_assets.common.partitions import all_months_of_symbol, split_key, symbol_partitions
from crpbot_assets.common.plots import line_plot
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.symbols import HISTORY_START
from crpbot_assets.training import dataset as ds
from crpbot_assets.training import verdict as vd
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.artifacts import load_artifact
from crpbot_assets.training.assets import (
    GPU_POOL,
    DatasetSettings,
    LstmConfig,
    TrainingLauncher,
    _config_from,
)
from crpbot_assets.training.baselines import BaselineConfig
from crpbot_assets.training.train import TrainConfig
from crpbot_assets.training.walk_forward_page import publish as publish_page

GROUP = "walk_forward"
complete_months = dg.MonthlyPartitionsDefinition(start_date=HISTORY_START.strftime("%Y-%m-%d"), end_offset=0)
test_month_partitions = dg.MultiPartitionsDefinition({"symbol": symbol_partitions, "month": complete_months})

BaselineSettings = _config_from(
    "BaselineSettings", BaselineConfig, "Baseline settings (crpbot_assets.training.baselines.BaselineConfig)."
)
ReportSettings = _config_from(
    "ReportSettings",
    vd.VerdictConfig,
    "Verdict settings (crpbot_assets.training.verdict.VerdictConfig): primary metric, bootstrap draws, fee, "
    "half-spread (None: from the candles), probability threshold and strategy mode.",
)


class WalkForwardSettings(dg.Config):
    """Model, dataset and baseline settings of every fold; val_fraction is the window's latest share used for
    early stopping. The window length and retraining frequency shape the partition mapping, so they are
    arguments of `build_walk_forward_assets` (see training/definitions.py)."""

    model: LstmConfig = LstmConfig()
    dataset: DatasetSettings = DatasetSettings()
    baselines: BaselineSettings = BaselineSettings()
    val_fraction: float = wf.WalkForwardConfig.val_fraction
    seeds: int = 1
    """LSTM pairs (with / without sentiment) trained per fold, with seeds model.seed, model.seed + 1, ...: the
    sentiment ablation's interval covers training randomness only with several (3 or more)."""


def _trailing(months: int) -> dg.AssetIn:
    mapping = dg.MultiPartitionMapping(
        {
            "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
            "month": dg.DimensionPartitionMapping(
                "month",
                dg.TimeWindowPartitionMapping(
                    start_offset=-months, end_offset=0, allow_nonexistent_upstream_partitions=True
                ),
            ),
        }
    )
    return dg.AssetIn(partition_mapping=mapping, metadata={"allow_missing_partitions": True})


def _concat(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    parts = [f for f in frames.values() if f.height]
    return pl.concat(parts, how="vertical_relaxed").sort("ts") if parts else pl.DataFrame()


def _identity_options(model: dict) -> dict:
    """Training settings that change the model (not where or on how many threads it trains)."""
    return {
        k: v for k, v in model.items() if k in TrainConfig.__dataclass_fields__ or k == "sentiment_ablation"
    }


def predictions_relative_path(key: str) -> str:
    return partition_path(dg.AssetKey("walk_forward_predictions"), key) + ".parquet"


def build_walk_forward_assets(
    window_months: int = wf.WalkForwardConfig.window_months, retrain: str = wf.WalkForwardConfig.retrain
) -> list:
    """The two assets for a trailing window of `window_months` and `retrain` monthly or quarterly."""
    shape = wf.WalkForwardConfig(window_months=window_months, retrain=retrain)
    upstream = _trailing(shape.months_before)

    @dg.asset(
        partitions_def=test_month_partitions,
        ins={"features": upstream, "sentiment_features": upstream, "candles": upstream},
        code_version=wf.CODE_VERSION,
        pool=GPU_POOL,  # one GPU instance per slot, shared with lstm_model: the account's quota
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"pytorch", "lightgbm", "parquet"},
        group_name=GROUP,
        description=(
            f"Out-of-sample class probabilities for every minute of the test month from an LSTM (with and "
            f"without sentiment) trained on the trailing {window_months} month(s), retrained {retrain}, ending a "
            "purge gap before the month; plus logistic regression, LightGBM, majority and persistence baselines "
            "on the same rows, the label and the forward return."
        ),
    )
    def walk_forward_predictions(
        context: dg.AssetExecutionContext,
        config: WalkForwardSettings,
        storage: StorageResource,
        training_launcher: dg.ResourceParam[TrainingLauncher],
        features: dict[str, pl.DataFrame],
        sentiment_features: dict[str, pl.DataFrame],
        candles: dict[str, pl.DataFrame],
    ) -> dg.Output[pl.DataFrame]:
        symbol, month = split_key(context.partition_key)
        dataset_config = ds.DatasetConfig(**config.dataset.model_dump())
        fold = wf.plan_fold(
            month,
            wf.WalkForwardConfig(window_months, retrain, config.val_fraction),
            dataset_config,
        )
        prices = _concat(candles)
        dataset = wf.fold_dataset(
            _concat(features), _concat(sentiment_features), prices, fold, dataset_config, symbol
        )
        if config.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {config.seeds}")
        model = config.model.model_dump()
        train_part = wf.training_part(dataset)
        seed_models = [{**model, "seed": model["seed"] + k} for k in range(config.seeds)]
        model_ids = [wf.model_fingerprint(train_part, _identity_options(m)) for m in seed_models]
        model_id = model_ids[0]
        test_prices = prices.filter((pl.col("ts") >= fold.test_start) & (pl.col("ts") < fold.test_end))
        inputs_id = wf.fingerprint(
            dataset.frame,
            model_id if config.seeds == 1 else model_ids,  # one seed: the fingerprint of before seeds existed
            wf.fingerprint(test_prices),
            config.baselines.model_dump(),
        )
        files = storage.storage
        stored = predictions_relative_path(context.partition_key)
        cuts = fold.cuts(dataset.frame["ts"].min())
        base_metadata = {
            "inputs_fingerprint": inputs_id,
            "model_fingerprint": model_id,
            "window": f"{dataset.frame['ts'].min():%Y-%m-%d %H:%M} .. {cuts.val_end:%Y-%m-%d %H:%M}",
            "train_end": str(cuts.train_end),
            "purge_minutes": dataset_config.purge_minutes,
            "model_month": f"{fold.model_month:%Y-%m}",
            "seeds": config.seeds,
        }
        if _latest_fingerprint(context) == inputs_id and files.exists(stored):
            context.log.info(
                f"{context.partition_key}: inputs unchanged since the last materialization; reused"
            )
            frame = files.read_parquet(stored)
            return dg.Output(
                frame,
                metadata={**base_metadata, "rows": frame.height, "reused": True},
                data_version=dg.DataVersion(inputs_id),
            )
        trained: dict = {}
        artifacts = []
        for k, (seed_model, seed_id) in enumerate(zip(seed_models, model_ids)):
            model_path = f"walk_forward_models/{symbol}/{seed_id}.pt"
            if files.exists(model_path):
                context.log.info(
                    f"{symbol} {fold.model_month:%Y-%m}: model {seed_id} (seed {seed_model['seed']}) already "
                    "trained; reused"
                )
            else:
                context.log.info(
                    f"{symbol} {fold.model_month:%Y-%m}: training seed {seed_model['seed']} "
                    f"({k + 1}/{config.seeds})"
                )
                data_path = f"walk_forward_datasets/{symbol}/{seed_id}.parquet"
                files.write_with(data_path, lambda out, part=train_part: ds.write_parquet(part, out))
                started = time.perf_counter()
                extras = {
                    "symbol": symbol,
                    "dataset_uri": files.uri(data_path),
                    "model_uri": files.uri(model_path),
                    "config": {**seed_model, "sentiment_ablation": True},
                }
                result = training_launcher.run(context, extras).get_materialize_result()
                if k == 0:
                    trained = {
                        f"train/{key}": v
                        for key, v in (result.metadata or {}).items()
                        if key.endswith(("best_epoch", "epochs_run", "samples_per_s", "device"))
                    }
                trained["train/seconds"] = round(
                    trained.get("train/seconds", 0.0) + time.perf_counter() - started, 1
                )
            artifacts.append(load_artifact(files.read_bytes(model_path), files.uri(model_path)))
        started = time.perf_counter()
        frame, info = wf.predict_fold(
            dataset,
            artifacts[0],
            test_prices,
            BaselineConfig(**config.baselines.model_dump()),
            context.log.info,
            seed_artifacts=tuple(artifacts[1:]),
        )
        scores = vd.month_scores(frame)
        context.log.info(
            f"{context.partition_key}: {frame.height:,} test minutes; "
            + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if k.startswith("bacc/"))
        )
        return dg.Output(
            frame,
            metadata={
                **base_metadata,
                **trained,
                **info,
                "predict_seconds": round(time.perf_counter() - started, 1),
                **{k: round(v, 4) for k, v in scores.items() if k.startswith(("acc/", "bacc/"))},
                "reused": False,
            },
            data_version=dg.DataVersion(inputs_id),
        )

    @dg.asset(
        partitions_def=symbol_partitions,
        ins={
            "walk_forward_predictions": dg.AssetIn(
                partition_mapping=all_months_of_symbol, metadata={"allow_missing_partitions": True}
            )
        },
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"json"},
        group_name=GROUP,
    )
    def walk_forward_report(
        context: dg.AssetExecutionContext,
        config: ReportSettings,
        storage: StorageResource,
        walk_forward_predictions: dict[str, pl.DataFrame],
    ) -> dg.Output[dict]:
        """The verdict over every materialized test month: accuracy, balanced accuracy and log loss per month for
        the LSTM and each baseline, means with day-bootstrap 95 % intervals, the share of months the LSTM beats
        every baseline, net equity and Sharpe (annualised from daily returns) after fee and half-spread,
        turnover, break-even fee, returns over a range of fees, and the paired sentiment ablation."""
        months = {f"{split_key(key)[1]:%Y-%m}": frame for key, frame in walk_forward_predictions.items()}
        report = vd.verdict(months, vd.VerdictConfig(**config.model_dump()))
        text = vd.headline(report)
        context.log.info(f"{context.partition_key}: {text}")
        metadata = _report_metadata(context.partition_key, report, text)
        metadata["report page"] = publish_page(storage.storage, context.partition_key, report, text)
        return dg.Output(_json_ready(report), metadata=metadata)

    return [walk_forward_predictions, walk_forward_report]


def _latest_fingerprint(context: dg.AssetExecutionContext) -> str | None:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records:
        return None
    value = records[0].asset_materialization.metadata.get("inputs_fingerprint")
    return value.value if value is not None else None


def _json_ready(report: dict) -> dict:
    trading = {k: v for k, v in report["trading"].items() if k not in ("equity", "hold_equity", "ts")}
    return {**report, "trading": trading}


def _report_metadata(symbol: str, report: dict, text: str) -> dict:
    key = report["metric"]
    mean = report["mean"]
    best = report["best_baseline"]
    trading = report["trading"]
    months = list(report["months"])
    metadata: dict = {"headline": dg.MetadataValue.md(text), "months": len(months), "best baseline": best}
    for name, value in mean.items():
        metadata[name] = round(value["mean"], 4)
        metadata[f"{name} ci"] = f"[{value['ci'][0]:.4f}, {value['ci'][1]:.4f}]"
    metadata["lstm-best"] = round(report["lstm_minus_best"]["mean"], 4)
    metadata["lstm-best ci"] = "[{:.4f}, {:.4f}]".format(*report["lstm_minus_best"]["ci"])
    metadata["months won"] = round(report["months_beating_baselines"], 3)
    metadata["net return"] = round(trading["total_return"], 4)
    metadata["gross return"] = round(trading["gross_return"], 4)
    metadata["sharpe (ann., daily)"] = round(trading["sharpe_daily_ann"], 3)
    metadata["turnover/day"] = round(trading["turnover_per_day"], 2)
    metadata["break-even fee bps"] = round(trading["break_even_fee_bps"], 2)
    metadata["half-spread bps"] = round(trading["mean_half_spread_bps"], 2)
    metadata["fees"] = dg.MetadataValue.md(
        "| fee bps | net return |\n|---|---|\n"
        + "\n".join(f"| {fee} | {value:+.2%} |" for fee, value in trading["fee_sweep"].items())
    )
    curves = {m: [report["months"][month][f"{key}/{m}"] for month in months] for m in ("lstm", *vd.BASELINES)}
    metadata["per-month plot"] = line_plot(
        {m: v for m, v in curves.items() if not any(x != x for x in v)},
        f"{symbol}: {key} per test month",
        "month",
        key,
        x=months,
    )
    metadata["equity plot"] = line_plot(
        {"LSTM": trading["equity"].tolist(), "buy & hold": trading["hold_equity"].tolist()},
        f"{symbol}: net equity (fee + half-spread)",
        "time",
        "equity",
        x=trading["ts"].to_list(),
    )
    if "ablation" in report:
        ablation = report["ablation"][key]
        metadata["ablation"] = round(ablation["mean"], 4)
        metadata["ablation ci"] = "[{:.4f}, {:.4f}]".format(*ablation["ci"])
        metadata["ablation won"] = f"{ablation['months_won']}/{len(months)}"
        metadata["ablation ll"] = round(report["ablation"]["ll"]["mean"], 4)
        metadata["ablation ll ci"] = "[{:.4f}, {:.4f}]".format(*report["ablation"]["ll"]["ci"])
        metadata["ablation seeds"] = ablation["seeds"]
        metadata["ablation plot"] = line_plot(
            {"with - without sentiment": ablation["per_month"], "zero": [0.0] * len(months)},
            f"{symbol}: sentiment ablation, {key} difference per month",
            "month",
            key,
            x=months,
        )
    return metadata
