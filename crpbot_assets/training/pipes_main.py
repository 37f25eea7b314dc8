"""Training entry point: `python -m crpbot_assets.training.pipes_main`, run inside Dagster Pipes.

Reads `extras = {"symbol", "dataset_uri", "model_uri", "config": {...}}`, trains on CUDA when available (else
CPU), writes the model artifact to `model_uri`, logs every epoch and reports the materialization. A launch of
many jobs runs `crpbot_assets.training.job_runner` instead, which calls `run_training` for each. With
`extras["require_cuda"]` (the machine's description; the EC2 launcher sets it) CUDA is mandatory: without it the
job fails at once, before reading any data, naming the machine and its driver.
With `config.sentiment_ablation` (default true) it trains a second model on the same data without the seven
sentiment features, so one launch (one GPU instance in prod) yields both sides of the ablation in one artifact.

Imports only torch/numpy/polars/pyarrow/dagster_pipes. Launched by PipesSubprocessClient it opens Pipes with
the default (file) channels; on EC2, `crpbot_assets.launchers.ec2_job` opens Pipes over S3 first and runs this
module, which then reuses that open context.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

import torch
from dagster_pipes import PipesContext, PipesEnvVarParamsLoader, open_dagster_pipes

from crpbot_assets.training.artifacts import read_uri, save_artifact, variant_record, write_uri
from crpbot_assets.training.dataset import Dataset, from_parquet_bytes
from crpbot_assets.training.train import TrainConfig, make_windows, pick_device, train_model

REQUIRED_EXTRAS = ("symbol", "dataset_uri", "model_uri")


def run_training(extras: dict, log: Callable[[str], None], dataset: Dataset | None = None) -> dict:
    """Train the variants described by `extras`, write the artifact, return materialization metadata.
    `dataset`: the one at `extras["dataset_uri"]`, when the caller has read it already."""
    missing = [k for k in REQUIRED_EXTRAS if not extras.get(k)]
    if missing:
        raise ValueError(f"training extras lack {missing}; got keys {sorted(extras)}")
    options = dict(extras.get("config") or {})
    ablation = bool(options.pop("sentiment_ablation", True))
    device = pick_device(
        options.pop("device", None), options.pop("cpu_threads", None), extras.get("require_cuda")
    )
    config = TrainConfig.from_dict(options).for_device(device.type)  # the artifact records what was used
    symbol = extras["symbol"]
    started = time.perf_counter()
    if dataset is None:
        dataset = read_dataset(extras["dataset_uri"])
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU x {torch.get_num_threads()} threads"
    )
    log(
        f"{symbol}: dataset {dataset.frame.height:,} rows, {len(dataset.feature_columns)} features, device {device} ({device_name})"
    )
    variants_columns = {"with_sentiment": dataset.feature_columns}
    if ablation:
        variants_columns["without_sentiment"] = dataset.technical_columns
    metadata = {
        "symbol": symbol,
        "device": str(device),
        "device_name": device_name,
        "config": {"raw_value": asdict(config), "type": "json"},
    }
    variants = {}
    for name, columns in variants_columns.items():
        windows = make_windows(dataset, columns, config.sequence_length, device)
        log(
            f"{symbol}/{name}: {len(windows.ends['train']):,} train, {len(windows.ends['val']):,} val windows"
        )

        def progress(r: dict, name=name) -> None:
            log(
                f"{symbol}/{name} epoch {r['epoch']}/{r['epochs']}: train loss {r['train_loss']:.4f}, val loss "
                f"{r['val_loss']:.4f}, {r['train_seconds']:.1f}s ({r['samples_per_s']:,.0f} samples/s), best epoch {r['best_epoch']}"
                + (" - early stop" if r["stopping"] else "")
            )

        result = train_model(windows, config, progress)
        variants[name] = variant_record(result, config, dataset, columns)
        metadata.update(
            {
                f"{name}/best_epoch": result.best_epoch,
                f"{name}/best_val_loss": min(h["val_loss"] for h in result.history),
                f"{name}/epochs_run": len(result.history),
                f"{name}/samples_per_s": round(result.samples_per_s, 1),
                f"{name}/epoch_seconds": round(result.epoch_seconds, 3),
                f"{name}/history": {"raw_value": result.history, "type": "json"},
                f"{name}/features": len(columns),
            }
        )
        del windows
    data = save_artifact(variants, symbol)
    uri = write_uri(extras["model_uri"], data)
    log(f"{symbol}: wrote {len(data):,} bytes to {uri}")
    metadata.update(
        {
            "model_uri": {"raw_value": uri, "type": "path"},
            "artifact_bytes": len(data),
            "wall_seconds": round(time.perf_counter() - started, 2),
        }
    )
    return metadata


def read_dataset(uri: str) -> Dataset:
    return from_parquet_bytes(read_uri(uri), uri)


def open_pipes() -> PipesContext:
    """Open Pipes from the bootstrap environment; a clear error when not launched by Dagster."""
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        raise RuntimeError(
            f"{__name__} must be launched through Dagster Pipes (a training launcher); no Pipes context in env"
        )
    return open_dagster_pipes()


def _train_and_report(pipes: PipesContext) -> None:
    metadata = run_training(dict(pipes.extras), pipes.log.info)
    pipes.report_asset_materialization(metadata=metadata)


def main(work: Callable[[PipesContext], None] = _train_and_report) -> None:
    """`work(pipes)` in the Pipes context: the one a wrapper opened (the EC2 job owns and closes it), else a new one."""
    if PipesContext.is_initialized():
        work(PipesContext.get())
        return
    with open_pipes() as pipes:
        work(pipes)


if __name__ == "__main__":
    main()
