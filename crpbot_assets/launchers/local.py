"""Local training launcher: the training entry point in a subprocess on this machine, through Dagster Pipes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError

from crpbot_assets.common.settings import REPO_ROOT
from crpbot_assets.launchers.jobs import JobBatch, JobResult, OnResult, run_batch
from crpbot_assets.training.jobs import RUNNER_MODULE, TrainingJob

TRAINING_MODULE = "crpbot_assets.training.pipes_main"
POLL_S = 0.2  # how often a multi-job launch looks for finished jobs
TERMINATION_TIMEOUT_S = 20  # after SIGINT on cancellation, then SIGKILL


class LocalTrainingLauncher(dg.ConfigurableResource):
    """`run(context, extras)` starts `python -m crpbot_assets.training.pipes_main` with PipesSubprocessClient;
    `run_jobs(context, jobs, on_result)` trains many jobs in one such subprocess (`launchers/jobs.py`).

    The subprocess uses this interpreter and finds the package even when it is not installed (PYTHONPATH).
    `extra_env` adds variables (e.g. CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS). `concurrency`: jobs trained at
    once by `run_jobs` (None: 4 on a GPU, 1 on a CPU; `training/job_runner.py`).
    """

    extra_env: dict[str, str] = {}
    concurrency: int | None = None

    def _env(self) -> dict[str, str]:
        python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {"PYTHONPATH": python_path, **self.extra_env}

    def run(self, context: dg.AssetExecutionContext, extras: dict) -> dg.PipesClientCompletedInvocation:
        client = dg.PipesSubprocessClient(env=self._env(), cwd=str(REPO_ROOT))
        context.log.info(f"training {extras.get('symbol')} locally: {sys.executable} -m {TRAINING_MODULE}")
        return client.run(context=context, command=[sys.executable, "-m", TRAINING_MODULE], extras=extras)

    def run_jobs(
        self,
        context: dg.AssetExecutionContext,
        jobs: Sequence[TrainingJob],
        on_result: OnResult | None = None,
    ) -> dict[str, JobResult]:
        """Every job not done yet in ONE subprocess; each result delivered to `on_result` as it finishes."""
        return run_batch(context, jobs, on_result, lambda batch, todo: self._launch(context, batch, todo))

    def _launch(self, context, batch: JobBatch, todo: list[TrainingJob]) -> None:
        with dg.open_pipes_session(
            context=context,
            extras=batch.extras(todo, self.concurrency),
            context_injector=dg.PipesTempFileContextInjector(),
            message_reader=dg.PipesTempFileMessageReader(),
        ) as session:
            command = [sys.executable, "-m", RUNNER_MODULE]
            context.log.info(f"training {len(todo)} jobs locally in one process: {' '.join(command)}")
            process = subprocess.Popen(
                command,
                cwd=str(REPO_ROOT),
                env={**os.environ, **self._env(), **session.get_bootstrap_env_vars()},
            )
            try:
                while process.poll() is None:
                    batch.poll(session)
                    time.sleep(POLL_S)
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                context.log.warning(f"run interrupted: stopping the training process {process.pid}")
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=TERMINATION_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
        batch.poll(session)  # the messages read when the session closed
        if process.returncode != 0:
            context.log.error(f"the training process exited with status {process.returncode}")
