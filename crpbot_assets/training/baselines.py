"""Baselines the LSTM must beat, fitted and scored on exactly its windows (same rows, same scaler).

- majority: the most frequent class of the training windows' labels;
- persistence: the direction (same dead zone) of the last completed N-minute return, known at `ts`;
- logistic: multinomial logistic regression on the window's last row of standardized features (torch, L-BFGS,
  L2 penalty);
- lightgbm: gradient-boosted trees (LightGBM) on the same last-row features, early-stopped on validation
  log loss.
The trained baselines use the LSTM's class weighting (inverse class frequency) when it is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import torch

N_CLASSES = 3


@dataclass(frozen=True)
class BaselineConfig:
    logistic_l2: float = 1e-3  # penalty on the weights (mean loss + l2 * |W|^2)
    logistic_iterations: int = 100
    lgbm_rounds: int = 300
    lgbm_learning_rate: float = 0.05
    lgbm_leaves: int = 31
    lgbm_min_child_samples: int = 200
    lgbm_early_stopping: int = 20
    max_train_rows: int = 300_000  # training rows sampled (evenly in time) for the tree and the regression
    seed: int = 0


def majority_class(train_labels: np.ndarray) -> int:
    return int(np.bincount(train_labels, minlength=N_CLASSES).argmax())


def persistence(past_return: np.ndarray, dead_zone: float) -> np.ndarray:
    """The class of the last completed N-minute return; unknown (NaN) past -> flat."""
    return np.where(past_return > dead_zone, 2, np.where(past_return < -dead_zone, 0, 1))


def sample_weights(y: np.ndarray, balanced: bool) -> np.ndarray:
    """Inverse class frequency (mean weight 1) when `balanced`, else ones."""
    if not balanced:
        return np.ones(len(y), np.float32)
    counts = np.maximum(np.bincount(y, minlength=N_CLASSES), 1)
    return (len(y) / (N_CLASSES * counts))[y].astype(np.float32)


def evenly(n: int, limit: int) -> np.ndarray:
    """At most `limit` indices spread evenly over range(n), in order."""
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).round().astype(np.int64)


def fit_logistic(x: np.ndarray, y: np.ndarray, config: BaselineConfig, balanced: bool) -> dict:
    """Multinomial logistic regression (weights, bias) by full-batch L-BFGS."""
    torch.manual_seed(config.seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    wt = torch.from_numpy(sample_weights(y, balanced))
    weight = torch.zeros(x.shape[1], N_CLASSES, requires_grad=True)
    bias = torch.zeros(N_CLASSES, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=config.logistic_iterations, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        losses = torch.nn.functional.cross_entropy(xt @ weight + bias, yt, reduction="none")
        loss = (losses * wt).sum() / wt.sum() + config.logistic_l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return {"weight": weight.detach().numpy(), "bias": bias.detach().numpy()}


def predict_logistic(model: dict, x: np.ndarray) -> np.ndarray:
    logits = x @ model["weight"] + model["bias"]
    logits -= logits.max(axis=1, keepdims=True)
    expo = np.exp(logits)
    return (expo / expo.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_lightgbm(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: BaselineConfig,
    balanced: bool,
    threads: int = 0,
) -> lgb.Booster:
    """LightGBM multiclass trees, early-stopped on the validation windows' log loss."""
    params = {
        "objective": "multiclass",
        "num_class": N_CLASSES,
        "learning_rate": config.lgbm_learning_rate,
        "num_leaves": config.lgbm_leaves,
        "min_child_samples": config.lgbm_min_child_samples,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": config.seed,
        "deterministic": True,
        "num_threads": threads,
        "verbosity": -1,
    }
    train = lgb.Dataset(x, y, weight=sample_weights(y, balanced), free_raw_data=True)
    val = lgb.Dataset(x_val, y_val, weight=sample_weights(y_val, balanced), reference=train)
    return lgb.train(
        params,
        train,
        num_boost_round=config.lgbm_rounds,
        valid_sets=[val],
        callbacks=[lgb.early_stopping(config.lgbm_early_stopping, verbose=False)],
    )


def predict_lightgbm(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(x, num_iteration=booster.best_iteration), dtype=np.float32)
