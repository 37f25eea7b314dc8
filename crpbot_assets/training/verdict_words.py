"""The walk-forward verdict for people: sentences and one table from verdict.verdict's report. Pure.

Every claim is decided by the number printed beside it (fractions are shown as percentages, differences of
fractions as percentage points):
- money: the LSTM's summed daily net return after costs minus the best trading baseline's, with its 95 %
  interval: the LSTM beats it (interval above zero), does worse (below zero) or does not beat it (spans zero);
- fees: at the report's fee (plus each fill's half-spread) every strategy that traded earns, loses, or some of
  each (compounded net return), and the LSTM's break-even fee (negative: it loses before any fee);
- classification: the LSTM's primary metric against the best classification baseline, with the interval;
- sentiment: the ablation (with minus without the sentiment inputs) helps, hurts or has no measurable effect,
  by its interval; with one training seed that interval ignores training noise, and the sentence says so.
The scope (test months, seeds) is stated with the first claim.
"""

from __future__ import annotations

from crpbot_assets.training.report_page import Table
from crpbot_assets.training.walk_forward import TRADED_MODELS

NAMES = {
    "lstm": "LSTM",
    "logit": "logistic regression",
    "lgbm": "LightGBM",
    "persist": "persistence",
    "buy_and_hold": "buy and hold",
    "majority": "majority class",
}
METRIC_NAMES = {"acc": "accuracy", "bacc": "balanced accuracy"}
NOTIONAL_USD = 10_000.0  # equity plots start here (the paper ledger's default starting capital)


def percent(value: float | None, signed: bool = False) -> str:
    """A fraction as a percentage with one decimal ("n/a" when missing or NaN)."""
    if value is None or value != value:
        return "n/a"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def side(ci) -> str:
    """Where a 95 % interval lies: "above" or "below" zero, or "spans" it."""
    low, high = ci
    return "above" if low > 0 else "below" if high < 0 else "spans"


def interval(ci) -> str:
    where = "spans zero" if side(ci) == "spans" else "excludes zero"
    return f"95 % interval {percent(ci[0], True)} to {percent(ci[1], True)}, {where}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _names(models) -> str:
    names = [NAMES.get(m, m) for m in models]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def scope(report: dict) -> str:
    seeds = report["lstm_seeds"]
    text = f"{_plural(report['n_months'], 'test month')}, {_plural(seeds, 'training seed')}"
    return text + (": the intervals ignore training noise" if seeds <= 1 else "")


def money(report: dict) -> str:
    """The LSTM against the best trading baseline after costs."""
    trading = report["trading"]
    if "lstm_minus_best_net" not in trading:
        return (
            f"No trading comparison: the predictions carry no LSTM and baseline positions ({scope(report)})."
        )
    excess = trading["lstm_minus_best_net"]
    best = trading["best_trading_baseline"]
    verb = {"above": "beats", "below": "does worse than", "spans": "does not beat"}[side(excess["ci"])]
    lstm = trading["models"]["lstm"]
    flat = " (its rule never traded)" if lstm["turnover_per_day"] == 0 else ""
    return (
        f"After costs the LSTM{flat} {verb} the best baseline, {NAMES[best]}: net return "
        f"{percent(lstm['net_return'], True)} % against {percent(trading['models'][best]['net_return'], True)} % "
        f"(difference of summed daily net returns {percent(excess['mean'], True)} points, {interval(excess['ci'])}; "
        f"{scope(report)})."
    )


def fees(report: dict) -> str:
    """Who earns and who loses at the report's fee, and the LSTM's break-even fee."""
    models = report["trading"]["models"]
    head = f"After a {report['fee_bps']:g} bps fee and the half-spread"
    traded = [m for m, r in models.items() if r["turnover_per_day"] > 0]
    if not traded:
        return f"{head} nothing traded."
    never = [m for m in models if m not in traded]
    earn = [m for m in traded if models[m]["net_return"] > 0]
    lose = [m for m in traded if m not in earn]
    every = "every strategy that traded" if never else "every strategy"
    best = max(traded, key=lambda m: models[m]["net_return"])
    best_net = f"{NAMES.get(best, best)} {percent(models[best]['net_return'], True)} %"
    if len(traded) == 1:
        text = f"{head} only {NAMES.get(best, best)} traded: it {'earns' if earn else 'loses'} ({best_net})"
    elif not earn:
        text = f"{head} {every} loses (best: {best_net})"
    elif not lose:
        text = f"{head} {every} earns (best: {best_net})"
    else:
        earns, loses = ("s" if len(group) == 1 else "" for group in (earn, lose))
        text = f"{head} {_names(earn)} earn{earns}, {_names(lose)} lose{loses} (best: {best_net})"
    if never:
        its = "its decision rule" if len(never) == 1 else "their decision rules"
        text += f"; {_names(never)} never traded ({its} stayed flat)"
    lstm = models.get("lstm")
    if lstm and lstm["turnover_per_day"] > 0:
        fee = lstm["break_even_fee_bps"]
        text += f"; the LSTM's break-even fee is {fee:.1f} bps" + (
            " (it loses before any fee)" if fee < 0 else ""
        )
    return text + "."


