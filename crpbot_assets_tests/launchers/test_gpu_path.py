"""The training job's GPU path, checked where no GPU is: CUDA required on EC2 (fails fast with the reason),
the fused Adam that AMP needs to avoid a host sync per step, and the determinism switch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crpbot_assets.training.train import (
    DEVICE_DEFAULTS,
    TrainConfig,
    adam_options,
    new_trainer,
    pick_device,
    set_deterministic,
)

REPO = Path(__file__).resolve().parents[2]
MACHINE = "EC2 g4dn.xlarge (ami-0abc, us-east-1)"


def test_training_job_without_cuda_fails_before_reading_data(tmp_path):
    """CUDA made unavailable (CUDA_VISIBLE_DEVICES empty, no nvidia-smi on PATH): the job names the reason."""
    code = (
        "from crpbot_assets.training.pipes_main import run_training\n"
        f"run_training({{'symbol': 'BTC-USD', 'dataset_uri': {str(tmp_path / 'absent.parquet')!r}, "
        f"'model_uri': {str(tmp_path / 'm.pt')!r}, 'require_cuda': {MACHINE!r}}}, print)\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"RuntimeError: CUDA is required on {MACHINE} but torch {torch.__version__}")
    assert "driver: nvidia-smi not found (no NVIDIA driver installed)" in last
    assert "absent.parquet" not in result.stderr  # it failed before touching the dataset
    assert not (tmp_path / "m.pt").exists()


def test_cpu_is_refused_where_cuda_is_required():
    with pytest.raises(ValueError, match=r"device 'cpu' requested on EC2 g4dn.xlarge .* CUDA only"):
        pick_device("cpu", require_cuda=MACHINE)


def test_fused_adam_on_cuda_only():
    """Fused Adam takes GradScaler's inf check on the device (no host sync per step); CPU keeps the default."""
    assert adam_options(torch.device("cuda")) == {"fused": True}
    assert adam_options(torch.device("cpu")) == {}
    params = [torch.nn.Parameter(torch.zeros(3))]
    fused = torch.optim.Adam(params, **adam_options(torch.device("cuda")))  # torch also fuses on CPU
    assert fused.defaults["fused"] and fused._step_supports_amp_scaling
    _, _, optimizer, scaler = new_trainer(
        4, TrainConfig(hidden_size=4, num_layers=1), None, torch.device("cpu")
    )
    assert not optimizer.defaults["fused"] and not scaler.is_enabled()


def test_determinism_switch(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def test_unset_batch_size_and_learning_rate_take_the_devices_defaults():
    assert (TrainConfig().batch_size, TrainConfig().learning_rate) == (None, None)
    assert TrainConfig().for_device("cpu") == TrainConfig(batch_size=1024, learning_rate=1e-3)
    cuda = DEVICE_DEFAULTS["cuda"]
    assert TrainConfig().for_device("cuda") == TrainConfig(**cuda)
    assert cuda["batch_size"] > 1024 and cuda["learning_rate"] > 1e-3  # a larger batch, a scaled rate
    assert TrainConfig(batch_size=64).for_device("cuda") == TrainConfig(
        batch_size=64, learning_rate=cuda["learning_rate"]
    )
    _, _, optimizer, _ = new_trainer(4, TrainConfig(hidden_size=4, num_layers=1), None, torch.device("cpu"))
    assert optimizer.defaults["lr"] == 1e-3
