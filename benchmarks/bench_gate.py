"""The promotion gate measured on replay worlds: how often it promotes without an edge (and what the strategy
then costs), how often with one (and what it earns, and up to which fee).

Each world is a synthetic seed of the replay (BTC-USD candles, features, Fear & Greed and Google Trends through
their clients; `crpbot_assets/replay/world.py`) of one kind:
- off: no sentiment lead (prices unrelated to sentiment);
- memory: lead L = 4 delayed one hour (`replay/synthetic.py`): only a model reading more than 60 rows back
  (the LSTM) knows the drift of an hour before its prices show it;
- level: lead L = 4 without delay: the last row's search interest carries it, so logistic regression and
  LightGBM see it as well as the LSTM (an honest gate then promotes nothing: the LSTM does not beat them);
- sequence: no sentiment lead; the probe lead (`replay/synthetic.py`): in half the hours a four-minute whipsaw
  in the hour's first quarter, whose order (up first or down first) sets the sign of a drift of 1.5 typical
  minute volatilities a minute over the hour's last quarter (the span the :45 decision holds); at that decision
  the probe lies 31-45 rows back and no last-row feature carries its sign (sums over it cancel, its high and low
  are symmetric, bar closes are unchanged): only a model reading the sequence can know the drift.
On each world the whole procedure runs with the assets' pure functions (`training/procedure.py`): for each of
the test months 2019-03..05 a fold model (trained on the 2 months before, purge, inputs that varied, the LSTM
through the training job's entry point, logit and LightGBM on the same rows, every decision rule fitted on the
fold's validation part), the month scored; then the gate (`signals/promotion.judge`, default rule) for 2019-06
on those three months, and the verdict's trading comparison (`training/verdict.trading`).
CPU-sized (stated in the output): 2-month windows, a 1-day feature embargo, a small LSTM (1 layer, 32 units,
64-row windows, 6 epochs of 20,000 windows), one seed (the interval then ignores training noise), no
sentiment ablation. Results go to a JSON-lines file (one line per world; a re-run skips worlds already there),
then a table: share promoted with its Clopper-Pearson 95 % interval, the LSTM's cost and net per month, the
break-even fee.

Run: nice -n 10 .venv/bin/python benchmarks/bench_gate.py --kinds off memory --worlds 20 [--out FILE]
     .venv/bin/python benchmarks/bench_gate.py --summary FILE   (the table of a finished file)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.stats import beta

from crpbot_assets.replay import synthetic
from crpbot_assets.replay.world import world
from crpbot_assets.signals.promotion import PromotionRule, judge
from crpbot_assets.training import procedure
from crpbot_assets.training import verdict as vd

SYMBOL = "BTC-USD"
# (sentiment lead strength L, its delay in hours, probe lead: drift per minute in volatilities)
KINDS = {"off": (0.0, 0, 0.0), "memory": (4.0, 1, 0.0), "level": (4.0, 0, 0.0), "sequence": (0.0, 0, 1.5)}
DATA = (datetime(2018, 12, 15, tzinfo=UTC), datetime(2019, 6, 1, tzinfo=UTC))
TEST_MONTHS = [datetime(2019, m, 1, tzinfo=UTC) for m in (3, 4, 5)]
GATE_MONTH = "2019-06"
CONFIG = procedure.CPU_SIZED
RULE = PromotionRule()


def run_world(kind: str, seed: int, config: procedure.ProcedureConfig = CONFIG) -> dict:
    """The procedure, the gate and the trading comparison on one world."""
    lead, delay, probe = KINDS[kind]
    os.environ[synthetic.SENTIMENT_LEAD_ENV] = str(lead)
    os.environ[synthetic.SENTIMENT_LEAD_DELAY_ENV] = str(delay)
    os.environ[synthetic.PROBE_LEAD_ENV] = str(probe)
    started = time.perf_counter()
    candles, features, sentiment = world(SYMBOL, *DATA, seed)
    frames, folds = procedure.record(features, sentiment, candles, TEST_MONTHS, config, SYMBOL)
    decision = judge(frames, GATE_MONTH, RULE)
    trading = vd.trading(frames, vd.VerdictConfig(resamples=200, fee_bps=RULE.fee_bps))
    lstm = trading["models"]["lstm"]
    _, month_of_day, nets = vd.daily_nets(vd.trading_periods(frames, vd.VerdictConfig(fee_bps=RULE.fee_bps)))
    per_month = decision.details["per_month_net"]
    months = len(TEST_MONTHS)
    return {
        "kind": kind,
        "world": seed,
        "lead": lead,
        "delay": delay,
        "probe": probe,
        "promoted": decision.passed,
        "reason": decision.reason,
        "lower_bound": decision.details["lower_bound"],
        "excess": decision.details["excess"],
        "best_baseline": decision.details["best_baseline"],
        "summed_net": decision.details["summed_net"],
        "lstm_net_per_month": [per_month[m]["lstm"] for m in sorted(per_month)],
        "lstm_cost_per_month": lstm["cost"] / months,
        "lstm_turnover_per_day": lstm["turnover_per_day"],
        "lstm_net_return": lstm["net_return"],
        "lstm_break_even_fee_bps": lstm["break_even_fee_bps"],
        "models": {
            m: {k: v for k, v in r.items() if k != "summed_net_ci"} for m, r in trading["models"].items()
        },
        "rules": {
            label: {
                m: [r.get("enter"), r.get("exit"), r["fit"].get("val_ic_t")] for m, r in f["rules"].items()
            }
            for label, f in folds.items()
        },
        "dropped_inputs": folds[sorted(folds)[0]]["dropped_inputs"],
        "daily_net": {m: np.round(v, 7).tolist() for m, v in nets.items()},  # for what-if power checks
        "month_of_day": month_of_day.tolist(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    low = beta.ppf(a, k, n - k + 1) if k > 0 else 0.0
    high = beta.ppf(1 - a, k + 1, n - k) if k < n else 1.0
    return float(low), float(high)


def summary(lines: list[dict]) -> str:
    rows = [
        "| kind | worlds | promoted | 95 % interval (Clopper-Pearson) | LSTM cost / month | LSTM net / month "
        "(mean, [min, max]) | break-even fee bps (median) | LSTM trades in |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        chosen = [r for r in lines if r["kind"] == kind]
        if not chosen:
            continue
        k, n = sum(r["promoted"] for r in chosen), len(chosen)
        low, high = clopper_pearson(k, n)
        net = np.array([np.mean(r["lstm_net_per_month"]) for r in chosen])
        cost = np.array([r["lstm_cost_per_month"] for r in chosen])
        fees = [r["lstm_break_even_fee_bps"] for r in chosen if np.isfinite(r["lstm_break_even_fee_bps"])]
        trading_months = sum(rule["lstm"][0] is not None for r in chosen for rule in r["rules"].values())
        probe = chosen[0].get("probe", 0.0)
        label = (
            f"probe {probe:g} sigma/min"
            if probe
            else f"L = {chosen[0]['lead']:g}, delay {chosen[0]['delay']} h"
        )
        rows.append(
            f"| {kind} ({label}) | {n} | {k}/{n} = {k / n:.0%} | "
            f"[{low:.1%}, {high:.1%}] | {cost.mean():.2%} (max {cost.max():.2%}) | {net.mean():+.2%} "
            f"[{net.min():+.2%}, {net.max():+.2%}] | {np.median(fees) if fees else float('nan'):.1f} | "
            f"{trading_months}/{3 * n} months |"
        )
    return "\n".join(rows)


def power(lines: list[dict], edges_bps=(0, 10, 25, 50, 100, 200)) -> str:
    """What-if power of the gate on the worlds' real baseline records: the LSTM replaced by the best baseline's
    daily net plus a consistent edge (bps of capital per day) plus day-to-day tracking noise as large as the real
    LSTM's (the std of its daily net minus the best baseline's); the gate's statistic as `judge` computes it."""
    rows = [
        "| kind | edge over the best baseline (bps/day) | worlds | promoted | 95 % interval |",
        "|---|---|---|---|---|",
    ]
    for kind in KINDS:
        chosen = [r for r in lines if "daily_net" in r and r["kind"] == kind]
        if chosen:
            rows += _power_rows(kind, chosen, edges_bps)
    return "\n".join(rows)


