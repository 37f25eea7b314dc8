"""Live scoring: the promoted fold model's probabilities and position for each new minute of features.

Pure polars/numpy/torch (no Dagster). The same code as the walk-forward's test month (training/walk_forward.py):
the minute's row is its features joined with the sentiment of the last completed hour, relative to its trailing
week (`serving_rows`), valid when every technical input of the fold is finite; the input is the
`sequence_length` rows ending at the minute, all valid, standardised with the fold's own training scaler, and
only the fold's inputs (an input that never varied in its training window was dropped from the fold and is not
read). The probabilities are the fold's LSTM: the mean of its seeds (`fold_probabilities`). A minute without a
complete valid window gets no signal. Causality: the signal for minute t uses feature rows with ts <= t and
sentiment hours ending by t + 1 minute, so it is known at t's close (tests/signals: truncation test).

Positions (`training/decisions.py`, the one decision function): decisions are the minutes on the decision grid
(minute % horizon == 0), taken sequentially with the fold's fitted LSTM rule from the previous decision's
position (`previous_position`: the month's stored signals; a fold model starts flat); a minute off the grid
shows the position of the last decision. `decision` marks grid minutes; the ledger trades those only. With no
promoted model, every grid minute is a flat decision (`flat_signals`): a demotion closes the paper position.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from crpbot_assets.training import decisions as dc
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.dataset import CLASSES

PROBABILITY_COLUMNS = [f"p_{c}" for c in CLASSES]
SIGNAL_SCHEMA = {
    "ts": pl.Datetime("us", "UTC"),
    **{c: pl.Float32 for c in PROBABILITY_COLUMNS},
    "score": pl.Float32,
    "decision": pl.Boolean,
    "position": pl.Int8,
    "model_version": pl.String,
}


def empty_signals() -> pl.DataFrame:
    return pl.DataFrame(schema=SIGNAL_SCHEMA)


def flat_signals(
    features: pl.DataFrame, start: datetime, end: datetime, after: datetime | None, horizon: int
) -> pl.DataFrame:
    """No model: a flat decision at every decision-grid minute of features in [start, end) after `after`
    (`model_version` "none"), so the paper ledger closes what an earlier model left open."""
    ts = features.sort("ts")["ts"]
    keep = (ts >= start) & (ts < end) & (ts.dt.epoch("s") // 60 % horizon == 0)
    if after is not None:
        keep = keep & (ts > after)
    minutes = ts.filter(keep)
    n = minutes.len()
    return pl.DataFrame(
        {
            "ts": minutes,
            **{c: [None] * n for c in PROBABILITY_COLUMNS},
            "score": [None] * n,
            "decision": [True] * n,
            "position": [0] * n,
            "model_version": ["none"] * n,
        },
        schema=SIGNAL_SCHEMA,
    )


def previous_position(signals: pl.DataFrame) -> float:
    """The position of the last decision among `signals` (0: none yet, the fold starts flat)."""
    decided = signals.filter(pl.col("decision"))
    return float(decided["position"][-1]) if decided.height else 0.0


def score(
    features: pl.DataFrame,
    sentiment: pl.DataFrame,
    fold: dict,
    model_version: str,
    start: datetime,
    end: datetime,
    after: datetime | None = None,
    previous: float = 0.0,
    decisions_only: bool = False,
) -> pl.DataFrame:
    """Signals (SIGNAL_SCHEMA) for feature minutes in [start, end) later than `after` (None: all), the first
    decision taken from position `previous`. `features` may begin earlier (the previous month): those rows only
    fill the first windows. `decisions_only`: the decision-grid minutes alone (the same rows and positions; the
    live service catches the rule's state up over minutes it did not see without scoring the minutes between)."""
    rows = wf.serving_rows(features, sentiment, fold["inputs"])
    ts = rows["ts"]
    horizon = int(fold["horizon_minutes"])
    wanted = (ts >= start) & (ts < end)
    if after is not None:
        wanted = wanted & (ts > after)
    if decisions_only:
        wanted = wanted & (ts.dt.epoch("s") // 60 % horizon == 0)
    ends = wf.complete_window_ends(rows["row_valid"].to_numpy(), int(fold["sequence_length"]))
    ends = ends[wanted.to_numpy()[ends]]
    if len(ends) == 0:
        return empty_signals()
    probabilities = wf.fold_probabilities(rows, fold, ends)["lstm"]
    scores = dc.score(probabilities)
    minutes = ts.gather(ends)
    decision = (minutes.dt.epoch("s") // 60 % horizon == 0).to_numpy()
    position = np.full(len(ends), np.nan)
    position[decision] = dc.positions(scores[decision], fold["rules"]["lstm"], previous)
    position = pl.Series(position).fill_nan(None).fill_null(strategy="forward").fill_null(previous)
    return pl.DataFrame(
        {
            "ts": minutes,
            **{c: probabilities[:, i] for i, c in enumerate(PROBABILITY_COLUMNS)},
            "score": scores,
            "decision": decision,
            "position": position,
            "model_version": [model_version] * len(ends),
        },
        schema=SIGNAL_SCHEMA,
    )
