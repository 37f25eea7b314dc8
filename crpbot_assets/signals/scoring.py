"""Live scoring: the promoted model's class probabilities and position for each new minute of features.

Pure polars/numpy/torch (no Dagster). Train/serve parity with training/: the minute's row is its features
joined with the sentiment of the last completed hour, relative to its trailing week
(`dataset.join_relative_sentiment`), valid when every technical feature is finite; the input is the
`sequence_length` rows ending at the minute (rows, not minutes: a short outage is stepped over as in
training), all valid, standardised with the artifact's own training scaler
(`dataset.scale`), and scored by `train.predict`. A minute without a complete valid window gets no signal.
Causality: the signal for minute t uses feature rows with ts <= t (features are causal to t's close) and
sentiment hours ending by t + 1 minute, so it is known at t's close (tests/signals: truncation test).
The position follows the evaluation's rule (`costs.positions_from_probabilities`: argmax direction when its
probability reaches the threshold; long_short or long_flat).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import torch

from crpbot_assets.sentiment.features import FEATURE_COLUMNS as SENTIMENT_COLUMNS
from crpbot_assets.training import costs
from crpbot_assets.training.artifacts import build_model
from crpbot_assets.training.dataset import CLASSES, SPLITS, join_relative_sentiment, row_valid, scale
from crpbot_assets.training.train import Windows, predict, window_ends

PROBABILITY_COLUMNS = [f"p_{c}" for c in CLASSES]
SIGNAL_SCHEMA = {
    "ts": pl.Datetime("us", "UTC"),
    **{c: pl.Float32 for c in PROBABILITY_COLUMNS},
    "position": pl.Int8,
    "model_version": pl.String,
}


def empty_signals() -> pl.DataFrame:
    return pl.DataFrame(schema=SIGNAL_SCHEMA)


def serving_rows(features: pl.DataFrame, sentiment: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """`ts`, the model's `columns` and `row_valid`, one row per feature minute, sorted."""
    missing = [c for c in columns if c not in features.columns and c not in SENTIMENT_COLUMNS]
    if missing:
        raise ValueError(f"features lack column(s) the promoted model was trained on: {missing}")
    frame = features.sort("ts").select("ts", *[c for c in columns if c not in SENTIMENT_COLUMNS])
    if any(c in SENTIMENT_COLUMNS for c in columns):
        if sentiment.height:
            frame = join_relative_sentiment(frame, sentiment.select("ts", *SENTIMENT_COLUMNS))
        else:  # no sentiment materialized: nulls, imputed by the scaler as in training
            frame = frame.with_columns(*[pl.lit(None, pl.Float64).alias(c) for c in SENTIMENT_COLUMNS])
    return frame.with_columns(row_valid([c for c in columns if c not in SENTIMENT_COLUMNS], frame.schema))


def complete_window_ends(valid: np.ndarray, length: int) -> np.ndarray:
    """Rows that end `length` consecutive valid rows (training's rule without labels or splits)."""
    n = len(valid)
    return window_ends(valid, np.ones(n, bool), np.full(n, SPLITS["train"], np.int8), length)["train"]


def score(
    features: pl.DataFrame,
    sentiment: pl.DataFrame,
    variant: dict,
    model_version: str,
    start: datetime,
    end: datetime,
    after: datetime | None = None,
    mode: str = "long_short",
    threshold: float = 0.0,
) -> pl.DataFrame:
    """Signals (SIGNAL_SCHEMA) for feature minutes in [start, end) later than `after` (None: all).

    `features` may begin earlier (the previous month): those rows only fill the first windows."""
    costs.CostModel(threshold=threshold, mode=mode)  # validates
    columns = variant["feature_columns"]
    length = int(variant["config"]["sequence_length"])
    rows = serving_rows(features, sentiment, columns)
    ts = rows["ts"]
    wanted = (ts >= start) & (ts < end)
    if after is not None:
        wanted = wanted & (ts > after)
    ends = complete_window_ends(rows["row_valid"].to_numpy(), length)
    ends = ends[wanted.to_numpy()[ends]]
    if len(ends) == 0:
        return empty_signals()
    first = int(ends[0]) - (length - 1)  # scale only the rows the new windows read
    part = rows.slice(first)
    x = torch.from_numpy(
        scale(
            part,
            columns,
            variant["scaler_mean"].numpy(),
            variant["scaler_std"].numpy(),
            float(variant["clip"]),
        )
    )
    windows = Windows(x, torch.zeros(len(part), dtype=torch.int64), {}, length)
    probabilities = predict(build_model(variant), windows, torch.from_numpy(ends - first))
    position = costs.positions_from_probabilities(probabilities, mode, threshold)
    return pl.DataFrame(
        {
            "ts": ts.gather(ends),
            **{c: probabilities[:, i] for i, c in enumerate(PROBABILITY_COLUMNS)},
            "position": position.astype(np.int8),
            "model_version": [model_version] * len(ends),
        },
        schema=SIGNAL_SCHEMA,
    )
