"""The forward ledger: appends survive, a torn last line is cut, nothing else is ever rewritten."""

import json

import pytest

from crpbot_assets.live.ledger import ForwardLedger, TornLedgerError
from crpbot_assets.signals.ledger import PaperConfig


def decision(minute: int, target: int, held: int = 0) -> dict:
    return {
        "kind": "decision",
        "symbol": "BTC-USD",
        "minute": minute,
        "signal": target,
        "grid": True,
        "target": target,
        "held": held,
        "model_version": "v1",
    }


def test_a_torn_last_record_is_cut_and_complete_ones_stay(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = ForwardLedger(path)
    ledger.append(decision(60, 1))
    ledger.close()
    whole = path.read_bytes()
    path.write_bytes(whole + json.dumps(decision(120, 0)).encode()[:17])  # killed mid-append
    reopened = ForwardLedger(path)
    assert reopened.repaired_bytes == 17 and path.read_bytes() == whole
    assert reopened.records == [decision(60, 1)]
    reopened.append(decision(120, 0))
    reopened.close()
    assert [r["minute"] for r in ForwardLedger(path).records] == [60, 120]


def test_a_corrupt_line_inside_the_ledger_is_an_error_naming_it(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text(json.dumps(decision(60, 1)) + "\nnot json\n" + json.dumps(decision(120, 0)) + "\n")
    with pytest.raises(TornLedgerError, match="line 2"):
        ForwardLedger(path)
    assert "not json" in path.read_text()  # left as found


def test_books_replay_decisions_and_fills(tmp_path):
    from datetime import UTC, datetime

    ledger = ForwardLedger(tmp_path / "ledger.jsonl")
    config = PaperConfig(half_spread_bps=5.0)

    def books():  # as a restart rebuilds them
        return ForwardLedger(tmp_path / "ledger.jsonl").books(["BTC-USD"], config)

    ledger.append(decision(60, 1))
    book = books()["BTC-USD"]
    assert book.pending["minute"] == 60 and (book.last_decision, book.last_signal) == (60, 1)
    candle = {
        "ts": datetime.fromtimestamp(180, UTC),
        "open": 100.0,
        "high": 101.0,
        "low": 99.0,
        "close": 100.5,
    }
    fill = book.fill(candle, recorded_at=240.0, open_observed_at=180.1)
    # the paper_trades arithmetic: target x equity / mid units, paid at the open moved by the half-spread, plus fee
    assert fill["fill_price"] == pytest.approx(100.05) and fill["fill_minute"] == 180
    assert fill["units"] == pytest.approx(100.0)
    assert fill["fee"] == pytest.approx(100.0 * 100.05 * 60e-4)
    assert fill["cash"] == pytest.approx(10_000 - 100.0 * 100.05 - fill["fee"])
    ledger.append(fill)
    book = books()["BTC-USD"]
    assert book.pending is None and book.position == 1 and book.fills == 1
    ledger.append(decision(240, 1, held=1))  # same target: nothing to fill
    assert books()["BTC-USD"].pending is None


def test_the_compose_service_runs_the_console_script():
    import tomllib
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((repo / "deploy" / "docker-compose.yml").read_text())
    scripts = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["scripts"]
    assert compose["services"]["live"]["command"] == ["crpbot-live"]
    assert scripts["crpbot-live"] == "crpbot_assets.live.cli:main"
    assert "live" in compose["volumes"]


def test_live_alerts_fire_once_per_episode_when_the_service_is_silent_stopped_or_slow():
    from crpbot_assets.live.sensors import LiveAlertConfig, evaluate

    config = LiveAlertConfig(silent_after_s=9000, max_latency_p95_s=1.0)
    fine = {"trading": True, "latency_p95_s": 0.4}
    alerts, cursor = evaluate({"BTC-USD": (0.0, fine)}, 8999.0, {}, config)
    assert alerts == []
    alerts, cursor = evaluate({"BTC-USD": (0.0, fine)}, 9001.0, cursor, config)
    assert [a[1] for a in alerts] == ["silent"]
    alerts, cursor = evaluate({"BTC-USD": (0.0, fine)}, 12000.0, cursor, config)
    assert alerts == []  # the same episode
    stopped = {"trading": False, "latency_p95_s": 1.5}
    alerts, cursor = evaluate({"BTC-USD": (12000.0, stopped)}, 12001.0, cursor, config)
    assert sorted(a[1] for a in alerts) == ["not_trading", "slow"]
    alerts, _ = evaluate({"BTC-USD": (13000.0, fine)}, 13001.0, cursor, config)
    assert alerts == []  # recovered: nothing to say
