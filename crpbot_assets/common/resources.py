"""Resources every stage shares: the IO manager, chosen by CRPBOT_ENV."""

import dagster as dg

from crpbot_assets.common.io_manager import PartitionedFileIOManager
from crpbot_assets.common.settings import local_storage_uri


def shared_resources(env: str) -> dict:
    if env == "prod":
        return {"io_manager": PartitionedFileIOManager(base_uri=dg.EnvVar("CRPBOT_STORAGE_URI"))}
    return {"io_manager": PartitionedFileIOManager(base_uri=local_storage_uri())}
