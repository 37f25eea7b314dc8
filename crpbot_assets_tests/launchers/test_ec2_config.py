"""The EC2 launcher's pure parts: user-data rendering, cost estimate, launch validation, prod binding."""

import subprocess
import zipfile

import boto3
import dagster as dg
import pytest

from crpbot_assets.launchers.ec2 import (
    DEFAULT_PRICES_PER_HOUR,
    MAX_USER_DATA_BYTES,
    EC2LaunchSpec,
    PipesEC2Client,
    build_bundle,
    default_requirements,
    estimate_cost,
    extract_job_script,
    render_user_data,
)
from crpbot_assets.resources import ec2_training_launcher

PIPES_ENV = {"DAGSTER_PIPES_CONTEXT": "H4sIAAAA+context", "DAGSTER_PIPES_MESSAGES": "H4sIAAAA/messages"}


def _user_data(**spec) -> str:
    region = "eu-west-1"  # clients make no call while rendering
    client = PipesEC2Client(
        bucket="crpbot-prod",
        ec2_client=boto3.client("ec2", region_name=region),
        s3_client=boto3.client("s3", region_name=region),
    )
    return client.user_data(
        PIPES_ENV,
        EC2LaunchSpec(image_id="ami-1", **spec),
        "crpbot/ec2/bundles/ab/x.whl",
        "crpbot/ec2/runs/r/status.json",
    )


def test_rendered_user_data_is_valid_bash_with_every_value_quoted():
    user_data = _user_data(
        max_runtime_s=3600,
        job_env={"OMP_NUM_THREADS": "4", "NOTE": "a b; rm -rf /"},
        pip_index_url="https://download.pytorch.org/whl/cu124",
        requirements=("torch==2.13.0",),
    )
    assert subprocess.run(["bash", "-n"], input=user_data, text=True).returncode == 0
    assert "shutdown -h +75 " in user_data  # 60 min job + 15 min grace
    assert "timeout --kill-after=60 3600 " in user_data
    assert "--extra-index-url https://download.pytorch.org/whl/cu124 torch==2.13.0" in user_data
    job = extract_job_script(user_data)
    assert "export NOTE='a b; rm -rf /'" in job and "export OMP_NUM_THREADS=4" in job
    assert "export DAGSTER_PIPES_CONTEXT=H4sIAAAA+context" in job
    assert "export AWS_REGION=eu-west-1" in job
    assert "crpbot-prod crpbot/ec2/bundles/ab/x.whl dist/x.whl" in job


def test_render_refuses_missing_unused_and_oversized_values():
    with pytest.raises(KeyError, match="needs values for \\['b'\\]"):
        render_user_data("{{a}} {{b}}", {"a": "1"})
    with pytest.raises(KeyError, match="no placeholders for \\['c'\\]"):
        render_user_data("{{a}}", {"a": "1", "c": "2"})
    with pytest.raises(ValueError, match="EC2 allows 16384"):
        render_user_data("{{a}}", {"a": "x" * (MAX_USER_DATA_BYTES + 1)})
    with pytest.raises(ValueError, match="no CRPBOT_JOB section"):
        extract_job_script("#!/bin/bash\necho hi\n")


def test_cost_estimate_uses_per_second_billing_with_a_minute_minimum():
    assert DEFAULT_PRICES_PER_HOUR == {
        "g4dn.xlarge": 0.526,
        "g4dn.2xlarge": 0.752,
        "g5.xlarge": 1.006,
        "p3.2xlarge": 3.06,
    }
    assert estimate_cost("g4dn.xlarge", 1800, DEFAULT_PRICES_PER_HOUR) == pytest.approx(0.263)
    assert estimate_cost("g5.xlarge", 10, DEFAULT_PRICES_PER_HOUR) == pytest.approx(1.006 / 60, abs=1e-4)
    assert estimate_cost("p4d.24xlarge", 3600, DEFAULT_PRICES_PER_HOUR) is None
    assert estimate_cost("p4d.24xlarge", 3600, {"p4d.24xlarge": 32.77}) == pytest.approx(32.77)


def test_launch_spec_validation_names_the_problem():
    with pytest.raises(ValueError, match="market 'reserved'"):
        EC2LaunchSpec(image_id="ami-1", market="reserved")
    with pytest.raises(ValueError, match="needs an image_id"):
        EC2LaunchSpec(image_id="")
    with pytest.raises(ValueError, match="max_runtime_s must be positive"):
        EC2LaunchSpec(image_id="ami-1", max_runtime_s=0)


def test_remote_requirements_pin_this_hosts_versions_without_local_tags():
    requirements = dict(r.split("==") for r in default_requirements())
    assert set(requirements) == {"torch", "numpy", "polars", "pyarrow", "dagster-pipes", "boto3"}
    assert "+" not in requirements["torch"]
    assert requirements["dagster-pipes"] == dg.__version__


@pytest.mark.slow
def test_bundle_is_a_wheel_of_the_package_and_is_memoized():
    wheel = build_bundle()
    assert wheel.name.startswith("crpbot_assets-") and wheel.suffix == ".whl"
    assert build_bundle() == wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert "crpbot_assets/launchers/ec2_job.py" in names and "crpbot_assets/training/pipes_main.py" in names
    assert not any("__pycache__" in n or n.startswith("crpbot_assets_tests") for n in names)


def test_prod_binding_reads_env_vars(monkeypatch):
    for name, value in {
        "CRPBOT_EC2_BUCKET": "crpbot-prod",
        "CRPBOT_EC2_AMI": "ami-0abc",
        "AWS_REGION": "us-east-1",
        "CRPBOT_EC2_MARKET": "spot",
        "CRPBOT_EC2_SECURITY_GROUP_IDS": "sg-1, sg-2",
        "CRPBOT_EC2_MAX_RUNTIME_S": "5400",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CRPBOT_EC2_SUBNET_ID", raising=False)
    launcher = ec2_training_launcher()
    with dg.build_resources({"training_launcher": launcher}) as resources:
        spec = resources.training_launcher.launch_spec()
    assert (spec.image_id, spec.market, spec.instance_type, spec.max_runtime_s) == (
        "ami-0abc",
        "spot",
        "g4dn.xlarge",
        5400,
    )
    assert spec.security_group_ids == ("sg-1", "sg-2") and spec.subnet_id is None
    assert resources.training_launcher.bucket == "crpbot-prod"
