"""What an EC2 training launch costs: on-demand prices, per-second billing, and the metadata that says so."""

from __future__ import annotations

import dagster as dg

# On-demand Linux USD/h in PRICE_REGION; other regions differ (configure `prices_per_hour` + `price_region`).
DEFAULT_PRICES_PER_HOUR = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g5.xlarge": 1.006,
}
PRICE_REGION = "us-east-1"


def estimate_cost(instance_type: str, seconds: float, prices_per_hour: dict[str, float]) -> float | None:
    """On-demand cost with per-second billing and EC2's 60 s minimum; None for a type without a price."""
    price = prices_per_hour.get(instance_type)
    return None if price is None else round(price * max(seconds, 60.0) / 3600.0, 4)


def cost_metadata(
    instance_type: str, runtime_s: float, prices_per_hour: dict[str, float], price_region: str, region: str
) -> dict:
    """`ec2_estimated_cost_usd` and `ec2_cost_basis`: the estimate and what it is (and is not) based on."""
    cost = estimate_cost(instance_type, runtime_s, prices_per_hour)
    region_note = "" if price_region == region else f"; the instance ran in {region}, prices differ"
    return {
        # on-demand price; a spot run costs at most this
        "ec2_estimated_cost_usd": dg.MetadataValue.float(cost)
        if cost is not None
        else "unknown instance price",
        "ec2_cost_basis": (
            f"on-demand Linux price per second (60 s minimum) from the {price_region} price table"
            f"{region_note}; EBS volume, S3 and data transfer not included"
        ),
    }
