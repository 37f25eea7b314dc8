"""Demo promotions stay in the demo: promoted_model labels a demo-rule promotion, signals refuse it outside a
demo run unless the model also passes the configured gate (signals/gate.py), and the check shows it. On issue
18's stand-ins (test_end_to_end.py): a real fold model for March 2024 and a walk-forward record of the three
months before it where the LSTM loses to the baselines, so the configured gate fails and the demo's passes."""

from datetime import timedelta
from functools import cache

import dagster as dg
import polars as pl

from crpbot_assets.common.partitions import symbol_month_key, symbol_month_partitions
from crpbot_assets.demo import DEMO_PROMOTION
from crpbot_assets.signals.assets import promoted_model, signals
from crpbot_assets.signals.checks import promotion_trades_on_configured_gate
from crpbot_assets.signals.gate import DEMO_RUN_TAGS, refusal
from crpbot_assets_tests.signals.conftest import MARCH, SYMBOL, march_candles, march_features
from crpbot_assets_tests.signals.test_end_to_end import (
    SENTIMENT,
    WORLD,
    fold_model_stand_in,
    predictions_stand_in,
)

MARCH_KEY = str(symbol_month_key(SYMBOL, MARCH))
KNOWN = {"days": 1}  # the features known now: March's first day, then two
RECORD_MONTHS = ("2023-12-01", "2024-01-01", "2024-02-01")


@cache
def known_features(days: int) -> pl.DataFrame:
    """March's features through its first `days` days (built on first use, not at import)."""
    return march_features(march_candles(until=MARCH + timedelta(days=days)))


@dg.asset(name="features", partitions_def=symbol_month_partitions)
def features_stand_in() -> pl.DataFrame:
    return known_features(KNOWN["days"])


ASSETS = [fold_model_stand_in, predictions_stand_in, promoted_model, features_stand_in, SENTIMENT, signals]


def _run(instance, resources, selection, partition, tags=None, run_config=None):
    result = dg.materialize(
        [*ASSETS, promotion_trades_on_configured_gate],
        selection=selection,
        partition_key=partition,
        resources=resources,
        instance=instance,
        tags=tags,
        run_config=run_config,
    )
    assert result.success
    return result


def _meta(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


def test_a_demo_promotion_is_labelled_and_scores_only_in_demo_runs(storage_resources, memory_instance):
    resources = storage_resources
    KNOWN["days"] = 1
    WORLD.update(fold=0, record="lost")  # the LSTM loses each month: the configured gate fails
    for month in RECORD_MONTHS:
        _run(
            memory_instance,
            resources,
            ["walk_forward_predictions"],
            dg.MultiPartitionKey({"symbol": SYMBOL, "month": month}),
        )
    _run(memory_instance, resources, ["fold_model", "features"], MARCH_KEY)

    demo_rule = {"ops": {"promoted_model": {"config": DEMO_PROMOTION}}}
    result = _run(memory_instance, resources, ["promoted_model"], MARCH_KEY, DEMO_RUN_TAGS, demo_rule)
    promoted = _meta(result, "promoted_model")
    (check,) = result.get_asset_check_evaluations()  # the check ran with the asset: the asset shows it
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN and check.partition == MARCH_KEY
    assert "crpbot-demo's permissive rule" in check.description
    assert promoted["status"] == "promoted on the demo rule only" and promoted["model_version"]
    assert promoted["demo_rule"] is True and promoted["passes_configured_gate"] is False
    assert "2023-12..2024-02" in promoted["configured_gate_reason"]  # the configured rule's three months

    in_demo = _meta(_run(memory_instance, resources, ["signals"], MARCH_KEY, DEMO_RUN_TAGS), "signals")
    assert in_demo["model_version"] == promoted["model_version"] and "latest_score" in in_demo
    assert in_demo["new_signals"] == known_features(1).height - 9  # every complete 10-minute window

    KNOWN["days"] = 2  # after the demo, automation's run (no demo tag) on new minutes: refused, flat
    _run(memory_instance, resources, ["features"], MARCH_KEY)
    after_demo = _meta(_run(memory_instance, resources, ["signals"], MARCH_KEY), "signals")
    assert after_demo["status"].startswith(f"model {promoted['model_version']} was promoted by crpbot-demo")
    new_minutes = known_features(2).filter(pl.col("ts") > known_features(1)["ts"].max())["ts"]
    assert after_demo["new_signals"] == (new_minutes.dt.minute() % 15 == 0).sum() > 0  # flat decisions
    assert after_demo["model_version"] == "none" and "latest_score" not in after_demo

    # the configured rule replaces it
    configured = _run(memory_instance, resources, ["promoted_model"], MARCH_KEY)
    assert _meta(configured, "promoted_model")["status"] == "demoted"
    (check,) = configured.get_asset_check_evaluations()
    assert check.passed


def test_refusal_only_for_a_demo_rule_promotion_failing_the_gate_outside_the_demo():
    demo_only = {"model_version": "v1", "demo_rule": True, "passes_configured_gate": False}
    assert "crpbot-demo's permissive rule" in refusal(demo_only, {})
    assert refusal(demo_only, DEMO_RUN_TAGS) is None
    assert refusal({**demo_only, "passes_configured_gate": True}, {}) is None
    assert refusal({"model_version": "v1", "demo_rule": False}, {}) is None
    assert refusal({"model_version": "v1"}, {}) is None  # a promotion recorded before the label existed
