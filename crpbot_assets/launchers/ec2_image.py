"""Which machine image the EC2 launcher boots, and which instance families it accepts.

The image already holds CUDA torch, so no launch installs it: by default the newest AWS Deep Learning AMI with
PyTorch (the OSS Nvidia Driver flavour, Ubuntu 24.04, x86_64), found by name with DescribeImages; or an image of
your own (`image_id`, e.g. one baked from it with the job's few packages, deploy/README.md). Its PyTorch
environment is `DLAMI_PYTHON`. The OSS driver is NVIDIA's open kernel modules: Turing (T4, g4dn) and newer
only; p3 (V100, Volta) needs the proprietary driver, so it is refused before launch.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED_FAMILIES = ("g4dn", "g5")
DLAMI_PYTORCH_NAME = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.* (Ubuntu 24.04) *"
DLAMI_OWNER = "amazon"
DLAMI_PYTHON = (
    "/opt/pytorch/bin/python"  # the DLAMI's PyTorch environment (its release notes: python_location)
)


@dataclass(frozen=True)
class Image:
    image_id: str
    name: str
    created: str


def check_instance_type(instance_type: str) -> None:
    """Refuse instance families the configured AMI's driver cannot drive, before anything is launched."""
    if instance_type.split(".", 1)[0] not in SUPPORTED_FAMILIES:
        raise ValueError(
            f"EC2 instance type {instance_type!r} is not supported: the Deep Learning OSS Nvidia Driver AMI "
            f"drives Turing and newer GPUs only; use one of {', '.join(f + '.*' for f in SUPPORTED_FAMILIES)} "
            "(p3's V100 needs NVIDIA's proprietary driver)"
        )


def find_image(
    ec2, name_pattern: str = DLAMI_PYTORCH_NAME, owners: tuple[str, ...] = (DLAMI_OWNER,)
) -> Image:
    """The newest available x86_64 image whose name matches `name_pattern` (DescribeImages wildcards)."""
    images = ec2.describe_images(
        Owners=list(owners),
        Filters=[
            {"Name": "name", "Values": [name_pattern]},
            {"Name": "state", "Values": ["available"]},
            {"Name": "architecture", "Values": ["x86_64"]},
        ],
    )["Images"]
    if not images:
        raise ValueError(
            f"no available x86_64 image named {name_pattern!r} owned by {', '.join(owners)} in "
            f"{ec2.meta.region_name}; set image_id (CRPBOT_EC2_AMI) or image_name (CRPBOT_EC2_AMI_NAME)"
        )
    newest = max(images, key=lambda image: image["CreationDate"])
    return Image(newest["ImageId"], newest.get("Name", ""), newest["CreationDate"])
