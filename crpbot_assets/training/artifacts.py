"""Model artifacts (tensors and plain values only, loadable with `weights_only=True`) and URI file access."""

from __future__ import annotations

import io
from dataclasses import asdict

import torch

from crpbot_assets.common.storage import Storage
from crpbot_assets.training.dataset import Dataset
from crpbot_assets.training.model import LSTMClassifier
from crpbot_assets.training.train import TrainConfig, TrainResult

FORMAT = "crpbot-lstm/2"  # 2: trained on sentiment relative to its trailing week (dataset.py)


def _split_uri(uri: str) -> tuple[Storage, str]:
    base, _, name = uri.rstrip("/").rpartition("/")
    if not base or not name:
        raise ValueError(f"not a file URI: {uri!r}")
    return Storage(base), name


def read_uri(uri: str) -> bytes:
    """Bytes at a local path or s3:// URI (endpoint from AWS_ENDPOINT_URL_S3 when set)."""
    storage, name = _split_uri(uri)
    return storage.read_bytes(name)


def write_uri(uri: str, data: bytes) -> str:
    """Write atomically to a local path or s3:// URI."""
    storage, name = _split_uri(uri)
    return storage.write_bytes(name, data)


def variant_record(result: TrainResult, config: TrainConfig, dataset: Dataset, columns: list[str]) -> dict:
    """One trained model as plain types and tensors: weights, config, features, scaler, training history."""
    mean, std = dataset.scaler(columns)
    return {
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "config": asdict(config),
        "feature_columns": list(columns),
        "scaler_mean": torch.from_numpy(mean.copy()),
        "scaler_std": torch.from_numpy(std.copy()),
        "clip": float(dataset.config.clip),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "device": result.device,
    }


def save_artifact(variants: dict[str, dict], symbol: str) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "symbol": symbol, "variants": variants}, buffer)
    return buffer.getvalue()


def load_artifact(data: bytes, source: str = "model artifact") -> dict:
    """Decode an artifact without unpickling code; a clear error for anything else."""
    try:
        artifact = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError variants for bad files
        raise ValueError(f"{source} is not a loadable crpbot model artifact: {exc}") from exc
    if not isinstance(artifact, dict) or artifact.get("format") != FORMAT:
        raise ValueError(f"{source}: unsupported artifact format (expected {FORMAT})")
    return artifact


def build_model(variant: dict) -> LSTMClassifier:
    """The variant's model with its trained weights, in eval mode on CPU."""
    config = TrainConfig.from_dict(variant["config"])
    model = LSTMClassifier(
        len(variant["feature_columns"]), config.hidden_size, config.num_layers, config.dropout
    )
    model.load_state_dict(variant["state_dict"])
    return model.eval()


def variant_dataset(dataset: Dataset, variant: dict) -> Dataset:
    """The dataset with the artifact's own scaler for its columns (what the model was trained with)."""
    columns = variant["feature_columns"]
    missing = [c for c in columns if c not in dataset.feature_columns]
    if missing:
        raise ValueError(f"dataset lacks feature column(s) the model was trained on: {missing}")
    mean = dataset.mean.copy()
    std = dataset.std.copy()
    positions = [dataset.feature_columns.index(c) for c in columns]
    mean[positions] = variant["scaler_mean"].numpy()
    std[positions] = variant["scaler_std"].numpy()
    return Dataset(
        dataset.frame,
        dataset.feature_columns,
        dataset.sentiment_columns,
        mean,
        std,
        dataset.config,
        dataset.symbol,
    )
