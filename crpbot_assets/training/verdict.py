"""The walk-forward verdict for one symbol: per-month metrics, day-bootstrap intervals, costs, the ablation.

Pure numpy/polars. Input: the walk-forward predictions of each test month (walk_forward.predict_fold's frame).
- Metrics per month and model: accuracy (`acc`), balanced accuracy (`bacc`: mean recall over the classes
  present) and log loss (`ll`, probability models only; probabilities clipped at 1e-7).
- Mean over months with a 95 % bootstrap interval: days are resampled with replacement within each month
  (minutes of one day are not independent; days are treated as independent), the month's metric recomputed,
  and months averaged; percentile interval over `resamples` draws (fixed seed).
- Beating the baselines: the best baseline is the one with the best mean over months of the primary metric;
  a month counts as won when the LSTM beats every baseline that month (a stricter test than the best one).
- Trading comparison (the money): every traded model (lstm: the mean of the fold's LSTM seeds, logit, lgbm,
  persist, buy_and_hold) trades its positions (`pos_<model>`: its fold's decision rule, fitted on validation) on
  the decision grid: filled at the next minute's open, costs = turnover x (fee + the fill minute's half-spread),
  positions held across grid minutes without a row and carried from month to month (as the paper ledger does;
  buy and hold pays its entry once). Per model: net and gross return (compounded), turnover per day, exposure,
  maximum drawdown of the net equity, break-even fee, Sharpe annualised from daily returns (UTC days, sum of the
  day's period returns, times sqrt(365), no risk-free rate); per month and model the IC and rank IC of the score
  (P(up) - P(down); persistence: its class) against the forward return over every test minute (qlib's IC).
- Intervals on money: a two-level block bootstrap (`bootstrap_weights`): each draw resamples the months with
  replacement, then, inside each drawn month, blocks of `block_days` consecutive days (circular within the
  month) until the month's length; a model's draw is its summed daily net return over the drawn days.
  `lstm_minus_best_net`: the LSTM's summed net minus the best trading baseline's, the maximum over baselines
  taken inside each draw (the choice of the best is part of the statistic). The LSTM's probabilities are the mean
  of the fold's S training seeds, so every seed enters every comparison; the interval covers test days and
  months, not the training noise of that mean (one seed: none of it).
- Sentiment ablation, paired by day and by training seed: the difference (with - without sentiment) of the
  primary metric and of log loss, per month the mean over the S training seeds of each seed's pair (lstm /
  nosent, lstm_s1 / nosent_s1, ...); its mean over months, interval, and the months won by the sentiment
  model. Two models differing only by training noise differ on every day, so an interval that resamples
  days alone calls that noise an effect. The interval is therefore a two-level bootstrap: each draw
  resamples the month's days (the same days for every model) and, independently, its S seeds with
  replacement; the seed level's deviation from the all-seed mean is scaled by sqrt(S / (S - 1)), the
  small-sample correction of a bootstrap over S values (a bootstrap over 3 seeds alone shows 2/3 of their
  variance). Months are averaged per draw. With S = 1 the interval covers test days only and cannot
  separate an effect from training noise: use at least 3 seeds (`seeds` in walk_forward_predictions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from crpbot_assets.training import costs
from crpbot_assets.training import decisions as dc
from crpbot_assets.training.dataset import CLASSES
from crpbot_assets.training.walk_forward import CLASS_MODELS, PROBABILITY_MODELS, TRADED_MODELS, seed_model

BASELINES = ("logit", "lgbm", "majority", "persist")  # classification baselines
TRADING_BASELINES = tuple(m for m in TRADED_MODELS if m != "lstm")  # logit, lgbm, persist, buy_and_hold
SCORED_MODELS = ("lstm", "logit", "lgbm", "persist")  # models with a score (IC)
METRICS = ("acc", "bacc", "ll")
EPS = 1e-7


@dataclass(frozen=True)
class VerdictConfig:
    metric: str = "bacc"  # primary metric for "beats the baselines" and the ablation: acc or bacc
    resamples: int = 1000
    seed: int = 0
    fee_bps: float = costs.DEFAULT_FEE_BPS
    half_spread_bps: float | None = None  # None: costs.SPREAD_FRACTION of each fill minute's range
    block_days: int = 1  # consecutive days per bootstrap block

    def __post_init__(self):
        if self.metric not in ("acc", "bacc"):
            raise ValueError(f"metric must be acc or bacc, got {self.metric!r}")
        if self.block_days < 1 or self.resamples < 1:
            raise ValueError(f"need block_days >= 1 and resamples >= 1: {self}")
        costs.CostModel(self.fee_bps, self.half_spread_bps)  # validates


def predicted_classes(frame: pl.DataFrame, model: str) -> np.ndarray:
    if model in CLASS_MODELS:
        return frame[model].to_numpy().astype(np.int64)
    return probabilities(frame, model).argmax(axis=1)


def probabilities(frame: pl.DataFrame, model: str) -> np.ndarray:
    return frame.select([f"{model}_{c}" for c in CLASSES]).to_numpy().astype(np.float64)


def day_stats(frame: pl.DataFrame, model: str) -> tuple[np.ndarray, np.ndarray]:
    """(days, per-day sufficient statistics): 9 confusion counts (true x predicted), log-loss sum, rows."""
    y = frame["label"].to_numpy().astype(np.int64)
    pred = predicted_classes(frame, model)
    if model in CLASS_MODELS:
        loss = np.full(len(y), np.nan)
    else:
        loss = -np.log(np.clip(probabilities(frame, model)[np.arange(len(y)), y], EPS, 1.0))
    day = frame["ts"].dt.truncate("1d").to_numpy()
    days, index = np.unique(day, return_inverse=True)
    stats = np.zeros((len(days), 11))
    np.add.at(stats, (index, y * 3 + pred), 1.0)
    np.add.at(stats[:, 9], index, loss)
    np.add.at(stats[:, 10], index, 1.0)
    return days, stats


def metrics_from_stats(stats: np.ndarray) -> dict[str, np.ndarray]:
    """acc, bacc, ll from summed statistics (leading axes kept: works on a batch of resamples)."""
    confusion = stats[..., :9].reshape(*stats.shape[:-1], 3, 3)
    n = stats[..., 10]
    support = confusion.sum(axis=-1)
    recall = np.divide(
        np.diagonal(confusion, axis1=-2, axis2=-1), support, out=np.zeros_like(support), where=support > 0
    )
    present = (support > 0).sum(axis=-1)
    return {
        "acc": np.trace(confusion, axis1=-2, axis2=-1) / np.maximum(n, 1),
        "bacc": recall.sum(axis=-1) / np.maximum(present, 1),
        "ll": stats[..., 9] / np.maximum(n, 1),
    }


def month_scores(frame: pl.DataFrame) -> dict[str, float]:
    """`metric/model` point values over one frame's rows (every model present)."""
    out = {}
    for m in (*PROBABILITY_MODELS, *CLASS_MODELS):
        if _has(frame, m):
            values = metrics_from_stats(day_stats(frame, m)[1].sum(axis=0))
            out.update(
                {f"{k}/{m}": float(values[k]) for k in METRICS if not (k == "ll" and m in CLASS_MODELS)}
            )
    return out


