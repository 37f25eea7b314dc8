"""Demo promotions stay in the demo: which promotion may produce signals in which run. Pure (no Dagster).

`crpbot-demo` tags every run it launches `crpbot/demo=true` and promotes on a permissive rule (its two synthetic
test months cannot pass the configured one). In such a run `promoted_model` also judges the model by the
configured gate (the asset's default rule, the one automation applies) and records both: `labels()` adds
`demo_rule` and `passes_configured_gate` to its value and metadata. `signals` in any run without the demo tag
refuses a demo-rule promotion that failed the configured gate (`refusal()`), so automation does not paper-trade
the demo's model after the demo; materializing `promoted_model` with the configured rule replaces it.
"""

from __future__ import annotations

from collections.abc import Mapping

DEMO_RUN_TAG = "crpbot/demo"
DEMO_RUN_TAGS = {DEMO_RUN_TAG: "true"}


def is_demo_run(tags: Mapping[str, str]) -> bool:
    return tags.get(DEMO_RUN_TAG) == "true"


def labels(demo_run: bool, passes_configured_gate: bool, configured_gate_reason: str) -> dict:
    """What promoted_model records about the rule that decided: value and metadata fields."""
    return {
        "demo_rule": demo_run,
        "passes_configured_gate": passes_configured_gate,
        "configured_gate_reason": configured_gate_reason,
    }


def refusal(promotion: Mapping, run_tags: Mapping[str, str]) -> str | None:
    """Why a run with `run_tags` must not score with `promotion` (promoted_model's value); None if it may."""
    if not promotion.get("demo_rule") or promotion.get("passes_configured_gate") or is_demo_run(run_tags):
        return None
    return (
        f"model {promotion.get('model_version')} was promoted by crpbot-demo's permissive rule and fails the "
        f"configured gate ({promotion.get('configured_gate_reason', 'not judged')}); no signals outside the "
        "demo. Materialize promoted_model with the configured rule to replace it."
    )
