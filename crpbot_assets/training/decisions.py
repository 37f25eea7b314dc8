"""Cost-aware positions from class probabilities: the one decision function of the verdict, `signals`, the paper
ledger and the live service.

Pure numpy; a rule is a JSON-able dict stored in the fold model's artifact.
- Score: `score(p) = P(up) - P(down)` in [-1, 1] (persistence: its class as -1 / 0 / +1, `class_score`).
- Decisions are taken on the N-minute grid (minute % horizon == 0), each known at its minute's close and filled at
  the next minute's open; a grid minute without a score keeps the position (as the ledger does).
- Rule `threshold` (hysteresis): from flat, go long when score >= `enter` (short when score <= -`enter`,
  long_short only); an open long is kept while score >= `exit` and closed below it (short: mirrored); a score
  beyond the opposite `enter` flips. `exit` lies in [-enter, enter]: `enter` (no hysteresis), 0 (close when the
  direction turns) or -`enter` (hold until the opposite signal). `enter` None: always flat. Rule `always_long`:
  buy and hold (bought once, costs once).
- Fitting (`fit_rule`), on the fold's VALIDATION rows only, never test:
  1. the score must be informative: the t-statistic of its daily information coefficient (per UTC day, the
     Pearson correlation of score and forward return over the day's minutes; t = mean / standard error over days)
     must reach `min_ic_t`; else the rule is flat;
  2. each candidate (`enter` at the `enter_quantiles` of |score| on the validation grid x the three exits) is
     simulated on the validation grid with the real costs (fee + the fill minute's half-spread per unit traded),
     and the one with the largest net result is kept, provided it is above zero: the validation trades it takes
     earned more than their round-trip costs (the expected edge exceeds the cost). Else the rule is flat.
  Ties prefer the candidate listed first (fewer trades: higher `enter`).
- `simulate`: per decision, turnover |position - previous position|, cost turnover x (fee + half-spread) / 1e4,
  gross position x trade return (fill to the next decision's fill), net = gross - cost.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from crpbot_assets.training.costs import DEFAULT_FEE_BPS, POSITIONS

RULE_FORMAT = "crpbot-rule/1"
EXITS = ("enter", "zero", "opposite")
MIN_IC_MINUTES = 30  # a day needs this many validation minutes (with a varying score) for its IC


@dataclass(frozen=True)
class DecisionConfig:
    fee_bps: float = DEFAULT_FEE_BPS  # taker fee per unit traded; the half-spread comes from each fill minute
    mode: str = "long_short"  # or long_flat
    min_ic_t: float = 3.0  # daily-IC t-statistic on validation the score must reach before any position
    enter_quantiles: tuple[float, ...] = (
        0.99,
        0.98,
        0.95,
        0.9,
        0.8,
        0.5,
    )  # of |score| on the validation grid
    exits: tuple[str, ...] = EXITS

    def __post_init__(self):
        if self.mode not in POSITIONS:
            raise ValueError(f"unknown strategy mode {self.mode!r}; known: {sorted(POSITIONS)}")
        if self.fee_bps < 0 or not all(0.0 < q < 1.0 for q in self.enter_quantiles):
            raise ValueError(f"need fee_bps >= 0 and enter quantiles in (0, 1): {self}")
        unknown = set(self.exits) - set(EXITS)
        if unknown or not self.exits:
            raise ValueError(f"exits must be some of {EXITS}, got {self.exits}")


def score(probabilities: np.ndarray) -> np.ndarray:
    """P(up) - P(down) of (n, 3) class probabilities (down, flat, up)."""
    p = np.asarray(probabilities, dtype=np.float64)
    return p[:, 2] - p[:, 0]


def class_score(classes: np.ndarray) -> np.ndarray:
    """A predicted class (0 down, 1 flat, 2 up) as a score: -1, 0, +1."""
    return np.asarray(classes, dtype=np.float64) - 1.0


def flat_rule(mode: str = "long_short", reason: str = "", **fit) -> dict:
    return {"format": RULE_FORMAT, "kind": "threshold", "mode": mode, "enter": None, "exit": None,
            "reason": reason, "fit": fit}  # fmt: skip


def hold_rule() -> dict:
    """Buy and hold: long from the first decision on."""
    return {"format": RULE_FORMAT, "kind": "always_long", "reason": "buy and hold", "fit": {}}


def _check(rule: dict) -> None:
    if not isinstance(rule, dict) or rule.get("format") != RULE_FORMAT:
        raise ValueError(f"not a decision rule ({RULE_FORMAT}): {rule!r}")
    if rule["kind"] not in ("threshold", "always_long"):
        raise ValueError(f"unknown decision rule kind {rule['kind']!r}")


def positions(scores: np.ndarray, rule: dict, previous: float = 0.0) -> np.ndarray:
    """Sequential positions (-1, 0, +1) at successive decisions from the position held before them (module
    docstring). A NaN score keeps the position."""
    _check(rule)
    scores = np.asarray(scores, dtype=np.float64)
    if rule["kind"] == "always_long":
        return np.ones(len(scores))
    enter, exit_ = rule["enter"], rule["exit"]
    if enter is None:
        return np.zeros(len(scores))
    short = rule["mode"] == "long_short"
    held = float(previous) if short else max(0.0, float(previous))
    out = np.empty(len(scores))
    for i, s in enumerate(scores):
        if s >= enter:
            held = 1.0
        elif short and s <= -enter:
            held = -1.0
        elif (held > 0 and s < exit_) or (held < 0 and s > -exit_):
            held = 0.0
        out[i] = held
    return out


def simulate(
    position: np.ndarray,
    trade_return: np.ndarray,
    half_spread_bps: np.ndarray | float,
    fee_bps: float,
    previous: float = 0.0,
) -> dict[str, np.ndarray]:
    """Per decision: gross, turnover, fee, spread cost and net (simple returns; module docstring)."""
    position = np.asarray(position, dtype=np.float64)
    before = np.concatenate([[previous], position[:-1]])
    turnover = np.abs(position - before)
    gross = position * np.asarray(trade_return, dtype=np.float64)
    fee = turnover * fee_bps / 1e4
    spread = turnover * np.asarray(half_spread_bps, dtype=np.float64) / 1e4
    return {"gross": gross, "turnover": turnover, "fee": fee, "spread": spread, "net": gross - fee - spread}


def daily_ic(score_values: np.ndarray, fwd_return: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Pearson correlation of score and forward return per day (days with too few rows or a constant score or
    return are left out)."""
    ok = np.isfinite(score_values) & np.isfinite(fwd_return)
    score_values, fwd_return, day = score_values[ok], fwd_return[ok], day[ok]
    out = []
    for d in np.unique(day):
        chosen = day == d
        a, b = score_values[chosen], fwd_return[chosen]
        if chosen.sum() >= MIN_IC_MINUTES and a.std() > 0 and b.std() > 0:
            out.append(float(np.corrcoef(a, b)[0, 1]))
    return np.asarray(out)


