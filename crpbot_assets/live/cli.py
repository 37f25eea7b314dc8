"""`crpbot-live`'s entry points: the console script, `run_service` (start, load, run, report) and the demo's
`live_stretch`. The service itself is `service.LiveService`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import warnings
from datetime import UTC, datetime
from pathlib import Path

# Dagster's beta/preview notices from the shared partition definitions would open every console session.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")

from crpbot_assets.candles.client import PROD_URL as COINBASE_REST_URL
from crpbot_assets.common.settings import local_storage_uri, replay_url
from crpbot_assets.common.symbols import SYMBOLS, is_listed
from crpbot_assets.live.clock import Clock
from crpbot_assets.live.feed import PROD_WS_URL
from crpbot_assets.live.service import LiveService, LiveSettings
from crpbot_assets.signals.ledger import PaperConfig

log = logging.getLogger("crpbot.live")


def default_state_dir() -> str:
    home = os.environ.get("DAGSTER_HOME") or str(Path(local_storage_uri()).parent)
    return os.environ.get("CRPBOT_LIVE_STATE", str(Path(home) / "live"))


def settings_from_args(argv: list[str] | None = None) -> tuple[LiveSettings, float | None]:
    """LiveSettings from the command line (defaults from the environment); and `--minutes` (None: forever)."""
    prod = os.environ.get("CRPBOT_ENV") == "prod"
    parser = argparse.ArgumentParser(
        prog="crpbot-live",
        description="Paper decisions at each minute's close from Coinbase's market-data WebSocket (no orders).",
    )
    parser.add_argument("--symbols", default=",".join(SYMBOLS))
    parser.add_argument(
        "--ws-url",
        default=os.environ.get("CRPBOT_LIVE_WS_URL", PROD_WS_URL if prod else "ws://127.0.0.1:8766"),
    )
    parser.add_argument(
        "--rest-url",
        default=os.environ.get("CRPBOT_LIVE_REST_URL", COINBASE_REST_URL if prod else replay_url()),
    )
    parser.add_argument("--storage-uri", default=os.environ.get("CRPBOT_STORAGE_URI", local_storage_uri()))
    parser.add_argument("--state-dir", default=default_state_dir())
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop after this many minutes (default: run until SIGTERM)",
    )
    parser.add_argument("--fee-bps", type=float, default=PaperConfig.fee_bps)
    parser.add_argument("--half-spread-bps", type=float, default=None)
    parser.add_argument("--starting-capital", type=float, default=PaperConfig.starting_capital)
    parser.add_argument("--stale-after-s", type=float, default=10.0)
    parser.add_argument("--report-every-s", type=float, default=3600.0)
    parser.add_argument("--reconcile-every-s", type=float, default=300.0)
    parser.add_argument("--rest-rate", type=float, default=10.0)
    parser.add_argument("--no-dagster", action="store_true", help="do not report to the Dagster instance")
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    symbols = [s for s in args.symbols.split(",") if s]
    unknown = [s for s in symbols if s not in SYMBOLS]
    if unknown:
        parser.error(f"unknown symbol(s) {unknown}; known: {SYMBOLS}")
    settings = LiveSettings(
        symbols=[s for s in symbols if is_listed(s, now)],
        ws_url=args.ws_url,
        rest_url=args.rest_url,
        storage_uri=args.storage_uri,
        state_dir=args.state_dir,
        paper=PaperConfig(args.starting_capital, args.fee_bps, args.half_spread_bps),
        stale_after_s=args.stale_after_s,
        report_every_s=args.report_every_s,
        reconcile_every_s=args.reconcile_every_s,
        rest_rate_per_s=args.rest_rate,
        report_to_dagster=not args.no_dagster,
    )
    return settings, args.minutes


def run_service(settings: LiveSettings, minutes: float | None = None, clock: Clock | None = None) -> dict:
    """Start, load, run (for `minutes` of clock time, or until SIGTERM/SIGINT); the summary."""
    clock = clock or Clock.from_env()
    reporter = None
    if settings.report_to_dagster and os.environ.get("DAGSTER_HOME"):
        from crpbot_assets.live.report import DagsterReporter

        reporter = DagsterReporter(settings.symbols, clock)
    service = LiveService(settings, clock, reporter)
    previous = {}
    try:
        for number in (signal.SIGTERM, signal.SIGINT):
            previous[number] = signal.signal(number, service.stop)
    except ValueError:  # not the main thread (a helper thread of the caller)
        pass
    try:
        service.load()
        until = clock.now() + minutes * 60 if minutes is not None else None
        log.info(
            f"crpbot-live: {', '.join(settings.symbols)} from {settings.ws_url}; ledger {service.ledger.path}"
        )
        return service.run(until)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        service.close()


def latency_line(summary: dict) -> str:
    """`p95 close->decision <seconds> s` (and p50, max, decisions), or why there is none."""
    lat = summary["latency_s"]
    if not lat.get("n"):
        return f"no decision made (skipped: {summary['feed']['skipped'] or 'no minute closed'})"
    return (
        f"{lat['n']} decisions, close->decision p50 {lat['p50']:.3f} s, max {lat['max']:.3f} s; "
        f"p95 close->decision {lat['p95']:.3f} s"
    )


def live_stretch(
    storage_uri: str,
    rest_url: str,
    ws_url: str,
    minutes: float = 2.0,
    symbols: list[str] | None = None,
    state_dir: str | None = None,
    log_line=print,
) -> dict:
    """For the demo: the service for `minutes` of real clock against `ws_url` and `rest_url` (the replay's:
    `with CoinbaseFeed() as feed: live_stretch(storage_uri, replay.url, feed.url)`), trading what
    `promoted_model[<month in progress>|symbol]` under `storage_uri` promotes (a demo-rule promotion included: this
    is the demo), a signal every minute, fills on the fold's decision grid. Logs and returns the summary
    (`["latency_s"]`: p50/p95/max over the minutes decided)."""
    now = datetime.now(UTC)
    settings = LiveSettings(
        symbols=symbols or [s for s in SYMBOLS if is_listed(s, now)],
        ws_url=ws_url,
        rest_url=rest_url,
        storage_uri=storage_uri,
        state_dir=state_dir or default_state_dir(),
        demo=True,
    )
    log_line(f"live stretch: {', '.join(settings.symbols)} for {minutes:g} min of real clock from {ws_url}")
    summary = run_service(settings, minutes, Clock())
    log_line(f"live stretch: {latency_line(summary)}")
    return summary


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings, minutes = settings_from_args(argv)
    summary = run_service(settings, minutes)
    print(json.dumps(summary, indent=1, default=str))
    print(latency_line(summary))


if __name__ == "__main__":
    main()
