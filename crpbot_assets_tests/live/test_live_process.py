"""crpbot-live as a real process against the replay (fast clock): SIGKILL at any instant, then restart."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crpbot_assets.live.clock import CLOCK_ENV
from crpbot_assets.live.ledger import ForwardLedger
from crpbot_assets.replay import synthetic
from crpbot_assets_tests.live.conftest import ORIGIN, World, promote, wait_for

pytestmark = pytest.mark.slow
SYMBOLS = ["BTC-USD", "SOL-USD"]
SPEED = 10.0  # a minute of clock time in 6 s


def live_command(world: World, tmp: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "crpbot_assets.live.cli",
        "--symbols", ",".join(SYMBOLS), "--ws-url", world.feed.url, "--rest-url", world.rest.url,
        "--storage-uri", str(tmp / "data"), "--state-dir", str(tmp / "live"), "--rest-rate", "2000", "--no-dagster", *extra,
    ]  # fmt: skip


def start(world: World, tmp: Path, hook: str | None = None, *extra: str) -> subprocess.Popen:
    env = {**os.environ, CLOCK_ENV: world.clock.spec(), "CRPBOT_LIVE_TEST_SIGNAL": str(tmp / "paused")}
    env.pop("CRPBOT_LIVE_TEST_HOOK", None)
    if hook:
        env["CRPBOT_LIVE_TEST_HOOK"] = hook
    log = open(tmp / "live.log", "a")
    return subprocess.Popen(live_command(world, tmp, *extra), env=env, stdout=log, stderr=subprocess.STDOUT)


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def records(tmp: Path) -> list[dict]:
    path = tmp / "live" / "ledger.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


def count(tmp: Path, kind: str) -> int:
    return sum(r["kind"] == kind for r in records(tmp))


def first_candle_after(symbol: str, minute: int) -> tuple[int, float]:
    after = datetime.fromtimestamp(minute + 60, UTC)
    candles = synthetic.candles(symbol, after, after + timedelta(hours=1), now=after + timedelta(hours=2))
    return int(candles["ts"][0].timestamp()), float(candles["open"][0])


def test_sigkill_at_any_instant_then_restart_never_duplicates_or_loses_a_fill(tmp_path, decisive_fold):
    for (
        symbol
    ) in SYMBOLS:  # a fold deciding every minute (horizon 1), changing position about every 5 minutes
        promote(tmp_path / "data", symbol, decisive_fold)
    with World(speed=SPEED) as world:
        world.seed_cache(tmp_path, SYMBOLS, ORIGIN - timedelta(minutes=30))
        # 1. killed with a decision half-written: that decision was never made
        process = start(world, tmp_path, "mid-append:decision:2")
        wait_for(lambda: (tmp_path / "paused").exists(), 90, "the second decision's append")
        kill(process)
        (tmp_path / "paused").unlink()
        torn = (tmp_path / "live" / "ledger.jsonl").read_bytes()
        assert not torn.endswith(b"\n")
        # 2. killed right after a decision that trades is durable, before its fill
        process = start(world, tmp_path, "after-append:trade:1")
        wait_for(lambda: (tmp_path / "paused").exists(), 120, "a trading decision after the restart")
        kill(process)
        (tmp_path / "paused").unlink()
        awaiting = records(tmp_path)[-1]
        assert awaiting["kind"] == "decision" and awaiting["target"] != awaiting["held"]
        # 3. killed right after a fill is durable
        process = start(world, tmp_path, "after-append:fill:1")
        wait_for(lambda: (tmp_path / "paused").exists(), 120, "a fill")
        kill(process)
        # 4. killed at random instants
        rng = random.Random(19)
        for _ in range(4):
            process = start(world, tmp_path)
            time.sleep(rng.uniform(2.0, 9.0))
            kill(process)
        # 5. a last run that ends by itself (SIGTERM-equivalent: --minutes)
        decisions_before = count(tmp_path, "decision")
        process = start(world, tmp_path, None, "--minutes", "3")
        assert process.wait(120) == 0, (tmp_path / "live.log").read_text()[-3000:]
        assert count(tmp_path, "decision") > decisions_before
    ledger = ForwardLedger(tmp_path / "live" / "ledger.jsonl")  # parses: no torn line is left
    decisions = [r for r in ledger.records if r["kind"] == "decision"]
    fills = [r for r in ledger.records if r["kind"] == "fill"]
    keys = [(r["symbol"], r["minute"]) for r in decisions]
    assert len(keys) == len(set(keys)), "a decision was made twice"
    fill_keys = [(r["symbol"], r["decision_minute"]) for r in fills]
    assert len(fill_keys) == len(set(fill_keys)), "a fill was recorded twice"
    assert len(fills) >= 2, f"too few fills to mean anything: {len(fills)}"
    assert (awaiting["symbol"], awaiting["minute"]) in fill_keys, (
        "the decision killed before its fill was not filled"
    )
    for symbol in SYMBOLS:
        mine = [r for r in ledger.records if r.get("symbol") == symbol]
        minutes = [r["minute"] for r in mine if r["kind"] == "decision"]
        assert minutes == sorted(minutes)
        position, pending = 0, None
        for record in mine:  # every trading decision is filled before the next decision, at the right candle
            if record["kind"] == "decision":
                assert pending is None, f"{symbol}: decision {pending['minute']} lost its fill"
                assert record["held"] == position
                pending = record if record["target"] != position else None
            else:
                assert pending is not None and record["decision_minute"] == pending["minute"]
                assert (record["fill_minute"], record["fill_open"]) == first_candle_after(
                    symbol, pending["minute"]
                )
                position, pending = record["position"], None
        # the last decision may await the minute after it; nothing else is pending
    log = (tmp_path / "live.log").read_text()
    assert "torn last record" in log
