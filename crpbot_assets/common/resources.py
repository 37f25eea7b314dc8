"""`StorageResource`: the files the IO manager writes, as a resource (bound in crpbot_assets/resources.py)."""

import dagster as dg

from crpbot_assets.common.storage import Storage


class StorageResource(dg.ConfigurableResource):
    """Where asset files live (`base_uri`: a local path or s3://bucket/prefix). The IO manager writes through
    it, and assets that handle artifacts themselves (datasets, models) use it directly."""

    base_uri: str
    s3_endpoint_url: str | None = None

    @property
    def storage(self) -> Storage:
        return Storage(self.base_uri, self.s3_endpoint_url)
