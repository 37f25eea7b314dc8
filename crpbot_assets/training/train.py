"""Training loop: windows are strided views over one contiguous tensor; no per-sample Python anywhere.

The whole scaled feature matrix lives on the device (GPU when present). A batch is one gather
(`windows[starts]`) from the `unfold` view, so the data path costs one memory copy per batch.
CUDA runs with mixed precision (fp16 autocast + GradScaler) and the fused Adam kernel (which takes the scaler's
inf check on the device, so no host sync per step); CPU uses every core this process may run on.
cuDNN's LSTM kernels are not bit-deterministic: `TrainConfig.deterministic` turns on torch's deterministic mode.
A window is `sequence_length` consecutive rows ending on a labelled row, all valid and all in one split; minutes
without candles are absent rows, so a window may step over a short outage (nothing is filled in).
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from crpbot_assets.training.dataset import SPLITS, Dataset, scale
from crpbot_assets.training.model import LSTMClassifier

# Batch size and learning rate by device, where the config leaves them unset (None). CPU keeps the long-standing
# defaults. CUDA takes 4x the batch (a GPU's throughput: 731 k samples/s at 4096 against 205 k at 1024 on one
# H200) with the learning rate scaled linearly, 4x: measured on CPU on the replay world (bench_batch_lr.py, 5 seeds,
# small model), its best validation loss was the reference's within noise (-0.0004, se 0.0016), where 2x stayed
# above it (+0.0013, se 0.0006) and 1x further (+0.0024, se 0.0009); README, Benchmarks.
DEVICE_DEFAULTS = {
    "cpu": {"batch_size": 1024, "learning_rate": 1e-3},
    "cuda": {"batch_size": 4096, "learning_rate": 4e-3},
}


@dataclass(frozen=True)
class TrainConfig:
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.2
    sequence_length: int = 60
    batch_size: int | None = None  # None: DEVICE_DEFAULTS of the device it trains on
    learning_rate: float | None = None  # None: DEVICE_DEFAULTS of the device it trains on
    weight_decay: float = 0.0
    epochs: int = 15
    patience: int = 3
    seed: int = 0
    class_weighted: bool = True
    max_train_windows_per_epoch: int | None = None
    eval_batch_size: int = 8192
    deterministic: bool = False  # bit-reproducible CUDA runs (slower); CPU runs are reproducible anyway

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"unknown training config key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**known)

    def for_device(self, device_type: str) -> TrainConfig:
        """This config with the device's batch size and learning rate where they are unset."""
        defaults = DEVICE_DEFAULTS["cuda" if device_type == "cuda" else "cpu"]
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})


@dataclass
class Windows:
    """Scaled rows on a device plus the end-row index of every usable window per split."""

    x: torch.Tensor  # (rows, features) float32, contiguous
    y: torch.Tensor  # (rows,) int64, -1 where unlabelled
    ends: dict[str, torch.Tensor]  # split name -> window end rows (int64, time order)
    length: int

    def batch(self, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, length, features) inputs and labels for windows ending at `ends`: one gather."""
        view = self.x.unfold(0, self.length, 1).transpose(1, 2)  # (rows-length+1, length, features), no copy
        return view[ends - (self.length - 1)], self.y[ends]


def window_ends(
    valid: np.ndarray, labelled: np.ndarray, split: np.ndarray, length: int
) -> dict[str, np.ndarray]:
    """End rows of windows of `length` rows that are all valid, all in one split, and end on a labelled row."""
    bad = np.concatenate([[0], np.cumsum(~valid)])
    end = np.arange(length - 1, len(valid))
    clean = (
        (bad[end + 1] - bad[end + 1 - length] == 0) & labelled[end] & (split[end] == split[end - length + 1])
    )
    return {name: end[clean & (split[end] == code)] for name, code in SPLITS.items()}


def make_windows(
    dataset: Dataset, columns: list[str], length: int, device: torch.device | str = "cpu"
) -> Windows:
    """Scale `columns` with the dataset's training scaler and index every usable window."""
    if length > dataset.config.max_sequence_length:
        raise ValueError(
            f"sequence_length {length} exceeds the dataset's max_sequence_length {dataset.config.max_sequence_length} "
            "(the purge gap was sized for it); rebuild training_dataset with a larger max_sequence_length"
        )
    frame = dataset.frame
    mean, std = dataset.scaler(columns)
    x = torch.from_numpy(scale(frame, columns, mean, std, dataset.config.clip))
    y = torch.from_numpy(frame["label"].fill_null(-1).to_numpy().astype(np.int64))
    ends = window_ends(
        frame["row_valid"].to_numpy(),
        frame["label"].is_not_null().to_numpy(),
        frame["split"].to_numpy(),
        length,
    )
    return Windows(
        x.to(device), y.to(device), {k: torch.from_numpy(v).to(device) for k, v in ends.items()}, length
    )


