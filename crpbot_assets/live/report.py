"""What `crpbot-live` shows in Dagster: the `live_paper_ledger` asset (per symbol), materialized by the service.

Every `report_every_s` (hourly by default) and when it stops, the service records a runless materialization of
`live_paper_ledger[symbol]` with the forward ledger's figures: equity, return, buy-and-hold, position, decisions,
fills, fees, close->decision latency (p50/p95/max), socket-vs-REST reconciliation and feed health. Each alert
(`stale`, `resumed`, `model_changed`) is an `AssetObservation` on the symbol's partition (or every partition for
feed-wide alerts), metadata `alert` and `message`, as `paper_trading_alerts` reports its own.
"""

from __future__ import annotations

import logging

import dagster as dg

from crpbot_assets.common.partitions import symbol_partitions
from crpbot_assets.live.clock import Clock

ASSET = "live_paper_ledger"
log = logging.getLogger("crpbot.live")

live_paper_ledger = dg.AssetSpec(
    ASSET,
    partitions_def=symbol_partitions,
    group_name="live",
    kinds={"python"},
    description=(
        "The forward paper ledger of `crpbot-live` (simulated fills, no orders): every decision made at a minute's "
        "close and its fill at the next minute's open, appended and never rewritten ($DAGSTER_HOME/live/ledger.jsonl). "
        "Materialized by the service itself, hourly: equity, return, latency from the minute's close to the "
        "decision, socket-vs-REST reconciliation, feed health. Alerts are observations (`alert`, `message`)."
    ),
)


def _number(value) -> float:
    return round(float(value), 6) if value is not None else float("nan")


def symbol_metadata(figures: dict, feed: dict, trading: bool) -> dict:
    latency = figures["latency_s"]
    return {
        "equity_usd": _number(figures["equity"]),
        "return": _number(figures["return"]),
        "buy_and_hold_equity_usd": _number(figures["buy_and_hold_equity"]),
        "position": figures["position"],
        "decisions": figures["decisions"],
        "fills": figures["fills"],
        "fees_usd": _number(figures["fees"]),
        "latency_decisions": latency.get("n", 0),
        "latency_p50_s": _number(latency.get("p50")),
        "latency_p95_s": _number(latency.get("p95")),
        "latency_max_s": _number(latency.get("max")),
        "reconciliation": dg.MetadataValue.json(figures["reconciliation"]),
        "late_trades": figures["late_trades"],
        "trading": trading,
        "feed": dg.MetadataValue.json(feed),
    }


class DagsterReporter:
    """Reports to the instance of $DAGSTER_HOME (sqlite locally, Postgres in production). Never raises: the
    service trades on when the instance is unreachable (logged)."""

    def __init__(self, symbols: list[str], clock: Clock, instance: dg.DagsterInstance | None = None):
        self.symbols, self.clock = symbols, clock
        self.instance = instance or dg.DagsterInstance.get()

    def _emit(self, event) -> None:
        try:
            self.instance.report_runless_asset_event(event)
        except Exception as exc:  # noqa: BLE001 - reporting must not stop trading
            log.warning(f"could not report {type(event).__name__} to Dagster: {type(exc).__name__}: {exc}")

    def report(self, summary: dict) -> None:
        for symbol, figures in summary["symbols"].items():
            metadata = symbol_metadata(figures, summary["feed"], summary["trading"])
            self._emit(dg.AssetMaterialization(ASSET, partition=symbol, metadata=metadata))

    def alert(self, entry: dict) -> None:
        for symbol in [entry["symbol"]] if entry["symbol"] else self.symbols:
            metadata = {"alert": entry["kind"], "message": entry["message"]}
            self._emit(dg.AssetObservation(ASSET, partition=symbol, metadata=metadata))