def ic_t(ics: np.ndarray) -> float:
    """t-statistic of the mean daily IC (0 with fewer than 3 days or no spread)."""
    if len(ics) < 3 or ics.std(ddof=1) == 0:
        return 0.0
    return float(ics.mean() / (ics.std(ddof=1) / np.sqrt(len(ics))))


def candidates(grid_scores: np.ndarray, mode: str, config: DecisionConfig) -> list[dict]:
    """Threshold rules to try: `enter` at quantiles of |score| (distinct, > 0) x the configured exits."""
    magnitude = np.abs(grid_scores[np.isfinite(grid_scores)])
    if not len(magnitude):
        return []
    enters = []
    for q in config.enter_quantiles:
        value = float(np.quantile(magnitude, q))
        if value > 0 and value not in enters:
            enters.append(value)
    exit_of = {"enter": lambda e: e, "zero": lambda e: 0.0, "opposite": lambda e: -e}
    return [
        {"format": RULE_FORMAT, "kind": "threshold", "mode": mode, "enter": e, "exit": exit_of[x](e)}
        for e in enters
        for x in config.exits
    ]


def fit_rule(
    score_values: np.ndarray,
    fwd_return: np.ndarray,
    day: np.ndarray,
    trade_return: np.ndarray,
    half_spread_bps: np.ndarray,
    config: DecisionConfig = DecisionConfig(),
) -> dict:
    """The decision rule fitted on validation rows (time order): `score_values`, `fwd_return` (the label's
    return) and `day` (any per-day key) of every validation minute; `trade_return` (fill to the next decision's
    fill; NaN off the decision grid) and `half_spread_bps` (at the fill minute). See the module docstring."""
    score_values = np.asarray(score_values, dtype=np.float64)
    trade_return = np.asarray(trade_return, dtype=np.float64)
    ics = daily_ic(score_values, np.asarray(fwd_return, dtype=np.float64), np.asarray(day))
    t = ic_t(ics)
    grid = np.isfinite(trade_return)
    fit = {
        "config": json.loads(json.dumps(asdict(config))),  # JSON-able: lists, not tuples
        "val_minutes": int(len(score_values)),
        "val_decisions": int(grid.sum()),
        "val_days": int(len(ics)),
        "val_ic": float(ics.mean()) if len(ics) else float("nan"),
        "val_ic_t": t,
    }
    if not t >= config.min_ic_t:
        return flat_rule(
            config.mode,
            f"validation daily-IC t {t:.2f} < {config.min_ic_t:g}: the score is not shown to be informative",
            **fit,
        )
    grid_scores, returns = score_values[grid], trade_return[grid]
    spread = np.asarray(half_spread_bps, dtype=np.float64)[grid]
    best, best_result = None, None
    for rule in candidates(grid_scores, config.mode, config):
        result = simulate(positions(grid_scores, rule), returns, spread, config.fee_bps)
        if best_result is None or result["net"].sum() > best_result["net"].sum():
            best, best_result = rule, result
    if best is None or not best_result["net"].sum() > 0:
        net = 0.0 if best_result is None else float(best_result["net"].sum())
        return flat_rule(
            config.mode,
            f"no threshold earns its costs on validation (best net {net:+.4f} at {config.fee_bps:g} bps fee)",
            **fit,
        )
    units = float(best_result["turnover"].sum())
    fit.update(
        {
            "val_net": float(best_result["net"].sum()),
            "val_gross": float(best_result["gross"].sum()),
            "val_turnover": units,
            "val_gross_per_unit_bps": float(best_result["gross"].sum() / units * 1e4),
            "val_cost_per_unit_bps": float(
                (best_result["fee"].sum() + best_result["spread"].sum()) / units * 1e4
            ),
            "val_exposure": float(np.mean(positions(grid_scores, best) != 0)),
        }
    )
    return {
        **best,
        "reason": (
            f"validation daily-IC t {t:.2f}; trades earned {fit['val_gross_per_unit_bps']:.1f} bps per unit "
            f"traded against {fit['val_cost_per_unit_bps']:.1f} bps of costs"
        ),
        "fit": fit,
    }
