"""PipesEC2Client against moto's AWS server on loopback; the "instance" is played by a thread of this test.

The job scenario runs the job part of the rendered user data in a subprocess: the bundle is fetched from the
moto S3 and installed, Pipes context and messages go through S3, dagster itself is not importable, and the real
training entry point trains the real `lstm_model` asset's model. Only the machine is simulated.
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
from moto.server import ThreadedMotoServer

from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import Storage
from crpbot_assets.launchers.ec2 import EC2TrainingLauncher, extract_job_script
from crpbot_assets.training import dataset as ds
from crpbot_assets.training.artifacts import load_artifact
from crpbot_assets.training.assets import dataset_relative_path, lstm_model, model_relative_path
from crpbot_assets_tests.training.helpers import SMALL_CONFIG, hourly_sentiment, planted

REPO = Path(__file__).resolve().parents[2]
BUCKET = "crpbot-test"
DATA = f"s3://{BUCKET}/data"
# Every test here talks to moto's server; the job scenarios also run subprocesses.
pytestmark = pytest.mark.slow
TINY_MODEL = {
    "hidden_size": 8,
    "num_layers": 1,
    "sequence_length": 16,
    "batch_size": 256,
    "epochs": 2,
    "sentiment_ablation": False,
}


@pytest.fixture(scope="module")
def aws():
    """moto's server on loopback with a bucket, instance profile, subnet, security group, key pair and AMI."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_EC2", "AWS_SESSION_TOKEN"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        ec2, s3 = boto3.client("ec2"), boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        boto3.client("iam").create_instance_profile(InstanceProfileName="crpbot-train")
        vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
        yield SimpleNamespace(
            ec2=ec2,
            s3=s3,
            env=env,
            ami=ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"],
            subnet=ec2.describe_subnets()["Subnets"][0]["SubnetId"],
            sg=ec2.create_security_group(GroupName="crpbot", Description="crpbot", VpcId=vpc)["GroupId"],
            key=ec2.create_key_pair(KeyName="crpbot")["KeyName"],
        )
    server.stop()


@pytest.fixture(scope="module")
def dagster_instance(tmp_path_factory):
    """One Dagster instance for the module (each test is its own run)."""
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("dagster_home"))) as instance:
        yield instance


def _launcher(aws, **overrides) -> EC2TrainingLauncher:
    config = dict(
        bucket=BUCKET,
        image_id=aws.ami,
        region="us-east-1",
        market="spot",
        subnet_id=aws.subnet,
        security_group_ids=aws.sg,
        iam_instance_profile="crpbot-train",
        key_name=aws.key,
        max_runtime_s=120,
        poll_interval_s=0.2,
        message_interval_s=0.2,
        upload_interval_s=0.5,
    )
    return EC2TrainingLauncher(**{**config, **overrides})


class SimulatedInstance(threading.Thread):
    """Plays the launched instance: `job` runs the user data's job and then stays up (a slow shutdown),
    `die` terminates it at once (a lost instance), `interrupt` cancels the Dagster run, `hang` does nothing."""

    def __init__(self, aws, home: Path, scenario: str):
        super().__init__(daemon=True)
        self.aws, self.home, self.scenario = aws, home, scenario
        self.stopped = threading.Event()  # the run ended: stop waiting for a launch
        self.instance_id = self.described = self.volumes = self.user_data = self.job_output = self.error = (
            None
        )

    def run(self):
        try:
            self.instance_id = self._wait_for_launch()
            ec2 = self.aws.ec2
            self.described = ec2.describe_instances(InstanceIds=[self.instance_id])["Reservations"][0][
                "Instances"
            ][0]
            self.volumes = ec2.describe_volumes(
                Filters=[{"Name": "attachment.instance-id", "Values": [self.instance_id]}]
            )["Volumes"]
            attribute = self.aws.ec2.describe_instance_attribute(
                InstanceId=self.instance_id, Attribute="userData"
            )
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
        while not self.stopped.wait(0.1):
            reservations = self.aws.ec2.describe_instances(
                Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
            )["Reservations"]
            if reservations:
                return reservations[0]["Instances"][0]["InstanceId"]
        raise TimeoutError("no instance was launched")

    def _run_job(self) -> subprocess.CompletedProcess:
        self.home.mkdir()
        (self.home / "job.sh").write_text(extract_job_script(self.user_data))
        blocker = self.home / "no_dagster" / "dagster"  # the remote job must not need dagster itself
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text("raise ImportError('the remote job imported dagster')\n")
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            **self.aws.env,
            "CRPBOT_HOME": str(self.home),
            "CRPBOT_PYTHON": sys.executable,
            "PYTHONPATH": f"{blocker.parent}:{REPO}",
        }
        return subprocess.run(
            ["bash", "job.sh"], cwd=self.home, env=env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture(scope="module")
def dataset_bytes() -> bytes:
    candles, features = planted(3000)
    dataset = ds.build_dataset(features, hourly_sentiment(3000), candles, SMALL_CONFIG, "BTC-USD")
    return ds.to_parquet_bytes(dataset)


def _run(
    aws, instance, tmp_path, scenario: str, launcher=None, dataset: bytes | None = None, symbol="BTC-USD"
):
    """Materialize the real `lstm_model` asset for `symbol` with the EC2 launcher while `scenario` plays out."""
    if dataset is not None:
        Storage(DATA).write_bytes(dataset_relative_path(symbol), dataset)
    sim = SimulatedInstance(aws, tmp_path / "instance", scenario)
    sim.start()
    result = dg.materialize(
        [lstm_model],
        partition_key=symbol,
        instance=instance,
        raise_on_error=False,
        resources={
            "training_launcher": launcher or _launcher(aws),
            "storage": StorageResource(base_uri=DATA),
        },
        run_config={"ops": {"lstm_model": {"config": TINY_MODEL}}},
    )
    sim.stopped.set()
    sim.join(timeout=60)
    assert sim.error is None, sim.error
    return result, sim


def _state(aws, instance_id: str) -> str:
    return aws.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"][
        "Name"
    ]


