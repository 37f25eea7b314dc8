"""A tiny Pipes job honouring the training entry point's contract (extras in, model bytes + materialization out).

Stands in for `crpbot_assets.training.pipes_main` where a test needs a job whose behaviour it controls
(`config.fail` raises, `config.sleep_s` waits). Imports no dagster.
"""

import hashlib
import time

from dagster_pipes import open_dagster_pipes

from crpbot_assets.common.storage import Storage


def _split(uri: str) -> tuple[Storage, str]:
    parent, _, name = uri.rpartition("/")
    return Storage(parent), name


def main() -> None:
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        config = extras.get("config", {})
        storage, name = _split(extras["dataset_uri"])
        dataset = storage.read_bytes(name)
        for epoch in range(1, int(config.get("epochs", 2)) + 1):
            pipes.log.info(f"epoch {epoch}: {len(dataset)} dataset bytes")
        time.sleep(float(config.get("sleep_s", 0)))
        if config.get("fail"):
            raise RuntimeError(f"planted failure for {extras['symbol']}")
        model = hashlib.sha256(dataset).digest()
        storage, name = _split(extras["model_uri"])
        storage.write_bytes(name, model)
        pipes.report_asset_materialization(metadata={"symbol": extras["symbol"], "model_bytes": len(model)})


if __name__ == "__main__":
    main()
