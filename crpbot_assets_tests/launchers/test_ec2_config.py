"""The EC2 launcher's pure parts: user-data rendering and its time budget, the bootstrap's GPU check, cost
estimate, launch validation, the GPU pool, prod binding."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import dagster as dg
import pytest
import torch

from crpbot_assets.launchers.ec2_bootstrap import (
    MAX_USER_DATA_BYTES,
    USER_DATA_TEMPLATE,
    WATCHDOG_AFTER_DEADLINE_S,
    build_bundle,
    default_requirements,
    extract_job_script,
    render_user_data,
    user_data,
)
from crpbot_assets.launchers.ec2_cost import DEFAULT_PRICES_PER_HOUR, estimate_cost
from crpbot_assets.launchers.ec2_image import SUPPORTED_FAMILIES
from crpbot_assets.launchers.ec2_instances import EC2LaunchSpec, LaunchState
from crpbot_assets.launchers.ec2_pipes import PipesEC2Client
from crpbot_assets.resources import ec2_training_launcher
from crpbot_assets.training.assets import GPU_POOL, lstm_model

REPO = Path(__file__).resolve().parents[2]
PIPES_ENV = {"DAGSTER_PIPES_CONTEXT": "H4sIAAAA+context", "DAGSTER_PIPES_MESSAGES": "H4sIAAAA/messages"}
DEADLINE = 1_800_000_000  # a fixed clock: unix seconds of the launcher's deadline


def _client(region: str = "eu-west-1") -> PipesEC2Client:
    return PipesEC2Client(  # clients make no call while rendering
        bucket="crpbot-prod",
        ec2_client=boto3.client("ec2", region_name=region),
        s3_client=boto3.client("s3", region_name=region),
    )


def _user_data(**spec) -> str:
    return user_data(
        USER_DATA_TEMPLATE,
        launch=EC2LaunchSpec(image_id="ami-1", **spec),
        region="eu-west-1",
        pipes_env=PIPES_ENV,
        bucket="crpbot-prod",
        bundle_key="crpbot/ec2/bundles/ab/x.whl",
        run_prefix="crpbot/ec2/runs/r/j",
        deadline_epoch=DEADLINE + 0.7,
        upload_interval_s=10.0,
    )


def test_rendered_user_data_is_valid_bash_with_every_value_quoted():
    user_data = _user_data(
        max_runtime_s=3600,
        job_env={"OMP_NUM_THREADS": "4", "NOTE": "a b; rm -rf /"},
        pip_index_url="https://pypi.example/simple",
        requirements=("polars==1.30.0", "dagster-pipes==1.13.27"),
    )
    assert subprocess.run(["bash", "-n"], input=user_data, text=True).returncode == 0
    assert "- polars==1.30.0 dagster-pipes==1.13.27 <<'CRPBOT_PY'" in user_data
    assert '--target "$CRPBOT_HOME/site" --index-url https://pypi.example/simple $missing' in user_data
    assert "torch==" not in user_data  # torch comes with the image, never from pip
    job = extract_job_script(user_data)
    assert "export NOTE='a b; rm -rf /'" in job and "export OMP_NUM_THREADS=4" in job
    assert "export DAGSTER_PIPES_CONTEXT=H4sIAAAA+context" in job
    assert "export AWS_REGION=eu-west-1" in job
    assert "crpbot-prod crpbot/ec2/bundles/ab/x.whl dist/x.whl" in job
    assert "crpbot-prod crpbot/ec2/runs/r/j/status.json crpbot/ec2/runs/r/j/job.log" in job


def test_one_time_budget_job_deadline_before_the_launchers_watchdog_after():
    """The launcher's deadline counts from launch; the job must end `finish_margin_s` before it (so it can
    report), the instance's watchdog `WATCHDOG_AFTER_DEADLINE_S` after it (for a dead Dagster host)."""
    user_data = _user_data(max_runtime_s=3600, finish_margin_s=120)
    job = extract_job_script(user_data)
    assert f"remaining=$(( {DEADLINE - 120} - $(date +%s) ))" in job
    assert 'timeout --kill-after=30 "$remaining"' in job  # a third of the margin, at most 30 s
    assert (
        f"watchdog_min=$(( ({DEADLINE} + {WATCHDOG_AFTER_DEADLINE_S} - $(date +%s) + 59) / 60 ))" in user_data
    )
    short = extract_job_script(_user_data(max_runtime_s=60, finish_margin_s=9))
    assert 'timeout --kill-after=3 "$remaining"' in short


