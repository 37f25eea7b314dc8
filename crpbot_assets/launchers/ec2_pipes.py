"""`PipesEC2Client`: one Dagster Pipes job on a fresh EC2 instance, which is always terminated.

`run` opens a Pipes session (context injected into S3, messages read back from S3), uploads the project bundle
(a wheel), launches one instance whose user data (`ec2_bootstrap`) runs `crpbot_assets.launchers.ec2_job`,
polls the instance and the job's status object, and terminates the instance on every exit path: success,
failure, cancellation, timeout. Modelled on dagster-aws's PipesECSClient. One time budget (`max_runtime_s`,
from launch) bounds boot, install and job alike.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import dagster as dg
from dagster._core.definitions.resource_annotation import TreatAsResourceParam
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader
from dagster_pipes import PIPES_PROTOCOL_VERSION_FIELD

from crpbot_assets.common.http import RequestStats, RetryPolicy
from crpbot_assets.launchers import ec2_bootstrap
from crpbot_assets.launchers.aws_retry import error_code
from crpbot_assets.launchers.ec2_cost import (
    DEFAULT_PRICES_PER_HOUR,
    PRICE_REGION,
    cost_metadata,
    estimate_cost,
)
from crpbot_assets.launchers.ec2_instances import (
    ENDED_STATES,
    JOB_TAG,
    LAUNCHER_TAG,
    EC2LaunchSpec,
    InstanceLifecycle,
    LaunchState,
)

PROGRESS_EVERY_S = 300  # a "still running (est. $)" line this often


class PrefixedS3MessageReader(PipesS3MessageReader):
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
        user_data_template: Path = ec2_bootstrap.USER_DATA_TEMPLATE,
        api_retry: RetryPolicy | None = None,
        launch_retry: RetryPolicy | None = None,
        consistency_timeout_s: float = 120.0,
    ):
        self.bucket = bucket
        self.key_prefix = key_prefix.strip("/")
        self._s3 = s3_client or boto3.client("s3")
        self.poll_interval_s = poll_interval_s
        self.message_interval_s = message_interval_s
        self.upload_interval_s = upload_interval_s
        self.prices_per_hour = DEFAULT_PRICES_PER_HOUR if prices_per_hour is None else prices_per_hour
        self.price_region = price_region
        self.user_data_template = Path(user_data_template)
        self.api_stats = RequestStats()
        self.instances = InstanceLifecycle(
            ec2_client or boto3.client("ec2"),
            api_retry or RetryPolicy(max_attempts=8, base_delay_s=1.0, max_delay_s=20.0),
            launch_retry or RetryPolicy(max_attempts=8, base_delay_s=15.0, max_delay_s=120.0),
            consistency_timeout_s,
            self.api_stats,
        )

    @property
    def region(self) -> str:
        return self.instances.region

    @property
    def s3(self):
        return self._s3

    def run(  # ty: ignore[invalid-method-override]
        self,
        *,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        launch: EC2LaunchSpec,
        extras: dict[str, Any] | None = None,
        on_poll: Callable[[Any], None] | None = None,
    ) -> dg.PipesClientCompletedInvocation:
        """Launch `launch`, run the Pipes job with `extras`, wait, terminate; raises dg.Failure on any failure.
        `on_poll(session)` is called in this thread at every poll while the job runs (and once after it ended)."""
        bundle_key = self._upload_bundle(
            Path(launch.bundle_path) if launch.bundle_path else ec2_bootstrap.build_bundle()
        )
        state = LaunchState(
            job_id=uuid.uuid4().hex[:16]
        )  # names this launch: S3 prefix, ClientTokens, job tag
        run_prefix = f"{self.key_prefix}/runs/{context.run_id}/{state.job_id}"
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
            message_reader=PrefixedS3MessageReader(
                bucket=self.bucket,
                client=self._s3,
                interval=self.message_interval_s,
                key_prefix=f"{run_prefix}/",
            ),
        ) as session:
            pipes_env = session.get_bootstrap_env_vars()
            tick = (lambda: on_poll(session)) if on_poll else (lambda: None)
            try:
                params = launch.run_instances_params(self._tags(context, session, state))
                self.instances.launch(
                    context.log,
                    launch,
                    params,
                    state,
                    lambda deadline: ec2_bootstrap.user_data(
                        self.user_data_template,
                        launch=launch,
                        region=self.region,
                        pipes_env=pipes_env,
                        bucket=self.bucket,
                        bundle_key=bundle_key,
                        run_prefix=run_prefix,
                        deadline_epoch=deadline,
                        upload_interval_s=self.upload_interval_s,
                    ),
                )
                started = time.monotonic()
                self._wait(context, launch, state, f"{run_prefix}/status.json", tick)
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                context.log.warning(
                    f"[ec2] run interrupted: terminating {state.instance_id or 'job ' + state.job_id}"
                )
                raise
            finally:
                unconfirmed = self.instances.terminate_all(context.log, state)
            runtime_s = time.monotonic() - started
        tick()  # the messages of the session's last read
        context.log.info(f"[ec2] {state.instance_id} finished in {runtime_s:.0f}s")
        return dg.PipesClientCompletedInvocation(
            session,
            metadata=self._metadata(launch, state, runtime_s, bundle_key, run_prefix, unconfirmed),
        )

    def _tags(self, context, session, state: LaunchState) -> dict[str, str]:
        tags = {**session.default_remote_invocation_info, LAUNCHER_TAG: "ec2", JOB_TAG: state.job_id}
        if context.has_assets_def:
            tags["dagster/asset-key"] = ",".join(
                k.to_user_string() for k in sorted(context.selected_asset_keys)
            )
        if context.has_partition_key:
            tags["dagster/partition"] = str(context.partition_key)
        elif context.has_partition_key_range:
            key_range = context.partition_key_range
            tags["dagster/partition-range"] = f"{key_range.start}..{key_range.end}"
        tags.setdefault("Name", f"crpbot-train-{tags.get('dagster/partition', context.run_id[:8])}")
        return tags

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

    def _wait(
        self, context, launch: EC2LaunchSpec, state: LaunchState, status_key: str, tick: Callable[[], None]
    ) -> dict:
        """Until the job reports its status; a dead instance or the deadline is a failure."""
        instance_id = state.instance_id
        last_state = None
        launched = last_report = time.monotonic()
        while True:
            tick()
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
            state_name, reason = self.instances.describe(
                context.log, instance_id, time.monotonic() - launched
            )
            if state_name != last_state:
                context.log.info(f"[ec2] {instance_id} is {state_name}")
                last_state = state_name
            if state_name in ENDED_STATES:
                if self._read_status(status_key) is not None:
                    continue  # finished between the two reads
                if reason.startswith("Server.SpotInstanceTermination"):
                    reason = f"spot interruption ({reason})"
                console = self.instances.console_tail(instance_id)
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
            if now - last_report >= PROGRESS_EVERY_S:
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

    def _metadata(
        self,
        launch: EC2LaunchSpec,
        state: LaunchState,
        runtime_s: float,
        bundle_key: str,
        run_prefix: str,
        unconfirmed: list[str],
    ) -> dict:
        metadata = {
            "ec2_instance_id": state.instance_id,
            "ec2_instance_type": launch.instance_type,
            "ec2_image_id": launch.image_id,
            "ec2_market": launch.market,
            "ec2_region": self.region,
            "ec2_runtime_s": round(runtime_s, 1),
            "ec2_launch_attempts": state.attempts,
            "ec2_api_retries": self.api_stats.retries,
            **cost_metadata(
                launch.instance_type, runtime_s, self.prices_per_hour, self.price_region, self.region
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
