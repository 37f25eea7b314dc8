"""Train on a throw-away EC2 GPU instance through Dagster Pipes (the prod `training_launcher`).

`PipesEC2Client.run` opens a Pipes session (context injected into S3, messages read back from S3), uploads the
project bundle (a wheel), launches one instance whose user data (deploy/ec2-user-data.sh.tmpl) installs a CUDA
torch + the bundle and runs `crpbot_assets.launchers.ec2_job` (which runs the training entry point), polls the
instance and the job's status object, and terminates the instance on every exit path: success, failure,
cancellation, timeout. Modelled on dagster-aws's PipesECSClient.

Real AWS is eventually consistent and rate-limited: describe/terminate retry NotFound and throttling with bounded
back-off, a launch retries quota and capacity errors, and every instance whose termination could not be confirmed
is logged by id. One time budget (`max_runtime_s`, from launch) bounds boot, install and job alike.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import itertools
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
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
from dagster_pipes import PIPES_PROTOCOL_VERSION_FIELD

from crpbot_assets.common.http import ApiError, RequestStats, RetryPolicy, call_with_retries
from crpbot_assets.common.settings import REPO_ROOT
from crpbot_assets.launchers.ec2_job import DEFAULT_ENTRY_MODULE

# On-demand Linux USD/h in PRICE_REGION; other regions differ (configure `prices_per_hour` + `price_region`).
DEFAULT_PRICES_PER_HOUR = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g5.xlarge": 1.006,
}
PRICE_REGION = "us-east-1"
# The Deep Learning OSS Nvidia Driver AMI ships NVIDIA's open kernel modules: Turing (T4, g4dn) and newer only.
# p3 (V100, Volta) needs the proprietary driver, so it is refused before launch.
SUPPORTED_FAMILIES = ("g4dn", "g5")
USER_DATA_TEMPLATE = REPO_ROOT / "deploy" / "ec2-user-data.sh.tmpl"
MAX_USER_DATA_BYTES = 16 * 1024  # EC2's limit on raw user data
WATCHDOG_AFTER_DEADLINE_S = 600  # the instance's own shutdown, for when the Dagster host is gone
ENDED_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
GONE_STATES = frozenset({"shutting-down", "terminated"})
NOT_FOUND = "InvalidInstanceID.NotFound"
THROTTLING = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"}
)
# quota and capacity: nothing was launched, and waiting may help (another run ends, AWS frees capacity)
CAPACITY = frozenset(
    {
        "VcpuLimitExceeded",
        "InsufficientInstanceCapacity",
        "InstanceLimitExceeded",
        "MaxSpotInstanceCountExceeded",
    }
)
MARKETS = ("on-demand", "spot")
LAUNCHER_TAG = "crpbot/launcher"  # on every instance and volume; the host's IAM policy only terminates these
JOB_TAG = "crpbot/job"
REMOTE_PACKAGES = ("torch", "numpy", "polars", "pyarrow", "dagster-pipes", "boto3")
_JOB_SCRIPT = re.compile(r"<<'CRPBOT_JOB'\n(.*?\n)CRPBOT_JOB\n", re.S)


def default_requirements() -> list[str]:
    """The remote job's packages pinned to this host's versions (torch without its local `+cpu` tag)."""
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in REMOTE_PACKAGES]


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (None for anything else)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def transient(exc: BaseException, codes: frozenset[str] = THROTTLING) -> bool:
    """Worth retrying: one of `codes`, or a connection/timeout error before AWS answered."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return error_code(exc) in codes
    return isinstance(exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError))


class _NotYet(Exception):
    """A condition polled with back-off does not hold yet."""


