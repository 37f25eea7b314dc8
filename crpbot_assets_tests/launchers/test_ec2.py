"""PipesEC2Client against moto's AWS server on loopback; the "instance" is played by a thread of this test.

The job scenarios run the job part of the rendered user data in a subprocess: the bundle is fetched from the
moto S3 and installed, Pipes context and messages go through S3, dagster itself is not importable, and the real
training entry point trains the real `lstm_model` asset's model. Only the machine is simulated.

moto is strongly consistent and never throttles: real AWS behaviours (NotFound right after a launch, throttling,
quota and capacity errors, a connection failing inside `finally`) are injected with botocore `before-call` hooks
that answer a call with AWS's error instead of sending it. Every test gets an empty moto state and fails if it
leaves an instance running.
"""

import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import boto3
import botocore.exceptions
import dagster as dg
import pytest

from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import Storage
from crpbot_assets.launchers.ec2 import EC2TrainingLauncher
from crpbot_assets.launchers.ec2_bootstrap import extract_job_script
from crpbot_assets.training import dataset as ds
from crpbot_assets.training.artifacts import load_artifact
from crpbot_assets.training.assets import (
    dataset_relative_path,
    lstm_model,
    model_relative_path,
    run_model_relative_path,
)
from crpbot_assets.training.jobs import TrainingJob, read_result
from crpbot_assets_tests.training.helpers import SMALL_CONFIG, hourly_sentiment, planted

pytestmark = pytest.mark.slow

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
LIVE_STATES = ["pending", "running", "stopping", "stopped"]


@pytest.fixture
def aws(moto):
    """A bucket, instance profile, subnet, security group, key pair and AMI in an empty moto state; the test
    fails if an instance is still alive at its end (one leaked instance cannot hide in the next test)."""
    ec2, s3 = boto3.client("ec2"), boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    boto3.client("iam").create_instance_profile(InstanceProfileName="crpbot-train")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    yield SimpleNamespace(
        ec2=ec2,
        s3=s3,
        env=moto.env,
        # a name filter: listing all of moto's ~hundreds of AMIs costs a second per test
        ami=ec2.describe_images(Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])["Images"][0][
            "ImageId"
        ],
        subnet=ec2.describe_subnets()["Subnets"][0]["SubnetId"],
        sg=ec2.create_security_group(GroupName="crpbot", Description="crpbot", VpcId=vpc)["GroupId"],
        key=ec2.create_key_pair(KeyName="crpbot")["KeyName"],
    )
    live = _instances(ec2, LIVE_STATES)
    assert not live, f"instances left alive: {live}"


def _instances(ec2, states: list[str]) -> list[str]:
    reservations = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": states}])
    return [i["InstanceId"] for r in reservations["Reservations"] for i in r["Instances"]]


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
        finish_margin_s=20,
        require_cuda=False,  # the simulated machine has no GPU
        poll_interval_s=0.2,
        message_interval_s=0.2,
        upload_interval_s=0.5,
        api_retry_base_s=0.01,
        launch_retry_base_s=0.01,
        consistency_timeout_s=5,
    )
    return EC2TrainingLauncher(**{**config, **overrides})


class Inject:
    """A botocore hook on the launcher's clients: the first `times` calls of `operation` (matching `when`) get
    `error` (an AWS error code, answered as AWS would, or an exception raised before sending)."""

    def __init__(self, operation: str, error, times: int | None, when=lambda body: True):
        self.operation = operation
        self.error = error
        self.times = times
        self.when = when
        self.calls = []  # request bodies of the matching calls

    def __call__(self, params, **_):
        body = params.get("body") or {}
        if not self.when(body):
            return None
        self.calls.append(body)
        if self.times is not None and len(self.calls) > self.times:
            return None  # let it through to moto
        if isinstance(self.error, BaseException):
            raise self.error
        http = SimpleNamespace(status_code=503 if "Throttl" in self.error else 400, headers={})
        return http, {
            "Error": {"Code": self.error, "Message": f"injected {self.error}"},
            "ResponseMetadata": {"HTTPStatusCode": http.status_code},
        }

    def __enter__(self):
        boto3.DEFAULT_SESSION.events.register(f"before-call.ec2.{self.operation}", self, unique_id=id(self))
        return self

    def __exit__(self, *exc):
        boto3.DEFAULT_SESSION.events.unregister(f"before-call.ec2.{self.operation}", unique_id=id(self))


