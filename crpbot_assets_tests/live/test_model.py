"""live/model.py: which fold model decides a minute (promoted_model per symbol x month, the commit rule, demo
promotions refused outside the demo) and that its signal is `signals`' row for the minute, whatever minutes the
service saw before (catch-up), each month's fold starting flat. No service, no clock: the functions alone."""

from datetime import timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest

from crpbot_assets.common.io_manager import PartitionedFileIOManager
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import Storage
from crpbot_assets.live.model import Models, RuleState, promotion_path
from crpbot_assets.signals import scoring
from crpbot_assets.training import walk_forward as wf
from crpbot_assets_tests.live.conftest import live_fold, promote
from crpbot_assets_tests.signals.conftest import APRIL, MARCH, SYMBOL
from crpbot_assets_tests.training.helpers import hourly_sentiment


@pytest.fixture(scope="module")
def sentiment():
    frame = hourly_sentiment(40 * 1440, seed=3)
    return frame.with_columns(pl.col("ts") - frame["ts"].min() + (MARCH - timedelta(days=5)))


@pytest.fixture(scope="module")
def month_fold(features) -> bytes:
    """The fold's real 15-minute grid and its hysteresis rule (enter 0.01, exit 0): the state matters."""
    return live_fold(features, horizon=15)


def live_row(models: Models, features, sentiment, minute, state):
    promotion = models.for_minute(SYMBOL, minute)
    return models.signal(promotion, features.filter(pl.col("ts") <= minute), sentiment, minute, state)


def test_live_signals_are_the_signals_rows_whatever_minutes_the_service_saw(
    tmp_path, features, sentiment, month_fold
):
    """A service started mid-month (the rule's state caught up from the month's start), deciding 31 minutes in a
    row, down for five days, then 31 minutes again: every signal equals the `signals` asset's row (its function
    on the whole month: positions by the fold's rule from the month's first decision)."""
    version = promote(tmp_path, SYMBOL, month_fold, MARCH)
    models = Models(Storage(str(tmp_path)))
    fold = wf.load_fold(month_fold)
    batch = scoring.score(features, sentiment, fold, version, MARCH, APRIL)
    decided = batch.filter(pl.col("decision"))
    assert decided["position"].n_unique() == 3 and (decided["position"].diff() != 0).sum() > 50  # it trades
    minutes = []  # (minutes that traded; the blocks start where a state from flat, or from before the gap, differs)
    for start in (
        MARCH + timedelta(days=8, hours=5, minutes=15),
        MARCH + timedelta(days=13, hours=14, minutes=15),
    ):
        minutes += batch.filter(pl.col("ts") >= start)["ts"].head(31).to_list()
    state = RuleState(MARCH)
    for minute in minutes:
        signal, state = live_row(models, features, sentiment, minute, state)
        row = batch.row(batch["ts"].search_sorted(minute), named=True)
        assert row["ts"] == minute and signal is not None
        assert (signal.decision, signal.position, signal.model_version) == (
            row["decision"],
            row["position"],
            version,
        ), minute
        np.testing.assert_allclose(
            signal.probabilities, [row[c] for c in scoring.PROBABILITY_COLUMNS], atol=1e-6
        )
        assert signal.score == pytest.approx(row["score"], abs=1e-6)
        assert state.through == minute and state.position == scoring.previous_position(
            batch.filter(pl.col("ts") <= minute)
        )
    # what makes them equal is the state: a service deciding from flat where it started, and after its gap from
    # where it stopped, would hold other positions
    first = scoring.score(features, sentiment, fold, version, minutes[0], minutes[30] + timedelta(minutes=1))
    after_gap = scoring.score(
        features, sentiment, fold, version, minutes[31], APRIL, previous=first["position"][-1]
    ).filter(pl.col("ts") <= minutes[-1])
    for naive in (first, after_gap):
        assert not naive.select("ts", "position").equals(
            batch.filter(pl.col("ts").is_between(naive["ts"][0], naive["ts"][-1])).select("ts", "position")
        )


