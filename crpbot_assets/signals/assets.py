"""Signal assets: promoted_model -> signals -> paper_trades -> paper_portfolio (all symbol x month).

Thin Dagster wrappers around promotion.py, scoring.py and ledger.py. `promoted_model[M]` decides whether the
fold model of month M (training/walk_forward_assets.py) may trade M, judging the walk-forward record of the
months before M; `signals[M]` scores M with it. signals, paper_trades and paper_portfolio are meant for the
month in progress: automation (`eager`, latest month only) refreshes them whenever their inputs update. Each
resumes from its own stored partition (read through `storage`, the file the IO manager wrote), and
paper_trades/paper_portfolio start a month from the previous month's stored partition: those are state
hand-overs, not graph dependencies (a self-dependency would keep automation from starting the first month).
"""

from datetime import UTC, datetime, timedelta
from typing import Optional

import dagster as dg
import polars as pl

from crpbot_assets.common.io_manager import concat_partitions, partition_path
from crpbot_assets.common.months import month_window, previous_month
from crpbot_assets.common.partitions import (
    previous_and_current_month,
    split_key,
    symbol_month_key,
    symbol_month_partitions,
)
from crpbot_assets.common.plots import line_plot
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import Storage
from crpbot_assets.signals import gate, scoring
from crpbot_assets.signals import ledger as lg
from crpbot_assets.signals.promotion import PromotionRule, judge
from crpbot_assets.training.assets import _config_from
from crpbot_assets.training.dataset import DatasetConfig
from crpbot_assets.training.walk_forward_assets import read_fold

