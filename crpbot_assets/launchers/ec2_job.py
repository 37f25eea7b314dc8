"""The instance side of PipesEC2Client: open Dagster Pipes over S3, then run the training entry point in it.

`python -m crpbot_assets.launchers.ec2_job [entry_module]` (default `crpbot_assets.training.pipes_main`).
The entry point calls plain `open_dagster_pipes()`; because the context is already open here, with the S3
context loader and S3 message writer, it gets this one. Imports only boto3 and dagster_pipes (no dagster).
"""

from __future__ import annotations

import os
import runpy
import socket
import sys

import boto3
from dagster_pipes import PipesS3ContextLoader, PipesS3MessageWriter, open_dagster_pipes

DEFAULT_ENTRY_MODULE = "crpbot_assets.training.pipes_main"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    entry_module = args[0] if args else DEFAULT_ENTRY_MODULE
    interval = float(os.environ.get("CRPBOT_PIPES_UPLOAD_INTERVAL_S", "10"))
    s3 = boto3.client("s3")  # endpoint/region/credentials from the environment (instance role on EC2)
    with open_dagster_pipes(
        context_loader=PipesS3ContextLoader(s3), message_writer=PipesS3MessageWriter(s3, interval=interval)
    ) as pipes:
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        pipes.log.info(
            f"[ec2] {socket.gethostname()}: running {entry_module} from {package} (python {sys.version.split()[0]})"
        )
        try:
            runpy.run_module(entry_module, run_name="__main__", alter_sys=True)
        except SystemExit as exc:  # an entry point ending with sys.exit(0) succeeded
            if exc.code not in (0, None):
                raise RuntimeError(f"{entry_module} exited with status {exc.code}") from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
