"""Train on a throw-away EC2 GPU instance through Dagster Pipes (the prod `training_launcher`).

`PipesEC2Client.run` opens a Pipes session (context injected into S3, messages read back from S3), uploads the
project bundle (a wheel), launches one instance whose user data (deploy/ec2-user-data.sh.tmpl) installs a CUDA
torch + the bundle and runs `crpbot_assets.launchers.ec2_job` (which runs the training entry point), polls the
instance and the job's status object, and terminates the instance on every exit path: success, failure,
cancellation, timeout. Modelled on dagster-aws's PipesECSClient.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import dagster as dg
from dagster._core.definitions.resource_annotation import TreatAsResourceParam
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

from crpbot_assets.common.settings import REPO_ROOT
from crpbot_assets.launchers.ec2_job import DEFAULT_ENTRY_MODULE

DEFAULT_PRICES_PER_HOUR = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g5.xlarge": 1.006,
    "p3.2xlarge": 3.06,
}
USER_DATA_TEMPLATE = REPO_ROOT / "deploy" / "ec2-user-data.sh.tmpl"
MAX_USER_DATA_BYTES = 16 * 1024  # EC2's limit on raw user data
WATCHDOG_GRACE_MINUTES = 15  # boot + installs before the job's own timeout starts counting
ENDED_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
MARKETS = ("on-demand", "spot")
LAUNCHER_TAG = "crpbot/launcher"  # on every instance and volume; the host's IAM policy only terminates these
JOB_TAG = "crpbot/job"
REMOTE_PACKAGES = ("torch", "numpy", "polars", "pyarrow", "dagster-pipes", "boto3")
_JOB_SCRIPT = re.compile(r"<<'CRPBOT_JOB'\n(.*?\n)CRPBOT_JOB\n", re.S)


def default_requirements() -> list[str]:
    """The remote job's packages pinned to this host's versions (torch without its local `+cpu` tag)."""
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in REMOTE_PACKAGES]


def estimate_cost(instance_type: str, seconds: float, prices_per_hour: dict[str, float]) -> float | None:
    """On-demand cost with per-second billing and EC2's 60 s minimum; None for a type without a price."""
    price = prices_per_hour.get(instance_type)
    return None if price is None else round(price * max(seconds, 60.0) / 3600.0, 4)


def render_user_data(template: str, values: dict[str, str]) -> str:
    """Fill `{{name}}` placeholders; a missing or unused value is an error, and so is oversized user data."""
    names = set(re.findall(r"\{\{(\w+)\}\}", template))
    if missing := names - values.keys():
        raise KeyError(f"user data template needs values for {sorted(missing)}")
    if unused := values.keys() - names:
        raise KeyError(f"user data template has no placeholders for {sorted(unused)}")
    rendered = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)
    if len(rendered.encode()) > MAX_USER_DATA_BYTES:
        raise ValueError(
            f"rendered user data is {len(rendered.encode())} bytes; EC2 allows {MAX_USER_DATA_BYTES}"
        )
    return rendered


def extract_job_script(user_data: str) -> str:
    """The self-contained job part of rendered user data (what runs after the instance's installs)."""
    match = _JOB_SCRIPT.search(user_data)
    if not match:
        raise ValueError("user data has no CRPBOT_JOB section")
    return match.group(1)


_BUNDLES: dict[str, Path] = {}


