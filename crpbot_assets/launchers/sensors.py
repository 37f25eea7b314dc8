"""The EC2 orphan sweeper: ends training instances whose Dagster run is gone, before their own watchdog does.

Every instance the EC2 launcher starts carries `crpbot/launcher=ec2` and Dagster's `dagster/run-id` tag.
An instance still pending or running whose run is no longer in progress (failed, canceled, deleted, or its
host died and run monitoring marked it failed), and which is older than a grace period, is an orphan.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3
import dagster as dg

from crpbot_assets.common.settings import crpbot_env, interval_setting
from crpbot_assets.launchers.ec2_bootstrap import WATCHDOG_AFTER_DEADLINE_S
from crpbot_assets.launchers.ec2_cost import DEFAULT_PRICES_PER_HOUR
from crpbot_assets.launchers.ec2_instances import LAUNCHER_TAG, EC2LaunchSpec

RUN_ID_TAG = "dagster/run-id"
IN_PROGRESS = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


@dataclass(frozen=True)
class Orphan:
    instance_id: str
    instance_type: str
    run_id: str | None
    run_status: str  # the run's status, or "unknown run"/"no run tag"
    age_s: float
    cost_saved_usd: float | None  # on-demand price x the time left before the instance's own watchdog


def find_orphans(
    reservations: list[dict],
    run_status_of: Callable[[str], dg.DagsterRunStatus | None],
    now: datetime,
    grace_s: float,
    max_runtime_s: float,
    prices_per_hour: dict[str, float],
) -> list[Orphan]:
    """The orphans among `describe_instances` reservations (already filtered to crpbot's live instances)."""
    orphans = []
    watchdog_s = max_runtime_s + WATCHDOG_AFTER_DEADLINE_S  # the launcher's budget counts from launch
    for reservation in reservations:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            age = (now - instance["LaunchTime"]).total_seconds()
            run_id = tags.get(RUN_ID_TAG)
            status = run_status_of(run_id) if run_id else None
            if age < grace_s or status in IN_PROGRESS:
                continue
            price = prices_per_hour.get(instance["InstanceType"])
            left_s = max(0.0, watchdog_s - age)
            orphans.append(
                Orphan(
                    instance_id=instance["InstanceId"],
                    instance_type=instance["InstanceType"],
                    run_id=run_id,
                    run_status=status.value if status else ("unknown run" if run_id else "no run tag"),
                    age_s=round(age, 1),
                    cost_saved_usd=None if price is None else round(price * left_s / 3600, 4),
                )
            )
    return orphans


def sweep(
    ec2, instance: dg.DagsterInstance, now: datetime, grace_s: float, max_runtime_s: float
) -> list[Orphan]:
    """Terminate crpbot's orphaned instances; returns what was terminated."""
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{LAUNCHER_TAG}", "Values": ["ec2"]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    reservations = [r for page in pages for r in page["Reservations"]]

    def run_status_of(run_id: str) -> dg.DagsterRunStatus | None:
        run = instance.get_run_by_id(run_id)
        return run.status if run else None

    orphans = find_orphans(reservations, run_status_of, now, grace_s, max_runtime_s, DEFAULT_PRICES_PER_HOUR)
    if orphans:
        ec2.terminate_instances(InstanceIds=[o.instance_id for o in orphans])
    return orphans


@dg.sensor(
    name="ec2_orphan_sweeper",
    minimum_interval_seconds=interval_setting("CRPBOT_SWEEPER_INTERVAL_S", 600),
    # on in prod (training runs on EC2), off locally where nothing is launched there
    default_status=dg.DefaultSensorStatus.RUNNING
    if crpbot_env() == "prod"
    else dg.DefaultSensorStatus.STOPPED,
)
def ec2_orphan_sweeper(context: dg.SensorEvaluationContext):
    """Every 10 minutes: terminate EC2 training instances (tag `crpbot/launcher=ec2`) whose Dagster run is no
    longer in progress and which are older than CRPBOT_SWEEPER_GRACE_S (default 30 min); reports each with
    the estimated cost saved (on-demand price until the instance's own watchdog would have stopped it)."""
    grace_s = float(os.environ.get("CRPBOT_SWEEPER_GRACE_S", 1800))
    max_runtime_s = float(os.environ.get("CRPBOT_EC2_MAX_RUNTIME_S", EC2LaunchSpec.max_runtime_s))
    ec2 = boto3.client("ec2", region_name=os.environ.get("AWS_REGION"))
    orphans = sweep(ec2, context.instance, datetime.now(UTC), grace_s, max_runtime_s)
    if not orphans:
        return dg.SkipReason("no orphaned crpbot EC2 instance")
    saved = sum(o.cost_saved_usd or 0.0 for o in orphans)
    for o in orphans:
        context.log.warning(
            f"terminated {o.instance_id} ({o.instance_type}, {o.age_s / 60:.0f} min old): run {o.run_id} is "
            f"{o.run_status}; est. ${o.cost_saved_usd} saved"
        )
    return dg.SkipReason(
        f"terminated {len(orphans)} orphaned instance(s) ({', '.join(o.instance_id for o in orphans)}), "
        f"est. ${saved:.2f} saved"
    )