def _descendants(pid: int) -> list[int]:
    """The live descendants of `pid`, from /proc (children before their parents' parents)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found, frontier = children + found, children
    return found


def _by_id(body) -> bool:
    return any(k.startswith("InstanceId") for k in body)


class SimulatedInstance(threading.Thread):
    """Plays the launched instance: `job` runs the user data's job and then stays up (a slow shutdown),
    `job-until-terminated` runs it until the instance is terminated (then the job dies with its machine),
    `late` runs the job but cancels the Dagster run once the job has started (the job outlives its run),
    `die` terminates it at once (a lost instance), `interrupt` cancels the Dagster run, `hang` does nothing,
    `none` expects no launch at all."""

    def __init__(self, aws, home: Path, scenario: str):
        super().__init__(daemon=True)
        self.aws = aws
        self.home = home
        self.scenario = scenario
        self.stopped = threading.Event()  # the run ended: stop waiting for a launch
        self.instance_id = None
        self.described = None
        self.volumes = None
        self.user_data = None
        self.job_output = None
        self.error = None

    def run(self):
        if self.scenario == "none":  # no launch expected
            return
        try:
            self.instance_id = self._wait_for_launch()
            ec2 = self.aws.ec2
            self.described = ec2.describe_instances(InstanceIds=[self.instance_id])["Reservations"][0][
                "Instances"
            ][0]
            self.volumes = ec2.describe_volumes(
                Filters=[{"Name": "attachment.instance-id", "Values": [self.instance_id]}]
            )["Volumes"]
            attribute = ec2.describe_instance_attribute(InstanceId=self.instance_id, Attribute="userData")
            self.user_data = base64.b64decode(attribute["UserData"]["Value"]).decode()
            if self.scenario in ("job", "late", "job-until-terminated"):
                self.job_output = self._run_job()
            elif self.scenario == "die":
                ec2.terminate_instances(InstanceIds=[self.instance_id])
            elif self.scenario == "interrupt":
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGINT)
        except Exception as exc:  # surfaced by the test
            self.error = exc

    def _wait_for_launch(self) -> str:
        while not self.stopped.wait(0.1):
            found = _instances(self.aws.ec2, ["pending", "running"])
            if found:
                return found[0]
        raise TimeoutError("no instance was launched")

    def _run_job(self) -> subprocess.CompletedProcess:
        self.home.mkdir(parents=True)
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
            "CUDA_VISIBLE_DEVICES": "",  # no GPU on this "instance"
            "PYTHONPATH": f"{blocker.parent}:{REPO}",
        }
        job = subprocess.Popen(
            ["bash", "job.sh"],
            cwd=self.home,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        if self.scenario == "job-until-terminated":  # the machine's end ends the job
            while job.poll() is None and _state(self.aws, self.instance_id) not in (
                "shutting-down",
                "terminated",
            ):
                time.sleep(0.2)
            if (
                job.poll() is None
            ):  # the whole machine: bash, `timeout` (its own process group) and the training
                for pid in [*_descendants(job.pid), job.pid]:
                    with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                        os.kill(pid, signal.SIGKILL)
        if self.scenario == "late":  # cancel the run once the job has opened Pipes (its first message chunk)
            run_id = {t["Key"]: t["Value"] for t in self.described["Tags"]}["dagster/run-id"]
            while job.poll() is None and not self._first_chunk(f"crpbot/ec2/runs/{run_id}/"):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)
        stdout, stderr = job.communicate(timeout=120)
        return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)

    def _first_chunk(self, prefix: str) -> bool:
        listed = self.aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        return any(o["Key"].endswith("/1.json") for o in listed)


@pytest.fixture(scope="module")
def dataset_bytes() -> bytes:
    candles, features = planted(3000)
    dataset = ds.build_dataset(features, hourly_sentiment(3000), candles, SMALL_CONFIG, "BTC-USD")
    return ds.to_parquet_bytes(dataset)


def _run(
    aws,
    instance,
    tmp_path,
    scenario: str,
    launcher=None,
    dataset: bytes | None = None,
    symbol="BTC-USD",
    model: dict | None = None,
):
    """Materialize the real `lstm_model` asset for `symbol` with the EC2 launcher while `scenario` plays out."""
    # scenarios without a job only need the file to exist (lstm_model checks that before launching)
    Storage(DATA).write_bytes(dataset_relative_path(symbol), dataset or b"never read: no job runs")
    sim = SimulatedInstance(aws, tmp_path / f"instance-{scenario}", scenario)
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
        run_config={"ops": {"lstm_model": {"config": model or TINY_MODEL}}},
    )
    sim.stopped.set()
    sim.join(timeout=120)
    assert sim.error is None, sim.error
    return result, sim


def _state(aws, instance_id: str) -> str:
    return aws.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"][
        "Name"
    ]


def _failure_message(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a step failure"
    error = failures[0].step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def _logs(instance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


def test_round_trip_on_simulated_instance(aws, dagster_instance, tmp_path, dataset_bytes):
    result, sim = _run(aws, dagster_instance, tmp_path, "job", dataset=dataset_bytes)
    assert sim.job_output.returncode == 0, sim.job_output.stdout + sim.job_output.stderr
    assert result.success

    # the job wrote the run-scoped key; the asset promoted that very artifact to the model's key
    run_scoped = Storage(DATA).read_bytes(run_model_relative_path("BTC-USD", result.run_id))
    assert Storage(DATA).read_bytes(model_relative_path("BTC-USD")) == run_scoped
    artifact = load_artifact(run_scoped)
    assert set(artifact["variants"]) == {"with_sentiment"}

    # the job's materialization came back through Pipes, with the launcher's metadata on it
    materialization = result.asset_materializations_for_node("lstm_model")[0]
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["symbol"] == "BTC-USD" and metadata["with_sentiment/epochs_run"] == 2
    assert metadata["model_uri"] == f"{DATA}/lstm_model/BTC-USD.pt"
    assert metadata["run_model_uri"] == f"{DATA}/lstm_model_runs/{result.run_id}/BTC-USD.pt"
    assert metadata["ec2_instance_id"] == sim.instance_id
    assert metadata["ec2_instance_type"] == "g4dn.xlarge" and metadata["ec2_market"] == "spot"
    assert metadata["ec2_region"] == "us-east-1" and metadata["ec2_launch_attempts"] == 1
    # g4dn.xlarge at $0.526/h, per second with a 60 s minimum, to 4 decimals (the runtime shown is to 0.1 s)
    expected_cost = 0.526 * max(metadata["ec2_runtime_s"], 60) / 3600
    assert metadata["ec2_estimated_cost_usd"] == pytest.approx(expected_cost, abs=6e-5)
    assert "us-east-1 price table" in metadata["ec2_cost_basis"]
    assert "EBS volume, S3 and data transfer not included" in metadata["ec2_cost_basis"]
    assert dagster_instance.get_latest_materialization_event(dg.AssetKey("lstm_model")) is not None

    # per-epoch logs came back, the job ran from the installed bundle, and its output tail reached the run
    messages = _logs(dagster_instance, result.run_id)
    assert sum("with_sentiment epoch" in m for m in messages) == 2, messages
    assert any(f"from {sim.home / 'bundle' / 'crpbot_assets'}" in m for m in messages), messages
    tail = next(m for m in messages if m.startswith(f"[ec2] output of the job on {sim.instance_id}"))
    assert "crpbot: job starting on" in tail and "crpbot: job exited with status 0" in tail
    job_log = aws.s3.get_object(Bucket=BUCKET, Key=metadata["ec2_job_log"].split(f"{BUCKET}/", 1)[1])
    assert b"crpbot: job exited with status 0" in job_log["Body"].read()

    # the client terminated the instance (the simulated machine never shut itself down)
    assert _state(aws, sim.instance_id) == "terminated"

    # launch parameters and tags, as EC2 saw them at launch
    described = sim.described
    assert described["ImageId"] == aws.ami and described["InstanceType"] == "g4dn.xlarge"
    assert described["InstanceLifecycle"] == "spot"
    assert described["SubnetId"] == aws.subnet
    assert [g["GroupId"] for g in described["SecurityGroups"]] == [aws.sg]
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

    # user data: valid bash, watchdog + shutdown on exit, the job's timeout, no torch install
    user_data = sim.user_data
    assert subprocess.run(["bash", "-n"], input=user_data, text=True).returncode == 0
    assert 'shutdown -h +"$(( watchdog_min' in user_data and "shutdown -h now' EXIT" in user_data
    assert "timeout --kill-after=6 " in user_data  # a third of the 20 s finish margin
    assert "torch==" not in user_data and " dagster-pipes==" in user_data  # torch comes with the image
    assert "-m crpbot_assets.launchers.ec2_job crpbot_assets.training.pipes_main" in user_data
    assert "{{" not in user_data


def test_job_failure_fails_the_run_with_its_output_and_promotes_nothing(aws, dagster_instance, tmp_path):
    # a corrupt ETH-USD dataset: the job fails decoding it
    result, sim = _run(aws, dagster_instance, tmp_path, "job", dataset=b"not parquet", symbol="ETH-USD")
    assert sim.job_output.returncode == 1
    assert not result.success
    assert f"training job on {sim.instance_id} exited with status 1" in _failure_message(result)
    assert _state(aws, sim.instance_id) == "terminated"
    assert not Storage(DATA).exists(model_relative_path("ETH-USD"))
    messages = _logs(dagster_instance, result.run_id)
    assert any("closed with exception" in m for m in messages), "the job's exception should come back"
    tail = next(m for m in messages if m.startswith(f"[ec2] output of the job on {sim.instance_id}"))
    assert "Traceback" in tail and "crpbot: job exited with status 1" in tail


def test_a_late_job_of_a_cancelled_run_cannot_replace_the_model(
    aws, dagster_instance, tmp_path, dataset_bytes
):
    good, _ = _run(aws, dagster_instance, tmp_path / "good", "job", dataset=dataset_bytes)
    assert good.success
    promoted = Storage(DATA).read_bytes(model_relative_path("BTC-USD"))

    # the next run is cancelled while its job trains; the job outlives the run and still writes its model
    late, sim = _run(
        aws,
        dagster_instance,
        tmp_path / "late",
        "late",
        dataset=dataset_bytes,
        model={**TINY_MODEL, "epochs": 6},
    )
    assert not late.success
    assert sim.job_output.returncode == 0, sim.job_output.stdout + sim.job_output.stderr
    late_model = Storage(DATA).read_bytes(run_model_relative_path("BTC-USD", late.run_id))
    assert load_artifact(late_model)["variants"]["with_sentiment"]["config"]["epochs"] == 6
    assert Storage(DATA).read_bytes(model_relative_path("BTC-USD")) == promoted
    latest = dagster_instance.get_latest_materialization_event(dg.AssetKey("lstm_model"))
    assert latest.run_id == good.run_id


def test_cuda_is_required_on_ec2_and_its_absence_fails_fast(aws, dagster_instance, tmp_path, dataset_bytes):
    launcher = _launcher(aws, require_cuda=True)  # the production default
    result, sim = _run(aws, dagster_instance, tmp_path, "job", launcher=launcher, dataset=dataset_bytes)
    assert not result.success and sim.job_output.returncode == 1
    messages = "\n".join(_logs(dagster_instance, result.run_id))
    machine = f"EC2 g4dn.xlarge ({aws.ami}, us-east-1)"
    assert f"CUDA is required on {machine} but torch" in messages
    assert "driver: nvidia-smi" in messages  # the driver's state is named (here: no nvidia-smi at all)
    assert "dataset" not in messages.split("CUDA is required")[0].lower()  # failed before reading data
    assert _state(aws, sim.instance_id) == "terminated"


def test_instance_death_is_a_failure_with_its_reason_and_latest_console(aws, dagster_instance, tmp_path):
    console = "boot...\ncrpbot: FATAL: nvidia-smi failed on EC2 g4dn.xlarge: NVIDIA-SMI has failed\n"

    def latest_console(params, **_):
        assert params["body"].get("Latest") == "true"  # the latest output, not the boot-time snapshot
        http = SimpleNamespace(status_code=200, headers={})
        return http, {"InstanceId": "i", "Output": base64.b64encode(console.encode()).decode()}

    boto3.DEFAULT_SESSION.events.register("before-call.ec2.GetConsoleOutput", latest_console)
    result, sim = _run(aws, dagster_instance, tmp_path, "die")
    assert not result.success
    message = _failure_message(result)
    assert f"instance {sim.instance_id} is terminated before the training job finished" in message
    assert "Client.UserInitiatedShutdown" in message
    assert "crpbot: FATAL: nvidia-smi failed on EC2 g4dn.xlarge" in message
    assert any("NVIDIA-SMI has failed" in m for m in _logs(dagster_instance, result.run_id))


def test_client_deadline_terminates(aws, dagster_instance, tmp_path):
    launcher = _launcher(aws, max_runtime_s=2, finish_margin_s=1)
    result, sim = _run(aws, dagster_instance, tmp_path, "hang", launcher=launcher)
    assert not result.success
    assert "exceeded its time budget of 2s" in _failure_message(result)
    assert _state(aws, sim.instance_id) == "terminated"


def test_the_jobs_own_timeout_fires_first_and_reports_its_output(
    aws, dagster_instance, tmp_path, dataset_bytes
):
    """One budget: boot + install + job end before the client's deadline, so the job reports status 124."""
    launcher = _launcher(
        aws, max_runtime_s=20, finish_margin_s=10, entry_module="crpbot_assets_tests.launchers.sleeper"
    )
    result, sim = _run(aws, dagster_instance, tmp_path, "job", launcher=launcher, dataset=dataset_bytes)
    assert sim.job_output.returncode == 124
    message = _failure_message(result)
    assert f"training job on {sim.instance_id} exited with status 124 (its time budget ran out)" in message
    assert "exceeded its time budget" not in message  # not the client's own deadline
    tail = next(m for m in _logs(dagster_instance, result.run_id) if m.startswith("[ec2] output of the job"))
    assert "sleeper: started" in tail and "s left for the job" in tail
    assert _state(aws, sim.instance_id) == "terminated"