def pick_device(
    requested: str | None = None, cpu_threads: int | None = None, require_cuda: str | None = None
) -> torch.device:
    """CUDA when available (or requested), else CPU with `cpu_threads` intra-op threads (default: every usable core).

    `require_cuda` names the machine (e.g. "EC2 g4dn.xlarge, ami-..."): CUDA is then mandatory, and its absence
    is an immediate error naming the machine and the driver, never a silent fall-back to CPU.
    """
    if require_cuda is not None:
        if requested not in (None, "cuda") and not str(requested).startswith("cuda:"):
            raise ValueError(f"device {requested!r} requested on {require_cuda}, which trains on CUDA only")
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"CUDA is required on {require_cuda} but torch {torch.__version__} "
                f"(built for CUDA {torch.version.cuda or 'none: a CPU-only build'}) cannot use it; "
                f"driver: {nvidia_driver()}. Check the AMI's NVIDIA driver against the GPU and the torch build."
            )
    device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {requested!r} requested but CUDA is not available to torch {torch.__version__}"
        )
    if device.type == "cpu":
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(cpu_threads or usable)
    else:
        torch.backends.cudnn.benchmark = True
    return device


def nvidia_driver() -> str:
    """GPU name and driver version from `nvidia-smi`, or why they are unknown."""
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found (no NVIDIA driver installed)"
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    output = (result.stdout + result.stderr).strip()
    return output if result.returncode == 0 else f"nvidia-smi failed (status {result.returncode}): {output}"


def set_deterministic(enabled: bool) -> None:
    """torch's deterministic mode, for bit-reproducible CUDA training (cuDNN's LSTM is not by default).

    cuBLAS needs CUBLAS_WORKSPACE_CONFIG before its first use; ops without a deterministic kernel warn.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    model: LSTMClassifier
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    device: str = "cpu"

    @property
    def samples_per_s(self) -> float:
        return float(np.mean([h["samples_per_s"] for h in self.history]))

    @property
    def epoch_seconds(self) -> float:
        return float(np.mean([h["train_seconds"] + h["val_seconds"] for h in self.history]))


def class_weights(y: torch.Tensor, ends: torch.Tensor, n_classes: int = 3) -> torch.Tensor:
    """Inverse-frequency weights over the training windows' labels (mean weight 1)."""
    counts = torch.bincount(y[ends], minlength=n_classes).float().clamp(min=1)
    weights = counts.sum() / (n_classes * counts)
    return weights


def evaluate_loss(
    model: nn.Module, windows: Windows, ends: torch.Tensor, criterion: nn.Module, batch_size: int, amp: bool
) -> float:
    """Mean loss over the windows ending at `ends` (no gradient)."""
    model.eval()
    total = torch.zeros((), device=windows.x.device)
    with torch.no_grad(), torch.autocast(windows.x.device.type, dtype=torch.float16, enabled=amp):
        for start in range(0, len(ends), batch_size):
            xb, yb = windows.batch(ends[start : start + batch_size])
            total += criterion(model(xb).float(), yb) * len(yb)
    return float(total) / max(1, len(ends))


