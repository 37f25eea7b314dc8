"""The EC2 orphan sweeper against moto's EC2 server on loopback and a real (temporary) Dagster instance."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import boto3
import dagster as dg
import pytest

from crpbot_assets.common.settings import REPO_ROOT
from crpbot_assets.launchers.ec2_instances import LAUNCHER_TAG
from crpbot_assets.launchers.sensors import ec2_orphan_sweeper, sweep

pytestmark = pytest.mark.slow


@pytest.fixture
def ec2(moto):
    return boto3.client("ec2")


def launch(ec2, tags: dict[str, str], instance_type: str = "g4dn.xlarge") -> str:
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    reply = ec2.run_instances(
        ImageId=image,
        InstanceType=instance_type,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}] if tag_list else [],
    )
    return reply["Instances"][0]["InstanceId"]


def add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> str:
    run = instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", status=status))
    return run.run_id


def states(ec2) -> dict[str, str]:
    reservations = ec2.describe_instances()["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}


def test_sweeper_terminates_only_old_crpbot_instances_whose_run_is_over(ec2, instance):
    crpbot = {LAUNCHER_TAG: "ec2"}
    live = launch(ec2, {**crpbot, "dagster/run-id": add_run(instance, dg.DagsterRunStatus.STARTED)})
    failed = launch(ec2, {**crpbot, "dagster/run-id": add_run(instance, dg.DagsterRunStatus.FAILURE)})
    unknown = launch(ec2, {**crpbot, "dagster/run-id": "0000-deleted-run"}, instance_type="g5.xlarge")
    foreign = launch(ec2, {"dagster/run-id": "0000-deleted-run"})  # not started by crpbot: never touched

    # within the grace period nothing is terminated, whatever its run
    assert sweep(ec2, instance, datetime.now(UTC), grace_s=1800, max_runtime_s=3 * 3600) == []
    assert set(states(ec2).values()) == {"running"}

    later = datetime.now(UTC) + timedelta(hours=1)  # an hour after launch: past the 30 min grace
    orphans = {o.instance_id: o for o in sweep(ec2, instance, later, grace_s=1800, max_runtime_s=3 * 3600)}
    assert set(orphans) == {failed, unknown}
    assert orphans[failed].run_status == "FAILURE" and orphans[unknown].run_status == "unknown run"
    # the watchdog would have stopped them 3 h + 10 min after launch: about 2 h 10 min left, on-demand
    assert orphans[failed].cost_saved_usd == pytest.approx(0.526 * (2 + 1 / 6), abs=0.01)
    assert orphans[unknown].cost_saved_usd == pytest.approx(1.006 * (2 + 1 / 6), abs=0.01)
    after = states(ec2)
    assert after[live] == "running" and after[foreign] == "running"
    assert {after[failed], after[unknown]} <= {"shutting-down", "terminated"}


def test_sweeper_sensor_reports_what_it_terminated(ec2, instance, monkeypatch):
    monkeypatch.setenv("CRPBOT_SWEEPER_GRACE_S", "0")
    orphan = launch(
        ec2, {LAUNCHER_TAG: "ec2", "dagster/run-id": add_run(instance, dg.DagsterRunStatus.CANCELED)}
    )
    result = ec2_orphan_sweeper(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason)
    assert f"terminated 1 orphaned instance(s) ({orphan})" in result.skip_message
    assert "saved" in result.skip_message
    assert states(ec2)[orphan] in {"shutting-down", "terminated"}
    again = ec2_orphan_sweeper(dg.build_sensor_context(instance=instance))
    assert again.skip_message == "no orphaned crpbot EC2 instance"


def test_sweeper_is_off_locally_and_on_in_prod():
    assert ec2_orphan_sweeper.default_status == dg.DefaultSensorStatus.STOPPED  # CRPBOT_ENV=local in tests
    code = (
        "from crpbot_assets.launchers.sensors import ec2_orphan_sweeper as s; print(s.default_status.value)"
    )
    env = {**os.environ, "CRPBOT_ENV": "prod", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "RUNNING"
