"""The promotion gate: may the fold model of month M trade it? Judged on the walk-forward record before M.

Pure (no Dagster). The record is the walk-forward predictions (training/walk_forward.score_fold's frames) of the
`recent_months` test months strictly before M: each was traded by the fold model of its own month, made by the
same procedure (window, purge, models, decision rules) that made M's fold model. The rule (this dataclass) is
configuration fixed before the months it judges; it is recorded with every decision.

The gate passes only when the LSTM's net trading result after costs beats the best trading baseline's
(logit, lgbm, persist, buy_and_hold, each trading its own validation-fitted rule) with a lower confidence bound
above zero: the statistic is the LSTM's summed daily net return minus the best baseline's over the judged months,
the maximum over baselines taken inside each bootstrap draw (choosing the best is part of it); draws resample the
months, then blocks of `block_days` days inside each (training/verdict.py `bootstrap_weights`). It passes when
the `alpha` quantile of the draws is above zero (a one-sided (1 - alpha) lower bound) and so is the point value.
A tie (the same daily results, e.g. every model flat) gives zero in every draw: it never passes. A record with a
month missing or fewer than `recent_months` months never passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from crpbot_assets.training import costs
from crpbot_assets.training import verdict as vd


@dataclass(frozen=True)
class PromotionRule:
    recent_months: int = 3  # the trailing test months judged, strictly before the month to trade
    alpha: float = 0.05  # the lower bound is this quantile of the bootstrap draws (one-sided 95 %)
    block_days: int = 1  # consecutive days per bootstrap block
    resamples: int = 2000
    fee_bps: float = (
        costs.DEFAULT_FEE_BPS
    )  # taker fee charged on the record; half-spread from each fill minute
    seed: int = 0  # the bootstrap's generator: a decision is reproducible
    enforce: bool = (
        True  # False (demos only): the fold model is promoted whatever the gate says (shown as such)
    )

    def __post_init__(self):
        if (
            self.recent_months < 1
            or not 0.0 < self.alpha < 0.5
            or self.block_days < 1
            or self.resamples < 100
        ):
            raise ValueError(
                f"need recent_months >= 1, 0 < alpha < 0.5, block_days >= 1, resamples >= 100: {self}"
            )
        if self.fee_bps < 0:
            raise ValueError(f"fee_bps must be >= 0, got {self.fee_bps}")


@dataclass(frozen=True)
class Decision:
    passed: bool
    reason: str
    details: dict = field(default_factory=dict)


def previous_months(month: str, count: int) -> list[str]:
    """The `count` month labels ("YYYY-MM") before `month`, oldest first."""
    year, m = (int(x) for x in month[:7].split("-"))
    index = year * 12 + m - 1
    return [f"{(index - k) // 12:04d}-{(index - k) % 12 + 1:02d}" for k in range(count, 0, -1)]


def judge(record: dict[str, pl.DataFrame], month: str, rule: PromotionRule = PromotionRule()) -> Decision:
    """Whether the fold model of `month` ("YYYY-MM") may trade it, from `record` (test month label ->
    walk-forward predictions; months at or after `month` are ignored). Reason and numbers included."""
    judged = previous_months(month, rule.recent_months)
    details: dict = {"judged_months": judged, "rule": asdict(rule)}
    missing = [m for m in judged if m not in record or record[m].height == 0]
    if missing:
        return Decision(
            False,
            f"the walk-forward record lacks test month(s) {missing} of the {rule.recent_months} before {month}",
            details,
        )
    months = {m: record[m] for m in judged}
    absent = [m for m in ("lstm", *vd.TRADING_BASELINES) if m not in vd.traded(months)]
    if "lstm" in absent or len(absent) == len(vd.TRADING_BASELINES) + 1:
        raise ValueError(f"walk-forward predictions of {judged} lack positions of {absent}")
    config = vd.VerdictConfig(
        resamples=rule.resamples, seed=rule.seed, fee_bps=rule.fee_bps, block_days=rule.block_days
    )
    periods = vd.trading_periods(months, config)
    _, month_of_day, nets = vd.daily_nets(periods)
    weights = vd.bootstrap_weights(
        month_of_day, rule.resamples, rule.block_days, np.random.default_rng(rule.seed)
    )
    point, draws = vd.excess_over_best(nets, weights)
    lower = float(np.quantile(draws, rule.alpha))
    summed = {m: float(v.sum()) for m, v in nets.items()}
    best = max((b for b in vd.TRADING_BASELINES if b in nets), key=summed.get)
    details.update(
        {
            "summed_net": {m: round(v, 6) for m, v in summed.items()},
            "per_month_net": {
                label: {m: round(float(v[month_of_day == j].sum()), 6) for m, v in nets.items()}
                for j, label in enumerate(periods["labels"])
            },
            "best_baseline": best,
            "excess": point,
            "lower_bound": lower,
            "days": int(len(month_of_day)),
            "lstm_turnover": float(periods["models"]["lstm"]["turnover"].sum()),
        }
    )
    window = f"{judged[0]}..{judged[-1]}"
    if point > 0 and lower > 0:
        return Decision(
            True,
            f"over {window} the LSTM's net {summed['lstm']:+.2%} beat the best baseline ({best} "
            f"{summed[best]:+.2%}) by {point:+.2%}, lower {1 - rule.alpha:.0%} bound {lower:+.2%} > 0",
            details,
        )
    return Decision(
        False,
        f"over {window} the LSTM's net {summed['lstm']:+.2%} vs the best baseline ({best} {summed[best]:+.2%}): "
        f"excess {point:+.2%}, lower {1 - rule.alpha:.0%} bound {lower:+.2%} is not above zero",
        details,
    )
