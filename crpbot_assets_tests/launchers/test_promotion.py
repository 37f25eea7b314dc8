"""EC2 promotion safety in the fast tier: the run-scoped model becomes `lstm_model/<symbol>.pt` only when its job
succeeded. The real `lstm_model` asset and EC2 launcher against moto's server; the "instance" is a thread that
writes to S3 what a job writes (its run-scoped model, then its status) without running one. The slow tier
(test_ec2.py) runs the real job."""

import os
import signal
import threading
import time

import boto3
import dagster as dg
import pytest

from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import Storage
from crpbot_assets.launchers.ec2 import EC2TrainingLauncher
from crpbot_assets.training.assets import (
    dataset_relative_path,
    lstm_model,
    model_relative_path,
    run_model_relative_path,
)

BUCKET = "crpbot-promotion"
DATA = f"s3://{BUCKET}/data"
SYMBOL = "BTC-USD"


class FakeJob(threading.Thread):
    """Waits for the launch, then writes `model` to the run-scoped key and the job's status `exit_code`;
    `cancel_first`: interrupts the Dagster run (SIGINT) before writing, a job that outlives its run."""

    def __init__(self, model: bytes, exit_code: int = 0, cancel_first: bool = False):
        super().__init__(daemon=True)
        self.model, self.exit_code, self.cancel_first = model, exit_code, cancel_first
        self.error = None

    def run(self):
        try:
            ec2, s3 = boto3.client("ec2"), boto3.client("s3")
            deadline = time.monotonic() + 30
            while not (tags := self._launched(ec2)):
                assert time.monotonic() < deadline, "no instance was launched"
                time.sleep(0.05)
            run_id = tags["dagster/run-id"]
            if self.cancel_first:
                os.kill(os.getpid(), signal.SIGINT)
                while self._state(ec2) not in ("shutting-down", "terminated"):
                    time.sleep(0.05)  # the launcher terminated it: the run is over
            key = f"data/{run_model_relative_path(SYMBOL, run_id)}"
            s3.put_object(Bucket=BUCKET, Key=key, Body=self.model)
            status = f"crpbot/ec2/runs/{run_id}/{tags['crpbot/job']}/status.json"
            s3.put_object(Bucket=BUCKET, Key=status, Body=f'{{"exit_code": {self.exit_code}}}'.encode())
        except Exception as exc:  # surfaced by the test
            self.error = exc

    def _launched(self, ec2) -> dict | None:
        found = ec2.describe_instances()["Reservations"]
        instances = [i for r in found for i in r["Instances"] if i["State"]["Name"] in ("pending", "running")]
        if not instances:
            return None
        self.instance_id = instances[0]["InstanceId"]
        return {t["Key"]: t["Value"] for t in instances[0]["Tags"]}

    def _state(self, ec2) -> str:
        found = ec2.describe_instances(InstanceIds=[self.instance_id])["Reservations"]
        return found[0]["Instances"][0]["State"]["Name"]


@pytest.fixture
def launcher(moto, tmp_path) -> EC2TrainingLauncher:
    ec2 = boto3.client("ec2")
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    Storage(DATA).write_bytes(dataset_relative_path(SYMBOL), b"never read: no job runs")
    wheel = tmp_path / "crpbot_assets-0-py3-none-any.whl"  # uploaded, never installed
    wheel.write_bytes(b"wheel")
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])["Images"][0]
    return EC2TrainingLauncher(
        bucket=BUCKET,
        image_id=image["ImageId"],
        region="us-east-1",
        require_cuda=False,
        bundle_path=str(wheel),
        poll_interval_s=0.05,
        message_interval_s=0.05,
        api_retry_base_s=0.01,
        consistency_timeout_s=5,
    )


def _materialize(launcher, instance, job: FakeJob) -> dg.ExecuteInProcessResult:
    job.start()
    result = dg.materialize(
        [lstm_model],
        partition_key=SYMBOL,
        instance=instance,
        raise_on_error=False,
        resources={"training_launcher": launcher, "storage": StorageResource(base_uri=DATA)},
        run_config={"ops": {"lstm_model": {"config": {"sentiment_ablation": False}}}},
    )
    job.join(timeout=30)
    assert job.error is None, job.error
    return result


def test_run_scoped_model_is_promoted_only_when_its_job_succeeded(launcher, instance):
    files = Storage(DATA)
    good = _materialize(launcher, instance, FakeJob(b"model of a successful job"))
    assert good.success
    assert files.read_bytes(model_relative_path(SYMBOL)) == b"model of a successful job"

    failed = _materialize(launcher, instance, FakeJob(b"model of a failed job", exit_code=1))
    assert not failed.success
    assert files.read_bytes(run_model_relative_path(SYMBOL, failed.run_id)) == b"model of a failed job"

    late = _materialize(launcher, instance, FakeJob(b"model of a cancelled run", cancel_first=True))
    assert not late.success
    assert files.read_bytes(run_model_relative_path(SYMBOL, late.run_id)) == b"model of a cancelled run"

    # neither the failed job's nor the late job's model replaced the promoted one, nor its record
    assert files.read_bytes(model_relative_path(SYMBOL)) == b"model of a successful job"
    latest = instance.get_latest_materialization_event(dg.AssetKey("lstm_model"))
    assert latest.run_id == good.run_id