def _power_rows(kind: str, chosen: list[dict], edges_bps) -> list[str]:
    rng = np.random.default_rng(0)
    rows = []
    for edge in edges_bps:
        passed = 0
        for r in chosen:
            nets = {m: np.array(v) for m, v in r["daily_net"].items()}
            month_of_day = np.array(r["month_of_day"])
            baselines = [m for m in vd.TRADING_BASELINES if m in nets]
            best = max(baselines, key=lambda m: nets[m].sum())
            noise = np.std(nets["lstm"] - nets[best])
            what_if = {**nets, "lstm": nets[best] + edge / 1e4 + rng.normal(0, noise, len(month_of_day))}
            weights = vd.bootstrap_weights(
                month_of_day, RULE.resamples, RULE.block_days, np.random.default_rng(RULE.seed)
            )
            point, draws = vd.excess_over_best(what_if, weights)
            passed += point > 0 and np.quantile(draws, RULE.alpha) > 0
        low, high = clopper_pearson(passed, len(chosen))
        rows.append(f"| {kind} | {edge} | {len(chosen)} | {passed}/{len(chosen)} | [{low:.1%}, {high:.1%}] |")
    return rows


def load(path: Path) -> list[dict]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["off", "memory"], choices=sorted(KINDS))
    parser.add_argument("--worlds", type=int, default=20)
    parser.add_argument("--first-world", type=int, default=1000, help="first synthetic seed (default 1000)")
    parser.add_argument("--out", type=Path, default=Path("bench_gate.jsonl"))
    parser.add_argument("--summary", type=Path, help="print the table of a results file and exit")
    parser.add_argument(
        "--model", type=json.loads, default={}, help="JSON overriding LSTM settings (default: none)"
    )
    args = parser.parse_args()
    config = replace(CONFIG, model={**CONFIG.model, **args.model})
    if args.summary:
        print(summary(load(args.summary)))
        print(power(load(args.summary)))
        return
    import torch

    torch.set_num_threads(1)
    print(f"load average at start: {os.getloadavg()}; {config}; {RULE}", flush=True)
    done = {(r["kind"], r["world"]) for r in load(args.out)}
    for seed in range(args.first_world, args.first_world + args.worlds):
        for kind in args.kinds:
            if (kind, seed) in done:
                continue
            result = run_world(kind, seed, config)
            with args.out.open("a") as out:
                out.write(json.dumps(result) + "\n")
            print(
                f"{kind} world {seed}: promoted {result['promoted']} ({result['reason']}); LSTM net/month "
                f"{np.round(result['lstm_net_per_month'], 4).tolist()}, cost/month {result['lstm_cost_per_month']:.4f}; "
                f"{result['seconds']:.0f}s, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    print(summary(load(args.out)))
    print(
        f"load average at end: {os.getloadavg()}; {subprocess.run(['uptime'], capture_output=True, text=True).stdout}"
    )


if __name__ == "__main__":
    main()
