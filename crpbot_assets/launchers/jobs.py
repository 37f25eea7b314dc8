"""Many training jobs as one launch, on the Dagster side: what every launcher's `run_jobs` shares.

    results = training_launcher.run_jobs(context, jobs, on_result=commit_partition)

`jobs` are `crpbot_assets.training.jobs.TrainingJob`s (dataset, model, config, id, fingerprint). Jobs already
done (their result file matches their fingerprint: a range killed halfway, a re-run) are delivered first as
`reused` and not launched; the others run as ONE launch (one subprocess locally, one instance on EC2) whose job
runner (`training/job_runner.py`) trains several at a time and reports each job as it ends. `on_result(result)`
is called on the step's own thread for every job, as soon as its result is in (so the caller commits that
partition while the rest trains), in the order they finish. After the launch, result files of jobs whose
message never arrived are picked up; a job that failed or left no result fails the call (after every result that
did arrive was delivered). When nothing is left to train, nothing is launched.

The calling asset returns a typed result (its Output or MaterializeResult), as any asset that opens a Pipes
session must. Model URIs must be the job's own: content-addressed (the fingerprint in the path) or run-scoped,
never a key that a successful run promotes, because a late job of a cancelled run still writes there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError

from crpbot_assets.training.jobs import MESSAGE_KEY, TrainingJob, check_unique, read_result, read_results


@dataclass(frozen=True)
class JobResult:
    job: TrainingJob
    metadata: (
        dict  # what `run_training` reported (Pipes metadata values: plain values or {"raw_value", "type"})
    )
    reused: bool  # done before this call: not trained by it

    @property
    def model_uri(self) -> str:
        return self.job.model_uri

    @property
    def values(self) -> dict:
        """The metadata as plain values (`{"raw_value": v, "type": t}` entries unwrapped)."""
        return {
            k: v["raw_value"] if isinstance(v, dict) and "raw_value" in v else v
            for k, v in self.metadata.items()
        }


OnResult = Callable[[JobResult], None]


class MultiJobLauncher(Protocol):
    def run_jobs(
        self,
        context: dg.AssetExecutionContext,
        jobs: Sequence[TrainingJob],
        on_result: OnResult | None = None,
    ) -> dict[str, JobResult]: ...


class JobBatch:
    """The bookkeeping of one `run_jobs` call: which jobs are delivered, failed or still out."""

    def __init__(self, context, jobs: Sequence[TrainingJob], on_result: OnResult | None):
        check_unique(list(jobs))
        self.context = context
        self.jobs = {job.id: job for job in jobs}
        self.on_result = on_result or (lambda result: None)
        self.results: dict[str, JobResult] = {}
        self.errors: dict[str, str] = {}
        self._seen_messages = 0

    def pending(self) -> list[TrainingJob]:
        """Deliver the jobs already done (as reused); the rest, to launch."""
        done = read_results(list(self.jobs.values()))
        for job_id, record in done.items():
            self._deliver(self.jobs[job_id], record, reused=True)
        todo = [job for job in self.jobs.values() if job.id not in done]
        if len(todo) < len(self.jobs):
            self.context.log.info(
                f"{len(self.jobs) - len(todo)} of {len(self.jobs)} training jobs already done: not trained again"
            )
        return todo

    def extras(self, todo: list[TrainingJob], concurrency: int | None) -> dict:
        return {"jobs": [job.extras() for job in todo], "concurrency": concurrency}

    def poll(self, session) -> None:
        """Deliver the results reported (Pipes custom messages) since the last poll."""
        messages = session.get_custom_messages()
        for message in messages[self._seen_messages :]:
            if not isinstance(message, dict) or MESSAGE_KEY not in message:
                continue
            job = self.jobs.get(message[MESSAGE_KEY])
            if job is None or job.id in self.results:
                continue
            if message.get("error"):
                self.errors[job.id] = message["error"]
                self.context.log.error(f"training job {job.id} failed: {message['error']}")
                continue
            record = read_result(job)  # the file, not the message, is the proof
            if record is None:
                self.errors[job.id] = f"reported done but no matching result at {job.result_uri}"
                continue
            self._deliver(job, record, reused=bool((message.get("result") or {}).get("reused")))
        self._seen_messages = len(messages)

    def finish(self) -> dict[str, JobResult]:
        """Deliver results whose message was lost; fail naming every job without a result."""
        late = read_results([job for job in self.jobs.values() if job.id not in self.results])
        for job_id, record in late.items():
            self.errors.pop(job_id, None)
            self._deliver(self.jobs[job_id], record, reused=False)
        missing = [job_id for job_id in self.jobs if job_id not in self.results]
        if missing:
            details = "; ".join(
                f"{job_id}: {self.errors.get(job_id, 'no result')}" for job_id in missing[:10]
            )
            raise dg.Failure(
                f"{len(missing)} of {len(self.jobs)} training jobs have no result: {details}",
                metadata={"failed_jobs": dg.MetadataValue.json(missing)},
            )
        return self.results

    def _deliver(self, job: TrainingJob, record: dict, reused: bool) -> None:
        result = JobResult(job=job, metadata=record.get("metadata") or {}, reused=reused)
        self.results[job.id] = result
        self.on_result(result)


def run_batch(
    context,
    jobs: Sequence[TrainingJob],
    on_result: OnResult | None,
    launch: Callable[[JobBatch, list[TrainingJob]], None],
) -> dict[str, JobResult]:
    """What every launcher's `run_jobs` does around its own `launch(batch, todo)` (one launch for `todo`,
    calling `batch.poll(session)` while it runs)."""
    batch = JobBatch(context, jobs, on_result)
    todo = batch.pending()
    if todo:
        context.log.info(f"training {len(todo)} jobs in one launch")
        try:
            launch(batch, todo)
        except (KeyboardInterrupt, DagsterExecutionInterruptedError):
            raise  # cancelled: end now (what finished is picked up by the next run, from its result files)
        except BaseException:
            try:
                batch.finish()  # deliver what finished before the failure; the launch's error stays the error
            except dg.Failure as missing:
                context.log.error(str(missing))  # which jobs have no result, and why
            raise
    return batch.finish()
