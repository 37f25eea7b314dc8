"""The prod `training_launcher` (EC2); the local one is bound by crpbot_assets.training.definitions.

Prod configuration comes from environment variables (resolved when the resource is used, shown in the UI):
required CRPBOT_EC2_BUCKET, CRPBOT_EC2_AMI, AWS_REGION; optional CRPBOT_EC2_INSTANCE_TYPE, CRPBOT_EC2_MARKET
(on-demand|spot), CRPBOT_EC2_SUBNET_ID, CRPBOT_EC2_SECURITY_GROUP_IDS (comma-separated),
CRPBOT_EC2_INSTANCE_PROFILE, CRPBOT_EC2_KEY_NAME, CRPBOT_EC2_MAX_RUNTIME_S, CRPBOT_EC2_KEY_PREFIX,
CRPBOT_EC2_BUNDLE (a prebuilt wheel; default: built from the checkout), CRPBOT_EC2_PIP_INDEX_URL.
"""

import os

import dagster as dg

from crpbot_assets.common.settings import crpbot_env
from crpbot_assets.launchers.ec2 import EC2TrainingLauncher

OPTIONAL_SETTINGS = {
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


def prod_resources() -> dict:
    """{"training_launcher": EC2TrainingLauncher} bound to env vars; optional ones only when set."""
    optional = {field: dg.EnvVar(name) for field, name in OPTIONAL_SETTINGS.items() if os.environ.get(name)}
    if os.environ.get("CRPBOT_EC2_MAX_RUNTIME_S"):
        optional["max_runtime_s"] = dg.EnvVar.int("CRPBOT_EC2_MAX_RUNTIME_S")
    launcher = EC2TrainingLauncher(
        bucket=dg.EnvVar("CRPBOT_EC2_BUCKET"),
        image_id=dg.EnvVar("CRPBOT_EC2_AMI"),
        region=dg.EnvVar("AWS_REGION"),
        **optional,
    )
    return {"training_launcher": launcher}


defs = dg.Definitions(resources=prod_resources() if crpbot_env() == "prod" else {})