def _run_bootstrap(
    tmp_path, nvidia_smi: str, now: int, python: str = "exit 3", **spec
) -> tuple[subprocess.CompletedProcess, str]:
    """The rendered bootstrap under bash with stand-ins for `shutdown`, `nvidia-smi`, the clock and the image's
    Python (`python`: its script body; every call is recorded in python.calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "shutdown.calls"
    stubs = {
        "shutdown": f'echo "$*" >> {calls}',
        "date": f'if [ "$1" = +%s ]; then echo {now}; else /bin/date "$@"; fi',
        "nvidia-smi": nvidia_smi,
        "image-python": f'echo "$*" >> {tmp_path / "python.calls"}\n{python}',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    user_data = _user_data(python_bin=str(bin_dir / "image-python"), **spec)
    result = subprocess.run(
        ["bash", "-c", user_data.replace("/opt/crpbot", str(tmp_path / "opt"))],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, calls.read_text() if calls.exists() else ""


def _python_calls(tmp_path) -> list[str]:
    path = tmp_path / "python.calls"
    return path.read_text().splitlines() if path.exists() else []


def test_bootstrap_fails_at_once_when_the_gpu_cannot_be_driven(tmp_path):
    failing = 'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9'
    result, shutdowns = _run_bootstrap(tmp_path, failing, DEADLINE - 3600, max_runtime_s=3600)
    assert result.returncode == 1
    assert (
        "crpbot: FATAL: nvidia-smi failed on EC2 g4dn.xlarge (ami-1, eu-west-1): NVIDIA-SMI has failed"
        in result.stdout
    )
    assert _python_calls(tmp_path) == []  # nothing ran, nothing was installed
    # watchdog first: the deadline is 60 min away, plus 10 min; then the shutdown of the EXIT trap
    assert shutdowns.splitlines() == ["-h +70 crpbot watchdog: time budget spent", "-h now"]


def test_bootstrap_refuses_an_image_without_torch(tmp_path):
    result, shutdowns = _run_bootstrap(tmp_path, 'echo "Tesla T4, 570.86.15"', DEADLINE - 3600)
    assert "crpbot: GPU Tesla T4, 570.86.15 on EC2 g4dn.xlarge (ami-1, eu-west-1)" in result.stdout
    assert result.returncode == 1
    assert "lacks torch, numpy or boto3 (use a Deep Learning AMI with PyTorch)" in result.stdout
    assert _python_calls(tmp_path) == ["-c import torch, numpy, boto3"]
    assert shutdowns.splitlines()[-1] == "-h now"


# The image's Python: this interpreter (torch, numpy, boto3, polars, pyarrow, dagster-pipes at the host's
# versions), except that pip only records what it was asked and the job stops at its first download.
IMAGE_PYTHON = f"""case "$*" in
  "-m pip "*) exit 0 ;;
  *download_file*) echo "crpbot test: the job started"; exit 3 ;;
