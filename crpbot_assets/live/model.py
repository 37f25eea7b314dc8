"""The live service's one coupling to model promotion and to the decision rule: which fold model decides a
minute, and the signal it gives there, exactly as the `signals` asset gives it.

- **Which model.** Minute t of a symbol is decided by `promoted_model[month of t]` (the IO manager's JSON at
  `promoted_model/symbol=S/month=YYYY-MM-01.json`): when it promotes, by the fold model it names
  (`walk_forward_assets.read_fold`: the bytes at `model_path`, sha-256[:12] == `model_version`). At a month
  boundary the next month's promotion takes over. A month whose `promoted_model` is not materialized yet gets no
  decision (its `signals` do not exist either; the position is held). Nothing promoted, or a demo-rule promotion
  refused outside the demo (`signals/gate.refusal`; `demo=True` is the demo's own live stretch): flat decisions
  on the 15-minute grid, model_version "none" (`scoring.flat_signals`), so a demotion closes the position. With
  a Dagster instance, a promotion file counts only when its latest materialization describes it (the commit rule,
  `common/commits.py`), as in every load of the graph: a file left by a killed run is not a promotion.
- **Which signal.** `scoring.score` (the `signals` asset's function) on the features up to t: the fold's
  probabilities, score P(up) - P(down), and on the fold's decision grid (minute % horizon == 0) the position by
  the fold's rule from the month's previous decision (`RuleState`; a new month's fold starts flat). The state
  comes from the decisions already made; grid minutes the service did not score (it was down, or the promotion
  arrived late in the month) are scored first (`decisions_only`), so the rule's state at t is the one `signals`
  has and the position equals its position for t.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from crpbot_assets.common.commits import describes, latest_records
from crpbot_assets.common.io_manager import partition_path
from crpbot_assets.common.months import month_start
from crpbot_assets.common.partitions import symbol_month_key
from crpbot_assets.common.storage import Storage
from crpbot_assets.signals import gate, scoring
from crpbot_assets.signals.assets import HORIZON_MINUTES
from crpbot_assets.training.walk_forward_assets import read_fold

log = logging.getLogger("crpbot.live")
PROMOTED = dg.AssetKey("promoted_model")
MINUTE = timedelta(minutes=1)


def promotion_path(symbol: str, month: datetime) -> str:
    return partition_path(PROMOTED, str(symbol_month_key(symbol, month))) + ".json"


@dataclass(frozen=True)
class Promotion:
    """What `promoted_model[month|symbol]` lets trade: a fold model, or flat decisions (`fold` None)."""

    symbol: str
    month: datetime
    value: dict  # the stored value
    fold: dict | None = None
    flat_because: str | None = None

    @property
    def version(self) -> str:
        return self.value["model_version"] if self.fold is not None else "none"

    @property
    def horizon(self) -> int:
        return int(self.fold["horizon_minutes"]) if self.fold is not None else HORIZON_MINUTES

    def describe(self) -> str:
        if self.fold is None:
            return f"flat ({self.flat_because})"
        return f"fold model {self.version} of {self.value.get('fold_month')}"


@dataclass(frozen=True)
class RuleState:
    """The decision rule's state in a month: the position of the last decision among the minutes scored
    through `through` (the minute), as `scoring.previous_position` reads it from the stored signals."""

    month: datetime
    through: datetime | None = None
    position: float = 0.0

    def at(self, minute: datetime) -> RuleState:
        """The state a decision at `minute` starts from: a new month's fold starts flat."""
        return self if month_start(minute) == self.month else RuleState(month_start(minute))


@dataclass(frozen=True)
class Signal:
    """One minute's row of `signals`: probabilities and score (None when flat), decision flag, position."""

    probabilities: tuple[float, float, float] | None  # p_down, p_flat, p_up
    score: float | None
    decision: bool  # a decision-grid minute: the ledger trades it
    position: int  # the rule's position (off the grid: the last decision's)
    model_version: str


