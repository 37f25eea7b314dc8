"""Resources every stage shares, chosen by CRPBOT_ENV: the IO manager and the file storage behind it."""

import dagster as dg

from crpbot_assets.common.io_manager import PartitionedFileIOManager
from crpbot_assets.common.settings import local_storage_uri
from crpbot_assets.common.storage import Storage


class StorageResource(dg.ConfigurableResource):
    """The same files the IO manager writes, for assets that handle artifacts themselves (models)."""

    base_uri: str
    s3_endpoint_url: str | None = None

    @property
    def storage(self) -> Storage:
        return Storage(self.base_uri, self.s3_endpoint_url)


def shared_resources(env: str) -> dict:
    base_uri = dg.EnvVar("CRPBOT_STORAGE_URI") if env == "prod" else local_storage_uri()
    return {
        "io_manager": PartitionedFileIOManager(base_uri=base_uri),
        "storage": StorageResource(base_uri=base_uri),
    }