esac
exec {sys.executable} "$@"
"""


@pytest.mark.slow  # runs the bootstrap script and the image's python (imports torch): ~2.5 s
def test_bootstrap_installs_nothing_on_an_image_that_has_every_package(tmp_path):
    result, _ = _run_bootstrap(tmp_path, 'echo "Tesla T4, 570.86.15"', DEADLINE - 3600, IMAGE_PYTHON)
    assert "crpbot: the image holds every package; nothing to install" in result.stdout
    assert not any(" pip " in f" {call} " for call in _python_calls(tmp_path))
    assert f"crpbot: torch {torch.__version__}" in result.stdout
    assert "crpbot test: the job started" in (tmp_path / "opt" / "job.log").read_text()


@pytest.mark.slow  # runs the bootstrap script and the image's python (imports torch): ~2.5 s
def test_bootstrap_installs_only_the_pinned_packages_the_image_lacks(tmp_path):
    requirements = ("polars==0.0.1", *default_requirements()[1:])  # the image's polars is another version
    result, _ = _run_bootstrap(
        tmp_path, 'echo "Tesla T4, 570.86.15"', DEADLINE - 3600, IMAGE_PYTHON, requirements=requirements
    )
    assert "crpbot: installing what the image lacks: polars==0.0.1" in result.stdout
    pip = [call for call in _python_calls(tmp_path) if call.startswith("-m pip install")]
    assert pip[0] == f"-m pip install -q --no-deps --target {tmp_path / 'opt' / 'site'} polars==0.0.1"
    assert not any("torch" in call for call in pip)


def test_job_with_no_time_left_after_installs_reports_status_124(tmp_path):
    """Boot and installs that eat the whole budget end the job with the timeout status, and it is reported."""
    job = extract_job_script(_user_data(max_runtime_s=600, finish_margin_s=60))
    job = re.sub(r"\$\(date \+%s\)", str(DEADLINE), job)  # the clock: at the launcher's deadline
    python = tmp_path / "python"
    python.write_text(f'#!/bin/bash\necho "$@" >> {tmp_path / "python.calls"}\n')  # every python call
    python.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "CRPBOT_HOME": str(tmp_path), "CRPBOT_PYTHON": str(python)}
    result = subprocess.run(["bash", "-c", job], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 124
    log = (tmp_path / "job.log").read_text()
    assert "the time budget was spent by boot and installs (60s past the job's deadline)" in log
    assert "crpbot: job exited with status 124" in log
    calls = (tmp_path / "python.calls").read_text()
    assert "crpbot_assets.launchers.ec2_job" not in calls  # the training never started
    assert calls.splitlines()[-1].endswith(
        "crpbot/ec2/runs/r/j/status.json crpbot/ec2/runs/r/j/job.log 124 job.log"
    )


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
    assert DEFAULT_PRICES_PER_HOUR == {"g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g5.xlarge": 1.006}
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
    with pytest.raises(ValueError, match="finish_margin_s must be between 0 and max_runtime_s"):
        EC2LaunchSpec(image_id="ami-1", max_runtime_s=100, finish_margin_s=100)
    for unsupported in ("p3.2xlarge", "c5.xlarge"):
        with pytest.raises(ValueError, match=rf"{unsupported}' is not supported.*Turing and newer"):
            EC2LaunchSpec(image_id="ami-1", instance_type=unsupported)
    EC2LaunchSpec(image_id="ami-1", instance_type="g5.2xlarge")


def test_iam_policy_launches_exactly_the_supported_families():
    import json

    policy = json.loads((REPO / "deploy" / "iam" / "dagster-host-policy.json").read_text())
    launch = next(s for s in policy["Statement"] if s["Sid"] == "LaunchOnlyTaggedGpuInstances")
    assert launch["Condition"]["StringLike"]["ec2:InstanceType"] == [f"{f}.*" for f in SUPPORTED_FAMILIES]
    instance = json.loads((REPO / "deploy" / "iam" / "training-instance-policy.json").read_text())
    writes = next(s for s in instance["Statement"] if s["Action"] == "s3:PutObject")["Resource"]
    assert "arn:aws:s3:::BUCKET/data/lstm_model_runs/*" in writes  # run-scoped models,
    assert "arn:aws:s3:::BUCKET/data/walk_forward_models/*" in writes  # content-addressed fold models
    assert not any("data/lstm_model/" in r for r in writes)  # a job cannot write the promoted key


def test_cost_metadata_names_the_price_region_and_what_it_excludes():
    launch = EC2LaunchSpec(image_id="ami-1")
    state = LaunchState(job_id="j", instance_id="i-1", attempts=1)
    elsewhere = _client("eu-west-1")._metadata(launch, state, 1800, "b/x.whl", "p", [])
    assert elsewhere["ec2_estimated_cost_usd"].value == pytest.approx(0.263)
    assert elsewhere["ec2_cost_basis"] == (
        "on-demand Linux price per second (60 s minimum) from the us-east-1 price table; the instance ran in "
        "eu-west-1, prices differ; EBS volume, S3 and data transfer not included"
    )
    home = _client("us-east-1")._metadata(launch, state, 1800, "b/x.whl", "p", ["i-2"])
    assert "ran in" not in home["ec2_cost_basis"] and home["ec2_unconfirmed_terminations"] == "i-2"


def test_lstm_model_is_in_the_gpu_pool_sized_by_the_production_instance_config(tmp_path):
    import yaml

    assert lstm_model.op.pool == GPU_POOL
    concurrency = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())["concurrency"]
    with dg.instance_for_test(overrides={"concurrency": concurrency}, temp_dir=str(tmp_path)) as instance:
        assert instance.event_log_storage.initialize_concurrency_limit_to_default(GPU_POOL)
        assert instance.event_log_storage.get_concurrency_info(GPU_POOL).slot_count == 1


def test_remote_requirements_pin_this_hosts_versions_and_leave_torch_to_the_image():
    requirements = dict(r.split("==") for r in default_requirements())
    assert set(requirements) == {"polars", "pyarrow", "dagster-pipes"}
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
