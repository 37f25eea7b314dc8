"""Local training launcher: the training entry point in a subprocess on this machine, through Dagster Pipes."""

from __future__ import annotations

import os
import sys

import dagster as dg

from crpbot_assets.common.settings import REPO_ROOT

TRAINING_MODULE = "crpbot_assets.training.pipes_main"


class LocalTrainingLauncher(dg.ConfigurableResource):
    """`run(context, extras)` starts `python -m crpbot_assets.training.pipes_main` with PipesSubprocessClient.

    The subprocess uses this interpreter and finds the package even when it is not installed (PYTHONPATH).
    `extra_env` adds variables (e.g. CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS).
    """

    extra_env: dict[str, str] = {}

    def run(self, context: dg.AssetExecutionContext, extras: dict) -> dg.PipesClientCompletedInvocation:
        python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        client = dg.PipesSubprocessClient(
            env={"PYTHONPATH": python_path, **self.extra_env}, cwd=str(REPO_ROOT)
        )
        context.log.info(f"training {extras.get('symbol')} locally: {sys.executable} -m {TRAINING_MODULE}")
        return client.run(context=context, command=[sys.executable, "-m", TRAINING_MODULE], extras=extras)
