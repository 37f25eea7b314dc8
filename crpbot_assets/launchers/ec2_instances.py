"""One training instance's lifecycle: what to launch (`EC2LaunchSpec`), launching it with retries, watching its
state, reading its console, and terminating it (confirmed) on every exit path.

Every instance carries `crpbot/launcher=ec2` (the host's IAM policy terminates only those) and `crpbot/job=<id>`
(an interrupted launch whose id never came back is found by it).
"""

from __future__ import annotations

import base64
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions
import dagster as dg

from crpbot_assets.common.http import ApiError, RequestStats, RetryPolicy, call_with_retries
from crpbot_assets.launchers.aws_retry import (
    CAPACITY,
    NOT_FOUND,
    THROTTLING,
    NotYet,
    api_call,
    error_code,
    transient,
)
from crpbot_assets.launchers.ec2_image import DLAMI_PYTHON, check_instance_type
from crpbot_assets.launchers.ec2_job import DEFAULT_ENTRY_MODULE

ENDED_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
GONE_STATES = frozenset({"shutting-down", "terminated"})
MARKETS = ("on-demand", "spot")
LAUNCHER_TAG = "crpbot/launcher"  # on every instance and volume; the host's IAM policy only terminates these
JOB_TAG = "crpbot/job"


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
    pip_index_url: str | None = None  # index (a mirror) for the few packages the image may lack
    python_bin: str = DLAMI_PYTHON  # the image's Python with CUDA torch
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

    def run_instances_params(self, tags: dict[str, str]) -> dict[str, Any]:
        """RunInstances arguments (without user data and client token): one instance, terminated on shutdown,
        IMDSv2 only, `tags` on the instance and its volumes."""
        tag_list = [{"Key": k, "Value": str(v)[:256]} for k, v in sorted({**self.tags, **tags}.items())]
        params: dict[str, Any] = {
            "ImageId": self.image_id,
            "InstanceType": self.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required"},
            "TagSpecifications": [{"ResourceType": t, "Tags": tag_list} for t in ("instance", "volume")],
        }
        if self.subnet_id:
            params["SubnetId"] = self.subnet_id
        if self.security_group_ids:
            params["SecurityGroupIds"] = list(self.security_group_ids)
        if self.iam_instance_profile:
            kind = "Arn" if self.iam_instance_profile.startswith("arn:") else "Name"
            params["IamInstanceProfile"] = {kind: self.iam_instance_profile}
        if self.key_name:
            params["KeyName"] = self.key_name
        if self.market == "spot":
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        return params


@dataclass
class LaunchState:
    """What is known about one job's instance, also when the launch call was interrupted."""

    job_id: str
    instance_id: str | None = None
    uncertain: bool = False  # a RunInstances call may have started an instance whose id never came back
    deadline: float = math.inf  # time.monotonic() by which the job must have reported
    attempts: int = 0