def test_cancellation_terminates(aws, dagster_instance, tmp_path):
    result, sim = _run(aws, dagster_instance, tmp_path, "interrupt")
    assert not result.success
    assert any(e.event_type_value == "STEP_FAILURE" for e in result.all_events)
    assert _state(aws, sim.instance_id) == "terminated"
    messages = _logs(dagster_instance, result.run_id)
    assert any(f"run interrupted: terminating {sim.instance_id}" in m for m in messages)


def test_not_found_then_found_and_throttling_are_retried(aws, dagster_instance, tmp_path, dataset_bytes):
    with (
        Inject("DescribeInstances", "InvalidInstanceID.NotFound", 2, _by_id) as describe,
        Inject("TerminateInstances", "InvalidInstanceID.NotFound", 1) as terminate_not_found,
        Inject("TerminateInstances", "RequestLimitExceeded", 2) as terminate_throttled,
    ):
        result, sim = _run(aws, dagster_instance, tmp_path, "job", dataset=dataset_bytes)
    assert result.success, _failure_message(result)
    assert len(describe.calls) > 2
    # hooks answer in order: NotFound once, then throttled twice, then the call reaches moto
    assert len(terminate_not_found.calls) == 4 and len(terminate_throttled.calls) == 3
    assert _state(aws, sim.instance_id) == "terminated"
    metadata = result.asset_materializations_for_node("lstm_model")[0].metadata
    assert metadata["ec2_api_retries"].value == 3  # terminate: NotFound once, throttled twice
    messages = _logs(dagster_instance, result.run_id)
    assert any(f"[ec2] terminate {sim.instance_id}: ClientError" in m and "retry 1 in" in m for m in messages)
    assert any(f"[ec2] terminated {sim.instance_id}" in m for m in messages)