def test_a_new_month_starts_its_fold_flat_and_is_decided_by_its_own_promotion(tmp_path, features, fold):
    """March's last minute by March's promotion, April's first by April's (another fold), from flat."""
    march = promote(tmp_path, SYMBOL, fold, MARCH)
    other = live_fold(features, seed=1)
    april = promote(tmp_path, SYMBOL, other, APRIL)
    models = Models(Storage(str(tmp_path)))
    assert models.for_minute(SYMBOL, APRIL - timedelta(minutes=1)).version == march != april
    assert models.for_minute(SYMBOL, APRIL).version == april
    held = RuleState(MARCH, APRIL - timedelta(minutes=1), -1.0)
    assert held.at(APRIL - timedelta(minutes=1)) == held
    assert held.at(APRIL + timedelta(minutes=7)) == RuleState(APRIL)


def test_nothing_promoted_or_a_demo_promotion_outside_the_demo_trades_flat_on_the_15_minute_grid(
    tmp_path, features, fold
):
    promote(tmp_path, SYMBOL, None, MARCH)
    models = Models(Storage(str(tmp_path)))
    nothing = models.for_minute(SYMBOL, MARCH)
    assert nothing.fold is None and nothing.version == "none" and "nothing promoted" in nothing.flat_because
    minute = MARCH + timedelta(days=2, hours=5)  # on the grid
    flat = scoring.flat_signals(features, MARCH, APRIL, None, 15).filter(pl.col("ts") <= minute)
    signal, state = live_row(models, features, pl.DataFrame(), minute, RuleState(MARCH, MARCH, 1.0))
    assert (signal.decision, signal.position, signal.model_version, signal.probabilities) == (
        True,
        0,
        "none",
        None,
    )
    assert flat["ts"][-1] == minute and state.position == 0.0
    off, _ = live_row(models, features, pl.DataFrame(), minute + timedelta(minutes=1), state)
    assert off is None  # `signals` has no row off the grid without a model

    demo = {
        "demo_rule": True,
        "passes_configured_gate": False,
        "configured_gate_reason": "won 1 of the latest 3",
    }
    version = promote(tmp_path, SYMBOL, fold, MARCH, **demo)
    refused = Models(Storage(str(tmp_path))).for_minute(SYMBOL, MARCH)
    assert refused.fold is None and "crpbot-demo's permissive rule" in refused.flat_because
    assert Models(Storage(str(tmp_path)), demo=True).for_minute(SYMBOL, MARCH).version == version
    promote(tmp_path, SYMBOL, fold, MARCH, **demo | {"passes_configured_gate": True})
    assert Models(Storage(str(tmp_path))).for_minute(SYMBOL, MARCH).version == version


def test_a_promotion_counts_once_committed_and_a_new_one_is_picked_up(tmp_path, instance, features, fold):
    """With an instance, the commit rule: a file without the record describing it (a killed run) is no
    promotion, as for every load of the graph; a committed replacement is picked up at the next refresh."""
    files = Storage(str(tmp_path))
    models = Models(files, instance=instance)
    promote(tmp_path, SYMBOL, fold, MARCH)  # written, never recorded
    assert models.for_minute(SYMBOL, MARCH) is None
    version = promote(tmp_path, SYMBOL, fold, MARCH, instance=instance)
    models.refresh(SYMBOL, MARCH)
    assert models.for_minute(SYMBOL, MARCH).version == version
    newer = promote(tmp_path, SYMBOL, live_fold(features, seed=2), MARCH, instance=instance)
    models.refresh(SYMBOL, MARCH)
    assert models.for_minute(SYMBOL, MARCH).version == newer != version
    # a fold artifact changed on disk: an error naming it, and what was read before stays
    value = files.read_json(promotion_path(SYMBOL, MARCH))
    files.write_bytes(value["model_path"], fold)
    key = f"{MARCH:%Y-%m-%d}|{SYMBOL}"
    PartitionedFileIOManager(storage=StorageResource(base_uri=str(tmp_path))).commit_outside_run(
        instance, "promoted_model", key, value
    )
    with pytest.raises(dg.Failure, match="changed on disk"):
        models.refresh(SYMBOL, MARCH)
    assert models.for_minute(SYMBOL, MARCH).version == newer
