"""Purged walk-forward folds: for each test month, a model trained on a trailing window that ends before it.

Pure polars/numpy/torch (no Dagster). For test month M (a fold):
- the model month F is M (retrain monthly) or the first month of M's quarter (retrain quarterly: one model
  serves the quarter's three months);
- the window is [F - window_months, F - purge): training rows first, then, after a purge gap, the window's
  latest `val_fraction` for early stopping; purge = the dataset's (horizon + max sequence length + feature
  lookback), so no training or validation label, nor the features they were computed from, reaches into M;
- the test rows are every labelled minute of M with a complete, valid input window (a window may start in
  the purge gap before M: those rows are inputs known before the minute, never targets). The last
  `horizon` minutes of M have no label without the next month's candles and are left out.
The fold goes through `dataset.build_dataset` with explicit `SplitCuts`: the same causal join, labels and
train-only scaler as `training_dataset` (train/serve parity).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import torch

from crpbot_assets.training import baselines as bl
from crpbot_assets.training import costs
from crpbot_assets.training.artifacts import build_model, variant_dataset
from crpbot_assets.training.dataset import (
    CLASSES,
    PURGED,
    SPLITS,
    Dataset,
    DatasetConfig,
    DatasetError,
    SplitCuts,
    build_dataset,
)
from crpbot_assets.training.train import make_windows, predict, window_ends

RETRAIN_MONTHS = {"monthly": 1, "quarterly": 3}
PROBABILITY_MODELS = ("lstm", "nosent", "logit", "lgbm")  # nosent: the LSTM without sentiment (ablation)
# The LSTM pair retrained with training seed k >= 1 (seed_columns) is stored as lstm_s<k>_* / nosent_s<k>_*.
CLASS_MODELS = ("majority", "persist")
VARIANT_OF = {"lstm": "with_sentiment", "nosent": "without_sentiment"}
CODE_VERSION = "walk-forward/1"  # bump when a change alters predictions for unchanged inputs


@dataclass(frozen=True)
class WalkForwardConfig:
    window_months: int = 12
    retrain: str = "monthly"  # or "quarterly"
    val_fraction: float = 0.15  # latest share of the window used for early stopping

    def __post_init__(self):
        if self.retrain not in RETRAIN_MONTHS:
            raise ValueError(f"retrain must be one of {sorted(RETRAIN_MONTHS)}, got {self.retrain!r}")
        if self.window_months < 1 or not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"need window_months >= 1 and 0 < val_fraction < 1: {self}")

    @property
    def months_before(self) -> int:
        """How many months before the test month a fold may read (the partition mapping's reach)."""
        return self.window_months + RETRAIN_MONTHS[self.retrain] - 1


def shift_months(month_start: datetime, months: int) -> datetime:
    """The first instant of the month `months` after (negative: before) `month_start`."""
    year, month = divmod(month_start.year * 12 + month_start.month - 1 + months, 12)
    return month_start.replace(year=year, month=month + 1, day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Fold:
    test_start: datetime
    test_end: datetime
    model_month: datetime
    window_start: datetime
    val_end: datetime
    purge: timedelta
    val_fraction: float

    def cuts(self, data_start: datetime) -> SplitCuts:
        """Split cuts for a window whose data begins at `data_start` (later than `window_start` when less
        history is materialized): the latest `val_fraction` of it validates, a purge gap before it."""
        start = max(self.window_start, data_start)
        val_minutes = round((self.val_end - start).total_seconds() / 60 * self.val_fraction)
        train_end = self.val_end - timedelta(minutes=val_minutes) - self.purge
        if train_end <= start:
            raise DatasetError(
                f"the window {start:%Y-%m-%d %H:%M}..{self.val_end:%Y-%m-%d %H:%M} before the test month "
                f"{self.test_start:%Y-%m} is too short for a validation part and two purge gaps of {self.purge} "
                "(materialize earlier months)"
            )
        return SplitCuts(train_end=train_end, val_end=self.val_end, test_start=self.test_start)


def plan_fold(test_month: datetime, config: WalkForwardConfig, dataset_config: DatasetConfig) -> Fold:
    """The fold whose test month starts at `test_month` (see the module docstring)."""
    step = RETRAIN_MONTHS[config.retrain]
    model_month = shift_months(test_month, -((test_month.month - 1) % step))
    purge = timedelta(minutes=dataset_config.purge_minutes)
    return Fold(
        test_start=test_month,
        test_end=shift_months(test_month, 1),
        model_month=model_month,
        window_start=shift_months(model_month, -config.window_months),
        val_end=model_month - purge,
        purge=purge,
        val_fraction=config.val_fraction,
    )


def fold_dataset(
    features: pl.DataFrame,
    sentiment: pl.DataFrame,
    candles: pl.DataFrame,
    fold: Fold,
    dataset_config: DatasetConfig,
    symbol: str = "",
) -> Dataset:
    """The fold's rows (window + test month) through `build_dataset` with the fold's cuts; purge asserted."""

    def inside(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter((pl.col("ts") >= fold.window_start) & (pl.col("ts") < fold.test_end))

    features = inside(features)
    if features.filter(pl.col("ts") < fold.val_end).height == 0:
        raise DatasetError(
            f"{symbol}: no features in the training window {fold.window_start:%Y-%m}..{fold.val_end:%Y-%m-%d} "
            f"before the test month {fold.test_start:%Y-%m} (materialize `features` for earlier months)"
        )

    dataset = build_dataset(
        features,
        sentiment.filter(pl.col("ts") <= fold.test_end) if sentiment.height else sentiment,
        inside(candles),
        dataset_config,
        symbol,
        fold.cuts(features["ts"].min()),
    )
    assert_purged(dataset, fold)
    return dataset


def assert_purged(dataset: Dataset, fold: Fold) -> None:
    """No training/validation row (its label, window or feature lookback) reaches the test month."""
    frame = dataset.frame
    fitted = frame.filter(pl.col("split").is_in([SPLITS["train"], SPLITS["val"]]))["ts"]
    tested = frame.filter(pl.col("split") == SPLITS["test"])["ts"]
    if fitted.len() and fitted.max() + fold.purge > fold.test_start:
        raise DatasetError(
            f"leak: a training row at {fitted.max()} is within the purge gap {fold.purge} of {fold.test_start}"
        )
    if tested.len() and (tested.min() < fold.test_start or tested.max() >= fold.test_end):
        raise DatasetError(
            f"test rows {tested.min()}..{tested.max()} outside {fold.test_start}..{fold.test_end}"
        )


def training_part(dataset: Dataset) -> Dataset:
    """Only the training and validation rows (what the training job needs; the test month stays here)."""
    frame = dataset.frame.filter(pl.col("split").is_in([SPLITS["train"], SPLITS["val"]]))
    return Dataset(
        frame,
        dataset.feature_columns,
        dataset.sentiment_columns,
        dataset.mean,
        dataset.std,
        dataset.config,
        dataset.symbol,
    )


def fingerprint(frame: pl.DataFrame, *parts) -> str:
    """A content hash of a frame's rows plus JSON-able parts (stable for a given polars version)."""
    digest = hashlib.sha256(json.dumps([frame.columns, [str(t) for t in frame.dtypes]]).encode())
    digest.update(frame.hash_rows(seed=0).to_numpy().tobytes())
    digest.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def model_fingerprint(train_part: Dataset, train_options: dict) -> str:
    """Identity of a fold's trained model: its rows, scaler and every training setting."""
    return fingerprint(
        train_part.frame,
        CODE_VERSION,
        train_part.mean.tolist(),
        train_part.std.tolist(),
        asdict(train_part.config),
        train_options,
    )


def test_window_ends(dataset: Dataset, length: int) -> np.ndarray:
    """End rows of the test windows: labelled test rows whose `length` rows are all valid; inputs may lie in
    the purge gap before the test month (known before the minute), never in a fitted split."""
    frame = dataset.frame
    split = frame["split"].to_numpy()
    fitted = np.flatnonzero((split == SPLITS["train"]) | (split == SPLITS["val"]))
    window_split = split.copy()
    gap_rows = (split == PURGED) & (np.arange(len(split)) > (fitted.max() if len(fitted) else -1))
    window_split[gap_rows] = SPLITS["test"]
    labelled = frame["label"].is_not_null().to_numpy() & (split == SPLITS["test"])
    return window_ends(frame["row_valid"].to_numpy(), labelled, window_split, length)["test"]


def seed_model(name: str, k: int) -> str:
    """The column prefix of LSTM variant `name` (lstm or nosent) trained with the k-th seed (0: `name`)."""
    return name if k == 0 else f"{name}_s{k}"


def predict_fold(
    dataset: Dataset,
    artifact: dict,
    candles: pl.DataFrame,
    baseline_config: bl.BaselineConfig = bl.BaselineConfig(),
    log=lambda message: None,
    seed_artifacts: tuple[dict, ...] = (),
) -> tuple[pl.DataFrame, dict]:
    """One row per test minute: label, forward return, half-spread (costs.py), horizon, every model's prediction.

    The LSTM variants come from `artifact` (trained on the fold's train/val rows); `seed_artifacts` are the
    same training with further seeds (columns lstm_s1_*, nosent_s1_*, ...: the ablation's training noise).
    The baselines are fitted here on the windows the LSTM trained on (last row of each) and scored on the same
    test windows. Also returns counts for metadata.
    """
    variants = artifact["variants"]
    main = variants["with_sentiment"]
    length = int(main["config"]["sequence_length"])
    ends = test_window_ends(dataset, length)
    if len(ends) == 0:
        raise DatasetError(f"{dataset.symbol}: no usable test window of length {length} in the test month")
    ends_t = torch.from_numpy(ends)
    columns: dict[str, np.ndarray] = {}
    windows = {}
    built = {}  # the seeds of a variant share its columns and scaler (fitted on the same rows): one build
    for k, trained in enumerate((artifact, *seed_artifacts)):
        for name, variant_name in VARIANT_OF.items():
            if variant_name not in trained["variants"]:
                continue
            variant = trained["variants"][variant_name]
            if int(variant["config"]["sequence_length"]) != length:
                raise ValueError(
                    f"seed artifact {k}: sequence length {variant['config']['sequence_length']} != {length}"
                )
            key = (
                tuple(variant["feature_columns"]),
                variant["scaler_mean"].numpy().tobytes(),
                variant["scaler_std"].numpy().tobytes(),
            )
            if key not in built:
                built[key] = make_windows(
                    variant_dataset(dataset, variant), variant["feature_columns"], length
                )
            windows.setdefault(name, built[key])
            probabilities = predict(build_model(variant), built[key], ends_t)
            columns.update({f"{seed_model(name, k)}_{c}": probabilities[:, i] for i, c in enumerate(CLASSES)})
    fitted = windows["lstm"]
    train_ends = fitted.ends["train"].numpy()
    val_ends = fitted.ends["val"].numpy()
    x = fitted.x.numpy()
    y = fitted.y.numpy()
    sample = train_ends[bl.evenly(len(train_ends), baseline_config.max_train_rows)]
    balanced = bool(main["config"].get("class_weighted", True))
    log(
        f"baselines: {len(sample):,} training rows, {len(val_ends):,} validation rows, {len(ends):,} test rows"
    )
    logistic = bl.fit_logistic(x[sample], y[sample], baseline_config, balanced)
    booster = bl.fit_lightgbm(x[sample], y[sample], x[val_ends], y[val_ends], baseline_config, balanced)
    for name, probabilities in (
        ("logit", bl.predict_logistic(logistic, x[ends])),
        ("lgbm", bl.predict_lightgbm(booster, x[ends])),
    ):
        columns.update({f"{name}_{c}": probabilities[:, i] for i, c in enumerate(CLASSES)})
    test = dataset.frame[ends]
    candle_rows = test.select("ts").join(candles, on="ts", how="left", maintain_order="left")
    spread = costs.half_spread_bps(
        candle_rows["high"].to_numpy(), candle_rows["low"].to_numpy(), candle_rows["close"].to_numpy()
    )
    past = test["past_return"].fill_null(0.0).to_numpy()
    frame = test.select("ts", "label", "fwd_return").with_columns(
        **{k: pl.Series(v, dtype=pl.Float32) for k, v in columns.items()},
        majority=pl.lit(bl.majority_class(y[train_ends]), pl.Int8),
        persist=pl.Series(bl.persistence(past, dataset.config.dead_zone_bps / 1e4), dtype=pl.Int8),
        half_spread_bps=pl.Series(spread, dtype=pl.Float32),
        horizon_minutes=pl.lit(dataset.config.horizon_minutes, pl.Int16),
    )
    info = {
        "test_rows": frame.height,
        "train_windows": len(train_ends),
        "val_windows": len(val_ends),
        "baseline_train_rows": len(sample),
        "lgbm_rounds": int(booster.best_iteration),
    }
    return frame, info
