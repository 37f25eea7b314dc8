"""The walk-forward report page of one symbol: verdict.py's report as a neutral `report_page.Page` (the verdict in
words and the table from verdict_words.py, the plots here), written as one self-contained HTML file beside
walk_forward_report's own file (`walk_forward_report/<symbol>.html`).

Plots: net equity of every traded model in USD (from verdict_words.NOTIONAL_USD), each model's drawdown from its
running peak, the primary metric per test month per model, and the sentiment ablation per month.
"""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg
import numpy as np

from crpbot_assets.common.io_manager import partition_path
from crpbot_assets.common.plots import figure_png, line_figure
from crpbot_assets.common.storage import Storage
from crpbot_assets.training import report_page as rp
from crpbot_assets.training import verdict_words as vw
from crpbot_assets.training.verdict import BASELINES


def page_path(symbol: str) -> str:
    """Where the page is stored, relative to the storage root: beside the report's JSON."""
    return partition_path(dg.AssetKey("walk_forward_report"), symbol) + ".html"


def _image(title: str, series: dict, figure_title: str, xlabel: str, ylabel: str, x) -> rp.Image:
    return rp.Image(title, figure_png(line_figure(series, figure_title, xlabel, ylabel, x=x)))


def images(symbol: str, report: dict) -> dict[str, rp.Image]:
    """The report's plots by short name: equity, drawdown, per month, ablation (`report`: verdict.verdict's
    value, with its equity arrays and times)."""
    key, months = report["metric"], list(report["months"])
    metric = vw.METRIC_NAMES[key]
    trading = report["trading"]
    out = {}
    if trading["models"]:
        ts = trading["ts"].to_list()
        equity = {vw.NAMES[m]: np.asarray(e, dtype=float) for m, e in trading["equity"].items()}
        out["equity"] = _image(
            f"Net equity of every model after a {report['fee_bps']:g} bps fee and the half-spread "
            f"(USD, from {vw.NOTIONAL_USD:,.0f} USD)",
            {m: (e * vw.NOTIONAL_USD).tolist() for m, e in equity.items()},
            f"{symbol}: net equity",
            "time (UTC)",
            "equity (USD)",
            ts,
        )
        out["drawdown"] = _image(
            "Drawdown of every model from its running peak (%)",
            {m: ((e / np.maximum.accumulate(e) - 1) * 100).tolist() for m, e in equity.items()},
            f"{symbol}: drawdown",
            "time (UTC)",
            "drawdown (%)",
            ts,
        )
    out["per month"] = _image(
        f"{metric.capitalize()} per test month (%; 33.3 % is chance for balanced accuracy)",
        {
            vw.NAMES[m]: [report["months"][month][f"{key}/{m}"] * 100 for month in months]
            for m in ("lstm", *BASELINES)
            if f"{key}/{m}" in report["months"][months[0]]
        },
        f"{symbol}: {metric} per month",
        "test month",
        f"{metric} (%)",
        months,
    )
    if "ablation" in report:
        out["ablation"] = _image(
            f"Sentiment ablation: {metric} with minus without the sentiment inputs, per month (points)",
            {
                "with - without": [v * 100 for v in report["ablation"][key]["per_month"]],
                "zero": [0.0] * len(months),
            },
            f"{symbol}: sentiment ablation",
            "test month",
            "points",
            months,
        )
    return out


def page(symbol: str, report: dict, plots: dict[str, rp.Image]) -> rp.Page:
    """The page of `report`: title, the verdict in words, the table, `plots`, the small print."""
    months = list(report["months"])
    return rp.Page(
        title=f"{symbol}: walk-forward verdict, test months {months[0]}..{months[-1]}",
        verdict=vw.verdict(report),
        table=vw.table(report),
        images=tuple(plots.values()),
        notes=(
            "Each test month is traded by the fold model trained before it (the model that would have traded it "
            "then); every model trades its own decision rule, fitted on validation data before the month.",
            "A simulation on past data, not trading advice.",
        ),
    )


def image_metadata(image: rp.Image) -> dg.MetadataValue:
    """An image as markdown metadata (the UI shows it inline)."""
    encoded = base64.b64encode(image.png).decode()
    return dg.MetadataValue.md(f"**{image.title}**\n\n![{image.title}](data:image/png;base64,{encoded})")


def publish(storage: Storage, symbol: str, report_page: rp.Page) -> dg.MetadataValue:
    """Write the page beside the report; the metadata entry that links it (a file:// URL when local)."""
    relative = page_path(symbol)
    storage.write_bytes(relative, rp.html(report_page).encode())
    uri = storage.uri(relative)
    return dg.MetadataValue.path(uri) if storage.is_s3 else dg.MetadataValue.url(Path(uri).resolve().as_uri())