GROUP = "signals"
HORIZON_MINUTES = DatasetConfig.horizon_minutes  # the decision grid when no fold model says otherwise
MAX_JUDGED_MONTHS = 6  # the most test months a promotion rule may judge (the partition mapping's reach)
SAME_PARTITION = dg.MultiPartitionMapping(
    {
        "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
        "month": dg.DimensionPartitionMapping("month", dg.IdentityPartitionMapping()),
    }
)
MONTHS_BEFORE = dg.MultiPartitionMapping(
    {
        "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
        "month": dg.DimensionPartitionMapping(
            "month",
            dg.TimeWindowPartitionMapping(
                start_offset=-MAX_JUDGED_MONTHS, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    }
)

# Eager, once the month's fold model exists, even when months of the record are missing (the gate then says so
# and does not pass): a new month waits for its fold model instead of recording a transient demotion.
PROMOTION_AUTOMATION = (
    dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())
    & ~dg.AutomationCondition.any_deps_missing().allow(dg.AssetSelection.assets("fold_model"))
).with_label("eager, once the month's fold model exists")

PromotionSettings = _config_from(
    "PromotionSettings",
    PromotionRule,
    "The promotion gate (crpbot_assets.signals.promotion.PromotionRule), fixed before the months it judges: over "
    f"the `recent_months` (at most {MAX_JUDGED_MONTHS}) test months before the month, the LSTM's summed net "
    "return after costs minus the best trading baseline's (chosen inside each bootstrap draw) must have its "
    "`alpha` block-bootstrap quantile above zero. `enforce: false` is for demos only.",
)
PaperSettings = _config_from(
    "PaperSettings",
    lg.PaperConfig,
    "Paper-trading settings (crpbot_assets.signals.ledger.PaperConfig): starting capital, taker fee and "
    "half-spread (None: a quarter of the fill minute's high-low range, as in the verdict).",
)


class SignalSettings(dg.Config):
    first_minute: Optional[str] = None  # ISO time: score no minute before it (None: from the month's start)


def _stored(storage: Storage, asset: str, key: str) -> pl.DataFrame | None:
    """An asset partition's stored frame (what the IO manager wrote), None when there is none."""
    path = partition_path(dg.AssetKey(asset), key) + ".parquet"
    return storage.read_parquet(path) if storage.exists(path) else None


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict:
    """Metadata values of the partition's latest materialization ({} when there is none)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return {}
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


@dg.asset(
    partitions_def=symbol_month_partitions,
    ins={
        "walk_forward_predictions": dg.AssetIn(
            partition_mapping=MONTHS_BEFORE, metadata={"allow_missing_partitions": True}
        ),
        "fold_model": dg.AssetIn(
            partition_mapping=SAME_PARTITION, metadata={"allow_missing_partitions": True}
        ),
    },
    automation_condition=PROMOTION_AUTOMATION,
    kinds={"pytorch", "json"},
    group_name=GROUP,
)
def promoted_model(
    context: dg.AssetExecutionContext,
    config: PromotionSettings,
    storage: StorageResource,
    walk_forward_predictions: dict[str, pl.DataFrame],
    fold_model: dict[str, dict],
) -> dg.Output[dict]:
    """Whether the fold model of this month trades it: promoted when the gate (config) passes on the
    walk-forward record of the months before. Metadata names the fold month and its training window, the
    judged months, the rule and its numbers; `status` is promoted, kept (the same version as before), demoted
    (a model traded before and none does now; `previous_model_version` is the one replaced) or none promoted."""
    key = str(context.partition_key)
    symbol, month = split_key(key)
    rule = PromotionRule(**config.model_dump())
    record = {f"{split_key(k)[1]:%Y-%m}": frame for k, frame in walk_forward_predictions.items()}
    decision = judge(record, f"{month:%Y-%m}", rule)
    demo_run = gate.is_demo_run(
        context.run.tags
    )  # crpbot-demo's permissive rule: judge the configured one too
    configured = judge(record, f"{month:%Y-%m}", PromotionRule()) if demo_run else decision
    before = latest_metadata(context.instance, "promoted_model", key)
    if not before:
        before = latest_metadata(
            context.instance, "promoted_model", str(symbol_month_key(symbol, previous_month(month)))
        )
    previous = before.get("model_version") or None
    fold = fold_model.get(key)
    promote = decision.passed or not rule.enforce
    reason = (
        decision.reason
        if rule.enforce
        else f"gate not enforced (demo rule); the gate says: {decision.reason}"
    )
    if promote and not (fold or {}).get("model_version"):
        why = (fold or {}).get("no_fold", "not materialized")
        promote, reason = False, f"fold_model {key} has no model ({why}); {reason}"
    version = None
    if promote:
        read_fold(storage.storage, fold)  # a clear error for a missing or changed artifact
        version = fold["model_version"]
    if version is None:
        status = "demoted" if previous else "none promoted"
    else:
        status = "kept" if version == previous else "promoted"
    if demo_run and version and not configured.passed:
        status += " on the demo rule only"
    message = (
        f"{key}: {status}"
        + (f" fold model {version} of {fold['fold_month']}" if version else "")
        + f": {reason}"
    )
    (context.log.warning if status == "demoted" else context.log.info)(message)
    value = {
        "symbol": symbol,
        "month": f"{month:%Y-%m}",
        "promoted": version is not None,
        "model_version": version,
        "model_path": fold["model_path"] if version else None,
        "model_uri": fold["model_uri"] if version else None,
        "fold_month": fold["fold_month"] if fold else None,
        "training_window": fold.get("training_window") if fold else None,
        "status": status,
        "reason": reason,
        "previous_model_version": previous,
        "rule": config.model_dump(),
        "judged": decision.details,
        "decided_at": datetime.now(UTC).isoformat(),
        **gate.labels(demo_run, configured.passed, configured.reason),
    }
    return dg.Output(
        value,
        metadata={
            "status": status,
            "reason": reason,
            "model_version": version or "",
            "previous_model_version": previous or "",
            "fold_month": value["fold_month"] or "",
            "fold_training_window": value["training_window"] or "",
            "judged_months": ", ".join(decision.details.get("judged_months", [])),
            "gate_passed": decision.passed,
            "excess_net": round(decision.details.get("excess", float("nan")), 6),
            "lower_bound": round(decision.details.get("lower_bound", float("nan")), 6),
            "rule": dg.MetadataValue.json(config.model_dump()),
            "judged": dg.MetadataValue.json(decision.details),
            **gate.labels(demo_run, configured.passed, configured.reason),
        },
    )


@dg.asset(
    partitions_def=symbol_month_partitions,
    ins={
        "features": dg.AssetIn(
            partition_mapping=previous_and_current_month, metadata={"allow_missing_partitions": True}
        ),
        "sentiment_features": dg.AssetIn(
            partition_mapping=previous_and_current_month, metadata={"allow_missing_partitions": True}
        ),
        "promoted_model": dg.AssetIn(partition_mapping=SAME_PARTITION),
    },
    # sentiment is optional to a month's signals (nulls are imputed as in training)
    automation_condition=dg.AutomationCondition.eager().ignore(
        dg.AssetSelection.assets("sentiment_features")
    ),
    kinds={"pytorch", "polars"},
    group_name=GROUP,
)
def signals(
    context: dg.AssetExecutionContext,
    config: SignalSettings,
    storage: StorageResource,
    features: dict[str, pl.DataFrame],
    sentiment_features: dict[str, pl.DataFrame],
    promoted_model: dict[str, dict],
) -> dg.Output[pl.DataFrame]:
    """The month's promoted fold model on every minute of features: the fold's LSTM probabilities (p_down,
    p_flat, p_up: the mean of its seeds), the score P(up) - P(down), and on the decision grid the position by
    the fold's fitted rule (training/decisions.py, the verdict's function), each known at its minute's close.
    Incremental: a run scores only the minutes after the newest stored signal, from the last decision's
    position. No promoted model: a flat decision every 15 minutes (model_version "none"; metadata `status` says
    why), so the paper ledger closes a position a demoted model left open."""
    key = context.partition_key
    symbol, month = split_key(key)
    start, end = month_window(f"{month:%Y-%m-%d}")
    if config.first_minute:
        start = max(start, datetime.fromisoformat(config.first_minute).astimezone(UTC))
    stored = _stored(storage.storage, "signals", str(key))
    stored = scoring.empty_signals() if stored is None else stored
    after = stored["ts"].max() if stored.height else None
    frame = concat_partitions(features)
    promotion = promoted_model.get(str(key), {})
    metadata: dict = {}
    refused = gate.refusal(promotion, context.run.tags)  # a demo promotion outside the demo
    if not promotion.get("promoted") or refused:
        new = (
            scoring.flat_signals(frame, start, end, after, HORIZON_MINUTES)
            if frame.height
            else stored.clear()
        )
        metadata["status"] = refused or (
            f"no promoted model (flat): {promotion.get('reason', 'promoted_model not materialized')}"
        )
    else:
        fold = read_fold(storage.storage, promotion)
        new = scoring.score(
            frame,
            concat_partitions(sentiment_features),
            fold,
            promotion["model_version"],
            start,
            end,
            after,
            scoring.previous_position(stored),
        )
        metadata["status"] = (
            f"scoring with fold model {promotion['model_version']} of {promotion['fold_month']}"
        )
    result = pl.concat([stored, new]) if new.height else stored
    month_features = frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end)) if frame.height else frame
    newest_input = month_features["ts"].max() if month_features.height else None
    context.log.info(
        f"{key}: {new.height} new signal(s) after {after or 'the month start'}; {result.height} in the month"
    )
    metadata.update(
        {
            "new_signals": new.height,
            "signals": result.height,
            "first_new_ts": str(new["ts"].min()) if new.height else "none",
            "newest_input_ts": str(newest_input) if newest_input else "none",
            # how old the newest feature minute is (its close) when this run ended
            "newest_input_age_minutes": round(
                (datetime.now(UTC) - newest_input - timedelta(minutes=1)).total_seconds() / 60, 1
            )
            if newest_input
            else -1.0,
        }
    )
    if result.height:
        last = result.row(-1, named=True)
        metadata.update(
            {
                "latest_signal_ts": str(last["ts"]),
                "latest_position": int(last["position"]),
                "model_version": last["model_version"],
            }
        )
        if last["score"] is not None:  # a model's signal (flat decisions without a model have none)
            metadata.update(
                {
                    "latest_score": round(float(last["score"]), 4),
                    "latest_probability": round(float(max(last[c] for c in scoring.PROBABILITY_COLUMNS)), 4),
                    "latest_direction": max(scoring.PROBABILITY_COLUMNS, key=lambda c: last[c])[2:],
                }
            )
    return dg.Output(result, metadata=metadata)


def _previous_key(key: str) -> str:
    symbol, month = split_key(key)
    return str(symbol_month_key(symbol, previous_month(month)))


@dg.asset(
    partitions_def=symbol_month_partitions,
    ins={"signals": dg.AssetIn(), "candles": dg.AssetIn()},
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"polars"},
    group_name=GROUP,
)
def paper_trades(
    context: dg.AssetExecutionContext,
    config: PaperSettings,
    storage: StorageResource,
    signals: dict[str, pl.DataFrame],
    candles: dict[str, pl.DataFrame],
) -> dg.Output[pl.DataFrame]:
    """Simulated trades (paper trading, no orders are sent) following the signals' decisions (the fold's
    decision grid), filled at the next minute's open with the verdict's fee and half-spread, one position
    per symbol. Rows: the state the month opens with, then each fill with cash, units and equity after it.
    Re-running never trades twice; a month continues from the previous month's last state."""
    key = str(context.partition_key)
    _, month = split_key(key)
    start, end = month_window(f"{month:%Y-%m-%d}")
    files = storage.storage
    stored = _stored(files, "paper_trades", key)
    previous = _stored(files, "paper_trades", _previous_key(key))
    opening = lg.last_state(previous) if previous is not None else None
    settings = lg.PaperConfig(**config.model_dump())
    before = lg.empty_ledger() if stored is None else stored
    result = lg.advance(before, opening, signals[key], candles[key], start, end, settings)
    trades = result.filter(pl.col("kind") == "trade")
    new = trades.height
    if result.head(before.height).equals(before):
        new -= before.filter(pl.col("kind") == "trade").height
    else:
        context.log.warning(
            f"{key}: the previous month's closing state changed; the month's ledger was rebuilt"
        )
    context.log.info(f"{key}: {new} new fill(s); {trades.height} in the month")
    metadata: dict = {"new_trades": new, "trades": trades.height}
    if result.height:
        last = result.row(-1, named=True)
        metadata.update(
            {
                "position": int(last["position"]),
                "cash": round(last["cash"], 2),
                "units": round(last["units"], 8),
                "equity_at_last_fill": round(last["equity"], 2),
                "fees_paid": round(float(trades["fee"].sum()), 2),
                "spread_paid": round(float(trades["spread_cost"].sum()), 2),
                "last_fill_ts": str(last["fill_ts"]),
            }
        )
    return dg.Output(result, metadata=metadata)