def test_an_instance_never_visible_fails_after_the_consistency_window(aws, dagster_instance, tmp_path):
    with Inject("DescribeInstances", "InvalidInstanceID.NotFound", None, _by_id):
        result, sim = _run(
            aws, dagster_instance, tmp_path, "hang", launcher=_launcher(aws, consistency_timeout_s=1)
        )
    assert not result.success
    assert f"instance {sim.instance_id} is still unknown to DescribeInstances" in _failure_message(result)
    messages = _logs(dagster_instance, result.run_id)
    assert any(f"could not confirm that {sim.instance_id} is terminated" in m for m in messages)
    assert _state(aws, sim.instance_id) == "terminated"  # terminate itself went through


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("connection pool is broken"),
        botocore.exceptions.EndpointConnectionError(endpoint_url="x"),
    ],
    ids=["bug", "connection"],
)
def test_an_error_inside_finally_keeps_the_runs_own_error(aws, dagster_instance, tmp_path, error):
    launcher = _launcher(aws, max_runtime_s=2, finish_margin_s=1)
    with Inject("TerminateInstances", error, None) as terminate:
        result, sim = _run(aws, dagster_instance, tmp_path, "hang", launcher=launcher)
    try:
        assert not result.success
        message = _failure_message(result)
        assert "exceeded its time budget of 2s" in message and type(error).__name__ not in message
        retried = isinstance(error, botocore.exceptions.EndpointConnectionError)
        assert len(terminate.calls) == (8 if retried else 1)  # a connection error is retried, a bug is not
        messages = _logs(dagster_instance, result.run_id)
        unconfirmed = [
            m for m in messages if f"could not confirm that {sim.instance_id} is terminated (" in m
        ]
        assert unconfirmed and type(error).__name__ in unconfirmed[0]
        assert any(f"instances not confirmed terminated: {sim.instance_id}" in m for m in messages)
        assert _state(aws, sim.instance_id) == "running"  # what the watchdog and the orphan sweep are for
    finally:
        aws.ec2.terminate_instances(InstanceIds=[sim.instance_id])