def check_instance_type(instance_type: str) -> None:
    """Refuse instance families the configured AMI's driver cannot drive, before anything is launched."""
    if instance_type.split(".", 1)[0] not in SUPPORTED_FAMILIES:
        raise ValueError(
            f"EC2 instance type {instance_type!r} is not supported: the Deep Learning OSS Nvidia Driver AMI "
            f"drives Turing and newer GPUs only; use one of {', '.join(f + '.*' for f in SUPPORTED_FAMILIES)} "
            "(p3's V100 needs NVIDIA's proprietary driver)"
        )


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
    """PipesS3MessageReader whose message chunks live under a key prefix (so IAM can be scoped to it).

    The client closes the session only once the remote side is done (its status is in S3, or the instance is
    gone), so one last read of the remaining chunks is enough: dagster's threaded reader would instead wait a
    fixed 10 s after closing for a `closed` message that a job killed or never started cannot send.
    """

    def __init__(self, *, key_prefix: str, **kwargs):
        super().__init__(**kwargs)
        self.key_prefix = key_prefix

    @contextmanager
    def get_params(self):
        with super().get_params() as params:
            yield {**params, "key_prefix": f"{self.key_prefix}{params['key_prefix']}"}

    @contextmanager
    def read_messages(self, handler):
        with self.get_params() as params:
            closed = threading.Event()
            thread = threading.Thread(target=self._poll, args=(handler, params, closed), daemon=True)
            thread.start()
            try:
                yield params
            finally:
                closed.set()
                thread.join(timeout=120)

    def _poll(self, handler, params, closed: threading.Event) -> None:
        try:
            while not handler.received_closed_message:
                while (result := self.download_messages(None, params)) is not None:
                    for line in result[1].split("\n"):
                        try:
                            message = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        if isinstance(message, dict) and PIPES_PROTOCOL_VERSION_FIELD in message:
                            handler.handle_message(message)
                if closed.is_set():
                    return  # that was the read after the session closed
                closed.wait(self.interval)
        except Exception:
            handler.report_pipes_framework_exception(f"{type(self).__name__} messages thread", sys.exc_info())
            raise


