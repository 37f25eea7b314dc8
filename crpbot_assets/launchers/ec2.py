"""`EC2TrainingLauncher`: the prod `training_launcher`, training on a throw-away EC2 GPU instance.

The launcher is split by concern: `ec2_instances` (what to launch, lifecycle, termination), `ec2_bootstrap`
(bundle and user data), `ec2_image` (accepted images and families), `ec2_pipes` (the Pipes client that ties them
together), `ec2_cost` (prices) and `aws_retry` (error codes and back-off). This module is the resource.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import boto3
import botocore.exceptions
import dagster as dg

from crpbot_assets.common.http import RetryPolicy
from crpbot_assets.launchers.ec2_cost import DEFAULT_PRICES_PER_HOUR, PRICE_REGION
from crpbot_assets.launchers.ec2_image import DLAMI_OWNER, DLAMI_PYTORCH_NAME, check_instance_type, find_image
from crpbot_assets.launchers.ec2_instances import EC2LaunchSpec
from crpbot_assets.launchers.ec2_pipes import PipesEC2Client
from crpbot_assets.launchers.jobs import JobBatch, JobResult, OnResult, run_batch
from crpbot_assets.training.jobs import DEFAULT_CUDA_CONCURRENCY, RUNNER_MODULE, TrainingJob


class EC2TrainingLauncher(dg.ConfigurableResource):
    """`training_launcher` for CRPBOT_ENV=prod: trains on an EC2 GPU instance via PipesEC2Client.

    `run(context, extras)` trains one job on one instance; `run_jobs(context, jobs, on_result)` every job of a
    range on ONE instance, `gpu_concurrency` at a time (`launchers/jobs.py`), within `jobs_max_runtime_s`.
    The image: `image_id` when set, else the newest image named `image_name` owned by `image_owners` (the AWS
    Deep Learning AMI with PyTorch by default: CUDA torch preinstalled, `ec2_image.py`).
    Dataset and model URIs must be s3:// (CRPBOT_STORAGE_URI on S3); the instance reads/writes them with its role.
    """

    bucket: str
    image_id: str = ""
    image_name: str = DLAMI_PYTORCH_NAME
    image_owners: str = DLAMI_OWNER  # comma-separated account ids or aliases
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
    # quota/capacity errors: VcpuLimitExceeded, InsufficientInstanceCapacity, ...
    launch_retry_attempts: int = 8
    launch_retry_base_s: float = 15.0
    gpu_concurrency: int = DEFAULT_CUDA_CONCURRENCY  # jobs training at once on the instance's GPU (run_jobs)
    jobs_max_runtime_s: int = 12 * 3600  # time budget of one run_jobs launch (boot and installs included)

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

    def image(self, client: PipesEC2Client) -> str:
        """`image_id`, or the newest image named `image_name` (looked up at each launch)."""
        if self.image_id:
            return self.image_id
        owners = tuple(o.strip() for o in self.image_owners.split(",") if o.strip())
        return find_image(client.instances.ec2, self.image_name, owners).image_id

    def launch_spec(self, image_id: str | None = None, max_runtime_s: float | None = None) -> EC2LaunchSpec:
        return EC2LaunchSpec(
            image_id=image_id or self.image_id,
            instance_type=self.instance_type,
            market=self.market,
            subnet_id=self.subnet_id or None,
            security_group_ids=tuple(s.strip() for s in self.security_group_ids.split(",") if s.strip()),
            iam_instance_profile=self.iam_instance_profile or None,
            key_name=self.key_name or None,
            max_runtime_s=max_runtime_s or self.max_runtime_s,
            finish_margin_s=self.finish_margin_s,
            require_cuda=self.require_cuda,
            bundle_path=self.bundle_path or None,
            entry_module=self.entry_module,
            requirements=tuple(self.requirements) if self.requirements is not None else None,
            pip_index_url=self.pip_index_url or None,
            python_bin=self.python_bin,
        )

    def _check(self, extras: dict, where: str = "extras") -> None:
        """Before anything is launched: s3:// URIs, a supported instance type, CUDA when required."""
        for name in ("dataset_uri", "model_uri"):
            if not str(extras.get(name, "")).startswith("s3://"):
                raise ValueError(
                    f"EC2 training needs s3:// URIs but {where}[{name!r}]={extras.get(name)!r}: "
                    "set CRPBOT_STORAGE_URI to an s3:// location in prod"
                )
        check_instance_type(self.instance_type)
        device = (extras.get("config") or {}).get("device")
        if self.require_cuda and device and not str(device).startswith("cuda"):
            raise ValueError(f"config device={device!r} in {where}, but EC2 GPU instances train on CUDA only")

    def run(self, context, extras: dict) -> dg.PipesClientCompletedInvocation:
        """The launcher contract: run the training entry point remotely with these extras."""
        self._check(extras)
        client = self.client()
        launch = self.launch_spec(self.image(client))
        invocation = client.run(context=context, extras=extras, launch=launch)
        bucket, _, key = extras["model_uri"][len("s3://") :].partition("/")
        try:
            client.s3.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise dg.Failure(f"the EC2 job succeeded but wrote no model at {extras['model_uri']}") from exc
        return invocation

    def run_jobs(
        self, context, jobs: Sequence[TrainingJob], on_result: OnResult | None = None
    ) -> dict[str, JobResult]:
        """Every job not done yet on ONE instance; each result delivered to `on_result` as it finishes."""
        for job in jobs:
            self._check(job.extras(), f"job {job.id}")
        client = self.client()

        def launch(batch: JobBatch, todo: list[TrainingJob]) -> None:
            spec = replace(
                self.launch_spec(self.image(client), self.jobs_max_runtime_s), entry_module=RUNNER_MODULE
            )
            extras = batch.extras(todo, self.gpu_concurrency)
            client.run(context=context, launch=spec, extras=extras, on_poll=batch.poll)

        return run_batch(context, jobs, on_result, launch)
