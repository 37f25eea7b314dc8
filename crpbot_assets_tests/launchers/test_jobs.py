"""Many training jobs as one launch: the job runner in this process (fast), the local launcher's one subprocess
(slow), a run killed halfway that resumes without retraining what was done (slow). Real training of a tiny model."""

import os
import signal
from pathlib import Path

import dagster as dg
import pytest

from crpbot_assets.launchers.local import LocalTrainingLauncher
from crpbot_assets.training import dataset as ds
from crpbot_assets.training.artifacts import load_artifact, read_uri
from crpbot_assets.training.job_runner import run_jobs
from crpbot_assets.training.jobs import TrainingJob, read_result
from crpbot_assets_tests.training.helpers import SMALL_CONFIG, hourly_sentiment, planted

TINY = {
    "hidden_size": 4,
    "num_layers": 1,
    "sequence_length": 8,
    "batch_size": 256,
    "epochs": 1,
    "cpu_threads": 1,
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> list[str]:
    """Two small datasets (two "folds") as parquet files."""
    folder = tmp_path_factory.mktemp("datasets")
    paths = []
    for seed in (0, 1):
        candles, features = planted(2500, seed=seed)
        dataset = ds.build_dataset(features, hourly_sentiment(2500), candles, SMALL_CONFIG, "BTC-USD")
        paths.append(str(folder / f"fold{seed}.parquet"))
        Path(paths[-1]).write_bytes(ds.to_parquet_bytes(dataset))
    return paths


def _jobs(
    datasets: list[str], models: Path, n: int, ablation: bool = False, epochs: int = 1
) -> list[TrainingJob]:
    """n jobs over the datasets: fold x seed, models under `models`, `epochs` each (no early stop)."""
    return [
        TrainingJob(
            id=f"BTC-USD|fold{k % 2}|seed{k // 2}",
            dataset_uri=datasets[k % 2],
            model_uri=str(models / f"fold{k % 2}-seed{k // 2}.pt"),
            fingerprint=f"fp-{k}",
            config={
                **TINY,
                "epochs": epochs,
                "patience": epochs,
                "seed": k // 2,
                "sentiment_ablation": ablation,
            },
            symbol="BTC-USD",
        )
        for k in range(n)
    ]


def test_runner_trains_each_job_once_reports_each_and_skips_done_jobs(datasets, tmp_path):
    jobs = _jobs(datasets, tmp_path, 3)
    reports = []
    failed = run_jobs(jobs, lambda job, record, error: reports.append((job.id, record, error)), print, 1)
    assert failed == [] and [r[0] for r in reports] == [job.id for job in jobs]  # in order, one each
    for job, (_, record, error) in zip(jobs, reports):
        assert error is None and record == read_result(job)
        artifact = load_artifact(read_uri(job.model_uri))
        assert artifact["variants"]["with_sentiment"]["config"]["seed"] == job.config["seed"]
        assert record["model_bytes"] == os.path.getsize(job.model_uri)
        assert record["metadata"]["with_sentiment/epochs_run"] == 1
    stamps = [os.stat(job.model_uri).st_mtime_ns for job in jobs]

    # again, plus one new job: the three are reported as reused and not trained again
    more = _jobs(datasets, tmp_path, 4)
    again = []
    assert run_jobs(more, lambda job, record, error: again.append((job.id, record)), print, 1) == []
    assert [job_id for job_id, record in again if record.get("reused")] == [job.id for job in jobs]
    assert [os.stat(job.model_uri).st_mtime_ns for job in jobs] == stamps
    assert read_result(more[3]) is not None


def test_result_is_not_done_for_another_fingerprint_or_a_replaced_model(datasets, tmp_path):
    (job,) = _jobs(datasets, tmp_path, 1)
    assert run_jobs([job], lambda *a: None, print, 1) == []
    assert read_result(job) is not None
    assert read_result(TrainingJob(**{**job.extras(), "fingerprint": "other"})) is None
    Path(job.model_uri).write_bytes(b"another model")  # e.g. a write that was killed and redone elsewhere
    assert read_result(job) is None


def test_a_failing_job_is_reported_and_the_others_still_train(datasets, tmp_path):
    bad = tmp_path / "corrupt.parquet"
    bad.write_bytes(b"not parquet")
    jobs = _jobs(datasets, tmp_path, 2)
    jobs.insert(
        1, TrainingJob(id="bad", dataset_uri=str(bad), model_uri=str(tmp_path / "bad.pt"), fingerprint="x")
    )
    reports = {}
    failed = run_jobs(jobs, lambda job, record, error: reports.update({job.id: (record, error)}), print, 1)
    assert failed == ["bad"]
    assert reports["bad"][0] is None and "corrupt.parquet is not a crpbot training" in reports["bad"][1]
    assert all(reports[job.id][0] is not None for job in jobs if job.id != "bad")
    assert not Path(tmp_path / "bad.pt").exists()


def test_the_artifact_records_the_batch_and_rate_the_device_used(datasets, tmp_path):
    (job,) = _jobs(datasets, tmp_path, 1)
    config = {k: v for k, v in job.config.items() if k != "batch_size"}  # both left to the device
    job = TrainingJob(**{**job.extras(), "config": config})
    assert run_jobs([job], lambda *a: None, print, 1) == []
    recorded = load_artifact(read_uri(job.model_uri))["variants"]["with_sentiment"]["config"]
    assert (recorded["batch_size"], recorded["learning_rate"]) == (1024, 1e-3)  # CPU's


def test_jobs_must_be_unique():
    job = TrainingJob(id="a", dataset_uri="d", model_uri="m", fingerprint="f")
    with pytest.raises(ValueError, match="same id"):
        run_jobs([job, job], lambda *a: None, print)
    with pytest.raises(ValueError, match="lacks \\['fingerprint'\\]"):
        TrainingJob(id="b", dataset_uri="d", model_uri="m", fingerprint="")


# --- the local launcher: one subprocess for every job (real processes) -------------------------------------


def _asset(jobs: list[TrainingJob], delivered: list, kill_after: int | None = None):
    @dg.asset
    def range_of_folds(context: dg.AssetExecutionContext, training_launcher: LocalTrainingLauncher):
        def commit(result):
            delivered.append(result)
            if kill_after is not None and len(delivered) == kill_after:  # the machine dies mid-range
                pid = int(read_result(result.job)["trained_by"].rsplit(" ", 1)[1])
                os.kill(pid, signal.SIGKILL)

        results = training_launcher.run_jobs(context, jobs, commit)
        return dg.MaterializeResult(metadata={"jobs": len(results)})  # Pipes needs a typed result

    return range_of_folds


@pytest.mark.slow
def test_local_launcher_trains_every_job_in_one_subprocess(datasets, tmp_path, instance):
    jobs = _jobs(datasets, tmp_path, 4, ablation=True)
    delivered = []
    result = dg.materialize(
        [_asset(jobs, delivered)], instance=instance, resources={"training_launcher": LocalTrainingLauncher()}
    )
    assert result.success
    assert sorted(r.job.id for r in delivered) == sorted(job.id for job in jobs)
    assert not any(r.reused for r in delivered)
    trainers = {read_result(job)["trained_by"] for job in jobs}
    assert len(trainers) == 1 and f"pid {os.getpid()}" not in trainers.pop()  # one process, not this one
    assert {r.metadata["without_sentiment/epochs_run"] for r in delivered} == {1}
    assert {r.values["model_uri"] for r in delivered} == {job.model_uri for job in jobs}
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert sum(m.startswith("training 4 jobs locally in one process") for m in logs) == 1
    assert sum("with_sentiment epoch 1/1" in m for m in logs) == 4  # each job's epochs came back live


@pytest.mark.slow
def test_a_range_killed_halfway_resumes_without_retraining(datasets, tmp_path, instance):
    jobs = _jobs(datasets, tmp_path, 6, epochs=20)  # slow enough that the kill lands mid-range
    launcher = LocalTrainingLauncher(concurrency=1)
    first = []  # the training process is SIGKILLed as soon as the first result is delivered
    killed = dg.materialize(
        [_asset(jobs, first, kill_after=1)],
        instance=instance,
        resources={"training_launcher": launcher},
        raise_on_error=False,
    )
    assert not killed.success
    done = [job.id for job in jobs if read_result(job) is not None]
    assert 1 <= len(done) < len(jobs) and sorted(r.job.id for r in first) == sorted(done)
    error = killed.get_step_failure_events()[0].step_failure_data.error.message
    assert f"{len(jobs) - len(done)} of {len(jobs)} training jobs have no result" in error
    stamps = {job.id: os.stat(job.model_uri).st_mtime_ns for job in jobs if job.id in done}

    second = []
    resumed = dg.materialize(
        [_asset(jobs, second)], instance=instance, resources={"training_launcher": launcher}
    )
    assert resumed.success
    assert {r.job.id: r.reused for r in second} == {job.id: job.id in done for job in jobs}
    assert {
        job_id: os.stat(jobs[[j.id for j in jobs].index(job_id)].model_uri).st_mtime_ns for job_id in done
    } == stamps
    logs = [e.user_message for e in instance.all_logs(resumed.run_id)]
    assert f"{len(done)} of {len(jobs)} training jobs already done: not trained again" in logs
    assert (
        sum(m.startswith(f"training {len(jobs) - len(done)} jobs locally in one process") for m in logs) == 1
    )
    assert all(read_result(job) is not None for job in jobs)


@pytest.mark.slow
def test_runner_trains_several_at_once_in_spawned_processes(datasets, tmp_path):
    jobs = _jobs(datasets, tmp_path, 4)
    reports = []
    failed = run_jobs(jobs, lambda job, record, error: reports.append((job.id, record, error)), print, 2)
    assert failed == [] and sorted(r[0] for r in reports) == sorted(job.id for job in jobs)
    trainers = {read_result(job)["trained_by"] for job in jobs}
    assert len(trainers) == 2 and not any(t.endswith(f"pid {os.getpid()}") for t in trainers)
