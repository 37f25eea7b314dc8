"""The walk-forward report page: a pure renderer, written by walk_forward_report beside its file, and opened in a
real headless Chromium (Debian's package, driven by playwright; no browser download)."""

import base64
import html
import re
from datetime import UTC, datetime
from urllib.parse import urlparse

import dagster as dg
import numpy as np
import polars as pl
import pytest

from crpbot_assets.common.plots import figure_png, line_figure
from crpbot_assets.training import report_page as rp
from crpbot_assets.training import verdict_words as vw
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.walk_forward_assets import build_walk_forward_assets, test_month_partitions
from crpbot_assets.training.walk_forward_page import page_path
from crpbot_assets_tests.training.test_walk_forward import _predictions

_, _, REPORT = build_walk_forward_assets(window_months=1)
MONTHS = {"2019-01-01": 1, "2019-02-01": 2}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dg.asset(name="walk_forward_predictions", partitions_def=test_month_partitions)
def planted_predictions(context: dg.AssetExecutionContext):
    month = context.partition_key.keys_by_dimension["month"]
    start = datetime.strptime(month, "%Y-%m-%d").replace(tzinfo=UTC)
    frame = _predictions(14, MONTHS[month], start, edge=0.1)
    frame = frame.with_columns(
        pl.col(f"logit_{c}").reverse().alias(f"lgbm_{c}") for c in ("down", "flat", "up")
    )
    direction = {  # every baseline trades the direction it predicts, as the LSTM does in _predictions
        m: np.argmax(frame.select(f"{m}_down", f"{m}_flat", f"{m}_up").to_numpy(), axis=1) - 1
        for m in ("logit", "lgbm")
    }
    return frame.with_columns(
        pl.Series("pos_logit", direction["logit"], pl.Int8),
        pl.Series("pos_lgbm", direction["lgbm"], pl.Int8),
        (pl.col("persist") - 1).cast(pl.Int8).alias("pos_persist"),
    )


def _png(color: str) -> bytes:
    return figure_png(line_figure({color: [1.0, 2.0, 1.5]}, "t", "x", "y"))


def test_html_is_self_contained_escaped_and_carries_every_image():
    table = rp.Table(("model", "net (%)"), [("LSTM <a>", "-1.0")], "legend & units")
    images = (rp.Image("equity", _png("a")), rp.Image("drawdown", _png("b")))
    text = rp.html(
        rp.Page("BTC-USD <test>", "The LSTM does not beat <b>logit</b>.", table, images, ("note",))
    )
    assert "The LSTM does not beat &lt;b&gt;logit&lt;/b&gt;." in text and "LSTM &lt;a&gt;" in text
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert [base64.b64decode(s.split(",", 1)[1]) for s in sources] == [i.png for i in images]
    assert "http" not in text.replace('name="viewport"', "")  # no external resource of any kind
    with pytest.raises(ValueError, match="not a PNG"):
        rp.Image("x", b"GIF89a")


def _materialize_report(tmp_path, storage_resources, instance) -> tuple[dict, str]:
    for month in MONTHS:
        key = dg.MultiPartitionKey({"symbol": "BTC-USD", "month": month})
        dg.materialize(
            [planted_predictions], partition_key=str(key), resources=storage_resources, instance=instance
        )
    result = dg.materialize(
        [planted_predictions, REPORT],
        selection=[REPORT],
        partition_key="BTC-USD",
        resources=storage_resources,
        instance=instance,
        run_config={"ops": {"walk_forward_report": {"config": {"resamples": 200}}}},
    )
    meta = result.asset_materializations_for_node("walk_forward_report")[0].metadata
    return {k: v.value for k, v in meta.items()}, urlparse(meta["report page"].value).path


def test_walk_forward_report_writes_its_page_beside_its_file(tmp_path, storage_resources, memory_instance):
    meta, path = _materialize_report(tmp_path, storage_resources, memory_instance)
    files = storage_resources["storage"].storage
    assert path == str((tmp_path / "data" / page_path("BTC-USD")).resolve())
    stored = files.read_json(
        page_path("BTC-USD").replace(".html", ".json")
    )  # the report's own file, beside it
    assert meta["verdict"] == vw.verdict(stored) and meta["verdict"].startswith("After costs the LSTM")
    text = open(path, encoding="utf-8").read()
    assert f'<p class="verdict" id="verdict">{html.escape(meta["verdict"])}</p>' in text
    assert text.count("data:image/png;base64,") == 4  # equity, drawdown, per month, ablation
    assert text.count("<tr>") == 1 + 6  # header + LSTM, logit, lgbm, persistence, buy and hold, majority
    assert meta["table"].startswith("| model | net return (%) |")
    assert {"equity plot", "drawdown plot", "per month plot", "ablation plot"} <= set(meta)
    for model in wf.TRADED_MODELS:
        assert {f"net_return/{model}", f"turnover/{model}", f"max_drawdown/{model}"} <= set(meta)
    assert meta["net_return/lstm"] == pytest.approx(
        stored["trading"]["models"]["lstm"]["net_return"], abs=1e-6
    )
    assert {"ic/lstm", "ic/logit", "ic/lgbm", "ic/persist"} <= set(meta) and "ic/buy_and_hold" not in meta
    assert meta["lstm_minus_best_ci"] == pytest.approx(
        stored["trading"]["lstm_minus_best_net"]["ci"], abs=1e-6
    )
    assert meta["months"] == 2 and meta["seeds"] == 1 and meta["fee_bps"] == 60.0
    assert len(meta) < 36


@pytest.mark.slow
def test_the_page_opens_in_headless_chromium_with_its_images_and_verdict(
    tmp_path, storage_resources, instance
):
    from playwright.sync_api import sync_playwright

    meta, path = _materialize_report(tmp_path, storage_resources, instance)
    requested = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"file://{path}", wait_until="load")
            widths = page.eval_on_selector_all(
                "img", "images => images.map(i => i.complete && i.naturalWidth)"
            )
            verdict = page.inner_text("#verdict")
            headers = page.eval_on_selector_all("th", "cells => cells.map(c => c.textContent)")
        finally:
            browser.close()
    assert len(widths) == 4 and all(w > 100 for w in widths)  # every image decoded
    assert verdict == meta["verdict"]
    assert headers[0] == "model" and "net return (%)" in headers and "bacc (%)" in headers
    assert all(url.startswith(("file:", "data:")) for url in requested)  # nothing fetched from a network
