"""The machine side of a multi-job launch: every training job of a range in one process tree.

`python -m crpbot_assets.training.job_runner`, inside Dagster Pipes like `pipes_main` (the launchers start it for
`run_jobs`), reads `extras = {"jobs": [...], "concurrency": n}` (`training/jobs.py`). Each job is `run_training` on
its dataset, then its result file; every finished job is reported at once through Pipes
(`report_custom_message({"crpbot_job": id, ...})`), so the launching step can commit that partition while the
others train. A job already done (its result file matches its fingerprint) is reported as reused and not
trained again, so a range killed halfway resumes where it stopped. A failed job is reported and the others go
on; the launch then fails naming the failed jobs.

How many train at once: `concurrency` (extras), by default `DEFAULT_CUDA_CONCURRENCY` processes on a GPU (one
small LSTM leaves most of it idle: several processes share it) and 1 on a CPU (one training already uses every
core). With one at a time, the next job's dataset is read and decoded on a thread while the current one trains;
with several, each runs in its own process (spawned: CUDA cannot be forked) and datasets are read ahead.
Datasets are staged once per distinct URI: an s3:// dataset is downloaded to a local folder when its first job
needs it and deleted when its last job is done; local files are read where they are.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait

import torch

from crpbot_assets.training.artifacts import read_uri
from crpbot_assets.training.jobs import (
    DEFAULT_CUDA_CONCURRENCY,
    MESSAGE_KEY,
    TrainingJob,
    check_unique,
    read_results,
    write_result,
)
from crpbot_assets.training.pipes_main import main, read_dataset, run_training
from crpbot_assets.training.train import pick_device

Report = Callable[[TrainingJob, dict | None, str | None], None]  # (job, result record or None, error or None)


def default_concurrency(device_type: str) -> int:
    return DEFAULT_CUDA_CONCURRENCY if device_type == "cuda" else 1


class Stager:
    """Local copies of remote datasets, one per distinct URI, deleted after the last job that uses it."""

    def __init__(self, jobs: list[TrainingJob], directory: str):
        self._uses = Counter(job.dataset_uri for job in jobs)
        self._directory = directory
        self._paths: dict[str, str] = {}
        self._locks = {uri: threading.Lock() for uri in self._uses}

    def path(self, uri: str) -> str:
        """A local path holding the dataset at `uri` (fetched once)."""
        if not uri.startswith("s3://"):
            return uri
        with self._locks[uri]:
            if uri not in self._paths:
                path = os.path.join(self._directory, f"{len(self._paths)}-{uri.rsplit('/', 1)[-1]}")
                with open(path + ".part", "wb") as out:
                    out.write(read_uri(uri))
                os.replace(path + ".part", path)
                self._paths[uri] = path
            return self._paths[uri]

    def release(self, uri: str) -> None:
        self._uses[uri] -= 1
        if self._uses[uri] == 0 and uri in self._paths:
            os.remove(self._paths.pop(uri))


def train_job(job: TrainingJob, dataset_path: str, require_cuda: str | None, log, dataset=None) -> dict:
    """Train one job from its staged dataset, write its model then its result file; the result record."""
    extras = {**job.extras(), "dataset_uri": dataset_path, "require_cuda": require_cuda}
    metadata = run_training(extras, lambda message: log(f"[{job.id}] {message}"), dataset=dataset)
    return write_result(job, metadata)


def run_jobs(
    jobs: list[TrainingJob],
    report: Report,
    log: Callable[[str], None],
    concurrency: int | None = None,
    require_cuda: str | None = None,
) -> list[str]:
    """Train every job not done yet (reporting each as it ends); the ids of the jobs that failed."""
    check_unique(jobs)
    if require_cuda is not None:
        pick_device(None, None, require_cuda)  # no GPU: fail before any data is read
    done = read_results(jobs)
    for job in jobs:
        if job.id in done:
            log(f"[{job.id}] already trained (result {job.result_uri}); not trained again")
            report(job, {**done[job.id], "reused": True}, None)
    todo = [job for job in jobs if job.id not in done]
    device_type = "cuda" if require_cuda is not None or torch.cuda.is_available() else "cpu"
    workers = max(1, concurrency or default_concurrency(device_type))
    log(
        f"{len(todo)} of {len(jobs)} jobs to train, {min(workers, max(1, len(todo)))} at a time on {device_type}"
    )
    if not todo:
        return []
    staging = tempfile.mkdtemp(prefix="crpbot-jobs-", dir=os.environ.get("CRPBOT_HOME"))
    try:
        stager = Stager(todo, staging)
        if workers == 1:
            return _one_at_a_time(todo, stager, report, log, require_cuda)
        return _several_at_a_time(todo, stager, report, log, require_cuda, workers)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _one_at_a_time(jobs, stager: Stager, report: Report, log, require_cuda) -> list[str]:
    """In this process; the next job's dataset is staged and decoded on a thread while one trains."""
    failed = []
    with ThreadPoolExecutor(1, thread_name_prefix="crpbot-prefetch") as prefetch:

        def load(job: TrainingJob):
            path = stager.path(job.dataset_uri)
            return path, read_dataset(path)

        upcoming = prefetch.submit(load, jobs[0])
        for i, job in enumerate(jobs):
            loading, upcoming = upcoming, prefetch.submit(load, jobs[i + 1]) if i + 1 < len(jobs) else None
            started = time.perf_counter()

            def train(job=job, loading=loading) -> dict:
                path, dataset = loading.result()
                return train_job(job, path, require_cuda, log, dataset)

            try:
                _report_outcome(job, started, train, report, log, failed)
            finally:
                stager.release(job.dataset_uri)
    return failed


