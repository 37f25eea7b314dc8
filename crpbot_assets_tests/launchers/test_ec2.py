"""PipesEC2Client against moto's AWS server on loopback; the "instance" is played by a thread of this test.

The job scenario runs the job part of the rendered user data in a subprocess (bundle fetched from the moto S3,
installed, Pipes over S3, no dagster importable), so the whole round trip is real apart from the machine.
"""

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import boto3
import dagster as dg
import pytest
import requests
from moto.server import ThreadedMotoServer

from crpbot_assets.common.partitions import symbol_partitions
from crpbot_assets.common.storage import Storage
from crpbot_assets.launchers.ec2 import EC2TrainingLauncher, extract_job_script

REPO = Path(__file__).resolve().parents[2]
BUCKET = "crpbot-test"
TEST_JOB = "crpbot_assets_tests.launchers.pipes_job"


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url, monkeypatch):
    """A reset moto account: bucket, instance profile, subnet, security group, key pair, AMI."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_EC2", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ec2, s3 = boto3.client("ec2"), boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    boto3.client("iam").create_instance_profile(InstanceProfileName="crpbot-train")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    return SimpleNamespace(
        ec2=ec2, s3=s3, env=env,
        ami=ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"],
        subnet=ec2.describe_subnets()["Subnets"][0]["SubnetId"],
        sg=ec2.create_security_group(GroupName="crpbot", Description="crpbot", VpcId=vpc)["GroupId"],
        key=ec2.create_key_pair(KeyName="crpbot")["KeyName"],
    )


def _launcher(aws, **overrides) -> EC2TrainingLauncher:
    config = dict(bucket=BUCKET, image_id=aws.ami, region="us-east-1", market="spot", subnet_id=aws.subnet,
                  security_group_ids=aws.sg, iam_instance_profile="crpbot-train", key_name=aws.key,
                  max_runtime_s=120, poll_interval_s=0.2, message_interval_s=0.2, upload_interval_s=0.5,
                  entry_module=TEST_JOB)
    return EC2TrainingLauncher(**{**config, **overrides})


class JobConfig(dg.Config):
    fail: bool = False
    sleep_s: float = 0.0


@dg.asset(partitions_def=symbol_partitions)
def lstm_model(context: dg.AssetExecutionContext, config: JobConfig, training_launcher: EC2TrainingLauncher):
    symbol = context.partition_key
    extras = {"symbol": symbol, "dataset_uri": f"s3://{BUCKET}/data/training_dataset/{symbol}.parquet",
              "model_uri": f"s3://{BUCKET}/data/lstm_model/{symbol}.bin",
              "config": {"epochs": 3, "fail": config.fail, "sleep_s": config.sleep_s}}
    return training_launcher.run(context, extras).get_materialize_result()


class SimulatedInstance(threading.Thread):
    """Plays the launched instance: `job` runs the user data's job and then stays up (a slow shutdown),
    `die` terminates it at once (a lost instance), `interrupt` cancels the Dagster run, `hang` does nothing."""

    def __init__(self, aws, home: Path, scenario: str):
        super().__init__(daemon=True)
        self.aws, self.home, self.scenario = aws, home, scenario
        self.instance_id = self.user_data = self.job_output = self.error = None

    def run(self):
        try:
            self.instance_id = self._wait_for_launch()
            attribute = self.aws.ec2.describe_instance_attribute(InstanceId=self.instance_id, Attribute="userData")
            self.user_data = base64.b64decode(attribute["UserData"]["Value"]).decode()
            if self.scenario == "job":
                self.job_output = self._run_job()
            elif self.scenario == "die":
                self.aws.ec2.terminate_instances(InstanceIds=[self.instance_id])
            elif self.scenario == "interrupt":
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGINT)
        except Exception as exc:  # surfaced by the test
            self.error = exc

    def _wait_for_launch(self) -> str:
        for _ in range(300):
            reservations = self.aws.ec2.describe_instances(
                Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
            if reservations:
                return reservations[0]["Instances"][0]["InstanceId"]
            time.sleep(0.1)
        raise TimeoutError("no instance was launched")

    def _run_job(self) -> subprocess.CompletedProcess:
        self.home.mkdir()
        (self.home / "job.sh").write_text(extract_job_script(self.user_data))
        blocker = self.home / "no_dagster" / "dagster"  # the remote job must not need dagster itself
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text("raise ImportError('the remote job imported dagster')\n")
        env = {"PATH": os.environ["PATH"], "HOME": str(self.home), **self.aws.env,
               "CRPBOT_HOME": str(self.home), "CRPBOT_PYTHON": sys.executable,
               "PYTHONPATH": f"{blocker.parent}:{REPO}"}
        return subprocess.run(["bash", "job.sh"], cwd=self.home, env=env, capture_output=True, text=True,
                              timeout=120)


def _run(aws, instance, tmp_path, scenario: str, launcher=None, **config):
    Storage(f"s3://{BUCKET}/data/training_dataset").write_bytes("BTC-USD.parquet", b"synthetic dataset bytes")
    sim = SimulatedInstance(aws, tmp_path / "instance", scenario)
    sim.start()
    result = dg.materialize(
        [lstm_model], partition_key="BTC-USD", instance=instance, raise_on_error=False,
        resources={"training_launcher": launcher or _launcher(aws)},
        run_config={"ops": {"lstm_model": {"config": config}}},
    )
    sim.join(timeout=60)
    assert sim.error is None, sim.error
    return result, sim


def _state(aws, instance_id: str) -> str:
    return aws.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def _failure_message(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a step failure"
    error, messages = failures[0].step_failure_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_round_trip_on_simulated_instance(aws, instance, tmp_path):
    result, sim = _run(aws, instance, tmp_path, "job")
    assert sim.job_output.returncode == 0, sim.job_output.stdout + sim.job_output.stderr
    assert result.success

    # model artifact written to S3 by the job
    model = Storage(f"s3://{BUCKET}/data/lstm_model").read_bytes("BTC-USD.bin")
    assert len(model) == 32

    # materialization from the job, plus the launcher's metadata
    materialization = result.asset_materializations_for_node("lstm_model")[0]
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["symbol"] == "BTC-USD" and metadata["model_bytes"] == 32
    assert metadata["ec2_instance_id"] == sim.instance_id
    assert metadata["ec2_instance_type"] == "g4dn.xlarge" and metadata["ec2_market"] == "spot"
    assert metadata["ec2_region"] == "us-east-1"
    assert metadata["ec2_estimated_cost_usd"] == pytest.approx(0.526 * max(metadata["ec2_runtime_s"], 60) / 3600,
                                                               abs=1e-3)
    assert instance.get_latest_materialization_event(dg.AssetKey("lstm_model")) is not None

    # logs came back through Pipes, and the job ran from the installed bundle, not the repository
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert sum("epoch" in m and "dataset bytes" in m for m in messages) == 3
    assert any(f"from {sim.home / 'bundle' / 'crpbot_assets'}" in m for m in messages), messages

    # the instance was terminated by the client (the simulated machine never shut itself down)
    assert _state(aws, sim.instance_id) == "terminated"


def test_launch_parameters_tags_and_user_data(aws, instance, tmp_path):
    result, sim = _run(aws, instance, tmp_path, "job")
    assert result.success
    described = aws.ec2.describe_instances(InstanceIds=[sim.instance_id])["Reservations"][0]["Instances"][0]
    assert described["ImageId"] == aws.ami and described["InstanceType"] == "g4dn.xlarge"
    assert described["InstanceLifecycle"] == "spot"
    assert described["SubnetId"] == aws.subnet and [g["GroupId"] for g in described["SecurityGroups"]] == [aws.sg]
    assert described["IamInstanceProfile"]["Arn"].endswith("instance-profile/crpbot-train")
    assert described["KeyName"] == aws.key and described["MetadataOptions"]["HttpTokens"] == "required"
    behaviour = aws.ec2.describe_instance_attribute(InstanceId=sim.instance_id,
                                                    Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["dagster/run-id"] == result.run_id
    assert tags["dagster/asset-key"] == "lstm_model" and tags["dagster/partition"] == "BTC-USD"
    volume_tags = {t["Key"]: t["Value"] for t in aws.ec2.describe_volumes()["Volumes"][0]["Tags"]}
    assert volume_tags["dagster/run-id"] == result.run_id

    user_data = sim.user_data
    assert subprocess.run(["bash", "-n"], input=user_data, text=True).returncode == 0
    assert "shutdown -h +17 " in user_data  # ceil(120 s / 60) + 15 min of boot/install grace
    assert "trap '" in user_data and "shutdown -h now' EXIT" in user_data
    assert "timeout --kill-after=60 120 " in user_data
    assert "'torch==2.13.0'" in user_data and "'dagster-pipes==" in user_data
    assert "crpbot_assets.launchers.ec2_job crpbot_assets_tests.launchers.pipes_job" in user_data
    assert "{{" not in user_data


def test_job_failure_fails_the_run_and_terminates(aws, instance, tmp_path):
    result, sim = _run(aws, instance, tmp_path, "job", fail=True)
    assert sim.job_output.returncode != 0
    assert not result.success
    message = _failure_message(result)
    assert f"training job on {sim.instance_id} exited with status 1" in message
    assert _state(aws, sim.instance_id) == "terminated"
    assert not Storage(f"s3://{BUCKET}/data/lstm_model").exists("BTC-USD.bin")
    pipes_errors = [e for e in instance.all_logs(result.run_id) if "closed with exception" in e.user_message]
    assert pipes_errors, "the job's exception should come back through Pipes"


def test_instance_death_is_a_failure_with_its_reason(aws, instance, tmp_path):
    result, sim = _run(aws, instance, tmp_path, "die")
    assert not result.success
    message = _failure_message(result)
    assert f"instance {sim.instance_id} is terminated before the training job finished" in message
    assert "Client.UserInitiatedShutdown" in message


def test_timeout_terminates(aws, instance, tmp_path):
    result, sim = _run(aws, instance, tmp_path, "hang", launcher=_launcher(aws, max_runtime_s=2))
    assert not result.success
    assert "exceeded its max runtime of 2s" in _failure_message(result)
    assert _state(aws, sim.instance_id) == "terminated"


def test_cancellation_terminates(aws, instance, tmp_path):
    result, sim = _run(aws, instance, tmp_path, "interrupt")
    assert not result.success
    assert any(e.event_type_value == "STEP_FAILURE" for e in result.all_events)
    assert _state(aws, sim.instance_id) == "terminated"
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(f"run interrupted: terminating {sim.instance_id}" in m for m in messages)


def test_local_uris_are_refused_before_launch(aws):
    extras = {"symbol": "BTC-USD", "dataset_uri": "/tmp/data/ds.parquet", "model_uri": f"s3://{BUCKET}/m.bin"}
    with pytest.raises(ValueError, match=r"extras\['dataset_uri'\]='/tmp/data/ds.parquet'.*CRPBOT_STORAGE_URI"):
        _launcher(aws).run(None, extras)
    assert aws.ec2.describe_instances()["Reservations"] == []
