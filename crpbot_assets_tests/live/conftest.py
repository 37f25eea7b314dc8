"""Live fixtures: a replayed world (REST candles + the WebSocket on one fast clock) and a promoted model."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crpbot_assets.live.clock import fast_clock
from crpbot_assets.live.service import LiveSettings
from crpbot_assets.replay import coinbase
from crpbot_assets.replay.coinbase_ws import CoinbaseFeed
from crpbot_assets.replay.server import ReplayServer
from crpbot_assets.signals.ledger import PaperConfig
from crpbot_assets_tests.signals.conftest import make_artifact, march_candles, march_features

# Early in a month: the history the service loads (from the previous month's warm-up) stays small.
ORIGIN = datetime(2026, 11, 3, 10, 0, 50, tzinfo=UTC)


def promote(storage: Path, symbol: str, artifact: bytes) -> str:
    """Write what `promoted_model[symbol]` stores: the artifact by version and the asset's JSON value."""
    version = hashlib.sha256(artifact).hexdigest()[:12]
    target = storage / "promoted_models" / symbol / f"{version}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(artifact)
    value = {"symbol": symbol, "promoted": True, "model_version": version, "model_uri": str(target)}
    (storage / "promoted_model").mkdir(parents=True, exist_ok=True)
    (storage / "promoted_model" / f"{symbol}.json").write_text(json.dumps(value))
    return version


@pytest.fixture(scope="session")
def artifact() -> bytes:
    return make_artifact(march_features(march_candles()))


@pytest.fixture(scope="session")
def flippy_artifact(artifact) -> bytes:
    """The artifact with its head made decisive: never flat, down or up by the sign of one direction of the
    LSTM's state (about one position change in five minutes' decisions), so a few minutes hold fills."""
    from crpbot_assets.training.artifacts import load_artifact, save_artifact

    loaded = load_artifact(artifact)
    variant = loaded["variants"]["with_sentiment"]
    weight, bias = variant["state_dict"]["head.1.weight"], variant["state_dict"]["head.1.bias"]
    direction = weight[2] - weight[0]
    weight[0], weight[1], weight[2] = -20 * direction, 0 * direction, 20 * direction
    bias[0], bias[1], bias[2] = 0.0, -50.0, 0.0
    return save_artifact(loaded["variants"], loaded["symbol"])


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
            paper=PaperConfig(rebalance_minutes=1),
            rest_rate_per_s=2000.0,
            report_to_dagster=False,
        )
        return LiveSettings(**{**values, **overrides})
