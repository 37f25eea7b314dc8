"""Model promotion: does the walk-forward report let the newest `lstm_model` of a symbol trade on paper?

Pure (no Dagster). The report is `walk_forward_report`'s value (training/verdict.py): per test month the
primary metric (`acc` or `bacc`) of the LSTM and of every baseline, the best baseline over all months, and the
LSTM strategy's net return after the report's fee and half-spread, plus its break-even fee.
The rule judges the most recent `recent_months` test months: the LSTM must beat the report's best baseline
in at least `min_months_won` of them, and (each optional) its net return after costs over all test months must
exceed `min_net_return` and its break-even fee reach `min_break_even_fee_bps` (e.g. the fee you would pay).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PromotionRule:
    recent_months: int = 3  # how many of the report's latest test months are judged
    min_months_won: int = 2  # of those, months in which the LSTM beats the best baseline
    min_net_return: float | None = 0.0  # net return after the report's costs must exceed this; None: ignored
    min_break_even_fee_bps: float | None = None  # break-even fee must reach this; None: ignored

    def __post_init__(self):
        if self.recent_months < 1 or not 0 <= self.min_months_won <= self.recent_months:
            raise ValueError(f"need recent_months >= 1 and 0 <= min_months_won <= recent_months: {self}")


@dataclass(frozen=True)
class Decision:
    passed: bool
    reason: str
    details: dict = field(default_factory=dict)


def decide(report: dict, rule: PromotionRule = PromotionRule()) -> Decision:
    """Whether `report` passes `rule`, with a one-line reason a person can act on and the numbers used."""
    for key in ("months", "metric", "best_baseline", "trading"):
        if key not in report:
            raise ValueError(f"walk_forward_report lacks {key!r}: not a walk-forward report")
    months = sorted(report["months"])
    if len(months) < rule.recent_months:
        return Decision(
            False,
            f"the walk-forward report has {len(months)} test month(s); the rule judges the latest "
            f"{rule.recent_months} (materialize more walk_forward_predictions months)",
            {"months": len(months)},
        )
    metric = report["metric"]
    best = report["best_baseline"]
    recent = months[-rule.recent_months :]
    margins = {
        m: report["months"][m][f"{metric}/lstm"] - report["months"][m][f"{metric}/{best}"] for m in recent
    }
    won = sum(margin > 0 for margin in margins.values())
    trading = report["trading"]
    details = {
        "metric": metric,
        "best_baseline": best,
        "judged_months": recent,
        "margin_per_month": {m: round(v, 4) for m, v in margins.items()},
        "months_won": won,
        "net_return": trading["total_return"],
        "break_even_fee_bps": trading["break_even_fee_bps"],
    }
    failures = []
    if won < rule.min_months_won:
        failures.append(
            f"LSTM {metric} beat the best baseline ({best}) in {won} of the latest {len(recent)} month(s), "
            f"needs {rule.min_months_won}"
        )
    if rule.min_net_return is not None and not trading["total_return"] > rule.min_net_return:
        failures.append(
            f"net return after costs {trading['total_return']:+.2%} is not above {rule.min_net_return:+.2%}"
        )
    if rule.min_break_even_fee_bps is not None and not (
        trading["break_even_fee_bps"] >= rule.min_break_even_fee_bps  # NaN (no trade) fails
    ):
        failures.append(
            f"break-even fee {trading['break_even_fee_bps']:.2f} bps is below {rule.min_break_even_fee_bps:g} bps"
        )
    if failures:
        return Decision(False, "; ".join(failures), details)
    return Decision(
        True,
        f"LSTM {metric} beat {best} in {won}/{len(recent)} of the latest months "
        f"({recent[0]}..{recent[-1]}); net return after costs {trading['total_return']:+.2%}",
        details,
    )
