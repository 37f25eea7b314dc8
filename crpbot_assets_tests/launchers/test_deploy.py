"""deploy/: the production dagster.yaml runs against a real Postgres (started here) with compute logs on S3 (moto),
and the IAM policies are well-formed and cover what the launcher calls."""

import json
import shutil
from pathlib import Path

import boto3
import dagster as dg
import pytest

from crpbot_assets_tests.postgres_server import throwaway_postgres

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL server on loopback; its port."""
    with throwaway_postgres() as port:
        yield port


@dg.asset
def hello(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    print("hello from the compute log")
    return dg.MaterializeResult(metadata={"rows": 1})


@pytest.mark.slow
def test_production_instance_on_postgres_and_s3(postgres, moto, tmp_path, monkeypatch):
    env = {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres),
        "DAGSTER_PG_DB": "postgres",
        "DAGSTER_PG_USER": "dagster",
        "DAGSTER_PG_PASSWORD": "unused-with-trust",
        "CRPBOT_S3_BUCKET": "crpbot-logs",
        "DAGSTER_HOME": str(tmp_path),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket="crpbot-logs")
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        result = dg.materialize([hello], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).is_success
        assert instance.get_latest_materialization_event(dg.AssetKey("hello")) is not None
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="crpbot-logs").get("Contents", [])]
    assert any(k.startswith("dagster/compute-logs/") for k in keys), keys


def _actions(policy: dict) -> set[str]:
    return {
        a
        for statement in policy["Statement"]
        for a in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }


def test_iam_policies_cover_the_launcher_and_nothing_broad():
    host = json.loads((DEPLOY / "iam" / "dagster-host-policy.json").read_text())
    instance = json.loads((DEPLOY / "iam" / "training-instance-policy.json").read_text())
    trust = json.loads((DEPLOY / "iam" / "training-instance-trust.json").read_text())
    assert {
        "ec2:RunInstances",
        "ec2:TerminateInstances",
        "ec2:DescribeInstances",
        "ec2:DescribeImages",
        "ec2:GetConsoleOutput",
        "ec2:CreateTags",
        "iam:PassRole",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:ListBucket",
    } <= _actions(host)
    assert _actions(instance) == {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    for policy in (host, instance):
        for statement in policy["Statement"]:
            assert "*" not in str(statement["Action"]), statement
            describe_only = _actions({"Statement": [statement]}) <= {
                "ec2:DescribeInstances",
                "ec2:DescribeImages",
            }
            assert statement["Resource"] != "*" or describe_only, statement
    terminate = next(s for s in host["Statement"] if "ec2:TerminateInstances" in str(s["Action"]))
    assert terminate["Condition"]["StringEquals"] == {"ec2:ResourceTag/crpbot/launcher": "ec2"}


def test_compose_env_file_and_image_agree_with_the_code():
    import re

    import yaml

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"postgres", "webserver", "daemon"} <= set(compose["services"])
    assert "dagster-daemon" in compose["services"]["daemon"]["command"]
    assert compose["services"]["webserver"]["build"]["dockerfile"] == "deploy/Dockerfile"
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (DEPLOY / "crpbot.env.example").read_text(), re.M)
    )
    needed = set(re.findall(r"env: ([A-Z0-9_]+)", (DEPLOY / "dagster.yaml").read_text())) - {"DAGSTER_HOME"}
    needed -= set(compose["x-dagster"]["environment"])  # set by compose itself
    source = "\n".join(p.read_text() for p in (REPO / "crpbot_assets").rglob("*.py"))
    needed |= set(re.findall(r'EnvVar(?:\.int)?\("([A-Z0-9_]+)"\)', source))
    needed |= set(re.findall(r'"(CRPBOT_EC2_[A-Z0-9_]+)"', source))
    assert needed <= documented, needed - documented
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for path in re.findall(r"^COPY (.+) \./?\S*$", dockerfile, re.M):
        for name in path.split():
            assert (REPO / name).exists(), name