def new_trainer(n_features: int, config: TrainConfig, weights: torch.Tensor | None, device: torch.device):
    """(model, criterion, optimizer, grad scaler) for `config`; the scaler (and so fp16 autocast) is on for CUDA."""
    config = config.for_device(device.type)
    model = LSTMClassifier(n_features, config.hidden_size, config.num_layers, config.dropout).to(device)
    criterion = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        **adam_options(device),
    )
    return model, criterion, optimizer, torch.amp.GradScaler("cuda", enabled=device.type == "cuda")


def adam_options(device: torch.device) -> dict:
    """The fused kernel on CUDA: one launch per step, and GradScaler's inf check stays on the device."""
    return {"fused": True} if device.type == "cuda" else {}


def train_step(
    model: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> torch.Tensor:
    """One optimisation step (fp16 autocast when the scaler is enabled, i.e. on CUDA); the detached loss."""
    with torch.autocast(xb.device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
        loss = criterion(model(xb).float(), yb)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train_model(
    windows: Windows,
    config: TrainConfig,
    progress: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Adam + cross-entropy with early stopping on validation loss; the best epoch's weights are kept."""
    device = windows.x.device
    config = config.for_device(device.type)
    set_deterministic(config.deterministic)
    seed_everything(config.seed)
    train_ends, val_ends = windows.ends["train"], windows.ends["val"]
    if len(train_ends) == 0 or len(val_ends) == 0:
        raise ValueError(
            f"no usable windows: train={len(train_ends)} val={len(val_ends)} (sequence_length={windows.length})"
        )
    weights = class_weights(windows.y, train_ends) if config.class_weighted else None
    model, criterion, optimizer, scaler = new_trainer(windows.x.shape[1], config, weights, device)
    amp = scaler.is_enabled()
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    result = TrainResult(model=model, device=str(device))
    best_loss, best_state, stale = float("inf"), None, 0
    per_epoch = min(len(train_ends), config.max_train_windows_per_epoch or len(train_ends))
    for epoch in range(1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        order = train_ends[torch.randperm(len(train_ends), generator=generator)[:per_epoch].to(device)]
        total = torch.zeros((), device=device)
        for start in range(0, per_epoch, config.batch_size):
            xb, yb = windows.batch(order[start : start + config.batch_size])
            total += train_step(model, xb, yb, criterion, optimizer, scaler) * len(yb)
        train_loss = float(total) / per_epoch  # float() synchronises the device once per epoch
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        val_loss = evaluate_loss(model, windows, val_ends, criterion, config.eval_batch_size, amp)
        val_seconds = time.perf_counter() - started
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "train_seconds": train_seconds,
            "val_seconds": val_seconds,
            "samples_per_s": per_epoch / train_seconds,
            "windows": per_epoch,
        }
        result.history.append(record)
        if val_loss < best_loss - 1e-6:
            best_loss, best_state, stale, result.best_epoch = (
                val_loss,
                copy.deepcopy(model.state_dict()),
                0,
                epoch,
            )
        else:
            stale += 1
        if progress:
            progress(
                {
                    **record,
                    "epochs": config.epochs,
                    "best_epoch": result.best_epoch,
                    "stopping": stale >= config.patience,
                }
            )
        if stale >= config.patience:
            break
    if best_state is None:
        raise RuntimeError(
            f"training diverged: the validation loss was never finite in {len(result.history)} epoch(s); "
            f"lower learning_rate (now {config.learning_rate})"
        )
    model.load_state_dict(best_state)
    model.eval()
    return result


def predict(model: nn.Module, windows: Windows, ends: torch.Tensor, batch_size: int = 8192) -> np.ndarray:
    """Class probabilities (len(ends), 3) for the windows ending at `ends`, in float32."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(ends), batch_size):
            xb, _ = windows.batch(ends[start : start + batch_size])
            out.append(torch.softmax(model(xb).float(), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 3), np.float32)
