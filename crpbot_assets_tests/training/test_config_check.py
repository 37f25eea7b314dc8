"""Training config validation: every bad field is named with its reason, before any launcher is called."""

import dagster as dg
import pytest

from crpbot_assets.common.partitions import symbol_month_partitions
from crpbot_assets.launchers.local import LocalTrainingLauncher
from crpbot_assets.training.assets import (
    LstmConfig,
    dataset_limits,
    dataset_relative_path,
    lstm_model,
    training_dataset,
)
from crpbot_assets.training.config_check import (
    RULES,
    DataLimits,
    TrainingConfigError,
    training_config_problems,
    validate_training_config,
)

UPSTREAM = [
    dg.AssetSpec(name, partitions_def=symbol_month_partitions)
    for name in ("candles", "features", "sentiment_features")
]
CALLS: list[dict] = []  # what RecordingLauncher was asked to run, in this process


class RecordingLauncher(LocalTrainingLauncher):
    """The local launcher, recording each call and then stopping instead of starting a subprocess."""

    def run(self, context: dg.AssetExecutionContext, extras: dict):
        CALLS.append(extras)
        raise dg.Failure("RecordingLauncher: launched (stopped before training)")


BAD_FIELDS = [
    ("epochs", 0, "must be >= 1"),
    ("epochs", 2.5, "must be an integer"),
    ("learning_rate", -1e-3, "must be > 0"),
    ("learning_rate", 0.0, "must be > 0"),
    ("learning_rate", float("nan"), "must be finite"),
    ("sequence_length", 0, "must be >= 1"),
    ("batch_size", 0, "must be >= 1"),
    ("hidden_size", 0, "must be >= 1"),
    ("num_layers", -2, "must be >= 1"),
    ("dropout", 1.0, "must be < 1"),
    ("dropout", -0.1, "must be >= 0"),
    ("weight_decay", -1.0, "must be >= 0"),
    ("patience", 0, "must be >= 1"),
    ("seed", -1, "must be >= 0"),
    ("max_train_windows_per_epoch", 0, "must be >= 1"),
    ("eval_batch_size", 0, "must be >= 1"),
    ("cpu_threads", 0, "must be >= 1"),
    ("device", "gpu", "'cpu', 'cuda' or 'cuda:N'"),
    ("class_weighted", 1, "must be true or false"),
    ("deterministic", "on", "must be true or false"),
    ("sentiment_ablation", "yes", "must be true or false"),
]
# Dagster's config types already refuse (or coerce) values of the wrong type: these reach the asset as typed.
DAGSTER_BAD_FIELDS = [
    b
    for b in BAD_FIELDS
    if b[:2]
    not in {("epochs", 2.5), ("class_weighted", 1), ("deterministic", "on"), ("sentiment_ablation", "yes")}
]


def test_defaults_are_valid_and_every_field_has_a_rule():
    assert training_config_problems({}) == []
    assert {name for name, _, _ in BAD_FIELDS} == set(RULES)


@pytest.mark.parametrize("field, value, why", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS])
def test_each_bad_field_is_named_with_its_reason(field, value, why):
    (problem,) = training_config_problems({field: value})
    assert problem.startswith(f"{field} = {value!r}: ") and why in problem


def test_all_problems_are_reported_at_once_and_unknown_fields_too():
    with pytest.raises(TrainingConfigError) as info:
        validate_training_config({"epochs": 0, "batch_size": 0, "epoch": 3}, where="lstm_model BTC-USD")
    message = str(info.value)
    assert message.startswith("lstm_model BTC-USD: invalid training config: ")
    assert "epoch: unknown field" in message and "epochs = 0" in message and "batch_size = 0" in message


def test_sequence_length_is_checked_against_the_data():
    limits = DataLimits(max_sequence_length=240, smallest_split_rows=100, smallest_split="test")
    assert training_config_problems({"sequence_length": 100}, limits) == []
    (too_long,) = training_config_problems({"sequence_length": 101}, limits)
    assert (
        "sequence_length = 101: must be <= the rows available, 100 labelled rows in the test split"
        in too_long
    )
    wide = DataLimits(max_sequence_length=32, smallest_split_rows=10_000, smallest_split="val")
    (beyond_purge,) = training_config_problems({"sequence_length": 60}, wide)
    assert "max_sequence_length 32" in beyond_purge


def _record_dataset(instance, storage, symbol: str, **metadata) -> None:
    """A dataset file and its materialization record, as `training_dataset` leaves them."""
    storage.storage.write_bytes(dataset_relative_path(symbol), b"stands for the dataset parquet")
    instance.report_runless_asset_event(
        dg.AssetMaterialization(training_dataset.key, partition=symbol, metadata=metadata)
    )


def _materialize(instance, storage, symbol: str, **config):
    CALLS.clear()
    return dg.materialize(
        [*UPSTREAM, training_dataset, lstm_model],
        selection=[lstm_model],
        partition_key=symbol,
        resources={"storage": storage, "training_launcher": RecordingLauncher()},
        instance=instance,
        run_config=dg.RunConfig(ops={"lstm_model": LstmConfig(**config)}),
        raise_on_error=False,
    )


def _failure(result) -> str:
    (event,) = result.get_step_failure_events()
    return event.event_specific_data.error.message


@pytest.mark.parametrize(
    "field, value, why", DAGSTER_BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in DAGSTER_BAD_FIELDS]
)
def test_bad_field_fails_lstm_model_before_the_launcher(
    storage_resources, memory_instance, field, value, why
):
    _record_dataset(memory_instance, storage_resources["storage"], "ETH-USD", train_rows=5000, val_rows=900)
    result = _materialize(memory_instance, storage_resources["storage"], "ETH-USD", **{field: value})
    assert not result.success and CALLS == []
    message = _failure(result)
    assert "lstm_model ETH-USD: invalid training config" in message
    assert f"{field} = {value!r}: " in message and why in message


def test_sequence_length_beyond_the_dataset_fails_before_the_launcher(storage_resources, memory_instance):
    storage = storage_resources["storage"]
    _record_dataset(
        memory_instance,
        storage,
        "BTC-USD",
        train_rows=9000,
        val_rows=700,
        test_rows=650,
        max_sequence_length=240,
    )
    assert dataset_limits(memory_instance, "BTC-USD") == DataLimits(240, 650, "test")
    result = _materialize(memory_instance, storage, "BTC-USD", sequence_length=651)
    assert not result.success and CALLS == []
    assert "sequence_length = 651: must be <= the rows available, 650 labelled rows in the test split" in (
        _failure(result)
    )
    # The control: a config that fits reaches the launcher, once.
    result = _materialize(memory_instance, storage, "BTC-USD", sequence_length=60)
    assert not result.success and len(CALLS) == 1 and CALLS[0]["config"]["sequence_length"] == 60
    assert "RecordingLauncher: launched" in _failure(result)
