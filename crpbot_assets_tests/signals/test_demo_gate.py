"""Demo promotions stay in the demo: promoted_model labels a demo-rule promotion, signals refuse it outside a
demo run unless the model also passes the configured gate (signals/gate.py)."""

from datetime import timedelta

import dagster as dg
import polars as pl

from crpbot_assets.common.partitions import symbol_month_key, symbol_month_partitions, symbol_partitions
from crpbot_assets.demo import DEMO_PROMOTION
from crpbot_assets.signals.assets import promoted_model, signals
from crpbot_assets.signals.checks import promotion_trades_on_configured_gate
from crpbot_assets.signals.gate import DEMO_RUN_TAGS, refusal
from crpbot_assets_tests.signals.conftest import MARCH, SYMBOL, march_candles, march_features
from crpbot_assets_tests.signals.test_end_to_end import SENTIMENT, lstm_model_stand_in
from crpbot_assets_tests.signals.test_promotion_alerts import report

MARCH_KEY = str(symbol_month_key(SYMBOL, MARCH))
FEATURES = march_features(march_candles(until=MARCH + timedelta(days=1)))


@dg.asset(name="features", partitions_def=symbol_month_partitions)
def features_stand_in() -> pl.DataFrame:
    return FEATURES


@dg.asset(name="walk_forward_report", partitions_def=symbol_partitions)
def failing_report() -> dict:
    return report([-0.02, 0.01, -0.03])  # won 1 of the latest 3: fails the default rule, passes the demo's


ASSETS = [lstm_model_stand_in, failing_report, promoted_model, features_stand_in, SENTIMENT, signals]
GATE_CHECK = promotion_trades_on_configured_gate


def _run(instance, resources, selection, partition, tags=None, run_config=None):
    result = dg.materialize(
        [*ASSETS, GATE_CHECK],
        selection=selection,
        partition_key=partition,
        resources=resources,
        instance=instance,
        tags=tags,
        run_config=run_config,
    )
    assert result.success
    return result


def _meta(instance, resources, selection, partition, tags=None, run_config=None) -> dict:
    result = _run(instance, resources, selection, partition, tags, run_config)
    (event,) = result.asset_materializations_for_node(selection[-1])
    return {k: v.value for k, v in event.metadata.items()}


def test_a_demo_promotion_is_labelled_and_scores_only_in_demo_runs(storage_resources, instance):
    resources = storage_resources
    _meta(instance, resources, ["lstm_model", "walk_forward_report"], SYMBOL)
    demo_rule = {"ops": {"promoted_model": {"config": DEMO_PROMOTION}}}
    result = _run(instance, resources, ["promoted_model"], SYMBOL, DEMO_RUN_TAGS, demo_rule)
    promoted = {
        k: v.value for k, v in result.asset_materializations_for_node("promoted_model")[0].metadata.items()
    }
    (check,) = result.get_asset_check_evaluations()  # the check ran with the asset: the asset shows it
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "crpbot-demo's permissive rule" in check.description
    assert promoted["status"] == "promoted on the demo rule only" and promoted["model_version"]
    assert promoted["demo_rule"] is True and promoted["passes_configured_gate"] is False
    assert "1 of the latest 3" in promoted["configured_gate_reason"]
    _meta(instance, resources, ["features"], MARCH_KEY)

    after_demo = _meta(instance, resources, ["signals"], MARCH_KEY)  # automation's run: no demo tag
    assert after_demo["new_signals"] == 0 and "latest_signal_ts" not in after_demo
    assert after_demo["status"].startswith(f"model {promoted['model_version']} was promoted by crpbot-demo")

    in_demo = _meta(instance, resources, ["signals"], MARCH_KEY, DEMO_RUN_TAGS)
    assert in_demo["new_signals"] == FEATURES.height - 9  # every complete 10-minute window
    assert in_demo["model_version"] == promoted["model_version"]

    configured = _meta(instance, resources, ["promoted_model"], SYMBOL)  # the configured rule replaces it
    assert configured["status"] == "demoted" and configured["demo_rule"] is False


def test_refusal_only_for_a_demo_rule_promotion_failing_the_gate_outside_the_demo():
    demo_only = {"model_version": "v1", "demo_rule": True, "passes_configured_gate": False}
    assert "crpbot-demo's permissive rule" in refusal(demo_only, {})
    assert refusal(demo_only, DEMO_RUN_TAGS) is None
    assert refusal({**demo_only, "passes_configured_gate": True}, {}) is None
    assert refusal({"model_version": "v1", "demo_rule": False}, {}) is None
    assert refusal({"model_version": "v1"}, {}) is None  # a promotion recorded before the label existed