@dg.asset(
    partitions_def=symbol_month_partitions,
    ins={"paper_trades": dg.AssetIn(), "candles": dg.AssetIn()},
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"polars"},
    group_name=GROUP,
)
def paper_portfolio(
    context: dg.AssetExecutionContext,
    config: PaperSettings,
    storage: StorageResource,
    paper_trades: dict[str, pl.DataFrame],
    candles: dict[str, pl.DataFrame],
) -> dg.Output[pl.DataFrame]:
    """The paper portfolio minute by minute (simulation, not trading advice): equity at each close, the
    buy-and-hold reference from the same start and costs, the running peak and the drawdown from it. Metadata:
    equity, P&L and return against buy and hold, drawdown and maximum drawdown, with plots."""
    key = str(context.partition_key)
    previous = _stored(storage.storage, "paper_portfolio", _previous_key(key))
    peak = float(previous["peak"][-1]) if previous is not None and previous.height else None
    capital = lg.PaperConfig(**config.model_dump()).starting_capital
    frame = lg.marks(paper_trades[key], candles[key], capital, peak)
    metadata: dict = {"minutes": frame.height}
    if frame.height:
        last = frame.row(-1, named=True)
        metadata.update(
            {
                "as_of": str(last["ts"]),
                "equity": round(last["equity"], 2),
                "pnl": round(last["equity"] - capital, 2),
                "return": round(last["equity"] / capital - 1, 6),
                "buy_and_hold_return": round(last["hold_equity"] / capital - 1, 6),
                "vs_buy_and_hold": round((last["equity"] - last["hold_equity"]) / capital, 6),
                "drawdown": round(last["drawdown"], 6),
                "max_drawdown_month": round(float(frame["drawdown"].min()), 6),
                "position": int(last["position"]),
                "equity_plot": line_plot(
                    {
                        "paper portfolio": frame["equity"].to_list(),
                        "buy & hold": frame["hold_equity"].to_list(),
                    },
                    f"{key}: paper equity (simulation)",
                    "time",
                    "equity",
                    x=frame["ts"].to_list(),
                ),
                "drawdown_plot": line_plot(
                    {"drawdown": frame["drawdown"].to_list()},
                    f"{key}: drawdown from peak",
                    "time",
                    "drawdown",
                    x=frame["ts"].to_list(),
                ),
            }
        )
    context.log.info(
        f"{key}: {frame.height} minutes marked" + (f", equity {metadata['equity']}" if frame.height else "")
    )
    return dg.Output(frame, metadata=metadata)