class InstanceLifecycle:
    """Launch, describe and terminate crpbot's training instances through one EC2 client, with retries."""

    def __init__(
        self,
        ec2,
        api_retry: RetryPolicy,
        launch_retry: RetryPolicy,
        consistency_timeout_s: float,
        stats: RequestStats,
    ):
        self.ec2 = ec2
        self.api_retry = api_retry
        self.launch_retry = launch_retry
        self.consistency_timeout_s = consistency_timeout_s
        self.stats = stats

    @property
    def region(self) -> str:
        return self.ec2.meta.region_name

    def _api(self, log, what: str, call, codes: frozenset[str] = THROTTLING):
        return api_call(what, call, self.api_retry, self.stats, log.warning, codes)

    def launch(
        self,
        log,
        spec: EC2LaunchSpec,
        params: dict[str, Any],
        state: LaunchState,
        user_data_until: Callable[[float], str],
    ) -> None:
        """RunInstances with retries on quota and capacity errors; `user_data_until(deadline_epoch)` renders the
        bootstrap of the attempt (its time budget starts with it). Sets `state`; dg.Failure when AWS refuses."""
        attempts = itertools.count(1)

        def attempt() -> str:
            state.attempts = next(attempts)
            deadline = time.monotonic() + spec.max_runtime_s  # the budget starts now
            user_data = user_data_until(time.time() + spec.max_runtime_s)
            state.uncertain = True
            try:
                # a fresh token per attempt: a refused launch started nothing; botocore's own retries of this
                # one call reuse it, so they cannot start a second instance
                response = self.ec2.run_instances(
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
                f"[ec2] launch {spec.instance_type} ({spec.market}, {self.region})",
                attempt,
                lambda exc: transient(exc, CAPACITY | THROTTLING) and not state.uncertain,
                self.launch_retry,
                self.stats,
                log.warning,
            )
        except ApiError as exc:
            raise dg.Failure(
                f"{exc}. Quota or capacity: raise the account's GPU vCPU quota, lower the `ec2_gpu` pool limit, "
                "or try another instance type, market or subnet (deploy/README.md, Quota)",
            ) from exc
        log.info(
            f"[ec2] launched {state.instance_id} ({spec.instance_type}, {spec.market}, {self.region}); "
            f"time budget {spec.max_runtime_s:.0f}s from now, boot and install included"
        )

    def describe(self, log, instance_id: str, since_launch_s: float) -> tuple[str, str]:
        """(state, 'Code: message' of the state reason); 'pending' while EC2 does not list it yet."""
        try:
            reservations = self._api(
                log,
                f"[ec2] describe {instance_id}",
                lambda: self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"],
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

    def console_tail(self, instance_id: str, chars: int = 4000) -> str:
        """The latest console output (Nitro instances; older ones only have the boot-time snapshot)."""
        try:
            try:
                response = self.ec2.get_console_output(InstanceId=instance_id, Latest=True)
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) not in ("UnsupportedOperation", "InvalidParameterValue"):
                    raise
                response = self.ec2.get_console_output(InstanceId=instance_id)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            return f"(console output unavailable: {exc})"
        output = response.get("Output", "")
        try:
            output = base64.b64decode(output, validate=True).decode(errors="replace")
        except ValueError:
            pass
        return output[-chars:]

    def instances_of(self, log, job_id: str) -> list[str]:
        """Instances tagged with `job_id` that are not terminated; retried while the tag is not visible yet."""

        def lookup() -> list[str]:
            reservations = self.ec2.describe_instances(
                Filters=[{"Name": f"tag:{JOB_TAG}", "Values": [job_id]}]
            )["Reservations"]
            found = [
                i["InstanceId"]
                for r in reservations
                for i in r["Instances"]
                if i["State"]["Name"] != "terminated"
            ]
            if not found:
                raise NotYet(f"no instance tagged {JOB_TAG}={job_id} visible yet")
            return found

        return self._api(log, f"[ec2] look up the instance of job {job_id}", lookup)

    def terminate(self, log, instance_id: str) -> None:
        """Terminate and confirm (shutting-down or terminated), retrying NotFound and throttling; else ApiError."""
        self._api(
            log,
            f"[ec2] terminate {instance_id}",
            lambda: self.ec2.terminate_instances(InstanceIds=[instance_id]),
            frozenset({NOT_FOUND}),  # just launched and not visible to this endpoint yet
        )

        def confirm() -> str:
            instance = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][
                0
            ]
            if instance["State"]["Name"] not in GONE_STATES:
                raise NotYet(f"{instance_id} is still {instance['State']['Name']}")
            return instance["State"]["Name"]

        gone = self._api(log, f"[ec2] confirm termination of {instance_id}", confirm, frozenset({NOT_FOUND}))
        log.info(f"[ec2] terminated {instance_id} ({gone})")

    def terminate_all(self, log, state: LaunchState) -> list[str]:
        """Terminate the job's instance; the ids that could not be confirmed terminated (each logged). Never
        raises: an error here must not replace the run's own error."""
        ids = [state.instance_id] if state.instance_id else []
        if not ids and state.uncertain:
            # interrupted inside run_instances: the id never came back, the job tag finds the instance
            try:
                ids = self.instances_of(log, state.job_id)
            except Exception as exc:  # noqa: BLE001 - logged; the run's own error stays the error
                log.warning(
                    f"[ec2] found no instance of job {state.job_id} after an interrupted launch ({exc}); "
                    f"if one started, its watchdog and the tag {JOB_TAG}={state.job_id} identify it"
                )
        unconfirmed = []
        for instance_id in ids:
            try:
                self.terminate(log, instance_id)
            except Exception as exc:  # noqa: BLE001 - any error, so the other ids and the run's error survive
                unconfirmed.append(instance_id)
                log.error(
                    f"[ec2] could not confirm that {instance_id} is terminated ({type(exc).__name__}: {exc}); "
                    "its watchdog shuts it down after the time budget, the orphan sweep is the last line of defence"
                )
        if unconfirmed:
            log.error(f"[ec2] instances not confirmed terminated: {', '.join(unconfirmed)}")
        return unconfirmed
