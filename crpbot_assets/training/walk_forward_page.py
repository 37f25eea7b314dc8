"""The walk-forward report page of one symbol: verdict.py's report as a neutral `report_page.Page`, written as
one self-contained HTML file beside walk_forward_report's own file (`walk_forward_report/<symbol>.html`).

`page(symbol, report, verdict)` is the only function that reads the report's keys; report_page.py renders.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np

from crpbot_assets.common.io_manager import partition_path
from crpbot_assets.common.plots import figure_png, line_figure
from crpbot_assets.common.storage import Storage
from crpbot_assets.training import report_page as rp
from crpbot_assets.training.verdict import BASELINES

MODEL_NAMES = {
    "lstm": "LSTM",
    "logit": "logistic regression",
    "lgbm": "LightGBM",
    "majority": "majority class",
    "persist": "persistence",
}


def page_path(symbol: str) -> str:
    """Where the page is stored, relative to the storage root: beside the report's JSON."""
    return partition_path(dg.AssetKey("walk_forward_report"), symbol) + ".html"


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def _table(report: dict) -> rp.Table:
    mean = report["mean"]
    rows = []
    for model in ("lstm", *BASELINES):
        if f"acc/{model}" not in mean:
            continue
        bacc = mean[f"bacc/{model}"]
        ll = mean.get(f"ll/{model}")
        rows.append(
            (
                MODEL_NAMES[model],
                _pct(mean[f"acc/{model}"]["mean"]),
                _pct(bacc["mean"]),
                f"{_pct(bacc['ci'][0])} to {_pct(bacc['ci'][1])}",
                f"{ll['mean']:.3f}" if ll else "n/a",
            )
        )
    return rp.Table(
        ("model", "accuracy (%)", "balanced accuracy (%)", "95 % interval (%)", "log loss (nats)"),
        rows,
        "Balanced accuracy: mean recall of down/flat/up (33.3 % is chance); interval: day bootstrap within "
        "months; log loss: lower is better, n/a for models without probabilities.",
    )


def _images(symbol: str, report: dict) -> tuple[rp.Image, ...]:
    key = report["metric"]
    months = list(report["months"])
    trading = report["trading"]
    equity = np.asarray(trading["equity"], dtype=float)
    ts = trading["ts"].to_list()
    images = [
        rp.Image(
            "Net equity after fee and half-spread (multiple of the start)",
            figure_png(
                line_figure(
                    {"LSTM": equity.tolist(), "buy & hold": np.asarray(trading["hold_equity"]).tolist()},
                    f"{symbol}: net equity",
                    "time (UTC)",
                    "equity (x start)",
                    x=ts,
                )
            ),
        ),
        rp.Image(
            "Drawdown of the LSTM strategy from its running peak (%)",
            figure_png(
                line_figure(
                    {"drawdown": ((equity / np.maximum.accumulate(equity) - 1) * 100).tolist()},
                    f"{symbol}: drawdown",
                    "time (UTC)",
                    "drawdown (%)",
                    x=ts,
                )
            ),
        ),
    ]
    curves = {
        MODEL_NAMES[m]: [report["months"][month][f"{key}/{m}"] * 100 for month in months]
        for m in ("lstm", *BASELINES)
        if f"{key}/{m}" in report["months"][months[0]]
    }
    images.append(
        rp.Image(
            f"{key} per test month (%)",
            figure_png(
                line_figure(curves, f"{symbol}: {key} per month", "test month", f"{key} (%)", x=months)
            ),
        )
    )
    if "ablation" in report:
        per_month = [v * 100 for v in report["ablation"][key]["per_month"]]
        images.append(
            rp.Image(
                f"Sentiment ablation: {key} with minus without sentiment, per month (points)",
                figure_png(
                    line_figure(
                        {"with - without": per_month, "zero": [0.0] * len(months)},
                        f"{symbol}: sentiment ablation",
                        "test month",
                        "points",
                        x=months,
                    )
                ),
            )
        )
    return tuple(images)


def page(symbol: str, report: dict, verdict: str) -> rp.Page:
    """The page of `report` (verdict.verdict's value, with its equity arrays) under the sentence `verdict`."""
    months = list(report["months"])
    trading = report["trading"]
    return rp.Page(
        title=f"{symbol}: walk-forward verdict, {months[0]}..{months[-1]}",
        verdict=verdict,
        table=_table(report),
        images=_images(symbol, report),
        notes=(
            f"LSTM strategy after costs: net return {_pct(trading['total_return'], True)} %, Sharpe "
            f"{trading['sharpe_daily_ann']:.2f} (annualised from daily returns), turnover "
            f"{trading['turnover_per_day']:.1f} position units/day, break-even fee {trading['break_even_fee_bps']:.1f} bps.",
            "A simulation on past data, not trading advice.",
        ),
    )


def publish(storage: Storage, symbol: str, report: dict, verdict: str) -> dg.MetadataValue:
    """Write the page beside the report; the metadata entry that links it (a file:// URL when local)."""
    relative = page_path(symbol)
    storage.write_bytes(relative, rp.html(page(symbol, report, verdict)).encode())
    uri = storage.uri(relative)
    return dg.MetadataValue.path(uri) if storage.is_s3 else dg.MetadataValue.url(Path(uri).resolve().as_uri())