def build_bundle(source_root: Path = REPO_ROOT) -> Path:
    """A wheel of the package built from a clean copy of the sources (memoized per source content)."""
    files = [source_root / "pyproject.toml"] + sorted(
        p
        for p in (source_root / "crpbot_assets").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(source_root)).encode() + b"\0" + path.read_bytes())
    key = digest.hexdigest()
    if key in _BUNDLES and _BUNDLES[key].exists():
        return _BUNDLES[key]
    work = Path(tempfile.mkdtemp(prefix="crpbot-bundle-"))
    for path in files:
        target = work / "src" / path.relative_to(source_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(work / "dist"),
            str(work / "src"),
        ],
        capture_output=True,
        text=True,
    )
    wheels = list((work / "dist").glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        raise RuntimeError(
            f"building the project wheel from {source_root} failed:\n{result.stdout}{result.stderr}"
        )
    _BUNDLES[key] = wheels[0]
    return wheels[0]


class _PrefixedS3MessageReader(PipesS3MessageReader):
    """PipesS3MessageReader whose message chunks live under a key prefix (so IAM can be scoped to it)."""

    def __init__(self, *, key_prefix: str, **kwargs):
        super().__init__(**kwargs)
        self.key_prefix = key_prefix

    @contextmanager
    def get_params(self):
        with super().get_params() as params:
            yield {**params, "key_prefix": f"{self.key_prefix}{params['key_prefix']}"}


@dataclass(frozen=True)
class EC2LaunchSpec:
    """What to launch and how the job runs on it."""

    image_id: str
    instance_type: str = "g4dn.xlarge"
    market: str = "on-demand"
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    iam_instance_profile: str | None = None  # a name or an ARN
    key_name: str | None = None
    max_runtime_s: float = 3 * 3600
    bundle_path: str | None = None  # default: a wheel built from this repository
    entry_module: str = DEFAULT_ENTRY_MODULE
    requirements: tuple[str, ...] | None = None  # default: default_requirements()
    pip_index_url: str | None = None  # extra index for a specific CUDA build of torch
    python_bin: str = "python3"
    job_env: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.market not in MARKETS:
            raise ValueError(f"EC2 market {self.market!r} is not one of {MARKETS}")
        if not self.image_id:
            raise ValueError("EC2 launch needs an image_id (AMI)")
        if self.max_runtime_s <= 0:
            raise ValueError(f"max_runtime_s must be positive, got {self.max_runtime_s}")


class PipesEC2Client(dg.PipesClient, TreatAsResourceParam):
    """Runs one Pipes job on a fresh EC2 instance and always terminates it.

    Args:
        bucket: S3 bucket for the bundle, the Pipes context/messages and the job status.
        key_prefix: prefix of every key this client writes.
        poll_interval_s: seconds between instance/status polls.
        message_interval_s: seconds between Pipes message chunk reads.
        upload_interval_s: seconds between the remote job's message chunk uploads.
        prices_per_hour: on-demand USD/h per instance type, for the cost estimate.
    """

    def __init__(
        self,
        *,
        bucket: str,
        key_prefix: str = "crpbot/ec2",
        ec2_client: Any = None,
        s3_client: Any = None,
        poll_interval_s: float = 15.0,
        message_interval_s: float = 5.0,
        upload_interval_s: float = 10.0,
        prices_per_hour: dict[str, float] | None = None,
        user_data_template: Path = USER_DATA_TEMPLATE,
    ):
        self.bucket = bucket
        self.key_prefix = key_prefix.strip("/")
        self._ec2 = ec2_client or boto3.client("ec2")
        self._s3 = s3_client or boto3.client("s3")
        self.poll_interval_s = poll_interval_s
        self.message_interval_s = message_interval_s
        self.upload_interval_s = upload_interval_s
        self.prices_per_hour = DEFAULT_PRICES_PER_HOUR if prices_per_hour is None else prices_per_hour
        self.user_data_template = Path(user_data_template)

    @property
    def region(self) -> str:
        return self._ec2.meta.region_name

    @property
    def s3(self):
        return self._s3

    def run(  # ty: ignore[invalid-method-override]
        self,
        *,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        launch: EC2LaunchSpec,
        extras: dict[str, Any] | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        """Launch `launch`, run the Pipes job with `extras`, wait, terminate; raises dg.Failure on any failure."""
        bundle_key = self._upload_bundle(Path(launch.bundle_path) if launch.bundle_path else build_bundle())
        job_id = uuid.uuid4().hex[:16]  # names this launch: S3 prefix, ClientToken, `crpbot/job` tag
        run_prefix = f"{self.key_prefix}/runs/{context.run_id}/{job_id}"
        status_key = f"{run_prefix}/status.json"
        with dg.open_pipes_session(
            context=context,
            extras=extras,
            context_injector=PipesS3ContextInjector(
                bucket=self.bucket, client=self._s3, key_prefix=f"{run_prefix}/"
            ),
            message_reader=_PrefixedS3MessageReader(
                bucket=self.bucket,
                client=self._s3,
                interval=self.message_interval_s,
                key_prefix=f"{run_prefix}/",
            ),
        ) as session:
            user_data = self.user_data(session.get_bootstrap_env_vars(), launch, bundle_key, status_key)
            instance_id, started = None, time.monotonic()
            try:
                instance_id = self._launch(context, session, launch, user_data, job_id)
                started = time.monotonic()
                self._wait(context, launch, instance_id, status_key, started)
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                context.log.warning(f"[ec2] run interrupted: terminating {instance_id or 'job ' + job_id}")
                raise
            finally:
                # interrupted inside run_instances: the id never came back, the tag still finds the instance
                for launched in [instance_id] if instance_id else self._instances_of(context, job_id):
                    self._terminate(context, launched)
            runtime_s = time.monotonic() - started
        context.log.info(f"[ec2] {instance_id} finished in {runtime_s:.0f}s")
        return dg.PipesClientCompletedInvocation(
            session, metadata=self._metadata(launch, instance_id, runtime_s, bundle_key)
        )

    def user_data(
        self, pipes_env: dict[str, str], launch: EC2LaunchSpec, bundle_key: str, status_key: str
    ) -> str:
        """The instance's bootstrap script for one job."""
        requirements = launch.requirements if launch.requirements is not None else default_requirements()
        pip_args = (
            [f"--extra-index-url {shlex.quote(launch.pip_index_url)}"] if launch.pip_index_url else []
        ) + [shlex.quote(r) for r in requirements]
        q = shlex.quote
        return render_user_data(
            self.user_data_template.read_text(),
            {
                "watchdog_minutes": str(math.ceil(launch.max_runtime_s / 60) + WATCHDOG_GRACE_MINUTES),
                "python_bin": q(launch.python_bin),
                "pip_install_args": " ".join(pip_args),
                "region": q(self.region),
                "pipes_context": q(pipes_env["DAGSTER_PIPES_CONTEXT"]),
                "pipes_messages": q(pipes_env["DAGSTER_PIPES_MESSAGES"]),
                "upload_interval_s": q(str(self.upload_interval_s)),
                "job_env": "\n".join(f"export {k}={q(v)}" for k, v in sorted(launch.job_env.items())),
                "bucket": q(self.bucket),
                "bundle_key": q(bundle_key),
                "bundle_name": q(bundle_key.rsplit("/", 1)[1]),
                "status_key": q(status_key),
                "job_timeout_s": str(math.ceil(launch.max_runtime_s)),
                "entry_module": q(launch.entry_module),
            },
        )

    def _upload_bundle(self, wheel: Path) -> str:
        if wheel.suffix != ".whl" or not wheel.is_file():
            raise FileNotFoundError(f"project bundle {wheel} is not a wheel file")
        data = wheel.read_bytes()
        key = f"{self.key_prefix}/bundles/{hashlib.sha256(data).hexdigest()[:16]}/{wheel.name}"
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        return key

    def _launch(self, context, session, launch: EC2LaunchSpec, user_data: str, job_id: str) -> str:
        tags = {**launch.tags, **session.default_remote_invocation_info, LAUNCHER_TAG: "ec2", JOB_TAG: job_id}
        if context.has_assets_def:
            tags["dagster/asset-key"] = ",".join(
                k.to_user_string() for k in sorted(context.selected_asset_keys)
            )
        if context.has_partition_key:
            tags["dagster/partition"] = str(context.partition_key)
        tags.setdefault("Name", f"crpbot-train-{tags.get('dagster/partition', context.run_id[:8])}")
        tag_list = [{"Key": k, "Value": str(v)[:256]} for k, v in sorted(tags.items())]
        params: dict[str, Any] = {
            "ImageId": launch.image_id,
            "InstanceType": launch.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": job_id,  # botocore's retries of this call cannot start a second instance
            "UserData": user_data,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required"},
            "TagSpecifications": [{"ResourceType": t, "Tags": tag_list} for t in ("instance", "volume")],
        }
        if launch.subnet_id:
            params["SubnetId"] = launch.subnet_id
        if launch.security_group_ids:
            params["SecurityGroupIds"] = list(launch.security_group_ids)
        if launch.iam_instance_profile:
            kind = "Arn" if launch.iam_instance_profile.startswith("arn:") else "Name"
            params["IamInstanceProfile"] = {kind: launch.iam_instance_profile}
        if launch.key_name:
            params["KeyName"] = launch.key_name
        if launch.market == "spot":
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        instance_id = self._ec2.run_instances(**params)["Instances"][0]["InstanceId"]
        context.log.info(
            f"[ec2] launched {instance_id} ({launch.instance_type}, {launch.market}, {self.region}); "
            f"max runtime {launch.max_runtime_s:.0f}s"
        )
        return instance_id

    def _wait(
        self, context, launch: EC2LaunchSpec, instance_id: str, status_key: str, started: float
    ) -> dict:
        """Until the job reports its status; a dead instance or the deadline is a failure."""
        last_state, last_report = None, started
        while True:
            status = self._read_status(status_key)
            if status is not None:
                if status["exit_code"] == 0:
                    return status
                hint = " (its max runtime)" if status["exit_code"] == 124 else ""
                raise dg.Failure(
                    f"training job on {instance_id} exited with status {status['exit_code']}{hint}",
                    metadata={
                        "ec2_instance_id": instance_id,
                        "job_log_tail": dg.MetadataValue.md(f"```\n{status.get('log_tail', '')}\n```"),
                    },
                )
            state, reason = self._describe(instance_id)
            if state != last_state:
                context.log.info(f"[ec2] {instance_id} is {state}")
                last_state = state
            if state in ENDED_STATES:
                if self._read_status(status_key) is not None:
                    continue  # finished between the two reads
                if reason.startswith("Server.SpotInstanceTermination"):
                    reason = f"spot interruption ({reason})"
                raise dg.Failure(
                    f"instance {instance_id} is {state} before the training job finished: {reason}",
                    metadata={
                        "ec2_instance_id": instance_id,
                        "console_tail": dg.MetadataValue.md(f"```\n{self._console_tail(instance_id)}\n```"),
                    },
                )
            elapsed = time.monotonic() - started
            if elapsed >= launch.max_runtime_s:
                raise dg.Failure(
                    f"training on {instance_id} exceeded its max runtime of {launch.max_runtime_s:.0f}s",
                    metadata={"ec2_instance_id": instance_id},
                )
            if time.monotonic() - last_report >= 300:
                cost = estimate_cost(launch.instance_type, elapsed, self.prices_per_hour)
                context.log.info(f"[ec2] {instance_id} {state} for {elapsed / 60:.0f} min (est. ${cost})")
                last_report = time.monotonic()
            time.sleep(self.poll_interval_s)

    def _read_status(self, key: str) -> dict | None:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        try:
            status = json.loads(body)
            int(status["exit_code"])
        except (ValueError, KeyError, TypeError) as exc:
            raise dg.Failure(f"malformed job status s3://{self.bucket}/{key}: {body[:200]!r}") from exc
        return status

    def _describe(self, instance_id: str) -> tuple[str, str]:
        """(state, 'Code: message' of the state reason); 'pending' while EC2 does not list it yet."""
        try:
            reservations = self._ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
                return "pending", ""
            raise
        instance = reservations[0]["Instances"][0]
        reason = instance.get("StateReason") or {}
        text = (
            f"{reason.get('Code', '')}: {reason.get('Message', '')}"
            if reason
            else instance.get("StateTransitionReason", "unknown reason")
        )
        return instance["State"]["Name"], text

    def _console_tail(self, instance_id: str, chars: int = 2000) -> str:
        try:
            output = self._ec2.get_console_output(InstanceId=instance_id).get("Output", "")
        except botocore.exceptions.ClientError as exc:
            return f"(console output unavailable: {exc})"
        try:
            output = base64.b64decode(output, validate=True).decode(errors="replace")
        except ValueError:
            pass
        return output[-chars:]

    def _instances_of(self, context, job_id: str) -> list[str]:
        try:
            reservations = self._ec2.describe_instances(
                Filters=[{"Name": f"tag:{JOB_TAG}", "Values": [job_id]}]
            )["Reservations"]
        except botocore.exceptions.ClientError as exc:
            context.log.error(f"[ec2] could not look up the instance of job {job_id}: {exc}")
            return []
        return [
            i["InstanceId"]
            for r in reservations
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ]

    def _terminate(self, context, instance_id: str) -> None:
        try:
            self._ec2.terminate_instances(InstanceIds=[instance_id])
            context.log.info(f"[ec2] terminated {instance_id}")
        except botocore.exceptions.ClientError as exc:
            context.log.error(f"[ec2] could not terminate {instance_id}: {exc}; its watchdog will stop it")

    def _metadata(self, launch: EC2LaunchSpec, instance_id: str, runtime_s: float, bundle_key: str) -> dict:
        cost = estimate_cost(launch.instance_type, runtime_s, self.prices_per_hour)
        return {
            "ec2_instance_id": instance_id,
            "ec2_instance_type": launch.instance_type,
            "ec2_market": launch.market,
            "ec2_region": self.region,
            "ec2_runtime_s": round(runtime_s, 1),
            # on-demand price; a spot run costs at most this
            "ec2_estimated_cost_usd": dg.MetadataValue.float(cost)
            if cost is not None
            else "unknown instance price",
            "ec2_console": dg.MetadataValue.url(
                f"https://{self.region}.console.aws.amazon.com/ec2/home?region={self.region}"
                f"#InstanceDetails:instanceId={instance_id}"
            ),
            "ec2_bundle": f"s3://{self.bucket}/{bundle_key}",
        }


class EC2TrainingLauncher(dg.ConfigurableResource):
    """`training_launcher` for CRPBOT_ENV=prod: trains on an EC2 GPU instance via PipesEC2Client.

    Dataset and model URIs must be s3:// (CRPBOT_STORAGE_URI on S3); the instance reads/writes them with its role.
    """

    bucket: str
    image_id: str
    region: str | None = None
    key_prefix: str = "crpbot/ec2"
    # launch settings: EC2LaunchSpec's defaults (one source of truth)
    instance_type: str = EC2LaunchSpec.instance_type
    market: str = EC2LaunchSpec.market
    subnet_id: str | None = None
    security_group_ids: str = ""  # comma-separated, so one env var can carry it
    iam_instance_profile: str | None = None
    key_name: str | None = None
    max_runtime_s: int = EC2LaunchSpec.max_runtime_s
    poll_interval_s: float = 15.0
    message_interval_s: float = 5.0
    upload_interval_s: float = 10.0
    bundle_path: str | None = None
    entry_module: str = EC2LaunchSpec.entry_module
    pip_index_url: str | None = None
    requirements: list[str] | None = None
    python_bin: str = EC2LaunchSpec.python_bin
    prices_per_hour: dict[str, float] = dict(DEFAULT_PRICES_PER_HOUR)

    def client(self) -> PipesEC2Client:
        return PipesEC2Client(
            bucket=self.bucket,
            key_prefix=self.key_prefix,
            ec2_client=boto3.client("ec2", region_name=self.region),
            s3_client=boto3.client("s3", region_name=self.region),
            poll_interval_s=self.poll_interval_s,
            message_interval_s=self.message_interval_s,
            upload_interval_s=self.upload_interval_s,
            prices_per_hour=self.prices_per_hour,
        )

    def launch_spec(self) -> EC2LaunchSpec:
        return EC2LaunchSpec(
            image_id=self.image_id,
            instance_type=self.instance_type,
            market=self.market,
            subnet_id=self.subnet_id or None,
            security_group_ids=tuple(s.strip() for s in self.security_group_ids.split(",") if s.strip()),
            iam_instance_profile=self.iam_instance_profile or None,
            key_name=self.key_name or None,
            max_runtime_s=self.max_runtime_s,
            bundle_path=self.bundle_path or None,
            entry_module=self.entry_module,
            requirements=tuple(self.requirements) if self.requirements is not None else None,
            pip_index_url=self.pip_index_url or None,
            python_bin=self.python_bin,
        )

    def run(self, context, extras: dict) -> dg.PipesClientCompletedInvocation:
        """The launcher contract: run the training entry point remotely with these extras."""
        for name in ("dataset_uri", "model_uri"):
            if not str(extras.get(name, "")).startswith("s3://"):
                raise ValueError(
                    f"EC2 training needs s3:// URIs but extras[{name!r}]={extras.get(name)!r}: "
                    "set CRPBOT_STORAGE_URI to an s3:// location in prod"
                )
        client = self.client()
        invocation = client.run(context=context, extras=extras, launch=self.launch_spec())
        bucket, _, key = extras["model_uri"][len("s3://") :].partition("/")
        try:
            client.s3.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise dg.Failure(f"the EC2 job succeeded but wrote no model at {extras['model_uri']}") from exc
        return invocation