_worker_log: multiprocessing.Queue | None = None


def _init_worker(log_queue, threads: int) -> None:
    global _worker_log
    _worker_log = log_queue
    torch.set_num_threads(threads)  # the processes share the machine's cores


def _train_in_worker(job: TrainingJob, path: str, require_cuda: str | None) -> dict:
    return train_job(job, path, require_cuda, _worker_log.put)


def _several_at_a_time(jobs, stager: Stager, report: Report, log, require_cuda, workers: int) -> list[str]:
    """`workers` spawned processes train; this process stages datasets ahead and reports (Pipes stays here)."""
    context = multiprocessing.get_context("spawn")
    log_queue = context.Queue()
    threads = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2) // workers)
    failed: list[str] = []
    waiting = list(jobs)
    staged: dict[str, Future] = {}
    running: dict[Future, tuple[TrainingJob, float]] = {}
    with (
        ThreadPoolExecutor(2, thread_name_prefix="crpbot-stage") as stage,
        ProcessPoolExecutor(workers, context, _init_worker, (log_queue, threads)) as pool,
    ):
        while waiting or running:
            for job in waiting[: 2 * workers]:  # stage ahead of the free workers
                if job.id not in staged:
                    staged[job.id] = stage.submit(stager.path, job.dataset_uri)
            while waiting and len(running) < workers and staged[waiting[0].id].done():
                job = waiting.pop(0)
                try:
                    path = staged.pop(job.id).result()
                except Exception as exc:  # noqa: BLE001 - reported like a training failure
                    failed.append(job.id)
                    report(job, None, f"staging {job.dataset_uri}: {type(exc).__name__}: {exc}")
                    stager.release(job.dataset_uri)
                    continue
                running[pool.submit(_train_in_worker, job, path, require_cuda)] = (job, time.perf_counter())
            staging = [f for f in staged.values() if not f.done()]
            done, _ = wait([*running, *staging], timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(log_queue, log)
            for future in done:
                if future not in running:
                    continue  # a staging future: picked up above
                job, started = running.pop(future)
                stager.release(job.dataset_uri)
                _report_outcome(job, started, future.result, report, log, failed)
    _drain(log_queue, log)
    return failed


def _report_outcome(job: TrainingJob, started: float, result, report: Report, log, failed: list[str]) -> None:
    """Report the job's result record (`result()`), or its failure (added to `failed`); the other jobs go on."""
    try:
        record = result()
    except Exception as exc:  # noqa: BLE001 - reported; the other jobs go on
        failed.append(job.id)
        log(f"[{job.id}] failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        report(job, None, f"{type(exc).__name__}: {exc}")
    else:
        log(f"[{job.id}] done in {time.perf_counter() - started:.1f}s")
        report(job, record, None)


def _drain(log_queue, log) -> None:
    while True:
        try:
            log(log_queue.get_nowait())
        except queue.Empty:
            return


def run_reported(pipes) -> None:
    """The Pipes entry: the jobs of `pipes.extras`, each reported as a custom message as it ends."""
    jobs = [TrainingJob.from_extras(values) for values in pipes.extras["jobs"]]

    def report(job: TrainingJob, record: dict | None, error: str | None) -> None:
        pipes.report_custom_message({MESSAGE_KEY: job.id, "result": record, "error": error})

    failed = run_jobs(
        jobs,
        report,
        pipes.log.info,
        pipes.extras.get("concurrency"),
        pipes.extras.get("require_cuda"),
    )
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} training jobs failed: {', '.join(failed[:20])}")


if __name__ == "__main__":
    main(run_reported)
