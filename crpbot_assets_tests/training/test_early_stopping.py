"""Early stopping scores exactly the validation windows, every epoch, and never a test window.

The walk-forward's training part has no test rows, so only `train_model` on a dataset with all three splits can
show which windows the stopping rule sees: every window the loop gathers is recorded, with whether it was for a
gradient step (training) or scored without gradients (the stopping rule).
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from crpbot_assets.training.train import TrainConfig, Windows, train_model

LENGTH = 16
CONFIG = TrainConfig(
    hidden_size=8, num_layers=1, dropout=0.0, sequence_length=LENGTH, batch_size=128, epochs=3, patience=10
)


@dataclass
class RecordedWindows(Windows):
    """Windows that remember every batch gathered: (gradients enabled, window end rows)."""

    gathered: list[tuple[bool, list[int]]] = field(default_factory=list)

    def batch(self, ends: torch.Tensor):
        self.gathered.append((torch.is_grad_enabled(), ends.tolist()))
        return super().batch(ends)


def three_splits(rows: int = 3_000, features: int = 4) -> RecordedWindows:
    rng = np.random.default_rng(0)
    ends = {
        "train": np.arange(LENGTH, 1_900),
        "val": np.arange(1_900 + 2 * LENGTH, 2_400),
        "test": np.arange(2_400 + 2 * LENGTH, rows),
    }
    return RecordedWindows(
        torch.from_numpy(rng.normal(size=(rows, features)).astype(np.float32)),
        torch.from_numpy(rng.integers(0, 3, rows)),
        {name: torch.from_numpy(e) for name, e in ends.items()},
        LENGTH,
    )


def test_early_stopping_scores_exactly_the_validation_windows_and_never_a_test_window():
    windows = three_splits()
    result = train_model(windows, CONFIG)
    val = windows.ends["val"].tolist()
    test = set(windows.ends["test"].tolist())
    scored = [ends for grad, ends in windows.gathered if not grad]
    trained = [ends for grad, ends in windows.gathered if grad]
    assert not test & {e for _, ends in windows.gathered for e in ends}  # no test window is ever gathered
    assert {e for ends in trained for e in ends} <= set(windows.ends["train"].tolist())
    per_epoch = len(scored) // len(result.history)
    assert len(result.history) == CONFIG.epochs and per_epoch * CONFIG.epochs == len(scored)
    for epoch in range(CONFIG.epochs):  # each epoch scores every validation window once, in time order
        assert sum(scored[epoch * per_epoch : (epoch + 1) * per_epoch], []) == val
