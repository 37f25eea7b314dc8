"""The instance image: the newest AWS Deep Learning AMI with PyTorch, found by name with DescribeImages (moto's
EC2 on loopback; images are made from an instance, so they belong to moto's account), or a given image id."""

import time

import boto3
import pytest

from crpbot_assets.launchers.ec2 import EC2TrainingLauncher
from crpbot_assets.launchers.ec2_image import DLAMI_PYTORCH_NAME, find_image

PYTORCH_OLD = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.9 (Ubuntu 24.04) 20260103"
PYTORCH_NEW = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.11 (Ubuntu 24.04) 20261009"
OTHERS = (
    "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20261020",  # no torch on it
    "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.6.0 (Ubuntu 22.04) 20261030",  # Python 3.10
)


@pytest.fixture
def images(moto):
    """Images named like AWS's: other flavours, then PyTorch 2.9, then (a second later) PyTorch 2.11."""
    ec2 = boto3.client("ec2")
    base = ec2.describe_images(Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])["Images"][0]
    instance = ec2.run_instances(ImageId=base["ImageId"], InstanceType="g4dn.xlarge", MinCount=1, MaxCount=1)
    instance_id = instance["Instances"][0]["InstanceId"]
    made = {}
    for name in (*OTHERS, PYTORCH_OLD, PYTORCH_NEW):
        if name == PYTORCH_NEW:
            time.sleep(1.05)  # CreationDate has whole seconds
        made[name] = ec2.create_image(InstanceId=instance_id, Name=name)["ImageId"]
    account = ec2.describe_images(ImageIds=[made[PYTORCH_NEW]])["Images"][0]["OwnerId"]
    yield ec2, made, account
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_the_newest_pytorch_dlami_is_found_by_name_unless_an_image_is_given(images):
    ec2, made, account = images
    found = find_image(ec2, DLAMI_PYTORCH_NAME, (account,))
    assert (found.image_id, found.name) == (made[PYTORCH_NEW], PYTORCH_NEW)
    with pytest.raises(ValueError, match=r"no available x86_64 image named .* owned by amazon in us-east-1"):
        find_image(ec2, DLAMI_PYTORCH_NAME, ("amazon",))  # moto's own images are none of these

    # the launcher: a given image id as it is, else the lookup
    looked_up = EC2TrainingLauncher(bucket="b", region="us-east-1", image_owners=account)
    assert looked_up.image(looked_up.client()) == made[PYTORCH_NEW]
    given = EC2TrainingLauncher(bucket="b", region="us-east-1", image_id="ami-0123456789abcdef0")
    assert given.image(given.client()) == "ami-0123456789abcdef0"