def _interval(draws: np.ndarray) -> list[float]:
    return [float(np.nanpercentile(draws, 2.5)), float(np.nanpercentile(draws, 97.5))]


def verdict(months: dict[str, pl.DataFrame], config: VerdictConfig = VerdictConfig()) -> dict:
    """The report for one symbol (see the module docstring). `months`: test month label -> predictions."""
    months = {k: v for k, v in sorted(months.items()) if v.height}
    if not months:
        raise ValueError("no walk-forward predictions: materialize walk_forward_predictions for some months")
    models = [m for m in (*PROBABILITY_MODELS, *CLASS_MODELS) if all(_has(f, m) for f in months.values())]
    rng = np.random.default_rng(config.seed)
    seed_rng = np.random.default_rng([config.seed, 1])  # the ablation's seed level (other draws unchanged)
    n_seeds = min(len(seed_pairs(f)) for f in months.values())
    ablation_keys = (config.metric, "ll")
    per_month: dict[str, dict] = {}
    draws = {m: {k: np.zeros((config.resamples, len(months))) for k in METRICS} for m in models}
    ablation_point = {k: np.zeros(len(months)) for k in ablation_keys}
    ablation_draws = {k: np.zeros((config.resamples, len(months))) for k in ablation_keys}
    for j, (month, frame) in enumerate(months.items()):
        stats = {m: day_stats(frame, m)[1] for m in models}
        n_days = len(next(iter(stats.values())))
        weights = rng.multinomial(n_days, np.full(n_days, 1.0 / n_days), size=config.resamples)
        per_month[month] = {"rows": frame.height, "days": n_days}
        for m in models:
            point = metrics_from_stats(stats[m].sum(axis=0))
            resampled = metrics_from_stats(weights @ stats[m])
            for k in METRICS:
                per_month[month][f"{k}/{m}"] = float(point[k])
                draws[m][k][:, j] = resampled[k]
        if n_seeds:
            chosen = seed_rng.integers(0, n_seeds, size=(config.resamples, n_seeds))
            differences = seed_differences(frame, n_seeds, weights, ablation_keys)
            for k, (point, resampled) in differences.items():
                ablation_point[k][j] = point.mean()
                ablation_draws[k][:, j] = two_level_draws(resampled, chosen)
    out: dict = {"months": per_month, "n_months": len(months), "metric": config.metric, "mean": {}}
    out["fee_bps"] = config.fee_bps
    for m in models:
        for k in METRICS:
            if k == "ll" and m in CLASS_MODELS:
                continue
            values = [per_month[month][f"{k}/{m}"] for month in months]
            out["mean"][f"{k}/{m}"] = {
                "mean": float(np.mean(values)),
                "ci": _interval(draws[m][k].mean(axis=1)),
            }
    key = config.metric
    baselines = [b for b in BASELINES if b in models]
    best = max(baselines, key=lambda b: out["mean"][f"{key}/{b}"]["mean"])
    won = [
        month
        for month, row in per_month.items()
        if row[f"{key}/lstm"] > max(row[f"{key}/{b}"] for b in baselines)
    ]
    out["best_baseline"] = best
    out["lstm_minus_best"] = {
        "mean": out["mean"][f"{key}/lstm"]["mean"] - out["mean"][f"{key}/{best}"]["mean"],
        "ci": _interval((draws["lstm"][key] - draws[best][key]).mean(axis=1)),
    }
    out["months_beating_baselines"] = len(won) / len(months)
    if n_seeds:
        out["ablation"] = {
            k: {
                "per_month": ablation_point[k].tolist(),
                "mean": float(ablation_point[k].mean()),
                "ci": _interval(ablation_draws[k].mean(axis=1)),
                "months_won": int(np.sum(ablation_point[k] * (-1 if k == "ll" else 1) > 0)),
                "seeds": n_seeds,
            }
            for k in ablation_keys
        }
    out["ic"] = {}
    for month, frame in months.items():
        values = information_coefficients(frame)
        per_month[month].update(values)
    for key_name in {k for month in months for k in per_month[month] if k.startswith(("ic/", "rank_ic/"))}:
        out["ic"][key_name] = float(np.mean([per_month[month].get(key_name, np.nan) for month in months]))
    out["trading"] = trading(months, config)
    out["lstm_seeds"] = min(_seed_count(f, "lstm") for f in months.values())
    return out