def test_quota_errors_on_launch_are_retried(aws, dagster_instance, tmp_path):
    with Inject("RunInstances", "VcpuLimitExceeded", 2) as quota:
        result, sim = _run(aws, dagster_instance, tmp_path, "die")
    assert len(quota.calls) == 3 and sim.instance_id is not None  # launched on the third attempt
    tokens = [call["ClientToken"] for call in quota.calls]
    assert len(set(tokens)) == 3  # a refused launch started nothing: each attempt has its own token
    messages = _logs(dagster_instance, result.run_id)
    assert sum("VcpuLimitExceeded" in m and "retry" in m for m in messages) == 2
    assert _state(aws, sim.instance_id) == "terminated"


def test_lasting_capacity_errors_fail_the_run_without_an_instance(aws, dagster_instance, tmp_path):
    launcher = _launcher(aws, launch_retry_attempts=3)
    with Inject("RunInstances", "InsufficientInstanceCapacity", None) as capacity:
        result, _ = _run(aws, dagster_instance, tmp_path, "none", launcher=launcher)
    assert not result.success and len(capacity.calls) == 3
    message = _failure_message(result)
    assert "gave up after 3 attempts" in message and "InsufficientInstanceCapacity" in message
    assert "Quota or capacity" in message
    assert _instances(aws.ec2, LIVE_STATES + ["terminated", "shutting-down"]) == []


