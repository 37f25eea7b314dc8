"""Every resource binding, by environment: read `RESOURCES_BY_ENV` top to bottom.

`CRPBOT_ENV` (see `common/settings.py`) picks one row; `crpbot_assets/definitions.py` binds
`resources_for(crpbot_env())` to the merged domains, whose own Definitions carry no resources.

- local: every API on the replay server at `CRPBOT_REPLAY_URL`, files under `local_storage_uri()`,
  training in a local Dagster Pipes subprocess.
- public: the real public APIs (Coinbase, alternative.me, Google Trends; Reddit with `REDDIT_*` credentials)
  with local's storage and training: the graph on real data on one machine.
- prod: the real APIs, files under `CRPBOT_STORAGE_URI` (s3://...), training on an EC2 GPU instance.
  Secrets and settings are `EnvVar`s, resolved when a resource is used and shown in the UI; the optional
  EC2 settings are bound only when their variable is set.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import dagster as dg

from crpbot_assets.candles.client import PROD_URL as COINBASE_URL
from crpbot_assets.candles.resources import CoinbaseResource
from crpbot_assets.common.io_manager import PartitionedFileIOManager
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.settings import local_storage_uri, replay_url
from crpbot_assets.launchers.ec2 import EC2TrainingLauncher
from crpbot_assets.launchers.local import LocalTrainingLauncher
from crpbot_assets.sentiment.resources import FearGreedResource, GoogleTrendsResource, RedditResource

# The replay server accepts any credentials; these make the local Reddit resource complete.
REPLAY_REDDIT_CREDENTIALS = {
    "client_id": "crpbot-replay",
    "client_secret": "replay-secret",
    "user_agent": "crpbot/0.1 (replay server)",
}

# EC2TrainingLauncher field -> environment variable, bound only when the variable is set (else the default).
# Required: CRPBOT_EC2_BUCKET, CRPBOT_EC2_AMI, AWS_REGION. CRPBOT_EC2_SECURITY_GROUP_IDS is comma-separated,
# CRPBOT_EC2_MARKET on-demand|spot, CRPBOT_EC2_BUNDLE a prebuilt wheel (default: built from the checkout).
EC2_OPTIONAL_SETTINGS = {
    "instance_type": "CRPBOT_EC2_INSTANCE_TYPE",
    "market": "CRPBOT_EC2_MARKET",
    "subnet_id": "CRPBOT_EC2_SUBNET_ID",
    "security_group_ids": "CRPBOT_EC2_SECURITY_GROUP_IDS",
    "iam_instance_profile": "CRPBOT_EC2_INSTANCE_PROFILE",
    "key_name": "CRPBOT_EC2_KEY_NAME",
    "key_prefix": "CRPBOT_EC2_KEY_PREFIX",
    "bundle_path": "CRPBOT_EC2_BUNDLE",
    "pip_index_url": "CRPBOT_EC2_PIP_INDEX_URL",
}


def file_resources(base_uri: str | dg.EnvVar, s3_endpoint_url: str | None = None) -> dict:
    """`storage` and the `io_manager` that writes through it (one StorageResource, nested)."""
    storage = StorageResource(base_uri=base_uri, s3_endpoint_url=s3_endpoint_url)
    return {"storage": storage, "io_manager": PartitionedFileIOManager(storage=storage)}


def replay_resources(url: str) -> dict:
    """The four external APIs, all served by the replay server at `url`."""
    return {
        "coinbase": CoinbaseResource(base_url=url),
        "fear_greed": FearGreedResource(base_url=url),
        "reddit": RedditResource(base_url=url, reddit_url=url, **REPLAY_REDDIT_CREDENTIALS),
        "google_trends": GoogleTrendsResource(base_url=f"{url}/trends", requests_per_s=4.0, base_delay_s=0.5),
    }


def ec2_training_launcher() -> EC2TrainingLauncher:
    """The prod `training_launcher`, configured from environment variables."""
    optional = {
        field: dg.EnvVar(name) for field, name in EC2_OPTIONAL_SETTINGS.items() if os.environ.get(name)
    }
    if os.environ.get("CRPBOT_EC2_MAX_RUNTIME_S"):
        optional["max_runtime_s"] = dg.EnvVar.int("CRPBOT_EC2_MAX_RUNTIME_S")
    return EC2TrainingLauncher(
        bucket=dg.EnvVar("CRPBOT_EC2_BUCKET"),
        image_id=dg.EnvVar("CRPBOT_EC2_AMI"),
        region=dg.EnvVar("AWS_REGION"),
        **optional,
    )


def real_api_resources() -> dict:
    """The four external APIs at their real hosts (each resource's default base URL). Reddit credentials:
    REDDIT_CLIENT_ID / REDDIT_CLIENT_SECRET / REDDIT_USER_AGENT, read when Reddit is called."""
    return {
        "coinbase": CoinbaseResource(base_url=COINBASE_URL),
        "fear_greed": FearGreedResource(),
        "reddit": RedditResource(),
        "google_trends": GoogleTrendsResource(),
    }


def local_resources() -> dict:
    return {
        **file_resources(local_storage_uri()),
        **replay_resources(replay_url()),
        "training_launcher": LocalTrainingLauncher(),
    }


def public_resources() -> dict:
    return {
        **file_resources(local_storage_uri()),
        **real_api_resources(),
        "training_launcher": LocalTrainingLauncher(),
    }


def prod_resources() -> dict:
    return {
        **file_resources(dg.EnvVar("CRPBOT_STORAGE_URI")),
        **real_api_resources(),
        "training_launcher": ec2_training_launcher(),
    }


# Builders, not instances: an environment's settings are read only when it is the one chosen.
RESOURCES_BY_ENV: dict[str, Callable[[], dict]] = {
    "local": local_resources,
    "public": public_resources,
    "prod": prod_resources,
}


def resources_for(env: str) -> dict:
    """The resources of environment `env` (a key of RESOURCES_BY_ENV)."""
    if env not in RESOURCES_BY_ENV:
        raise ValueError(f"CRPBOT_ENV={env!r} is not one of {tuple(RESOURCES_BY_ENV)}")
    return RESOURCES_BY_ENV[env]()
