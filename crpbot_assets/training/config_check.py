"""Validation of a training config where it enters, before any process or instance is launched. No Dagster.

`training_config_problems` checks every field of `lstm_model`'s config (TrainConfig + the launch options) for
type and bounds, and `sequence_length` against the dataset it will train on; each problem names the field, its
value and why. `validate_training_config` raises them all at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields

from crpbot_assets.training.train import TrainConfig

# Options the entry point takes besides TrainConfig (see pipes_main): popped before TrainConfig.from_dict.
LAUNCH_OPTIONS = ("sentiment_ablation", "device", "cpu_threads")
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


class TrainingConfigError(ValueError):
    """A training config that cannot train: every bad field, with its value and why."""


@dataclass(frozen=True)
class DataLimits:
    """What the stored dataset allows: the purge gap's sequence length and the rows of its smallest split."""

    max_sequence_length: int | None = None
    smallest_split_rows: int | None = None
    smallest_split: str = ""


def _integer(minimum: int, maximum: int | None = None, optional: bool = False) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value is None and optional:
            return ""
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer{' or null' if optional else ''}, got {type(value).__name__}"
        if value < minimum:
            return f"must be >= {minimum}"
        if maximum is not None and value > maximum:
            return f"must be <= {maximum}"
        return ""

    return check


def _number(
    low: float, low_inclusive: bool, high: float | None = None, optional: bool = False
) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value is None and optional:
            return ""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return "must be finite"
        if value < low or (value == low and not low_inclusive):
            return f"must be {'>=' if low_inclusive else '>'} {low:g}"
        if high is not None and value >= high:
            return f"must be < {high:g}"
        return ""

    return check


def _boolean(value: object) -> str:
    return "" if isinstance(value, bool) else f"must be true or false, got {type(value).__name__}"


def _device(value: object) -> str:
    if value is None or (isinstance(value, str) and DEVICE_PATTERN.fullmatch(value)):
        return ""
    return "must be null (auto), 'cpu', 'cuda' or 'cuda:N'"


RULES: dict[str, Callable[[object], str]] = {
    "hidden_size": _integer(1),
    "num_layers": _integer(1),
    "dropout": _number(0.0, True, 1.0),
    "sequence_length": _integer(1),
    "batch_size": _integer(1, optional=True),  # None: the device's (train.DEVICE_DEFAULTS)
    "learning_rate": _number(0.0, False, optional=True),
    "weight_decay": _number(0.0, True),
    "epochs": _integer(1),
    "patience": _integer(1),
    "seed": _integer(0, 2**32 - 1),
    "class_weighted": _boolean,
    "deterministic": _boolean,
    "max_train_windows_per_epoch": _integer(1, optional=True),
    "eval_batch_size": _integer(1),
    "sentiment_ablation": _boolean,
    "device": _device,
    "cpu_threads": _integer(1, optional=True),
}
_KNOWN = {f.name for f in fields(TrainConfig)} | set(LAUNCH_OPTIONS)
if set(RULES) != _KNOWN:  # a field added to TrainConfig must get a rule here
    raise RuntimeError(f"config_check.RULES out of date: {sorted(set(RULES) ^ _KNOWN)}")


def training_config_problems(values: dict, limits: DataLimits = DataLimits()) -> list[str]:
    """Every problem of `values` (TrainConfig fields + launch options; missing ones take their defaults)."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    defaults.update(sentiment_ablation=True, device=None, cpu_threads=None)
    problems = [
        f"{key}: unknown field (known: {', '.join(sorted(RULES))})" for key in values if key not in RULES
    ]
    config = {**defaults, **{k: v for k, v in values.items() if k in RULES}}
    for name, rule in RULES.items():
        if why := rule(config[name]):
            problems.append(f"{name} = {config[name]!r}: {why}")
    length = config["sequence_length"]
    if RULES["sequence_length"](length):
        return problems
    if limits.max_sequence_length is not None and length > limits.max_sequence_length:
        problems.append(
            f"sequence_length = {length}: must be <= the dataset's max_sequence_length "
            f"{limits.max_sequence_length} (its purge gap was sized for it; rebuild training_dataset with a "
            "larger max_sequence_length)"
        )
    if limits.smallest_split_rows is not None and length > limits.smallest_split_rows:
        problems.append(
            f"sequence_length = {length}: must be <= the rows available, {limits.smallest_split_rows} "
            f"labelled rows in the {limits.smallest_split} split (a window must fit inside one split)"
        )
    return problems


def validate_training_config(values: dict, limits: DataLimits = DataLimits(), where: str = "") -> None:
    """Raise TrainingConfigError listing every problem of `values`; nothing when the config can train."""
    if problems := training_config_problems(values, limits):
        prefix = f"{where}: " if where else ""
        raise TrainingConfigError(f"{prefix}invalid training config: " + "; ".join(problems))
