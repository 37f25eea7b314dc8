"""Checks that put the paper-trading alert conditions where a user looks: the Checks tab of the asset concerned.

- `signals_keep_up` (signals, ERROR): for the month in progress, every symbol's newest signal covers each
  candle that arrived more than the stall limit ago (alerts.py). Evaluated with each signals run, and reported
  by the paper_trading_alerts sensor whenever it changes (a stall is the absence of signals runs). One result
  per asset, not per partition: Dagster 1.13 stores a single runless evaluation per check and partition.
- `paper_drawdown_within_limit` (paper_portfolio, symbol x month, WARN): the drawdown from the peak is within
  `max_drawdown`.
- `promotion_trades_on_configured_gate` (promoted_model, symbol x month, WARN): the promoted model passed the
  configured gate; fails for a crpbot-demo promotion that only passed the demo's rule (signals/gate.py).
Dagster runs a check with every run of its asset (automation's too); each reads the state off the instance.
"""

from datetime import UTC, datetime

import dagster as dg

from crpbot_assets.common.partitions import split_key, symbol_month_partitions
from crpbot_assets.signals import gate
from crpbot_assets.signals.alerts import conditions
from crpbot_assets.signals.assets import latest_metadata
from crpbot_assets.signals.sensors import (
    KEEP_UP_CHECK,
    alert_config,
    gather_facts,
    keep_up_result,
    stalled_messages,
    symbol_facts,
)


def _symbol_month(context: dg.AssetCheckExecutionContext) -> tuple[str, str]:
    symbol, month = split_key(context.partition_key)
    return symbol, f"{month:%Y-%m-%d}"


@dg.asset_check(
    asset="signals",
    name=KEEP_UP_CHECK,
    description="Signals of the month in progress cover, for every symbol, each candle that arrived more than "
    "the stall limit ago (the candles' cadence + a catch-up allowance).",
)
def signals_keep_up(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    config = alert_config()
    return dg.AssetCheckResult(
        **keep_up_result(stalled_messages(gather_facts(context.instance, datetime.now(UTC), config), config))
    )


@dg.asset_check(
    asset="paper_portfolio",
    name="paper_drawdown_within_limit",
    partitions_def=symbol_month_partitions,
    description="The paper portfolio's drawdown from its peak is within the limit (CRPBOT_PAPER_MAX_DRAWDOWN).",
)
def paper_drawdown_within_limit(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    symbol, month = _symbol_month(context)
    config = alert_config()
    facts = symbol_facts(context.instance, symbol, month, datetime.now(UTC), config)
    beyond = conditions(symbol, facts, config)["drawdown"]
    return dg.AssetCheckResult(
        passed=beyond is None,
        severity=dg.AssetCheckSeverity.WARN,
        description=beyond
        or f"drawdown {facts.drawdown if facts.drawdown is not None else 'n/a'} within limit",
        metadata={"max_drawdown": config.max_drawdown},
    )


@dg.asset_check(
    asset="promoted_model",
    name="promotion_trades_on_configured_gate",
    partitions_def=symbol_month_partitions,
    description="The promoted model passed the configured gate, not only crpbot-demo's permissive rule.",
)
def promotion_trades_on_configured_gate(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    promotion = latest_metadata(context.instance, "promoted_model", context.partition_key)
    refused = gate.refusal(promotion, {})
    return dg.AssetCheckResult(
        passed=refused is None,
        severity=dg.AssetCheckSeverity.WARN,
        description=refused or f"status {promotion.get('status', 'not materialized')}: automation may use it",
    )


SIGNAL_CHECKS = [signals_keep_up, paper_drawdown_within_limit, promotion_trades_on_configured_gate]
