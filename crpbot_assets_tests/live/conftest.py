"""Live fixtures: a replayed world (REST candles + the WebSocket on one fast clock) and a promoted model."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from crpbot_assets.common.io_manager import PartitionedFileIOManager
from crpbot_assets.common.months import month_start
from crpbot_assets.common.partitions import symbol_month_key
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.live.clock import fast_clock
from crpbot_assets.live.service import LiveSettings
from crpbot_assets.replay import coinbase
from crpbot_assets.replay.coinbase_ws import CoinbaseFeed
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.signals import gate
from crpbot_assets.training import walk_forward as wf
from crpbot_assets.training.walk_forward_assets import fold_model_path
from crpbot_assets_tests.signals.conftest import RULE, make_fold, march_candles, march_features
from crpbot_assets_tests.training.conftest import one_torch_thread  # noqa: F401 (autouse fixture)

# Early in a month: the history the service loads (from the previous month's warm-up) stays small.
ORIGIN = datetime(2026, 11, 3, 10, 0, 50, tzinfo=UTC)


def live_fold(features, seed: int = 0, horizon: int = 1, decisive: bool = False, rule: dict = RULE) -> bytes:
    """A fold model artifact (walk_forward.save_fold) of the signals tests' kind with decision grid `horizon`.
    `decisive`: its LSTM head made never flat, down or up by the sign of one direction of the state (about one
    position change in five minutes' decisions), so a few minutes hold fills."""
    fold = make_fold(features, seed, rule) | {"horizon_minutes": horizon}
    if decisive:
        state = fold["lstm"][0]["with_sentiment"]["state_dict"]
        weight, bias = state["head.1.weight"], state["head.1.bias"]
        direction = weight[2] - weight[0]
        weight[0], weight[1], weight[2] = -20 * direction, 0 * direction, 20 * direction
        bias[0], bias[1], bias[2] = 0.0, -50.0, 0.0
    return wf.save_fold(fold)


def promote(
    data: Path,
    symbol: str,
    fold: bytes | None,
    month: datetime = month_start(ORIGIN),
    instance: dg.DagsterInstance | None = None,
    **value,
) -> str | None:
    """What `fold_model` and `promoted_model[month|symbol]` store when the gate passes (the fold artifact under its
    hash, `fold_model_path`; promoted_model's value through the IO manager, committed when `instance` is given);
    `fold` None: nothing promoted. `value` overrides fields (the demo labels). Returns the model version."""
    files = PartitionedFileIOManager(storage=StorageResource(base_uri=str(data)))
    version = hashlib.sha256(fold).hexdigest()[:12] if fold is not None else None
    path = fold_model_path(symbol, version) if version else None
    if fold is not None:
        files.files.write_bytes(path, fold)
    stored = {
        "symbol": symbol,
        "month": f"{month:%Y-%m}",
        "promoted": version is not None,
        "model_version": version,
        "model_path": path,
        "model_uri": files.files.uri(path) if path else None,
        "fold_month": f"{month:%Y-%m}",
        "training_window": "2025-10-01 00:00 .. 2026-10-15 00:00",
        "status": "promoted" if version else "none promoted",
        "reason": "the gate passes" if version else "the gate does not pass",
        **gate.labels(False, True, "the gate passes"),
        **value,
    }
    key, asset = str(symbol_month_key(symbol, month)), dg.AssetKey("promoted_model")
    if instance is not None:
        files.commit_outside_run(instance, asset, key, stored)
    else:
        files.write_partition(asset, key, stored)
    return version


@pytest.fixture(scope="session")
def features():
    return march_features(march_candles())


@pytest.fixture(scope="session")
def fold(features) -> bytes:
    return live_fold(features)


@pytest.fixture(scope="session")
def decisive_fold(features) -> bytes:
    return live_fold(features, seed=1, decisive=True)


def wait_for(predicate, timeout_s: float, what: str) -> None:
    """Poll `predicate` every 50 ms; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class World:
    """REST candles and the WebSocket feed of the replay on one clock `speed` times faster than real time."""

    def __init__(self, speed: float, origin: datetime = ORIGIN, **feed_options):
        self.clock = fast_clock(speed, origin.timestamp())
        self.rest = ReplayServer([coinbase.service(clock=self.clock.now, rate_per_s=2000, burst=2000)])
        self.feed = CoinbaseFeed(clock=self.clock, **feed_options)

    def __enter__(self) -> World:
        self.rest.start()
        self.feed.start()
        return self

    def __exit__(self, *exc) -> None:
        self.feed.stop()
        self.rest.stop()

    def seed_cache(self, tmp: Path, symbols: list[str], until: datetime) -> None:
        """The service's candle cache (what a previous run reconciled) up to `until`: loads without REST pages."""
        from crpbot_assets.candles.client import SCHEMA
        from crpbot_assets.common.months import month_start, previous_month
        from crpbot_assets.features.compute import warmup_start
        from crpbot_assets.replay import synthetic

        start = warmup_start(previous_month(month_start(until)))
        (tmp / "live" / "candles").mkdir(parents=True, exist_ok=True)
        for symbol in symbols:
            frame = synthetic.candles(symbol, start, until, now=until).cast(SCHEMA)
            frame.write_parquet(tmp / "live" / "candles" / f"{symbol}.parquet")

    def settings(self, tmp: Path, symbols: list[str], **overrides) -> LiveSettings:
        values = dict(
            symbols=symbols,
            ws_url=self.feed.url,
            rest_url=self.rest.url,
            storage_uri=str(tmp / "data"),
            state_dir=str(tmp / "live"),
            rest_rate_per_s=2000.0,
            report_to_dagster=False,
        )
        return LiveSettings(**{**values, **overrides})
