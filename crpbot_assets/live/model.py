"""The live service's one coupling to model promotion and to the position rule (switch both here).

Today (main): `promoted_model[symbol]` stores `{"promoted", "model_version", "model_uri", ...}` (the IO manager's
JSON at `promoted_model/<symbol>.json`) and the artifact at `promoted_models/<symbol>/<version>.pt`; the position
is `signals.scoring.score`'s (the evaluation's argmax-and-threshold rule), with the same mode and threshold as
the `signals` asset's config, decided on the paper config's grid (`Signal.decision` None).
Issue 18 (promotion per symbol x month, one decision function): `refresh`/`for_minute` read
`promoted_model/symbol=S/month=M.json` for the month of the minute and load the fold with
`walk_forward_assets.read_fold`; `signal` calls `scoring.score(rows, sentiment, fold, version, minute, minute + 1m,
previous=held)` and returns its row's `position` and `decision` flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from crpbot_assets.common.io_manager import partition_path
from crpbot_assets.common.storage import Storage
from crpbot_assets.signals import scoring
from crpbot_assets.signals.assets import promoted_artifact_path
from crpbot_assets.training.artifacts import load_artifact

VARIANT = "with_sentiment"  # the variant `signals` scores


@dataclass(frozen=True)
class ActiveModel:
    symbol: str
    version: str
    variant: dict

    @property
    def sequence_length(self) -> int:
        return int(self.variant["config"]["sequence_length"])


@dataclass(frozen=True)
class Signal:
    probabilities: tuple[float, float, float]  # p_down, p_flat, p_up
    position: int
    model_version: str
    decision: bool | None = None  # a decision minute by the model's own rule; None: the paper config's grid


class Models:
    """The promoted model of each symbol, re-read when `promoted_model` changes (no restart)."""

    def __init__(self, storage: Storage, mode: str = "long_short", threshold: float = 0.0):
        self.storage, self.mode, self.threshold = storage, mode, threshold
        self._active: dict[str, ActiveModel | None] = {}

    def refresh(self, symbol: str) -> tuple[str | None, str | None] | None:
        """Re-read the symbol's promotion; (old version, new version) when it changed, else None."""
        path = partition_path(dg.AssetKey("promoted_model"), symbol) + ".json"
        value = self.storage.read_json(path) if self.storage.exists(path) else {}
        version = value.get("model_version") if value.get("promoted") else None
        old = self._active.get(symbol)
        old_version = old.version if old else None
        if symbol in self._active and version == old_version:
            return None
        model = None
        if version:
            data = self.storage.read_bytes(promoted_artifact_path(symbol, version))
            artifact = load_artifact(data, self.storage.uri(promoted_artifact_path(symbol, version)))
            model = ActiveModel(symbol, version, artifact["variants"][VARIANT])
        self._active[symbol] = model
        return old_version, version

    def for_minute(self, symbol: str, minute: datetime) -> ActiveModel | None:
        """The model that decides `symbol` at `minute` (today: the symbol's promoted model, any month)."""
        return self._active.get(symbol)

    def signal(
        self, model: ActiveModel, features: pl.DataFrame, sentiment: pl.DataFrame, minute: datetime, held: int
    ) -> Signal | None:
        """The model's probabilities and position for `minute` from stored-form features ending at it; None when
        its input window is incomplete. `held` (the position now) is unused by today's rule."""
        rows = features.tail(model.sequence_length)
        out = scoring.score(
            rows,
            sentiment,
            model.variant,
            model.version,
            minute,
            minute + timedelta(minutes=1),
            None,
            self.mode,
            self.threshold,
        )
        if out.height == 0:
            return None
        row = out.row(0, named=True)
        return Signal(
            tuple(float(row[c]) for c in scoring.PROBABILITY_COLUMNS), int(row["position"]), model.version
        )