def _failure_message(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a step failure"
    error, messages = failures[0].step_failure_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_round_trip_on_simulated_instance(aws, dagster_instance, tmp_path, dataset_bytes):
    result, sim = _run(aws, dagster_instance, tmp_path, "job", dataset=dataset_bytes)
    assert sim.job_output.returncode == 0, sim.job_output.stdout + sim.job_output.stderr
    assert result.success

    # the model artifact the job trained is in S3 and loads
    artifact = load_artifact(Storage(DATA).read_bytes(model_relative_path("BTC-USD")))
    assert set(artifact["variants"]) == {"with_sentiment"}

    # the job's materialization came back through Pipes, with the launcher's metadata on it
    materialization = result.asset_materializations_for_node("lstm_model")[0]
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["symbol"] == "BTC-USD" and metadata["with_sentiment/epochs_run"] == 2
    assert metadata["ec2_instance_id"] == sim.instance_id
    assert metadata["ec2_instance_type"] == "g4dn.xlarge" and metadata["ec2_market"] == "spot"
    assert metadata["ec2_region"] == "us-east-1"
    # g4dn.xlarge at $0.526/h, per second with a 60 s minimum, to 4 decimals (the runtime shown is to 0.1 s)
    expected_cost = 0.526 * max(metadata["ec2_runtime_s"], 60) / 3600
    assert metadata["ec2_estimated_cost_usd"] == pytest.approx(expected_cost, abs=6e-5)
    assert dagster_instance.get_latest_materialization_event(dg.AssetKey("lstm_model")) is not None

    # per-epoch logs came back, and the job ran from the installed bundle, not from the repository
    messages = [entry.user_message for entry in dagster_instance.all_logs(result.run_id)]
    assert sum("with_sentiment epoch" in m for m in messages) == 2, messages
    assert any(f"from {sim.home / 'bundle' / 'crpbot_assets'}" in m for m in messages), messages

    # the client terminated the instance (the simulated machine never shut itself down)
    assert _state(aws, sim.instance_id) == "terminated"

    # launch parameters and tags, as EC2 saw them at launch
    described = sim.described
    assert described["ImageId"] == aws.ami and described["InstanceType"] == "g4dn.xlarge"
    assert described["InstanceLifecycle"] == "spot"
    assert described["SubnetId"] == aws.subnet and [g["GroupId"] for g in described["SecurityGroups"]] == [
        aws.sg
    ]
    assert described["IamInstanceProfile"]["Arn"].endswith("instance-profile/crpbot-train")
    assert described["KeyName"] == aws.key and described["MetadataOptions"]["HttpTokens"] == "required"
    behaviour = aws.ec2.describe_instance_attribute(
        InstanceId=sim.instance_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["dagster/run-id"] == result.run_id
    assert tags["dagster/asset-key"] == "lstm_model" and tags["dagster/partition"] == "BTC-USD"
    assert tags["crpbot/launcher"] == "ec2"  # what the host's IAM policy keys on
    assert f"/runs/{result.run_id}/{tags['crpbot/job']}/" in sim.user_data  # the job's S3 prefix
    volume_tags = {t["Key"]: t["Value"] for t in sim.volumes[0]["Tags"]}
    assert volume_tags["dagster/run-id"] == result.run_id

    # user data: valid bash, watchdog + shutdown on exit, job timeout, CUDA-capable torch pinned, entry point
    user_data = sim.user_data
    assert subprocess.run(["bash", "-n"], input=user_data, text=True).returncode == 0
    assert "shutdown -h +17 " in user_data  # ceil(120 s / 60) + 15 min of boot/install grace
    assert "shutdown -h now' EXIT" in user_data
    assert "timeout --kill-after=60 120 " in user_data
    assert " torch==2.13.0 " in user_data and " dagster-pipes==" in user_data
    assert "-m crpbot_assets.launchers.ec2_job crpbot_assets.training.pipes_main" in user_data
    assert "{{" not in user_data


def test_job_failure_fails_the_run_and_terminates(aws, dagster_instance, tmp_path):
    # a corrupt ETH-USD dataset: the job fails decoding it
    result, sim = _run(aws, dagster_instance, tmp_path, "job", dataset=b"not parquet", symbol="ETH-USD")
    assert sim.job_output.returncode == 1
    assert not result.success
    assert f"training job on {sim.instance_id} exited with status 1" in _failure_message(result)
    assert _state(aws, sim.instance_id) == "terminated"
    assert not Storage(DATA).exists(model_relative_path("ETH-USD"))
    closed = [
        e.user_message
        for e in dagster_instance.all_logs(result.run_id)
        if "closed with exception" in e.user_message
    ]
    assert closed, "the job's exception should come back through Pipes"


def test_instance_death_is_a_failure_with_its_reason(aws, dagster_instance, tmp_path):
    result, sim = _run(aws, dagster_instance, tmp_path, "die")
    assert not result.success
    message = _failure_message(result)
    assert f"instance {sim.instance_id} is terminated before the training job finished" in message
    assert "Client.UserInitiatedShutdown" in message


def test_timeout_terminates(aws, dagster_instance, tmp_path):
    result, sim = _run(aws, dagster_instance, tmp_path, "hang", launcher=_launcher(aws, max_runtime_s=2))
    assert not result.success
    assert "exceeded its max runtime of 2s" in _failure_message(result)
    assert _state(aws, sim.instance_id) == "terminated"


def test_cancellation_terminates(aws, dagster_instance, tmp_path):
    result, sim = _run(aws, dagster_instance, tmp_path, "interrupt")
    assert not result.success
    assert any(e.event_type_value == "STEP_FAILURE" for e in result.all_events)
    assert _state(aws, sim.instance_id) == "terminated"
    messages = [entry.user_message for entry in dagster_instance.all_logs(result.run_id)]
    assert any(f"run interrupted: terminating {sim.instance_id}" in m for m in messages)


def test_local_uris_are_refused_before_launch(aws):
    extras = {"symbol": "BTC-USD", "dataset_uri": "/tmp/data/ds.parquet", "model_uri": f"s3://{BUCKET}/m.bin"}
    launched = len(aws.ec2.describe_instances()["Reservations"])
    with pytest.raises(
        ValueError, match=r"extras\['dataset_uri'\]='/tmp/data/ds.parquet'.*CRPBOT_STORAGE_URI"
    ):
        _launcher(aws).run(None, extras)
    assert len(aws.ec2.describe_instances()["Reservations"]) == launched


def test_interruption_inside_run_instances_still_terminates(aws, dagster_instance):
    """The instance exists but the RunInstances response never reached the client: the job tag finds it."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    from crpbot_assets.launchers.ec2 import PipesEC2Client

    ec2 = boto3.client("ec2", region_name="us-east-1")

    def interrupt(**_):  # fires after EC2 has accepted the launch, before the caller sees the id
        raise DagsterExecutionInterruptedError("interrupted during run_instances")

    ec2.meta.events.register("after-call.ec2.RunInstances", interrupt)
    client = PipesEC2Client(
        bucket=BUCKET, ec2_client=ec2, s3_client=aws.s3, poll_interval_s=0.2, message_interval_s=0.2
    )
    launch = _launcher(aws).launch_spec()

    @dg.asset
    def interrupted(context: dg.AssetExecutionContext):
        return client.run(context=context, launch=launch, extras={}).get_materialize_result()

    result = dg.materialize([interrupted], instance=dagster_instance, raise_on_error=False)
    assert not result.success
    launched = aws.ec2.describe_instances(Filters=[{"Name": "tag:dagster/run-id", "Values": [result.run_id]}])
    states = [i["State"]["Name"] for r in launched["Reservations"] for i in r["Instances"]]
    assert states == ["terminated"]
