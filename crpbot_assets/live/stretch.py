"""A short live stretch for the demo: `crpbot-live` for a minute or two of real clock against the replay.

Not imported by the product: it starts the replayed market-data WebSocket (a test and demo double) in this process.
"""

from __future__ import annotations

from datetime import UTC, datetime

from crpbot_assets.common.symbols import SYMBOLS, is_listed
from crpbot_assets.live.clock import Clock
from crpbot_assets.live.service import LiveSettings, default_state_dir, latency_line, run_service
from crpbot_assets.signals.ledger import PaperConfig


def live_stretch(
    storage_uri: str,
    rest_url: str,
    minutes: float = 2.0,
    symbols: list[str] | None = None,
    state_dir: str | None = None,
    seed: int = 0,
    log=print,
) -> dict:
    """Run the service for `minutes` against the replayed WebSocket (started here, `seed`) and the replay's REST
    candles at `rest_url`, with the promoted models under `storage_uri`; decides every minute. Logs and returns the
    summary (`summary["latency_s"]`: p50/p95/max close->decision) after logging its latency line."""
    from crpbot_assets.replay.coinbase_ws import CoinbaseFeed

    now = datetime.now(UTC)
    with CoinbaseFeed(seed) as feed:
        settings = LiveSettings(
            symbols=symbols or [s for s in SYMBOLS if is_listed(s, now)],
            ws_url=feed.url,
            rest_url=rest_url,
            storage_uri=storage_uri,
            state_dir=state_dir or default_state_dir(),
            paper=PaperConfig(rebalance_minutes=1),
        )
        log(f"live stretch: {', '.join(settings.symbols)} for {minutes:g} min of real clock from {feed.url}")
        summary = run_service(settings, minutes, Clock())
    log(f"live stretch: {latency_line(summary)}")
    return summary
