"""Test-segment evaluation: classification metrics vs baselines, a fee-aware backtest, the sentiment ablation.

Baselines (on exactly the model's test windows):
- majority: always the most frequent class of the training windows;
- persistence: the direction (same dead zone) of the last completed N-minute return, known at `ts`.

Backtest: trades only at minutes on the N-minute grid (epoch minute % N == 0) so holding periods never overlap.
At such a minute the position is set from the prediction made with data up to its close, held N minutes and
earns the label's forward return. long/short: down -> -1, flat -> 0, up -> +1; long/flat: up -> +1 else 0.
Every change of position costs `fee_bps` per unit traded (-1 -> +1 pays twice). Grid minutes without a usable
test window (missing candles, invalid rows) are skipped: the strategy is flat for that period (and pays to leave and re-enter).
Turnover and costs are costs.py's (the walk-forward verdict adds the half-spread and a threshold there).
Sharpe is annualised with sqrt(periods per year) on per-period net returns (no risk-free rate).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from crpbot_assets.training import baselines, costs
from crpbot_assets.training.artifacts import build_model, variant_dataset
from crpbot_assets.training.costs import DEFAULT_FEE_BPS, POSITIONS
from crpbot_assets.training.dataset import CLASSES, Dataset
from crpbot_assets.training.train import make_windows, predict

MINUTES_PER_YEAR = 365 * 24 * 60


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int = 3) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    matrix = confusion(y_true, y_pred)
    support = matrix.sum(axis=1)
    recalls = np.diag(matrix)[support > 0] / support[support > 0]
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "balanced_accuracy": float(recalls.mean()) if len(recalls) else float("nan"),
        "confusion_matrix": matrix.tolist(),
        "samples": int(len(y_true)),
    }


def backtest(
    predictions: np.ndarray,
    fwd_return: np.ndarray,
    fee_bps: float,
    horizon_minutes: int,
    mode: str,
    follows_previous: np.ndarray | None = None,
) -> dict:
    """Equity curve and statistics for non-overlapping N-minute holding periods (inputs already on the grid).

    `follows_previous[i]` is False where grid periods were skipped before period i: the strategy was flat in
    between, so it pays to leave the previous position and to enter the new one.
    """
    position = costs.positions_from_classes(predictions, mode)
    period = costs.simulate(position, fwd_return, fee_bps, 0.0, follows_previous)
    net = period["net"]
    equity = np.cumprod(1.0 + net)
    drawdown = equity / np.maximum.accumulate(equity) - 1.0 if len(equity) else np.zeros(0)
    std = net.std()
    return {
        "total_return": float(equity[-1] - 1.0) if len(equity) else 0.0,
        "sharpe": float(net.mean() / std * np.sqrt(MINUTES_PER_YEAR / horizon_minutes)) if std > 0 else 0.0,
        "max_drawdown": float(drawdown.min()) if len(drawdown) else 0.0,
        "trades": int(np.count_nonzero(period["turnover"])),
        "periods": int(len(net)),
        "exposure": float(np.mean(position != 0)) if len(position) else 0.0,
        "equity": equity,
    }


def evaluate_variant(dataset: Dataset, variant: dict, fee_bps: float) -> dict:
    """Metrics, baselines and backtests of one trained variant on the test windows."""
    data = variant_dataset(dataset, variant)
    length = int(variant["config"]["sequence_length"])
    windows = make_windows(data, variant["feature_columns"], length, "cpu")
    ends = windows.ends["test"]
    if len(ends) == 0:
        raise ValueError(f"{dataset.symbol}: no usable test windows of length {length}")
    probabilities = predict(build_model(variant), windows, ends)
    rows = ends.numpy()
    test = dataset.frame[rows]
    y_true = test["label"].to_numpy().astype(np.int64)
    y_pred = probabilities.argmax(axis=1)
    train_labels = windows.y[windows.ends["train"]].numpy()
    majority = baselines.majority_class(train_labels)
    past = test["past_return"].to_numpy()
    persistence = baselines.persistence(past, dataset.config.dead_zone_bps / 1e4)  # null past -> flat
    horizon = dataset.config.horizon_minutes
    epoch_minute = test["ts"].dt.epoch("s").to_numpy() // 60
    grid = epoch_minute % horizon == 0
    fwd = test["fwd_return"].to_numpy()[grid]
    grid_minutes = epoch_minute[grid]
    follows = np.diff(grid_minutes, prepend=grid_minutes[:1] - horizon) == horizon
    result = {
        "model": classification_metrics(y_true, y_pred),
        "majority_baseline": {
            **classification_metrics(y_true, np.full_like(y_true, majority)),
            "class": CLASSES[majority],
        },
        "persistence_baseline": classification_metrics(y_true, persistence),
        "backtest": {
            mode: backtest(y_pred[grid], fwd, fee_bps, horizon, mode, follows) for mode in POSITIONS
        },
        "backtest_gross": {
            mode: backtest(y_pred[grid], fwd, 0.0, horizon, mode, follows) for mode in POSITIONS
        },
        # bought once, costs once: held across skipped grid minutes (a gap in the data is not a sale)
        "buy_and_hold": backtest(np.full(grid.sum(), 2), fwd, fee_bps, horizon, "long_flat"),
        "test_first_ts": str(test["ts"][0]),
        "test_last_ts": str(test["ts"][-1]),
        "features": len(variant["feature_columns"]),
        "best_epoch": int(variant["best_epoch"]),
    }
    result["grid_ts"] = test["ts"].filter(pl.Series(grid))
    return result


def evaluate_artifact(dataset: Dataset, artifact: dict, fee_bps: float = DEFAULT_FEE_BPS) -> dict[str, dict]:
    """Every variant in the artifact (with and, for the ablation, without sentiment) on the same test segment."""
    return {
        name: evaluate_variant(dataset, variant, fee_bps) for name, variant in artifact["variants"].items()
    }


def report(results: dict[str, dict], fee_bps: float) -> dict:
    """JSON-ready summary (equity curves dropped) with the ablation deltas when both variants exist."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("equity", "grid_ts")}
        return value

    out = {"fee_bps": fee_bps, "variants": strip(results)}
    if {"with_sentiment", "without_sentiment"} <= results.keys():
        a, b = results["with_sentiment"], results["without_sentiment"]
        out["sentiment_ablation"] = {
            "accuracy_delta": a["model"]["accuracy"] - b["model"]["accuracy"],
            "balanced_accuracy_delta": a["model"]["balanced_accuracy"] - b["model"]["balanced_accuracy"],
            "long_short_return_delta": a["backtest"]["long_short"]["total_return"]
            - b["backtest"]["long_short"]["total_return"],
        }
    return out
