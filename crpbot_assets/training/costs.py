"""The trading cost model: taker fee, half-spread/slippage, a probability threshold, turnover, break-even fee.

Pure numpy. The strategy trades on the N-minute grid (non-overlapping holding periods; see evaluation.py):
- position: the predicted direction (argmax of the class probabilities) when its probability is at least
  `threshold`, else flat. long_short: down -> -1, up -> +1; long_flat: up -> +1; flat -> 0.
- turnover: units of position traded at the start of a period (-1 -> +1 is 2 units). With `follows_previous`
  (model_evaluation's backtest), a period that does not follow the previous one (grid minutes skipped for want
  of a usable prediction) was entered from flat, so it pays to leave the previous position and to enter the new
  one; buy and hold, and the walk-forward verdict (decisions.py, as the paper ledger), hold through such gaps.
- cost of a period = turnover x (fee + half-spread) in bps. The fee is the exchange's taker fee. The
  half-spread (what a market order pays over the mid, slippage included) is either a fixed number of bps or,
  by default, a quarter of the trade minute's high-low range (`SPREAD_FRACTION`): the range bounds what a
  fill inside the minute could cost; a quarter of it is a few bps on liquid pairs, above the quoted
  half-spread, which is deliberately conservative for a model that trades at the close of the minute.
- net return of a period = position x forward return - cost.
- break-even fee: the fee at which the summed (not compounded) net return over the periods is zero:
  (sum of gross returns - sum of spread costs) / total turnover. Negative means the strategy loses before
  any fee.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_FEE_BPS = 60.0  # Coinbase Advanced entry-tier taker fee: 0.60 %; keep it a parameter, see fee_sweep
SPREAD_FRACTION = 0.25  # default half-spread: this share of the trade minute's (high - low) / close
POSITIONS = {"long_short": np.array([-1.0, 0.0, 1.0]), "long_flat": np.array([0.0, 0.0, 1.0])}
FEE_GRID_BPS = (0.0, 1.0, 2.5, 5.0, 10.0, 25.0, 40.0, 60.0)  # fees shown side by side (bps per unit traded)


@dataclass(frozen=True)
class CostModel:
    fee_bps: float = DEFAULT_FEE_BPS
    half_spread_bps: float | None = None  # None: SPREAD_FRACTION of each trade minute's high-low range
    threshold: float = 0.0  # minimum probability of the predicted direction to hold a position
    mode: str = "long_short"

    def __post_init__(self):
        if self.mode not in POSITIONS:
            raise ValueError(f"unknown strategy mode {self.mode!r}; known: {sorted(POSITIONS)}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if self.fee_bps < 0 or (self.half_spread_bps is not None and self.half_spread_bps < 0):
            raise ValueError(
                f"costs must be >= 0 bps: fee {self.fee_bps}, half-spread {self.half_spread_bps}"
            )


def positions_from_classes(classes: np.ndarray, mode: str) -> np.ndarray:
    """Positions for predicted classes (0 = down, 1 = flat, 2 = up)."""
    return POSITIONS[mode][classes]


def positions_from_probabilities(probabilities: np.ndarray, mode: str, threshold: float) -> np.ndarray:
    """The argmax direction's position where its probability reaches `threshold`, else flat."""
    classes = probabilities.argmax(axis=1)
    confident = probabilities.max(axis=1) >= threshold
    return np.where(confident, positions_from_classes(classes, mode), 0.0)


def turnover(position: np.ndarray, follows_previous: np.ndarray | None = None) -> np.ndarray:
    """Units traded at the start of each period (see the module docstring for skipped periods)."""
    previous = np.concatenate([[0.0], position[:-1]])
    contiguous = np.ones(len(position), bool) if follows_previous is None else follows_previous
    return np.where(contiguous, np.abs(position - previous), np.abs(previous) + np.abs(position))


def half_spread_bps(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """The default half-spread per minute in bps: SPREAD_FRACTION x (high - low) / close."""
    return SPREAD_FRACTION * (high - low) / close * 1e4


def simulate(
    position: np.ndarray,
    fwd_return: np.ndarray,
    fee_bps: float,
    spread_bps: np.ndarray | float = 0.0,
    follows_previous: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-period gross return, turnover, fee and spread cost, and net return (all simple returns)."""
    traded = turnover(position, follows_previous)
    gross = position * fwd_return
    fee = traded * fee_bps / 1e4
    spread = traded * np.asarray(spread_bps, dtype=np.float64) / 1e4
    return {"gross": gross, "turnover": traded, "fee": fee, "spread": spread, "net": gross - fee - spread}


def break_even_fee_bps(gross: np.ndarray, spread: np.ndarray, traded: np.ndarray) -> float:
    """Fee (bps per unit traded) at which the summed net return is zero; NaN when nothing is traded."""
    units = float(traded.sum())
    return float((gross.sum() - spread.sum()) / units * 1e4) if units > 0 else float("nan")


def fee_sweep(
    gross: np.ndarray, spread: np.ndarray, traded: np.ndarray, fees_bps=FEE_GRID_BPS
) -> dict[float, float]:
    """Compounded total net return at each fee of `fees_bps` (same positions, same spread)."""
    return {
        float(fee): float(np.prod(1.0 + gross - spread - traded * fee / 1e4) - 1.0) if len(gross) else 0.0
        for fee in fees_bps
    }
