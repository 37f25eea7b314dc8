"""The demo's console: one progress line per step and small tables; everything else goes to its log file."""

import io
import json
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pytest

from crpbot_assets.demo import Demo, DemoStepFailed, _print_results, console_and_log
from crpbot_assets.sentiment.assets import fear_greed_index
from crpbot_assets.sentiment.resources import FearGreedResource
from crpbot_assets.signals.gate import DEMO_RUN_TAG
from crpbot_assets.training.report_page import Table, text
from crpbot_assets.training.verdict_words import verdict
from crpbot_assets_tests.training.test_verdict_words import BASE

CHATTY = """
import subprocess, sys, warnings
from pathlib import Path
from crpbot_assets.demo import console_and_log

with console_and_log(Path(sys.argv[1])) as console:
    console.write("progress line\\n")
    print("printed by a library")
    print("a stderr line", file=sys.stderr)
    warnings.warn("a beta warning", UserWarning)
    subprocess.run(["sh", "-c", "echo child stdout; echo child stderr >&2"], check=True)
    console.write("done\\n")
print("after")
"""


def test_only_the_console_stream_reaches_the_terminal(tmp_path):
    log = tmp_path / "logs" / "demo.log"
    terminal = subprocess.run(
        [sys.executable, "-c", CHATTY, str(log)], capture_output=True, text=True, check=True, timeout=60
    )
    assert terminal.stdout == "progress line\ndone\nafter\n" and terminal.stderr == ""
    written = log.read_text()
    for line in ("printed by a library", "a stderr line", "a beta warning", "child stdout", "child stderr"):
        assert line in written
    assert "progress line" not in written and "after" not in written


def _defs(url: str, storage_resources) -> dg.Definitions:
    return dg.Definitions(
        assets=[fear_greed_index],
        resources={**storage_resources, "fear_greed": FearGreedResource(base_url=url, max_attempts=1)},
    )


def test_a_step_is_one_line_its_run_is_tagged_and_a_failure_names_the_error(
    tmp_path, capfd, replay_server, storage_resources, memory_instance
):
    log = tmp_path / "demo.log"
    with console_and_log(log) as console:
        demo = Demo(console, log, _defs(replay_server.url, storage_resources), memory_instance)
        result = demo.run("Fear & Greed index", ["fear_greed_index"])
        broken = Demo(console, log, _defs("http://127.0.0.1:9", storage_resources), memory_instance)
        with pytest.raises(DemoStepFailed, match="Fear & Greed, unreachable"):
            broken.run("Fear & Greed, unreachable", ["fear_greed_index"])
    lines = capfd.readouterr().out.splitlines()
    assert lines[0].startswith("[00:0") and lines[0].endswith(" s")
    assert "] Fear & Greed index ... ok, " in lines[0]
    assert lines[1].endswith("Fear & Greed, unreachable ... FAILED")
    assert lines[2].startswith("  fear_greed_index: ") and "127.0.0.1:9" in lines[2]
    assert str(log) in lines[3] and len(lines) == 4
    assert memory_instance.get_run_by_id(result.run_id).tags[DEMO_RUN_TAG] == "true"
    written = log.read_text()
    assert "fear & greed: " in written and "Connection refused" in written  # Dagster's log of both runs
    assert "skipped" not in "".join(lines)


def test_text_table_aligns_numbers_and_keeps_the_legend():
    table = Table(
        ("model", "net (%)", "turnover (/day)"),
        [("lstm", "-12.5", "3.1"), ("buy_and_hold", "+4.0", "0.0")],
        "legend",
    )
    assert text(table).splitlines() == [
        "model         net (%)  turnover (/day)",
        "------------  -------  ---------------",
        "lstm            -12.5              3.1",
        "buy_and_hold     +4.0              0.0",
        "legend",
    ]
    with pytest.raises(ValueError, match="2 cells for 3 headers"):
        Table(("a", "b", "c"), [("x", "1")])


def test_results_are_small_tables_and_end_with_the_verdict_and_the_page(
    tmp_path, memory_instance, storage_resources
):
    def report(asset: str, partition: str, **metadata) -> None:
        memory_instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=asset, partition=partition, metadata=metadata)
        )

    for symbol in ("BTC-USD", "ETH-USD", "SOL-USD"):
        report(
            "model_evaluation",
            symbol,
            **{
                "fee_bps": 60.0,
                "with_sentiment/model/balanced_accuracy": 0.4183,
                "with_sentiment/majority_baseline/balanced_accuracy": 0.3333,
                "with_sentiment/persistence_baseline/balanced_accuracy": 0.366,
                "with_sentiment/long_short/total_return": -0.951,
                "sentiment_ablation/balanced_accuracy_delta": -0.003,
            },
        )
        nulls = {"reddit_sentiment_1h": 0.7742, "fear_greed_index": 0.0, "search_interest_btc": 1.0}
        report("sentiment_features", f"2024-04-01|{symbol}", rows=93, null_share=dg.MetadataValue.json(nulls))
    report("paper_trades", "2024-03-01|BTC-USD", trades=59, fees_paid=3000.5, spread_paid=976.26)
    book = {"minutes": 4310, "equity": 6271.02, "return": -0.3729, "buy_and_hold_return": 0.034}
    report("paper_portfolio", "2024-03-01|BTC-USD", **book, max_drawdown_month=-0.38)
    page = tmp_path / "BTC-USD.html"
    page.with_suffix(".json").write_text(json.dumps(BASE))  # the report beside its page
    report(
        "walk_forward_report",
        "BTC-USD",
        verdict=verdict(BASE),
        **{"report page": dg.MetadataValue.url(page.as_uri())},
    )

    console = io.StringIO()
    demo = Demo(
        console, tmp_path / "demo.log", _defs("http://127.0.0.1:9", storage_resources), memory_instance
    )
    _print_results(demo, datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    lines = console.getvalue().splitlines()
    assert (
        "  BTC-USD           41.8          33.3             36.6         -95.1                -0.3" in lines
    )
    assert "  BTC-USD            93              77.4               0.0              100.0" in lines
    assert (
        "  BTC-USD     59     3,976.76      6,271.02       -37.3            +3.4               -38.0" in lines
    )
    verdict_at = lines.index(
        "Walk-forward verdict, BTC-USD (replayed synthetic data; a simulation, not trading advice):"
    )
    assert " ".join(line.strip() for line in lines[verdict_at + 1 : verdict_at + 8]).startswith(verdict(BASE))
    table_at = lines.index("Trading comparison (each model's own decision rule, after fee and half-spread):")
    assert lines[table_at + 1].split()[:4] == ["model", "net", "return", "(%)"]
    assert lines[table_at + 3].split()[:2] == ["LSTM", "-12.0"]
    assert lines[-1] == f"Report page (open in a browser): {page}"  # the last line
    assert not any("{" in line for line in lines)  # no raw dicts