@dataclass(frozen=True)
class EC2LaunchSpec:
    """What to launch and how the job runs on it.

    `max_runtime_s` is the whole budget from launch (boot, installs, job); the job's own timeout ends
    `finish_margin_s` before it so that the job can report its status and log tail in time.
    """

    image_id: str
    instance_type: str = "g4dn.xlarge"
    market: str = "on-demand"
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    iam_instance_profile: str | None = None  # a name or an ARN
    key_name: str | None = None
    max_runtime_s: float = 3 * 3600
    finish_margin_s: float = 120.0
    bundle_path: str | None = None  # default: a wheel built from this repository
    entry_module: str = DEFAULT_ENTRY_MODULE
    requirements: tuple[str, ...] | None = None  # default: default_requirements()
    pip_index_url: str | None = None  # extra index for a specific CUDA build of torch
    python_bin: str = "python3"
    require_cuda: bool = True  # False only to exercise the path on a machine without a GPU (tests)
    job_env: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.market not in MARKETS:
            raise ValueError(f"EC2 market {self.market!r} is not one of {MARKETS}")
        if not self.image_id:
            raise ValueError("EC2 launch needs an image_id (AMI)")
        if self.max_runtime_s <= 0:
            raise ValueError(f"max_runtime_s must be positive, got {self.max_runtime_s}")
        if not 0 < self.finish_margin_s < self.max_runtime_s:
            raise ValueError(
                f"finish_margin_s must be between 0 and max_runtime_s ({self.max_runtime_s}), got {self.finish_margin_s}"
            )
        check_instance_type(self.instance_type)

    @property
    def kill_after_s(self) -> int:
        """Grace between the job's SIGTERM and SIGKILL: a third of the finish margin, at most 30 s."""
        return max(1, min(30, int(self.finish_margin_s // 3)))

    def machine(self, region: str) -> str:
        return f"EC2 {self.instance_type} ({self.image_id}, {region})"


@dataclass
class _Launch:
    """What is known about one job's instance, also when the launch call was interrupted."""

    job_id: str
    instance_id: str | None = None
    uncertain: bool = False  # a RunInstances call may have started an instance whose id never came back
    deadline: float = math.inf  # time.monotonic() by which the job must have reported
    attempts: int = 0


class PipesEC2Client(dg.PipesClient, TreatAsResourceParam):
    """Runs one Pipes job on a fresh EC2 instance and always terminates it.

    Args:
        bucket: S3 bucket for the bundle, the Pipes context/messages and the job status.
        key_prefix: prefix of every key this client writes.
        poll_interval_s: seconds between instance/status polls.
        message_interval_s: seconds between Pipes message chunk reads.
        upload_interval_s: seconds between the remote job's message chunk uploads.
        prices_per_hour: on-demand USD/h per instance type in `price_region`, for the cost estimate.
        api_retry: back-off for throttling, connection errors and not-yet-visible instances (describe,
            terminate, tag lookups).
        launch_retry: back-off for quota and capacity errors of RunInstances.
        consistency_timeout_s: how long an instance may stay invisible after launch before that is an error.
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
        price_region: str = PRICE_REGION,
        user_data_template: Path = USER_DATA_TEMPLATE,
        api_retry: RetryPolicy | None = None,
        launch_retry: RetryPolicy | None = None,
        consistency_timeout_s: float = 120.0,
    ):
        self.bucket = bucket
        self.key_prefix = key_prefix.strip("/")
        self._ec2 = ec2_client or boto3.client("ec2")
        self._s3 = s3_client or boto3.client("s3")
        self.poll_interval_s = poll_interval_s
        self.message_interval_s = message_interval_s
        self.upload_interval_s = upload_interval_s
        self.prices_per_hour = DEFAULT_PRICES_PER_HOUR if prices_per_hour is None else prices_per_hour
        self.price_region = price_region
        self.user_data_template = Path(user_data_template)
        self.api_retry = api_retry or RetryPolicy(max_attempts=8, base_delay_s=1.0, max_delay_s=20.0)
        self.launch_retry = launch_retry or RetryPolicy(max_attempts=8, base_delay_s=15.0, max_delay_s=120.0)
        self.consistency_timeout_s = consistency_timeout_s
        self.api_stats = RequestStats()

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
        state = _Launch(
            job_id=uuid.uuid4().hex[:16]
        )  # names this launch: S3 prefix, ClientTokens, `crpbot/job` tag
        run_prefix = f"{self.key_prefix}/runs/{context.run_id}/{state.job_id}"
        status_key = f"{run_prefix}/status.json"
        if launch.require_cuda:
            extras = {**(extras or {}), "require_cuda": launch.machine(self.region)}
        started = time.monotonic()
        unconfirmed: list[str] = []
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
            pipes_env = session.get_bootstrap_env_vars()
            try:
                self._launch(context, session, launch, state, pipes_env, bundle_key, run_prefix)
                started = time.monotonic()
                self._wait(context, launch, state, status_key)
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                context.log.warning(
                    f"[ec2] run interrupted: terminating {state.instance_id or 'job ' + state.job_id}"
                )
                raise
            finally:
                # never raises: an error here must not replace the run's own error
                unconfirmed = self._terminate_all(context, state)
            runtime_s = time.monotonic() - started
        context.log.info(f"[ec2] {state.instance_id} finished in {runtime_s:.0f}s")
        return dg.PipesClientCompletedInvocation(
            session,
            metadata=self._metadata(launch, state, runtime_s, bundle_key, run_prefix, unconfirmed),
        )

    def user_data(
        self,
        pipes_env: dict[str, str],
        launch: EC2LaunchSpec,
        bundle_key: str,
        run_prefix: str,
        deadline_epoch: float,
    ) -> str:
        """The instance's bootstrap script for one job that must be done by `deadline_epoch` (unix seconds)."""
        requirements = launch.requirements if launch.requirements is not None else default_requirements()
        pip_args = (
            [f"--extra-index-url {shlex.quote(launch.pip_index_url)}"] if launch.pip_index_url else []
        ) + [shlex.quote(r) for r in requirements]
        q = shlex.quote
        return render_user_data(
            self.user_data_template.read_text(),
            {
                "deadline_epoch": str(math.floor(deadline_epoch)),
                "watchdog_after_s": str(WATCHDOG_AFTER_DEADLINE_S),
                "require_cuda": "1" if launch.require_cuda else "0",
                "machine": q(launch.machine(self.region)),
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
                "status_key": q(f"{run_prefix}/status.json"),
                "log_key": q(f"{run_prefix}/job.log"),
                "job_deadline_epoch": str(math.floor(deadline_epoch - launch.finish_margin_s)),
                "kill_after_s": str(launch.kill_after_s),
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

    def _api(self, context, what: str, call, codes: frozenset[str] = THROTTLING):
        """`call` with the API back-off for `codes`, throttling and connection errors; then ApiError."""
        return call_with_retries(
            what,
            call,
            lambda exc: isinstance(exc, _NotYet) or transient(exc, codes | THROTTLING),
            self.api_retry,
            self.api_stats,
            context.log.warning,
        )

    def _launch(
        self,
        context,
        session,
        launch: EC2LaunchSpec,
        state: _Launch,
        pipes_env: dict[str, str],
        bundle_key: str,
        run_prefix: str,
    ) -> None:
        tags = {
            **launch.tags,
            **session.default_remote_invocation_info,
            LAUNCHER_TAG: "ec2",
            JOB_TAG: state.job_id,
        }
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
        attempts = itertools.count(1)

        def attempt() -> str:
            state.attempts = next(attempts)
            # the budget starts now: user data carries this attempt's deadline
            deadline = time.monotonic() + launch.max_runtime_s
            user_data = self.user_data(
                pipes_env, launch, bundle_key, run_prefix, time.time() + launch.max_runtime_s
            )
            state.uncertain = True
            try:
                # a fresh token per attempt: a refused launch started nothing; botocore's own retries of this
                # one call reuse it, so they cannot start a second instance
                response = self._ec2.run_instances(
                    **params, UserData=user_data, ClientToken=f"{state.job_id}-{state.attempts}"
                )
            except botocore.exceptions.ClientError:
                state.uncertain = False  # AWS answered with an error: nothing was launched
                raise
            state.instance_id = response["Instances"][0]["InstanceId"]
            state.uncertain = False
            state.deadline = deadline
            return state.instance_id

        try:
            call_with_retries(
                f"[ec2] launch {launch.instance_type} ({launch.market}, {self.region})",
                attempt,
                lambda exc: transient(exc, CAPACITY | THROTTLING) and not state.uncertain,
                self.launch_retry,
                self.api_stats,
                context.log.warning,
            )
        except ApiError as exc:
            raise dg.Failure(
                f"{exc}. Quota or capacity: raise the account's GPU vCPU quota, lower the `ec2_gpu` pool limit, "
                "or try another instance type, market or subnet (deploy/README.md, Quota)",
            ) from exc
        context.log.info(
            f"[ec2] launched {state.instance_id} ({launch.instance_type}, {launch.market}, {self.region}); "
            f"time budget {launch.max_runtime_s:.0f}s from now, boot and install included"
        )

    def _wait(self, context, launch: EC2LaunchSpec, state: _Launch, status_key: str) -> dict:
        """Until the job reports its status; a dead instance or the deadline is a failure."""
        instance_id = state.instance_id
        last_state = None
        launched = last_report = time.monotonic()
        while True:
            status = self._read_status(status_key)
            if status is not None:
                self._log_job_output(context, instance_id, status)
                if status["exit_code"] == 0:
                    return status
                hint = " (its time budget ran out)" if status["exit_code"] == 124 else ""
                raise dg.Failure(
                    f"training job on {instance_id} exited with status {status['exit_code']}{hint}",
                    metadata={
                        "ec2_instance_id": instance_id,
                        "job_log_tail": dg.MetadataValue.md(f"```\n{status.get('log_tail', '')}\n```"),
                        "job_log": f"s3://{self.bucket}/{status_key.rsplit('/', 1)[0]}/job.log",
                    },
                )
            state_name, reason = self._describe(context, instance_id, time.monotonic() - launched)
            if state_name != last_state:
                context.log.info(f"[ec2] {instance_id} is {state_name}")
                last_state = state_name
            if state_name in ENDED_STATES:
                if self._read_status(status_key) is not None:
                    continue  # finished between the two reads
                if reason.startswith("Server.SpotInstanceTermination"):
                    reason = f"spot interruption ({reason})"
                console = self._console_tail(instance_id)
                context.log.error(f"[ec2] console output of {instance_id} (latest):\n{console}")
                fatal = [line for line in console.splitlines() if "crpbot: FATAL" in line]
                raise dg.Failure(
                    f"instance {instance_id} is {state_name} before the training job finished: {reason}"
                    + (f"; {fatal[-1].strip()}" if fatal else ""),
                    metadata={
                        "ec2_instance_id": instance_id,
                        "console_tail": dg.MetadataValue.md(f"```\n{console}\n```"),
                    },
                )
            now = time.monotonic()
            if now >= state.deadline:
                raise dg.Failure(
                    f"training on {instance_id} exceeded its time budget of {launch.max_runtime_s:.0f}s "
                    "(max_runtime_s, counted from launch: boot and install included) without reporting a status",
                    metadata={"ec2_instance_id": instance_id},
                )
            if now - last_report >= 300:
                cost = estimate_cost(launch.instance_type, now - launched, self.prices_per_hour)
                context.log.info(
                    f"[ec2] {instance_id} {state_name} for {(now - launched) / 60:.0f} min (est. ${cost})"
                )
                last_report = now
            time.sleep(self.poll_interval_s)

    def _log_job_output(self, context, instance_id: str, status: dict) -> None:
        """The tail of the job's stdout/stderr (pip, CUDA and Python warnings, tracebacks) into the run's logs."""
        tail = status.get("log_tail") or "(empty)"
        text = f"[ec2] output of the job on {instance_id} (exit status {status['exit_code']}), last lines:\n{tail}"
        (context.log.info if status["exit_code"] == 0 else context.log.error)(text)

    def _read_status(self, key: str) -> dict | None:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        try:
            status = json.loads(body)
            int(status["exit_code"])
        except (ValueError, KeyError, TypeError) as exc:
            raise dg.Failure(f"malformed job status s3://{self.bucket}/{key}: {body[:200]!r}") from exc
        return status

    def _describe(self, context, instance_id: str, since_launch_s: float) -> tuple[str, str]:
        """(state, 'Code: message' of the state reason); 'pending' while EC2 does not list it yet."""
        try:
            reservations = self._api(
                context,
                f"[ec2] describe {instance_id}",
                lambda: self._ec2.describe_instances(InstanceIds=[instance_id])["Reservations"],
            )
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != NOT_FOUND:
                raise
            if since_launch_s > self.consistency_timeout_s:
                raise dg.Failure(
                    f"instance {instance_id} is still unknown to DescribeInstances {since_launch_s:.0f}s after "
                    f"its launch (consistency_timeout_s={self.consistency_timeout_s:.0f})"
                ) from exc
            return "pending", ""  # eventual consistency: a fresh instance is not visible everywhere yet
        instance = reservations[0]["Instances"][0]
        reason = instance.get("StateReason") or {}
        text = (
            f"{reason.get('Code', '')}: {reason.get('Message', '')}"
            if reason
            else instance.get("StateTransitionReason", "unknown reason")
        )
        return instance["State"]["Name"], text

    def _console_tail(self, instance_id: str, chars: int = 4000) -> str:
        """The latest console output (Nitro instances; older ones only have the boot-time snapshot)."""
        try:
            try:
                response = self._ec2.get_console_output(InstanceId=instance_id, Latest=True)
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) not in ("UnsupportedOperation", "InvalidParameterValue"):
                    raise
                response = self._ec2.get_console_output(InstanceId=instance_id)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            return f"(console output unavailable: {exc})"
        output = response.get("Output", "")
        try:
            output = base64.b64decode(output, validate=True).decode(errors="replace")
        except ValueError:
            pass
        return output[-chars:]

    def _instances_of(self, context, job_id: str) -> list[str]:
        """Instances tagged with `job_id` that are not terminated; retried while the tag is not visible yet."""

        def lookup() -> list[str]:
            reservations = self._ec2.describe_instances(
                Filters=[{"Name": f"tag:{JOB_TAG}", "Values": [job_id]}]
            )["Reservations"]
            found = [
                i["InstanceId"]
                for r in reservations
                for i in r["Instances"]
                if i["State"]["Name"] != "terminated"
            ]
            if not found:
                raise _NotYet(f"no instance tagged {JOB_TAG}={job_id} visible yet")
            return found

        return self._api(context, f"[ec2] look up the instance of job {job_id}", lookup)

    def _terminate(self, context, instance_id: str) -> None:
        """Terminate and confirm (shutting-down or terminated), retrying NotFound and throttling; else ApiError."""
        self._api(
            context,
            f"[ec2] terminate {instance_id}",
            lambda: self._ec2.terminate_instances(InstanceIds=[instance_id]),
            frozenset({NOT_FOUND}),  # just launched and not visible to this endpoint yet
        )

        def confirm() -> str:
            instance = self._ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
                "Instances"
            ][0]
            if instance["State"]["Name"] not in GONE_STATES:
                raise _NotYet(f"{instance_id} is still {instance['State']['Name']}")
            return instance["State"]["Name"]

        gone = self._api(
            context, f"[ec2] confirm termination of {instance_id}", confirm, frozenset({NOT_FOUND})
        )
        context.log.info(f"[ec2] terminated {instance_id} ({gone})")

    def _terminate_all(self, context, state: _Launch) -> list[str]:
        """Terminate the job's instance; the ids that could not be confirmed terminated (each logged)."""
        ids = [state.instance_id] if state.instance_id else []
        if not ids and state.uncertain:
            # interrupted inside run_instances: the id never came back, the job tag finds the instance
            try:
                ids = self._instances_of(context, state.job_id)
            except Exception as exc:  # noqa: BLE001 - logged; the run's own error stays the error
                context.log.warning(
                    f"[ec2] found no instance of job {state.job_id} after an interrupted launch ({exc}); "
                    f"if one started, its watchdog and the tag {JOB_TAG}={state.job_id} identify it"
                )
        unconfirmed = []
        for instance_id in ids:
            try:
                self._terminate(context, instance_id)
            except Exception as exc:  # noqa: BLE001 - any error, so the other ids and the run's error survive
                unconfirmed.append(instance_id)
                context.log.error(
                    f"[ec2] could not confirm that {instance_id} is terminated ({type(exc).__name__}: {exc}); "
                    "its watchdog shuts it down after the time budget, the orphan sweep is the last line of defence"
                )
        if unconfirmed:
            context.log.error(f"[ec2] instances not confirmed terminated: {', '.join(unconfirmed)}")
        return unconfirmed

    def _metadata(
        self,
        launch: EC2LaunchSpec,
        state: _Launch,
        runtime_s: float,
        bundle_key: str,
        run_prefix: str,
        unconfirmed: list[str],
    ) -> dict:
        cost = estimate_cost(launch.instance_type, runtime_s, self.prices_per_hour)
        region_note = (
            "" if self.price_region == self.region else f"; the instance ran in {self.region}, prices differ"
        )
        metadata = {
            "ec2_instance_id": state.instance_id,
            "ec2_instance_type": launch.instance_type,
            "ec2_market": launch.market,
            "ec2_region": self.region,
            "ec2_runtime_s": round(runtime_s, 1),
            "ec2_launch_attempts": state.attempts,
            "ec2_api_retries": self.api_stats.retries,
            # on-demand price; a spot run costs at most this
            "ec2_estimated_cost_usd": dg.MetadataValue.float(cost)
            if cost is not None
            else "unknown instance price",
            "ec2_cost_basis": (
                f"on-demand Linux price per second (60 s minimum) from the {self.price_region} price table"
                f"{region_note}; EBS volume, S3 and data transfer not included"
            ),
            "ec2_console": dg.MetadataValue.url(
                f"https://{self.region}.console.aws.amazon.com/ec2/home?region={self.region}"
                f"#InstanceDetails:instanceId={state.instance_id}"
            ),
            "ec2_bundle": f"s3://{self.bucket}/{bundle_key}",
            "ec2_job_log": f"s3://{self.bucket}/{run_prefix}/job.log",
        }
        if unconfirmed:
            metadata["ec2_unconfirmed_terminations"] = ", ".join(unconfirmed)
        return metadata


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
    finish_margin_s: float = EC2LaunchSpec.finish_margin_s
    require_cuda: bool = EC2LaunchSpec.require_cuda
    poll_interval_s: float = 15.0
    message_interval_s: float = 5.0
    upload_interval_s: float = 10.0
    bundle_path: str | None = None
    entry_module: str = EC2LaunchSpec.entry_module
    pip_index_url: str | None = None
    requirements: list[str] | None = None
    python_bin: str = EC2LaunchSpec.python_bin
    prices_per_hour: dict[str, float] = dict(DEFAULT_PRICES_PER_HOUR)
    price_region: str = PRICE_REGION  # the region `prices_per_hour` is for
    consistency_timeout_s: float = 120.0
    api_retry_attempts: int = 8
    api_retry_base_s: float = 1.0
    launch_retry_attempts: int = (
        8  # quota/capacity errors: VcpuLimitExceeded, InsufficientInstanceCapacity, ...
    )
    launch_retry_base_s: float = 15.0

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
            price_region=self.price_region,
            api_retry=RetryPolicy(
                max_attempts=self.api_retry_attempts,
                base_delay_s=self.api_retry_base_s,
                max_delay_s=20 * self.api_retry_base_s,
            ),
            launch_retry=RetryPolicy(
                max_attempts=self.launch_retry_attempts,
                base_delay_s=self.launch_retry_base_s,
                max_delay_s=8 * self.launch_retry_base_s,
            ),
            consistency_timeout_s=self.consistency_timeout_s,
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
            finish_margin_s=self.finish_margin_s,
            require_cuda=self.require_cuda,
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
        launch = self.launch_spec()  # an unsupported instance type fails here, before anything is launched
        device = (extras.get("config") or {}).get("device")
        if launch.require_cuda and device and not str(device).startswith("cuda"):
            raise ValueError(f"config device={device!r}, but EC2 GPU instances train on CUDA only")
        client = self.client()
        invocation = client.run(context=context, extras=extras, launch=launch)
        bucket, _, key = extras["model_uri"][len("s3://") :].partition("/")
        try:
            client.s3.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise dg.Failure(f"the EC2 job succeeded but wrote no model at {extras['model_uri']}") from exc
        return invocation