def test_local_uris_and_unsupported_types_are_refused_before_launch(aws):
    extras = {"symbol": "BTC-USD", "dataset_uri": "/tmp/data/ds.parquet", "model_uri": f"s3://{BUCKET}/m.bin"}
    with pytest.raises(
        ValueError, match=r"extras\['dataset_uri'\]='/tmp/data/ds.parquet'.*CRPBOT_STORAGE_URI"
    ):
        _launcher(aws).run(None, extras)
    s3_extras = {**extras, "dataset_uri": f"s3://{BUCKET}/d.parquet"}
    with pytest.raises(ValueError, match=r"'p3.2xlarge' is not supported.*g4dn\.\*, g5\.\*"):
        _launcher(aws, instance_type="p3.2xlarge").run(None, s3_extras)
    with pytest.raises(
        ValueError, match="config device='cpu' in extras, but EC2 GPU instances train on CUDA only"
    ):
        _launcher(aws, require_cuda=True).run(None, {**s3_extras, "config": {"device": "cpu"}})
    assert _instances(aws.ec2, LIVE_STATES + ["terminated", "shutting-down"]) == []


def test_interruption_inside_run_instances_still_terminates(aws, dagster_instance):
    """The instance exists but the RunInstances response never reached the client: the job tag finds it."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    from crpbot_assets.launchers.ec2_pipes import PipesEC2Client

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


# --- a range of jobs: one launch ------------------------------------------------------------------------------


def _range_jobs(dataset_bytes: bytes, n: int, epochs: int = 1) -> list[TrainingJob]:
    """n jobs over two copies of the dataset (two "folds"), models content-addressed by their fingerprint."""
    for fold in (0, 1):
        Storage(DATA).write_bytes(f"walk_forward_datasets/BTC-USD/fold{fold}.parquet", dataset_bytes)
    return [
        TrainingJob(
            id=f"BTC-USD|fold{k % 2}|seed{k // 2}",
            dataset_uri=f"{DATA}/walk_forward_datasets/BTC-USD/fold{k % 2}.parquet",
            model_uri=f"{DATA}/walk_forward_models/BTC-USD/fp{k}.pt",
            fingerprint=f"fp{k}",
            config={**TINY_MODEL, "epochs": epochs, "patience": epochs, "seed": k // 2},
            symbol="BTC-USD",
        )
        for k in range(n)
    ]


def _run_range(
    aws, instance, tmp_path, scenario: str, jobs, delivered: list, interrupt_after: int | None = None
):
    sim = SimulatedInstance(aws, tmp_path / f"instance-{scenario}", scenario)
    sim.start()

    @dg.asset
    def folds(context: dg.AssetExecutionContext, training_launcher: EC2TrainingLauncher):
        def commit(result):
            delivered.append(result)
            if len(delivered) == interrupt_after:  # the run is cancelled mid-range
                os.kill(os.getpid(), signal.SIGINT)

        return dg.MaterializeResult(metadata={"jobs": len(training_launcher.run_jobs(context, jobs, commit))})

    launcher = _launcher(aws, gpu_concurrency=1, jobs_max_runtime_s=300)
    result = dg.materialize(
        [folds], instance=instance, raise_on_error=False, resources={"training_launcher": launcher}
    )
    sim.stopped.set()
    sim.join(timeout=120)
    assert sim.error is None, sim.error
    return result, sim


def _all_instances(aws) -> list[str]:
    return _instances(aws.ec2, LIVE_STATES + ["terminated", "shutting-down"])


def _last_modified(aws, uri: str):
    key = uri.split(f"{BUCKET}/", 1)[1]
    return aws.s3.head_object(Bucket=BUCKET, Key=key)["LastModified"]


def test_a_range_of_jobs_is_one_launch(aws, dagster_instance, tmp_path, dataset_bytes):
    jobs = _range_jobs(dataset_bytes, 6)
    delivered = []
    result, sim = _run_range(aws, dagster_instance, tmp_path, "job", jobs, delivered)
    assert result.success, _failure_message(result)
    assert _all_instances(aws) == [sim.instance_id]  # one RunInstances for six trainings
    assert sorted(r.job.id for r in delivered) == sorted(job.id for job in jobs)
    assert all(read_result(job) is not None for job in jobs)
    artifact = load_artifact(Storage(DATA).read_bytes("walk_forward_models/BTC-USD/fp5.pt"))
    assert artifact["variants"]["with_sentiment"]["config"]["seed"] == 2
    messages = _logs(dagster_instance, result.run_id)
    assert "training 6 jobs in one launch" in messages
    assert sum("with_sentiment epoch 1/1" in m for m in messages) == 6  # live from the instance
    assert _state(aws, sim.instance_id) == "terminated"


def test_a_range_cancelled_halfway_resumes_without_retraining(aws, dagster_instance, tmp_path, dataset_bytes):
    jobs = _range_jobs(dataset_bytes, 6, epochs=20)  # slow enough that the cancellation comes mid-range
    first = []
    cancelled, sim = _run_range(
        aws, dagster_instance, tmp_path / "a", "job-until-terminated", jobs, first, interrupt_after=1
    )
    assert not cancelled.success and _state(aws, sim.instance_id) == "terminated"
    time.sleep(1)  # a request the killed job had already sent may still land in moto's S3
    done = [job for job in jobs if read_result(job) is not None]
    assert 1 <= len(done) < len(jobs) and {r.job.id for r in first} <= {job.id for job in done}
    stamps = {job.id: _last_modified(aws, job.model_uri) for job in done}

    second = []
    resumed, sim2 = _run_range(aws, dagster_instance, tmp_path / "b", "job", jobs, second)
    assert resumed.success, _failure_message(resumed)
    assert len(_all_instances(aws)) == 2  # one launch per run
    assert {r.job.id: r.reused for r in second} == {job.id: job in done for job in jobs}
    assert {job.id: _last_modified(aws, job.model_uri) for job in done} == stamps  # not trained again
    messages = _logs(dagster_instance, resumed.run_id)
    assert f"training {len(jobs) - len(done)} jobs in one launch" in messages
