"""The launchers' Definitions: the EC2 orphan sweeper sensor (the launchers themselves are resources)."""

import dagster as dg

from crpbot_assets.launchers.sensors import ec2_orphan_sweeper

defs = dg.Definitions(sensors=[ec2_orphan_sweeper])
