"""Training jobs of a multi-job launch, and the result file that says a job is done. No Dagster import.

A job is one `pipes_main.run_training` call: a dataset URI, a model URI, the training config, an id unique in
its launch (e.g. `BTC-USD|2024-05|seed1`) and the fingerprint of the model it produces (the identity of its
training rows and settings, e.g. `walk_forward.model_fingerprint`). A job is done when its result file
`<model_uri>.result.json` exists, names the same fingerprint, and the model file it describes is there with the
size it recorded. The job runner writes the model first, then the result file (each atomically), so a job
killed between the two is not done and trains again; a done job is never trained again (resume).
"""

from __future__ import annotations

import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from crpbot_assets.common.storage import MissingFileError, Storage

RESULT_FORMAT = "crpbot-training-result/1"
RESULT_SUFFIX = ".result.json"
DEFAULT_CUDA_CONCURRENCY = (
    4  # one H200, batch 1024: 4 processes gave 2.8x one process's throughput, 8 gave 2.95x
)
MESSAGE_KEY = "crpbot_job"
RUNNER_MODULE = "crpbot_assets.training.job_runner"  # the entry point of a multi-job launch  # the Pipes custom message of a finished job: {MESSAGE_KEY: id, "result", "error"}


@dataclass(frozen=True)
class TrainingJob:
    id: str
    dataset_uri: str
    model_uri: str
    fingerprint: str
    config: dict = field(default_factory=dict)
    symbol: str = ""

    def __post_init__(self):
        missing = [
            name for name in ("id", "dataset_uri", "model_uri", "fingerprint") if not getattr(self, name)
        ]
        if missing:
            raise ValueError(f"training job {self.id or '(no id)'} lacks {missing}")

    @property
    def result_uri(self) -> str:
        return self.model_uri + RESULT_SUFFIX

    def extras(self) -> dict:
        """What `pipes_main.run_training` reads (plus the job's id and fingerprint)."""
        return asdict(self)

    @classmethod
    def from_extras(cls, values: dict) -> TrainingJob:
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


def check_unique(jobs: list[TrainingJob]) -> None:
    """Ids name the jobs of a launch and model URIs their outputs: both must be unique."""
    for name in ("id", "model_uri"):
        values = [getattr(job, name) for job in jobs]
        if duplicated := sorted({v for v in values if values.count(v) > 1}):
            raise ValueError(f"training jobs with the same {name}: {duplicated[:5]}")


def _split(uri: str) -> tuple[Storage, str]:
    base, _, name = uri.rstrip("/").rpartition("/")
    if not base or not name:
        raise ValueError(f"not a file URI: {uri!r}")
    return Storage(base), name


def write_result(job: TrainingJob, metadata: dict) -> dict:
    """Record that `job` is done (after its model was written): its fingerprint, the model's size, and the
    training metadata. Returns the record."""
    storage, name = _split(job.model_uri)
    size = storage.size(name)
    if size is None:
        raise MissingFileError(f"job {job.id}: no model at {job.model_uri} to record as done")
    record = {
        "format": RESULT_FORMAT,
        "job": job.id,
        "fingerprint": job.fingerprint,
        "model_uri": job.model_uri,
        "model_bytes": size,
        "trained_by": f"{socket.gethostname()} pid {os.getpid()}",
        "metadata": metadata,
    }
    result_storage, result_name = _split(job.result_uri)
    result_storage.write_bytes(result_name, json.dumps(record).encode())
    return record


def read_results(jobs: list[TrainingJob], threads: int = 8) -> dict[str, dict]:
    """{job id: result record} of the jobs that are done, read `threads` at a time (S3 round trips)."""
    with ThreadPoolExecutor(threads) as pool:
        records = list(pool.map(read_result, jobs))
    return {job.id: record for job, record in zip(jobs, records) if record is not None}


def read_result(job: TrainingJob) -> dict | None:
    """The job's result record when the job is done (module docstring), else None."""
    storage, name = _split(job.result_uri)
    try:
        record = json.loads(storage.read_bytes(name))
    except (MissingFileError, FileNotFoundError):
        return None
    except ValueError:  # unreadable: not done (a rewrite replaces it)
        return None
    if not isinstance(record, dict) or record.get("format") != RESULT_FORMAT:
        return None
    if record.get("fingerprint") != job.fingerprint:
        return None  # another training wrote this key: this job is not done
    model_storage, model_name = _split(job.model_uri)
    if model_storage.size(model_name) != record.get("model_bytes"):
        return None
    return record