class Models:
    """Each symbol's promotion per month, re-read when its file changes (no restart)."""

    def __init__(self, storage: Storage, demo: bool = False, instance: dg.DagsterInstance | None = None):
        self.storage, self.instance = storage, instance
        self.run_tags = gate.DEMO_RUN_TAGS if demo else {}
        # (symbol, month) -> (the file's stamp when read, what it lets trade)
        self._known: dict[tuple[str, datetime], tuple[str | None, Promotion | None]] = {}

    def refresh(self, symbol: str, month: datetime) -> None:
        """Re-read `promoted_model[month|symbol]` if its file changed. Raises when it cannot be read (what was
        read before stays)."""
        path = promotion_path(symbol, month)
        stamp = self.storage.stamp(path)
        known = self._known.get((symbol, month))
        if known is not None and known[0] == stamp:
            return
        new = self._read(symbol, month, path, stamp) if stamp is not None else None
        uncommitted = stamp is not None and new is None  # re-checked at every poll until its record arrives
        self._known[(symbol, month)] = (None if uncommitted else stamp, new)
        oldest = month_start(month - timedelta(days=1))  # a month's last minute is decided in the next one
        self._known = {k: v for k, v in self._known.items() if k[1] >= oldest}

    def for_minute(self, symbol: str, minute: datetime) -> Promotion | None:
        """The promotion that decides `symbol` at `minute` (read on first use of its month); None: not
        materialized (or not readable) yet."""
        month = month_start(minute)
        if (symbol, month) not in self._known:
            try:
                self.refresh(symbol, month)
            except Exception as exc:  # noqa: BLE001 - retried at the next poll; the minute is not decided
                log.warning(f"{symbol}: promoted_model of {month:%Y-%m} unreadable ({exc})")
                return None
        return self._known[(symbol, month)][1]

    def _read(self, symbol: str, month: datetime, path: str, stamp: str) -> Promotion | None:
        if self.instance is not None:  # the commit rule: a file its latest record does not describe is absent
            partition = str(symbol_month_key(symbol, month))
            record = latest_records(self.instance, PROMOTED, [partition]).get(partition)
            if not describes(record, stamp):
                return None
        value = self.storage.read_json(path)
        refused = gate.refusal(value, self.run_tags)
        if refused or not value.get("promoted"):
            why = (
                refused or f"nothing promoted: {value.get('reason', value.get('status', 'no reason given'))}"
            )
            return Promotion(symbol, month, value, None, why)
        return Promotion(symbol, month, value, read_fold(self.storage, value))

    def signal(
        self,
        promotion: Promotion,
        features: pl.DataFrame,
        sentiment: pl.DataFrame,
        minute: datetime,
        state: RuleState,
    ) -> tuple[Signal | None, RuleState]:
        """`signals`' row for `minute` from stored-form features ending at it and the rule's state (`state.at`
        applied); None when `signals` has no row there (no complete window; flat: off the grid). Also the state
        after `minute`."""
        state = state.at(minute)
        month = state.month
        if state.through is not None and minute <= state.through:
            raise ValueError(
                f"{promotion.symbol}: minute {minute} was already scored (through {state.through})"
            )
        if promotion.fold is None:
            rows = scoring.flat_signals(features, month, minute + MINUTE, state.through, promotion.horizon)
        else:
            if (
                state.through or month - MINUTE
            ) < minute - MINUTE:  # minutes not scored: their decisions first
                catch_up = self._score(promotion, features, sentiment, state, minute, decisions_only=True)
                state = _advance(state, catch_up, minute - MINUTE)
            rows = self._score(promotion, features, sentiment, state, minute + MINUTE)
        state = _advance(state, rows, minute)
        if rows.height == 0 or rows["ts"][-1] != minute:
            return None, state
        row = rows.row(-1, named=True)
        flat = promotion.fold is None
        return (
            Signal(
                None if flat else tuple(float(row[c]) for c in scoring.PROBABILITY_COLUMNS),
                None if flat else float(row["score"]),
                bool(row["decision"]),
                int(row["position"]),
                row["model_version"],
            ),
            state,
        )

    @staticmethod
    def _score(
        promotion: Promotion,
        features: pl.DataFrame,
        sentiment: pl.DataFrame,
        state: RuleState,
        end: datetime,
        decisions_only: bool = False,
    ) -> pl.DataFrame:
        """`scoring.score` over (state.through, end), reading only the rows its windows need."""
        fold = promotion.fold
        if (
            state.through is not None
        ):  # the windows of later minutes read sequence_length - 1 rows before them
            first = features["ts"].search_sorted(state.through, side="right")
            features = features.slice(max(0, first - (int(fold["sequence_length"]) - 1)))
        return scoring.score(
            features,
            sentiment,
            fold,
            promotion.version,
            state.month,
            end,
            state.through,
            state.position,
            decisions_only,
        )


def _advance(state: RuleState, rows: pl.DataFrame, through: datetime) -> RuleState:
    decided = rows.filter(pl.col("decision"))
    position = scoring.previous_position(decided) if decided.height else state.position
    return RuleState(state.month, through, position)
