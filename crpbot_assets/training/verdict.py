"""The walk-forward verdict for one symbol: per-month metrics, day-bootstrap intervals, costs, the ablation.

Pure numpy/polars. Input: the walk-forward predictions of each test month (walk_forward.predict_fold's frame).
- Metrics per month and model: accuracy (`acc`), balanced accuracy (`bacc`: mean recall over the classes
  present) and log loss (`ll`, probability models only; probabilities clipped at 1e-7).
- Mean over months with a 95 % bootstrap interval: days are resampled with replacement within each month
  (minutes of one day are not independent; days are treated as independent), the month's metric recomputed,
  and months averaged; percentile interval over `resamples` draws (fixed seed).
- Beating the baselines: the best baseline is the one with the best mean over months of the primary metric;
  a month counts as won when the LSTM beats every baseline that month (a stricter test than the best one).
- Trading: the LSTM's positions (costs.py: threshold, mode) on the N-minute grid across all months, at the
  chosen fee and half-spread; net equity compounds period returns; Sharpe is annualised from daily returns
  (UTC days, sum of the day's period returns) times sqrt(365), no risk-free rate; turnover is in units of
  position per day. The break-even fee and a sweep over fees use the same positions.
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
from crpbot_assets.training.dataset import CLASSES
from crpbot_assets.training.walk_forward import CLASS_MODELS, PROBABILITY_MODELS, seed_model

BASELINES = ("logit", "lgbm", "majority", "persist")
METRICS = ("acc", "bacc", "ll")
EPS = 1e-7


@dataclass(frozen=True)
class VerdictConfig:
    metric: str = "bacc"  # primary metric for "beats the baselines" and the ablation: acc or bacc
    resamples: int = 1000
    seed: int = 0
    fee_bps: float = costs.DEFAULT_FEE_BPS
    half_spread_bps: float | None = None  # None: costs.SPREAD_FRACTION of each trade minute's range
    threshold: float = 0.0
    mode: str = "long_short"

    def __post_init__(self):
        if self.metric not in ("acc", "bacc"):
            raise ValueError(f"metric must be acc or bacc, got {self.metric!r}")
        costs.CostModel(self.fee_bps, self.half_spread_bps, self.threshold, self.mode)  # validates


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
    out["trading"] = trading(pl.concat(list(months.values()), how="vertical_relaxed"), config)
    return out


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


def grid(frame: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """Rows on the N-minute trading grid and whether each follows the previous grid minute."""
    horizon = int(frame["horizon_minutes"][0])
    minute = frame["ts"].dt.epoch("s").to_numpy() // 60
    on_grid = minute % horizon == 0
    grid_minutes = minute[on_grid]
    follows = np.diff(grid_minutes, prepend=grid_minutes[:1] - horizon) == horizon
    return frame.filter(pl.Series(on_grid)), follows


def trading(frame: pl.DataFrame, config: VerdictConfig) -> dict:
    """Net equity, daily-return Sharpe, turnover, break-even fee and a fee sweep of the LSTM strategy."""
    rows, follows = grid(frame.sort("ts"))
    position = costs.positions_from_probabilities(probabilities(rows, "lstm"), config.mode, config.threshold)
    spread = (
        rows["half_spread_bps"].fill_null(0.0).to_numpy().astype(np.float64)
        if config.half_spread_bps is None
        else config.half_spread_bps
    )
    fwd = rows["fwd_return"].to_numpy()
    period = costs.simulate(position, fwd, config.fee_bps, spread, follows)
    hold = costs.simulate(np.ones(len(fwd)), fwd, config.fee_bps, spread, follows)
    day = rows["ts"].dt.truncate("1d").to_numpy()
    days, index = np.unique(day, return_inverse=True)
    daily = np.bincount(index, weights=period["net"], minlength=len(days))
    std = daily.std()
    equity = np.cumprod(1.0 + period["net"])
    return {
        "periods": len(position),
        "days": len(days),
        "total_return": float(equity[-1] - 1.0) if len(equity) else 0.0,
        "gross_return": float(np.prod(1.0 + period["gross"]) - 1.0) if len(equity) else 0.0,
        "sharpe_daily_ann": float(daily.mean() / std * np.sqrt(365)) if std > 0 else 0.0,
        "turnover_per_day": float(period["turnover"].sum() / max(1, len(days))),
        "exposure": float(np.mean(position != 0)) if len(position) else 0.0,
        "break_even_fee_bps": costs.break_even_fee_bps(period["gross"], period["spread"], period["turnover"]),
        "mean_half_spread_bps": float(np.mean(spread)) if len(position) else 0.0,
        "fee_sweep": {
            str(fee): value
            for fee, value in costs.fee_sweep(period["gross"], period["spread"], period["turnover"]).items()
        },
        "equity": equity,
        "hold_equity": np.cumprod(1.0 + hold["net"]),
        "ts": rows["ts"],
    }


def headline(report: dict) -> str:
    """One paragraph a person reads first."""
    key = report["metric"]
    mean = report["mean"]
    lstm = mean[f"{key}/lstm"]
    best = report["best_baseline"]
    t = report["trading"]
    text = (
        f"{report['n_months']} test month(s): LSTM {key} {lstm['mean']:.4f} "
        f"[{lstm['ci'][0]:.4f}, {lstm['ci'][1]:.4f}] vs best baseline {best} {mean[f'{key}/{best}']['mean']:.4f}; "
        f"LSTM - best {report['lstm_minus_best']['mean']:+.4f} [{report['lstm_minus_best']['ci'][0]:+.4f}, "
        f"{report['lstm_minus_best']['ci'][1]:+.4f}]; months beating every baseline "
        f"{report['months_beating_baselines']:.0%}. Net return {t['total_return']:+.2%} "
        f"(gross {t['gross_return']:+.2%}), Sharpe {t['sharpe_daily_ann']:.2f} (annualised, daily returns), "
        f"turnover {t['turnover_per_day']:.1f}/day, break-even fee {t['break_even_fee_bps']:.2f} bps."
    )
    if "ablation" in report:
        a = report["ablation"][key]
        text += (
            f" Sentiment ablation ({key}, with - without): {a['mean']:+.4f} [{a['ci'][0]:+.4f}, {a['ci'][1]:+.4f}], "
            f"won {a['months_won']}/{report['n_months']} months, {a['seeds']} training seed(s)."
        )
    return text
