"""Which machine images and instance families the EC2 launcher accepts.

The Deep Learning OSS Nvidia Driver AMI ships NVIDIA's open kernel modules: Turing (T4, g4dn) and newer only.
p3 (V100, Volta) needs the proprietary driver, so it is refused before launch.
"""

from __future__ import annotations

SUPPORTED_FAMILIES = ("g4dn", "g5")


def check_instance_type(instance_type: str) -> None:
    """Refuse instance families the configured AMI's driver cannot drive, before anything is launched."""
    if instance_type.split(".", 1)[0] not in SUPPORTED_FAMILIES:
        raise ValueError(
            f"EC2 instance type {instance_type!r} is not supported: the Deep Learning OSS Nvidia Driver AMI "
            f"drives Turing and newer GPUs only; use one of {', '.join(f + '.*' for f in SUPPORTED_FAMILIES)} "
            "(p3's V100 needs NVIDIA's proprietary driver)"
        )
