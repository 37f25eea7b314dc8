"""Signals fixtures: synthetic candles/features of March 2024 (February as warm-up) and a real fold model
artifact (a small seeded LSTM, untrained: its probabilities vary with the inputs, which is all scoring tests
need; logistic regression and LightGBM fitted on noise; a threshold rule that trades)."""

from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
import torch

from crpbot_assets.features.compute import features_for_month
from crpbot_assets.replay import synthetic
from crpbot_assets.sentiment.features import FEATURE_COLUMNS as SENTIMENT_COLUMNS
from crpbot_assets.training import baselines as bl
from crpbot_assets.training import decisions as dc
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.artifacts import load_artifact, save_artifact
from crpbot_assets.training.model import LSTMClassifier
from crpbot_assets.training.train import TrainConfig
from crpbot_assets_tests.training.conftest import one_torch_thread  # noqa: F401 (autouse fixture)

SYMBOL = "BTC-USD"
FEB = datetime(2024, 2, 1, tzinfo=UTC)
MARCH = datetime(2024, 3, 1, tzinfo=UTC)
APRIL = datetime(2024, 4, 1, tzinfo=UTC)
CONFIG = TrainConfig(hidden_size=8, num_layers=1, dropout=0.0, sequence_length=10)


def march_candles(until: datetime = APRIL) -> pl.DataFrame:
    """February and March 2024 BTC-USD replay candles, as known at `until`."""
    return synthetic.candles(SYMBOL, FEB, APRIL, now=until)


def march_features(candles: pl.DataFrame) -> pl.DataFrame:
    return features_for_month(candles, MARCH, APRIL).frame


def make_artifact(features: pl.DataFrame, seed: int = 0) -> bytes:
    """A crpbot-lstm artifact over every feature column plus the sentiment columns."""
    columns = [c for c in features.columns if c != "ts"] + list(SENTIMENT_COLUMNS)
    torch.manual_seed(seed)
    model = LSTMClassifier(len(columns), CONFIG.hidden_size, CONFIG.num_layers, CONFIG.dropout)
    stats = features.select(columns[: -len(SENTIMENT_COLUMNS)])
    mean = torch.tensor([*stats.mean().row(0), *[0.0] * len(SENTIMENT_COLUMNS)], dtype=torch.float64)
    std = torch.tensor([*stats.std().row(0), *[1.0] * len(SENTIMENT_COLUMNS)], dtype=torch.float64)
    variant = {
        "state_dict": model.state_dict(),
        "config": asdict(CONFIG),
        "feature_columns": columns,
        "scaler_mean": mean,
        "scaler_std": torch.where(std > 1e-12, std, torch.ones_like(std)),
        "clip": 10.0,
        "history": [],
        "best_epoch": 0,
        "device": "cpu",
    }
    return save_artifact({"with_sentiment": variant}, SYMBOL)


@pytest.fixture(scope="module")
def candles() -> pl.DataFrame:
    return march_candles()


@pytest.fixture(scope="module")
def features(candles) -> pl.DataFrame:
    return march_features(candles)


@pytest.fixture(scope="module")
def artifact(features) -> bytes:
    return make_artifact(features)


RULE = {"format": dc.RULE_FORMAT, "kind": "threshold", "mode": "long_short", "enter": 0.01, "exit": 0.0}


def make_fold(features: pl.DataFrame, seed: int = 0, rule: dict = RULE) -> dict:
    """A fold model (walk_forward.fit_fold's format) around make_artifact's LSTM: every input of `features`
    plus the sentiment columns, baselines fitted on noise, `rule` for every traded model."""
    variant = load_artifact(make_artifact(features, seed))["variants"]["with_sentiment"]
    rng = np.random.default_rng(seed)
    inputs = variant["feature_columns"]
    x, y = rng.normal(size=(600, len(inputs))), rng.integers(0, 3, 600)
    logistic = bl.fit_logistic(x, y, bl.BaselineConfig(logistic_iterations=5), False)
    booster = bl.fit_lightgbm(x[:400], y[:400], x[400:], y[400:], bl.BaselineConfig(lgbm_rounds=3), False)
    return {
        "format": wf.FOLD_FORMAT,
        "symbol": SYMBOL,
        "inputs": inputs,
        "sequence_length": CONFIG.sequence_length,
        "horizon_minutes": 15,
        "dead_zone_bps": 10.0,
        "scaler_mean": variant["scaler_mean"],
        "scaler_std": variant["scaler_std"],
        "clip": 10.0,
        "lstm": [{"with_sentiment": variant}],
        "logit": {k: torch.from_numpy(v) for k, v in logistic.items()},
        "lgbm": booster.model_to_string(),
        "majority": 1,
        "rules": {m: dict(rule) for m in ("lstm", "logit", "lgbm", "persist")}
        | {"buy_and_hold": dc.hold_rule()},
        "fit_info": {},
        "dropped_inputs": [],
    }


@pytest.fixture(scope="module")
def fold(features) -> dict:
    return make_fold(features)