def _seed_count(frame: pl.DataFrame, name: str) -> int:
    k = 0
    while _has(frame, seed_model(name, k)):
        k += 1
    return k


def seed_pairs(frame: pl.DataFrame) -> list[tuple[str, str]]:
    """The (with, without sentiment) LSTM pairs in `frame`, one per training seed, seed 0 first."""
    pairs = []
    while _has(frame, seed_model("lstm", len(pairs))) and _has(frame, seed_model("nosent", len(pairs))):
        pairs.append((seed_model("lstm", len(pairs)), seed_model("nosent", len(pairs))))
    return pairs


def seed_differences(
    frame: pl.DataFrame, n_seeds: int, weights: np.ndarray, keys: tuple[str, ...]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per metric: (with - without sentiment of each seed over all days: (S,), the same on each row of day
    `weights`: (S, resamples))."""
    out = {k: (np.zeros(n_seeds), np.zeros((n_seeds, len(weights)))) for k in keys}
    for s, (with_sentiment, without) in enumerate(seed_pairs(frame)[:n_seeds]):
        a = day_stats(frame, with_sentiment)[1]
        b = day_stats(frame, without)[1]
        point = {k: metrics_from_stats(a.sum(axis=0))[k] - metrics_from_stats(b.sum(axis=0))[k] for k in keys}
        resampled_a = metrics_from_stats(weights @ a)
        resampled_b = metrics_from_stats(weights @ b)
        for k in keys:
            out[k][0][s] = point[k]
            out[k][1][s] = resampled_a[k] - resampled_b[k]
    return out


def two_level_draws(resampled: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """One month's bootstrap draws of the seed-mean difference: `resampled` (S, R) differences on resampled
    days, `chosen` (R, S) seed indices drawn with replacement; the seed level's deviation is scaled by
    sqrt(S / (S - 1)) (see the module docstring)."""
    n_seeds = resampled.shape[0]
    centre = resampled.mean(axis=0)
    if n_seeds == 1:
        return centre
    picked = np.take_along_axis(resampled.T, chosen, axis=1).mean(axis=1)
    return centre + np.sqrt(n_seeds / (n_seeds - 1)) * (picked - centre)


def _has(frame: pl.DataFrame, model: str) -> bool:
    return model in frame.columns if model in CLASS_MODELS else f"{model}_up" in frame.columns


def traded(months: dict[str, pl.DataFrame]) -> list[str]:
    """The traded models every month has positions for, in TRADED_MODELS order."""
    return [m for m in TRADED_MODELS if all(f"pos_{m}" in f.columns for f in months.values())]


def trading_periods(months: dict[str, pl.DataFrame], config: VerdictConfig) -> dict:
    """Decisions of every traded model over the months (sorted, carried across months): `ts`, `month` (index
    into the sorted months), and per model decisions.simulate's arrays plus `position`."""
    labels = sorted(months)
    rows = pl.concat(
        [
            months[k]
            .filter(pl.col("ts").dt.epoch("s") // 60 % pl.col("horizon_minutes") == 0)
            .with_columns(pl.lit(j, pl.Int32).alias("_month"))
            for j, k in enumerate(labels)
        ],
        how="diagonal_relaxed",
    ).sort("ts")
    spread = (
        rows["half_spread_bps"].fill_null(0.0).to_numpy().astype(np.float64)
        if config.half_spread_bps is None
        else np.full(rows.height, config.half_spread_bps)
    )
    returns = rows["trade_return"].fill_null(0.0).to_numpy().astype(np.float64)
    out = {"ts": rows["ts"], "month": rows["_month"].to_numpy(), "labels": labels, "models": {}}
    for m in traded(months):
        position = rows[f"pos_{m}"].fill_null(strategy="forward").fill_null(0).to_numpy().astype(np.float64)
        out["models"][m] = {**dc.simulate(position, returns, spread, config.fee_bps), "position": position}
        out["models"][m]["spread_bps"] = spread
    return out


def daily_nets(periods: dict) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(days, month index of each day, {model: summed net return of each day})."""
    day = periods["ts"].dt.truncate("1d").to_numpy()
    days, index = np.unique(day, return_inverse=True)
    month_of_day = np.zeros(len(days), np.int64)
    month_of_day[index] = periods["month"]
    nets = {
        m: np.bincount(index, weights=r["net"], minlength=len(days)) for m, r in periods["models"].items()
    }
    return days, month_of_day, nets


def bootstrap_weights(
    month_of_day: np.ndarray, resamples: int, block_days: int, rng: np.random.Generator
) -> np.ndarray:
    """(resamples, days) counts of each day in each draw: months resampled with replacement, then blocks of
    `block_days` consecutive days (circular within the month) until the month's length (module docstring)."""
    months = np.unique(month_of_day)
    day_lists = [np.flatnonzero(month_of_day == m) for m in months]
    weights = np.zeros((resamples, len(month_of_day)))
    for r in range(resamples):
        for j in rng.integers(0, len(months), len(months)):
            days = day_lists[j]
            n = len(days)
            block = min(block_days, n)
            starts = rng.integers(0, n, -(-n // block))
            picked = ((starts[:, None] + np.arange(block)[None, :]) % n).ravel()[:n]
            np.add.at(weights[r], days[picked], 1.0)
    return weights


def excess_over_best(
    nets: dict[str, np.ndarray], weights: np.ndarray, model: str = "lstm", baselines=TRADING_BASELINES
) -> tuple[float, np.ndarray]:
    """(point, draws) of `model`'s summed daily net minus the best baseline's, the best taken in each draw."""
    present = [b for b in baselines if b in nets]
    point = float(nets[model].sum() - max(nets[b].sum() for b in present))
    draws = weights @ nets[model] - np.max(np.stack([weights @ nets[b] for b in present]), axis=0)
    return point, draws


def max_drawdown(net: np.ndarray) -> float:
    """The largest fall of the compounded net equity from its running peak (<= 0; the start counts as 1)."""
    if not len(net):
        return 0.0
    equity = np.concatenate([[1.0], np.cumprod(1.0 + net)])
    return float(np.min(equity / np.maximum.accumulate(equity) - 1.0))


def information_coefficients(frame: pl.DataFrame) -> dict[str, float]:
    """`ic/<model>` and `rank_ic/<model>`: correlation of the score with the forward return over the rows."""
    out = {}
    fwd = frame["fwd_return"]
    for m in SCORED_MODELS:
        if not _has(frame, m):
            continue
        if m in CLASS_MODELS:
            values = dc.class_score(frame[m].to_numpy())
        else:
            values = dc.score(probabilities(frame, m))
        both = pl.DataFrame({"s": values, "r": fwd}).drop_nulls().drop_nans()
        out[f"ic/{m}"] = _correlation(both["s"], both["r"])
        out[f"rank_ic/{m}"] = _correlation(both["s"].rank(), both["r"].rank())
    return out


def _correlation(a: pl.Series, b: pl.Series) -> float:
    if a.len() < 3 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a.to_numpy(), b.to_numpy())[0, 1])


def trading(months: dict[str, pl.DataFrame], config: VerdictConfig) -> dict:
    """The trading comparison over the months (module docstring): per model net/gross return, turnover,
    exposure, max drawdown, break-even fee, Sharpe, net interval; LSTM minus the best baseline with its
    interval; the LSTM's fee sweep and equity curves."""
    if not traded(months):
        return {"decisions": 0, "days": 0, "models": {}, "equity": {}, "ts": pl.Series("ts", [])}
    periods = trading_periods(months, config)
    days, month_of_day, nets = daily_nets(periods)
    rng = np.random.default_rng([config.seed, 2])
    weights = bootstrap_weights(month_of_day, config.resamples, config.block_days, rng)
    per_model = {}
    for m, r in periods["models"].items():
        daily = nets[m]
        std = daily.std()
        per_model[m] = {
            "net_return": float(np.prod(1.0 + r["net"]) - 1.0),
            "gross_return": float(np.prod(1.0 + r["gross"]) - 1.0),
            "summed_net": float(r["net"].sum()),
            "summed_net_ci": _interval(weights @ daily),
            "cost": float((r["fee"] + r["spread"]).sum()),
            "turnover_per_day": float(r["turnover"].sum() / max(1, len(days))),
            "exposure": float(np.mean(r["position"] != 0)) if len(r["position"]) else 0.0,
            "max_drawdown": max_drawdown(r["net"]),
            "break_even_fee_bps": costs.break_even_fee_bps(r["gross"], r["spread"], r["turnover"]),
            "sharpe_daily_ann": float(daily.mean() / std * np.sqrt(365)) if std > 0 else 0.0,
        }
    out: dict = {"decisions": len(periods["ts"]), "days": len(days), "models": per_model}
    if "lstm" in nets and any(b in nets for b in TRADING_BASELINES):
        point, draws = excess_over_best(nets, weights)
        out["lstm_minus_best_net"] = {"mean": point, "ci": _interval(draws)}
        out["best_trading_baseline"] = max(
            (b for b in TRADING_BASELINES if b in nets), key=lambda b: nets[b].sum()
        )
    if "lstm" in periods["models"]:
        r = periods["models"]["lstm"]
        out["fee_sweep"] = {
            str(fee): value for fee, value in costs.fee_sweep(r["gross"], r["spread"], r["turnover"]).items()
        }
        out["mean_half_spread_bps"] = float(np.mean(r["spread_bps"])) if len(r["spread_bps"]) else 0.0
    out["equity"] = {m: np.cumprod(1.0 + r["net"]) for m, r in periods["models"].items()}
    out["ts"] = periods["ts"]
    return out
