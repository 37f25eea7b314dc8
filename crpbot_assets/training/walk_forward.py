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
import io
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import lightgbm as lgb
import numpy as np
import polars as pl
import torch

from crpbot_assets.sentiment.features import FEATURE_COLUMNS as SENTIMENT_COLUMNS
from crpbot_assets.training import baselines as bl
from crpbot_assets.training import costs
from crpbot_assets.training import decisions as dc
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
    join_relative_sentiment,
    label_rows,
    row_valid,
    scale,
)
from crpbot_assets.training.train import Windows, make_windows, predict, window_ends

RETRAIN_MONTHS = {"monthly": 1, "quarterly": 3}
PROBABILITY_MODELS = ("lstm", "nosent", "logit", "lgbm")  # nosent: the LSTM without sentiment (ablation)
# Seed k of the LSTM pair is stored as lstm_s<k>_* / nosent_s<k>_*; lstm_* / nosent_* are the mean over seeds.
CLASS_MODELS = ("majority", "persist")
VARIANT_OF = {"lstm": "with_sentiment", "nosent": "without_sentiment"}
CODE_VERSION = "walk-forward/2"  # bump when a change alters predictions for unchanged inputs
FOLD_FORMAT = "crpbot-fold/1"
TRADED_MODELS = ("lstm", "logit", "lgbm", "persist", "buy_and_hold")  # each with a decision rule per fold


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
    with_test: bool = True,
) -> Dataset:
    """The fold's rows (window + test month) through `build_dataset` with the fold's cuts; purge asserted.
    `with_test=False`: only what is known before the test month (the fold model, made before its month ends);
    its training and validation rows are the same as with the test month."""
    end = fold.test_end if with_test else fold.test_start

    def inside(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter((pl.col("ts") >= fold.window_start) & (pl.col("ts") < end))

    features = inside(features)
    if features.filter(pl.col("ts") < fold.val_end).height == 0:
        raise DatasetError(
            f"{symbol}: no features in the training window {fold.window_start:%Y-%m}..{fold.val_end:%Y-%m-%d} "
            f"before the test month {fold.test_start:%Y-%m} (materialize `features` for earlier months)"
        )

    dataset = build_dataset(
        features,
        sentiment.filter(pl.col("ts") <= end) if sentiment.height else sentiment,
        inside(candles),
        dataset_config,
        symbol,
        fold.cuts(features["ts"].min()),
        require_test=with_test,
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
    """The column prefix of LSTM variant `name` (lstm or nosent) trained with the k-th seed; `name` alone is the
    fold's model: the mean of its seeds' probabilities (what trades)."""
    return f"{name}_s{k}"


def with_inputs(dataset: Dataset, columns: list[str]) -> Dataset:
    """The dataset restricted to `columns` (in the dataset's order), `row_valid` recomputed over the technical
    ones: what a model trained on exactly those inputs reads (as live scoring does)."""
    kept = [c for c in dataset.feature_columns if c in columns]
    positions = [dataset.feature_columns.index(c) for c in kept]
    technical = [c for c in kept if c not in dataset.sentiment_columns]
    frame = dataset.frame.drop([c for c in dataset.feature_columns if c not in kept])
    frame = frame.with_columns(row_valid(technical, frame.schema))
    return Dataset(
        frame,
        kept,
        [c for c in dataset.sentiment_columns if c in kept],
        dataset.mean[positions],
        dataset.std[positions],
        dataset.config,
        dataset.symbol,
    )


def informative_inputs(dataset: Dataset) -> tuple[Dataset, list[str]]:
    """(the dataset without the inputs that never varied on the valid training rows, those inputs): a column
    all null or constant there has no trained weight, so it must not drive a decision later (e.g. Reddit,
    whose history is null while live months have values)."""
    train = (dataset.frame["split"] == SPLITS["train"]) & dataset.frame["row_valid"]
    dropped = []
    for column in dataset.feature_columns:
        values = dataset.frame[column].filter(train).drop_nulls().drop_nans()
        if values.len() == 0 or not (values.std(ddof=0) or 0.0) > 1e-12:
            dropped.append(column)
    if len(dropped) == len(dataset.feature_columns):
        raise DatasetError(f"{dataset.symbol}: no input varies in the training window")
    return with_inputs(dataset, [c for c in dataset.feature_columns if c not in dropped]), dropped


def trade_columns(ts: pl.Series, candles: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """How decisions at minutes `ts` (sorted) trade, as the paper ledger fills them: `fill_open` and
    `half_spread_bps` (costs.py's proxy) of the first candle after the minute (the decision is known at the
    minute's close); `trade_return` for decision-grid minutes (minute % horizon == 0): from this fill to the
    fill of the next grid minute in `ts` (a grid minute without a row keeps the position), the last one to the
    fill after ts + horizon; null off the grid or without a later candle."""
    prices = candles.select(
        pl.col("ts").alias("fill_ts"), pl.col("open").alias("fill_open"), "high", "low", "close"
    ).sort("fill_ts")

    def fill(shift: timedelta) -> pl.DataFrame:
        rows = pl.DataFrame({"ts": ts}).with_columns((pl.col("ts") + shift).alias("_after"))
        return rows.join_asof(prices, left_on="_after", right_on="fill_ts", strategy="forward")

    now = fill(timedelta(minutes=1))
    on_grid = (ts.dt.epoch("s") // 60 % horizon == 0).to_numpy()
    grid_open = now["fill_open"].to_numpy()[on_grid]
    last_open = fill(timedelta(minutes=horizon + 1))["fill_open"].to_numpy()[on_grid]
    exit_open = np.concatenate([grid_open[1:], last_open[-1:]]) if len(grid_open) else grid_open
    trade_return = np.full(len(ts), np.nan)
    trade_return[on_grid] = exit_open / grid_open - 1.0
    spread = costs.half_spread_bps(
        now["high"].to_numpy().astype(np.float64),
        now["low"].to_numpy().astype(np.float64),
        now["close"].to_numpy().astype(np.float64),
    )
    return pl.DataFrame(
        {
            "fill_open": now["fill_open"].cast(pl.Float64),
            "half_spread_bps": pl.Series(spread, dtype=pl.Float32),
            "trade_return": pl.Series(trade_return, dtype=pl.Float64).fill_nan(None),
        }
    )


def serving_rows(features: pl.DataFrame, sentiment: pl.DataFrame, inputs: list[str]) -> pl.DataFrame:
    """`ts`, the model's `inputs` and `row_valid` (over its technical inputs), one row per feature minute,
    sorted: the rows a fold model reads wherever it scores (walk-forward test month, `signals`, live). Sentiment
    joins as in training (`dataset.join_relative_sentiment`); none materialized: nulls, imputed by the scaler."""
    missing = [c for c in inputs if c not in features.columns and c not in SENTIMENT_COLUMNS]
    if missing:
        raise ValueError(f"features lack column(s) the model was trained on: {missing}")
    frame = features.sort("ts").select("ts", *[c for c in inputs if c not in SENTIMENT_COLUMNS])
    if any(c in SENTIMENT_COLUMNS for c in inputs):
        if sentiment.height:
            frame = join_relative_sentiment(frame, sentiment.select("ts", *SENTIMENT_COLUMNS))
        else:
            frame = frame.with_columns(*[pl.lit(None, pl.Float64).alias(c) for c in SENTIMENT_COLUMNS])
    return frame.with_columns(row_valid([c for c in inputs if c not in SENTIMENT_COLUMNS], frame.schema))


def complete_window_ends(valid: np.ndarray, length: int) -> np.ndarray:
    """Rows that end `length` consecutive valid rows (training's rule without labels or splits)."""
    n = len(valid)
    return window_ends(valid, np.ones(n, bool), np.full(n, SPLITS["train"], np.int8), length)["train"]


def fold_probabilities(rows: pl.DataFrame, fold: dict, ends: np.ndarray) -> dict[str, np.ndarray]:
    """Every model's class probabilities (len(ends), 3) for the windows ending at rows `ends` of `rows` (the
    fold's inputs and `row_valid`, time order): each LSTM seed (`lstm_s<k>`, `nosent_s<k>`), the fold's LSTMs
    (`lstm`, `nosent`: the mean over seeds), `logit` and `lgbm` on the window's last row. Only the rows the
    windows read are scaled, each variant with its own training scaler."""
    length = int(fold["sequence_length"])
    if len(ends) == 0:
        return {}
    first = int(ends.min()) - (length - 1)
    part = rows.slice(first)
    local = torch.from_numpy(np.asarray(ends, dtype=np.int64) - first)
    scaled: dict = {}

    def windows(columns: list[str], mean: torch.Tensor, std: torch.Tensor) -> Windows:
        key = (tuple(columns), mean.numpy().tobytes(), std.numpy().tobytes())
        if key not in scaled:
            x = scale(part, columns, mean.numpy(), std.numpy(), float(fold["clip"]))
            scaled[key] = Windows(torch.from_numpy(x), torch.zeros(len(part), dtype=torch.int64), {}, length)
        return scaled[key]

    out: dict[str, np.ndarray] = {}
    for name, variant_name in VARIANT_OF.items():
        per_seed = []
        for k, variants in enumerate(fold["lstm"]):
            if variant_name in variants:
                v = variants[variant_name]
                w = windows(v["feature_columns"], v["scaler_mean"], v["scaler_std"])
                per_seed.append(predict(build_model(v), w, local))
                out[seed_model(name, k)] = per_seed[-1]
        if per_seed:
            out[name] = np.mean(per_seed, axis=0)
    main = windows(fold["inputs"], fold["scaler_mean"], fold["scaler_std"])
    out.update(baseline_probabilities(fold, main.x.numpy()[local.numpy()]))
    return out


def _scores(probabilities: dict[str, np.ndarray], persist: np.ndarray) -> dict[str, np.ndarray]:
    """The traded models' scores (decisions.py): P(up) - P(down), persistence's class as -1 / 0 / +1."""
    scores = {m: dc.score(probabilities[m]) for m in ("lstm", "logit", "lgbm")}
    scores["persist"] = dc.class_score(persist)
    return scores


def fit_fold(
    dataset: Dataset,
    lstm_artifacts: list[dict],
    candles: pl.DataFrame,
    baseline_config: bl.BaselineConfig = bl.BaselineConfig(),
    decision_config: dc.DecisionConfig = dc.DecisionConfig(),
    log=lambda message: None,
) -> dict:
    """The fold model, everything but the LSTMs fitted here on the fold's rows (training and validation only):
    the baselines on the windows the LSTM trained on (last row of each; LightGBM early-stopped on validation),
    and every traded model's decision rule on the VALIDATION rows (decisions.fit_rule, trades filled as the
    ledger fills them). `lstm_artifacts`: the fold's trained LSTM artifacts, one per seed. Returns the fold
    artifact (plain values and tensors; `save_fold`)."""
    seeds = [a["variants"] for a in lstm_artifacts]
    main = seeds[0]["with_sentiment"]
    inputs = main["feature_columns"]
    if any(v["with_sentiment"]["feature_columns"] != inputs for v in seeds):
        raise ValueError("the fold's seed artifacts were trained on different inputs")
    length = int(main["config"]["sequence_length"])
    fitted = make_windows(variant_dataset(dataset, main), inputs, length)
    train_ends = fitted.ends["train"].numpy()
    val_ends = fitted.ends["val"].numpy()
    x, y = fitted.x.numpy(), fitted.y.numpy()
    sample = train_ends[bl.evenly(len(train_ends), baseline_config.max_train_rows)]
    balanced = bool(main["config"].get("class_weighted", True))
    log(f"baselines: {len(sample):,} training rows, {len(val_ends):,} validation rows")
    logistic = bl.fit_logistic(x[sample], y[sample], baseline_config, balanced)
    booster = bl.fit_lightgbm(x[sample], y[sample], x[val_ends], y[val_ends], baseline_config, balanced)
    del fitted, x
    fold = {
        "format": FOLD_FORMAT,
        "symbol": dataset.symbol,
        "inputs": list(inputs),
        "sequence_length": length,
        "horizon_minutes": dataset.config.horizon_minutes,
        "dead_zone_bps": dataset.config.dead_zone_bps,
        "scaler_mean": main["scaler_mean"],
        "scaler_std": main["scaler_std"],
        "clip": float(main["clip"]),
        "lstm": seeds,
        "logit": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in logistic.items()},
        "lgbm": booster.model_to_string(num_iteration=booster.best_iteration),
        "majority": bl.majority_class(y[train_ends]),
        "fit_info": {
            "train_windows": len(train_ends),
            "val_windows": len(val_ends),
            "baseline_train_rows": len(sample),
            "lgbm_rounds": int(booster.best_iteration),
        },
    }
    # the validation windows scored exactly as test months and live minutes are (`fold_probabilities`)
    probabilities = fold_probabilities(dataset.frame, fold, val_ends)
    val = dataset.frame[val_ends]
    persist = bl.persistence(val["past_return"].fill_null(0.0).to_numpy(), dataset.config.dead_zone_bps / 1e4)
    trades = trade_columns(val["ts"], candles, dataset.config.horizon_minutes)
    day = val["ts"].dt.truncate("1d").to_numpy()
    rules = {
        m: dc.fit_rule(
            s,
            val["fwd_return"].to_numpy(),
            day,
            trades["trade_return"].to_numpy(),
            trades["half_spread_bps"].to_numpy(),
            decision_config,
        )
        for m, s in _scores(probabilities, persist).items()
    }
    rules["buy_and_hold"] = dc.hold_rule()
    log("rules: " + "; ".join(f"{m}: {r['reason']}" for m, r in rules.items()))
    return {**fold, "rules": json.loads(json.dumps(rules))}


def save_fold(fold: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(fold, buffer)
    return buffer.getvalue()


def load_fold(data: bytes, source: str = "fold model") -> dict:
    """Decode a fold artifact without unpickling code; a clear error for anything else."""
    try:
        fold = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError variants for bad files
        raise ValueError(f"{source} is not a loadable crpbot fold model: {exc}") from exc
    if not isinstance(fold, dict) or fold.get("format") != FOLD_FORMAT:
        raise ValueError(f"{source}: unsupported fold model format (expected {FOLD_FORMAT})")
    return fold


def baseline_probabilities(fold: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """The fold's logistic regression and LightGBM on last rows `x` (standardized with the fold's scaler)."""
    logistic = {k: v.numpy() for k, v in fold["logit"].items()}
    booster = lgb.Booster(model_str=fold["lgbm"])
    return {"logit": bl.predict_logistic(logistic, x), "lgbm": bl.predict_lightgbm(booster, x)}


def fold_positions(scores: dict[str, np.ndarray], rules: dict, previous: dict | None = None) -> dict:
    """Each traded model's positions at successive decisions (decisions.positions with its rule)."""
    n = len(next(iter(scores.values())))
    return {
        m: dc.positions(scores.get(m, np.zeros(n)), rule, (previous or {}).get(m, 0.0))
        for m, rule in rules.items()
    }


def month_rows(
    features: pl.DataFrame, sentiment: pl.DataFrame, candles: pl.DataFrame, fold: dict
) -> pl.DataFrame:
    """The fold's serving rows (`serving_rows`) with the label, forward and past returns of each minute."""
    config = DatasetConfig(
        horizon_minutes=int(fold["horizon_minutes"]), dead_zone_bps=float(fold["dead_zone_bps"])
    )
    rows = serving_rows(features, sentiment, fold["inputs"])
    labels = label_rows(rows.select("ts"), candles, config).select("ts", "label", "fwd_return", "past_return")
    return rows.join(labels, on="ts", how="left", maintain_order="left")


def score_rows(
    rows: pl.DataFrame,
    fold: dict,
    candles: pl.DataFrame,
    start: datetime,
    end: datetime,
    log=lambda message: None,
) -> tuple[pl.DataFrame, dict]:
    """The walk-forward predictions of [start, end): one row per labelled minute with a complete window of the
    fold's inputs: label, forward return, how a decision there trades (`trade_columns`), every model's
    probabilities (`fold_probabilities`; majority, persist) and, on the decision grid, each traded model's
    position by its fitted rule (`pos_<model>`, starting flat at the first decision). `rows`: `month_rows`, or
    a fold dataset's frame (the same columns)."""
    length = int(fold["sequence_length"])
    horizon = int(fold["horizon_minutes"])
    technical = [c for c in fold["inputs"] if c not in SENTIMENT_COLUMNS]
    rows = rows.with_columns(row_valid(technical, rows.schema))
    ts = rows["ts"]
    wanted = ((ts >= start) & (ts < end) & rows["label"].is_not_null()).to_numpy()
    ends = complete_window_ends(rows["row_valid"].to_numpy(), length)
    ends = ends[wanted[ends]]
    if len(ends) == 0:
        raise DatasetError(
            f"no labelled minute with a complete window of {length} rows in {start:%Y-%m-%d}..{end:%Y-%m-%d}"
        )
    probabilities = fold_probabilities(rows, fold, ends)
    test = rows[ends]
    persist = bl.persistence(test["past_return"].fill_null(0.0).to_numpy(), fold["dead_zone_bps"] / 1e4)
    trades = trade_columns(test["ts"], candles, horizon)
    grid = (test["ts"].dt.epoch("s") // 60 % horizon == 0).to_numpy()
    held = fold_positions({m: s[grid] for m, s in _scores(probabilities, persist).items()}, fold["rules"])
    columns = {
        f"{name}_{c}": pl.Series(p[:, i], dtype=pl.Float32)
        for name, p in probabilities.items()
        for i, c in enumerate(CLASSES)
    }
    for m, p in held.items():
        full = np.full(len(ends), np.nan)
        full[grid] = p
        columns[f"pos_{m}"] = pl.Series(full).fill_nan(None).cast(pl.Int8)
    frame = pl.concat(
        [test.select("ts", "label", "fwd_return"), trades, pl.DataFrame(columns)], how="horizontal"
    ).with_columns(
        label=pl.col("label").cast(pl.Int8),
        majority=pl.lit(int(fold["majority"]), pl.Int8),
        persist=pl.Series(persist, dtype=pl.Int8),
        horizon_minutes=pl.lit(horizon, pl.Int16),
    )
    info = {"test_rows": frame.height, "decisions": int(grid.sum())}
    log(f"{start:%Y-%m}: {frame.height:,} test minutes, {int(grid.sum()):,} decisions")
    return frame, info


def score_fold(
    dataset: Dataset, fold: dict, candles: pl.DataFrame, log=lambda message: None
) -> tuple[pl.DataFrame, dict]:
    """`score_rows` over the test split of a fold dataset."""
    tested = dataset.frame.filter(pl.col("split") == SPLITS["test"])["ts"]
    if tested.len() == 0:
        raise DatasetError(f"{dataset.symbol}: the fold dataset has no test rows")
    end = tested.max() + timedelta(minutes=1)
    return score_rows(dataset.frame, fold, candles, tested.min(), end, log)


def fold_training_data(
    features: pl.DataFrame,
    sentiment: pl.DataFrame,
    candles: pl.DataFrame,
    fold: Fold,
    dataset_config: DatasetConfig,
    symbol: str = "",
) -> tuple[Dataset, list[str]]:
    """(the fold model's rows: training and validation, known before the test month, with only the inputs that
    varied in training; the inputs dropped). The same whether or not the test month has data yet."""
    return informative_inputs(fold_dataset(features, sentiment, candles, fold, dataset_config, symbol, False))


def predict_fold(
    dataset: Dataset,
    artifact: dict,
    candles: pl.DataFrame,
    baseline_config: bl.BaselineConfig = bl.BaselineConfig(),
    log=lambda message: None,
    seed_artifacts: tuple[dict, ...] = (),
    decision_config: dc.DecisionConfig = dc.DecisionConfig(),
) -> tuple[pl.DataFrame, dict]:
    """`fit_fold` then `score_fold` on a dataset holding the fold's test month (benchmarks and tests)."""
    fold = fit_fold(dataset, [artifact, *seed_artifacts], candles, baseline_config, decision_config, log)
    frame, info = score_fold(dataset, fold, candles, log)
    return frame, {**info, **fold["fit_info"]}