def classification(report: dict) -> str:
    """The LSTM's primary classification metric against the best classification baseline."""
    key = report["metric"]
    difference = report["lstm_minus_best"]
    where = "above" if difference["mean"] >= 0 else "below"
    return (
        f"{METRIC_NAMES[key].capitalize()}: LSTM {percent(report['mean'][f'{key}/lstm']['mean'])} %, "
        f"{abs(difference['mean']) * 100:.1f} points {where} {NAMES[report['best_baseline']]} "
        f"({interval(difference['ci'])})."
    )


def sentiment(report: dict) -> str:
    """The sentiment ablation: helps, hurts or no measurable effect."""
    key = report["metric"]
    if "ablation" not in report:
        return "Sentiment: not measured (no LSTM trained without the sentiment inputs)."
    ablation = report["ablation"][key]
    where = side(ablation["ci"])
    effect = {"above": "helps", "below": "hurts", "spans": "no measurable effect"}[where]
    noise = (
        "; with 1 training seed this may be training noise"
        if ablation["seeds"] <= 1 and where != "spans"
        else ""
    )
    return (
        f"Sentiment: {effect} ({percent(ablation['mean'], True)} points {METRIC_NAMES[key]} with minus without "
        f"the sentiment inputs, {interval(ablation['ci'])}{noise})."
    )


def verdict(report: dict) -> str:
    """The verdict in words, a person reads it in ten seconds: money, fees, classification, sentiment."""
    return " ".join((money(report), fees(report), classification(report), sentiment(report)))


def table(report: dict) -> Table:
    """One table: models as rows (every traded model, then the majority class), metrics as columns."""
    trading = report["trading"]["models"]
    mean, ic, key = report["mean"], report.get("ic", {}), report["metric"]
    rows = []
    for m in (*TRADED_MODELS, "majority"):
        if m not in trading and f"{key}/{m}" not in mean:
            continue
        r = trading.get(m)
        money_cells = (
            (
                percent(r["net_return"], True),
                f"{percent(r['summed_net_ci'][0], True)} to {percent(r['summed_net_ci'][1], True)}",
                f"{r['turnover_per_day']:.2f}",
                percent(r["max_drawdown"]),
                "no trade" if r["turnover_per_day"] == 0 else f"{r['break_even_fee_bps']:.1f}",
                f"{r['sharpe_daily_ann']:.2f}",
            )
            if r
            else ("-",) * 6
        )
        score = ic.get(f"ic/{m}")
        rows.append(
            (
                NAMES.get(m, m),
                *money_cells,
                "-" if score is None else f"{score:+.3f}",
                percent(mean[f"{key}/{m}"]["mean"]) if f"{key}/{m}" in mean else "-",
            )
        )
    return Table(
        (
            "model",
            "net return (%)",
            "summed net, 95 % interval (%)",
            "turnover (/day)",
            "max drawdown (%)",
            "break-even fee (bps)",
            "Sharpe",
            "IC",
            f"{key} (%)",
        ),
        rows,
        f"Net return: compounded after a {report['fee_bps']:g} bps fee and the half-spread; interval: of the "
        "summed daily net return, block bootstrap over days and months; turnover: position units traded per day; "
        "Sharpe: annualised from daily returns (x sqrt(365), no risk-free rate); IC: correlation of the score "
        f"with the forward return, mean over months; {key}: {METRIC_NAMES[key]}"
        + (" (33.3 % is chance)." if key == "bacc" else "."),
    )
