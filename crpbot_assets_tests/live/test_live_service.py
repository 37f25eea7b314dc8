"""crpbot-live in process against the replayed feed on a fast clock (60x), the fast tier's smoke run: two symbols,
three minutes of clock (about 3 s), then each test reads what it left. The fold model decides every minute
(horizon 1) so the few minutes hold decisions and fills. Feature parity with the `features` asset, and decisions
and fills equal to the `signals` and `paper_trades` assets' across a month boundary: test_live_equals_batch.py."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest

from crpbot_assets.candles.client import CandlesClient
from crpbot_assets.common.months import month_start, previous_month
from crpbot_assets.features.compute import features_for_month, warmup_start
from crpbot_assets.live.ledger import read_records
from crpbot_assets.live.service import LiveService
from crpbot_assets.replay import synthetic
from crpbot_assets.signals import scoring
from crpbot_assets.training import walk_forward as wf
from crpbot_assets_tests.live.conftest import ORIGIN, World, promote

SYMBOLS = ["BTC-USD", "SOL-USD"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, fold):
    tmp = tmp_path_factory.mktemp("live")
    versions = {symbol: promote(tmp / "data", symbol, fold) for symbol in SYMBOLS}
    with World(speed=60) as world:
        world.seed_cache(tmp, SYMBOLS, ORIGIN - timedelta(minutes=30))
        service = LiveService(world.settings(tmp, SYMBOLS), world.clock)
        service.load()
        summary = service.run(until=world.clock.now() + 180)
        rest = CandlesClient(world.rest.url, 2000, burst=2000)
        yield {"service": service, "summary": summary, "rest": rest, "tmp": tmp, "versions": versions}
        service.close()


def test_bars_built_from_the_stream_equal_the_rest_candles(run):
    service, rest = run["service"], run["rest"]
    for symbol in SYMBOLS:
        history = service.histories[symbol]
        minutes = sorted(history.socket_minutes)
        assert len(minutes) >= 2, f"{symbol}: the socket closed too few minutes: {minutes}"
        first, last = (datetime.fromtimestamp(m, UTC) for m in (minutes[0], minutes[-1]))
        record = rest.fetch(symbol, first, last + timedelta(minutes=1)).frame
        socket = history.frame.filter(pl.col("ts").is_in(record["ts"].to_list()) | (pl.col("ts") >= first))
        assert socket.equals(record), f"{symbol}: socket bars differ from REST"
        assert history.reconciliation.different == 0 and service.builders[symbol].late_trades == 0


def test_each_closed_minute_is_decided_once_on_time_as_signals_decides_it(run, fold):
    service, summary = run["service"], run["summary"]
    records = read_records(service.ledger.path)
    decisions = [r for r in records if r["kind"] == "decision"]
    month = month_start(ORIGIN)
    for symbol in SYMBOLS:
        mine = [r for r in decisions if r["symbol"] == symbol]
        minutes = [r["minute"] for r in mine]
        assert len(mine) >= 2 and minutes == sorted(set(minutes))
        assert {r["model_version"] for r in mine} == {run["versions"][symbol]}
        assert set(minutes) <= service.histories[symbol].socket_minutes | {
            minutes[0]
        }  # the first may be REST's
        # decided before the next minute closed (virtual seconds; a second of real time at 60x)
        assert all(0 < r["latency_s"] < 60 for r in mine), [r["latency_s"] for r in mine]
        # `signals`' rows (its function on features of the replay's candles, from the month's start)
        end = datetime.fromtimestamp(minutes[-1] + 60, UTC)
        candles = synthetic.candles(symbol, warmup_start(previous_month(month)), end, now=end)
        features = pl.concat(
            [
                features_for_month(candles.filter(pl.col("ts") < month), previous_month(month), month).frame,
                features_for_month(candles, month, end).frame,
            ]
        )
        batch = scoring.score(
            features, pl.DataFrame(), wf.load_fold(fold), run["versions"][symbol], month, end
        )
        rows = batch.filter(pl.col("ts").dt.epoch("s").is_in(minutes)).sort("ts")
        assert rows["ts"].dt.epoch("s").to_list() == minutes
        assert [(r["grid"], r["signal"]) for r in mine] == list(zip(rows["decision"], rows["position"]))
        probabilities = np.array([[r[c] for c in scoring.PROBABILITY_COLUMNS] for r in mine])
        np.testing.assert_allclose(
            probabilities, rows.select(scoring.PROBABILITY_COLUMNS).to_numpy(), atol=1e-6
        )
    assert summary["latency_s"]["n"] == len(decisions)
    fills = [r for r in records if r["kind"] == "fill"]
    for (
        fill
    ) in fills:  # at the open of the first minute after the decision that traded (independent: synthetic)
        symbol, after = fill["symbol"], datetime.fromtimestamp(fill["decision_minute"] + 60, UTC)
        candle = synthetic.candles(
            symbol, after, after + timedelta(minutes=30), now=after + timedelta(hours=1)
        )
        assert (fill["fill_minute"], fill["fill_open"]) == (
            int(candle["ts"][0].timestamp()),
            candle["open"][0],
        )


def test_the_ledger_figures_and_alerts_reach_dagster_as_the_live_paper_ledger_asset(run, instance):
    from crpbot_assets.definitions import defs
    from crpbot_assets.live.clock import Clock
    from crpbot_assets.live.report import ASSET, DagsterReporter

    assert defs.resolve_asset_graph().has(dg.AssetKey(ASSET))
    summary = run["summary"]
    reporter = DagsterReporter(SYMBOLS, Clock(), instance)
    reporter.report(summary)
    reporter.alert({"kind": "stale", "symbol": None, "message": "no heartbeat for 12.0s", "at": 0.0})
    for symbol in SYMBOLS:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(ASSET), asset_partitions=[symbol]), limit=5
        ).records
        metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        figures = summary["symbols"][symbol]
        assert metadata["decisions"] == figures["decisions"] > 0
        assert metadata["equity_usd"] == pytest.approx(figures["equity"])
        assert metadata["latency_p95_s"] == pytest.approx(figures["latency_s"]["p95"], abs=1e-6)
        (observation,) = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(ASSET), asset_partitions=[symbol]), limit=5
        ).records
        assert observation.asset_observation.metadata["alert"].value == "stale"


def test_the_alerts_sensor_reads_what_the_service_reported(run, instance):
    from crpbot_assets.live.clock import Clock
    from crpbot_assets.live.report import ASSET, DagsterReporter
    from crpbot_assets.live.sensors import live_paper_trading_alerts

    summary = run["summary"]
    DagsterReporter(SYMBOLS, Clock(), instance).report(summary)
    slow = {s for s, f in summary["symbols"].items() if f["latency_s"]["p95"] > 1.0}  # clock seconds at 60x
    result = live_paper_trading_alerts(dg.build_sensor_context(instance=instance))
    assert {e.partition for e in result.asset_events} == slow and slow
    assert all(
        e.metadata["alert"].value == "slow" and e.asset_key == dg.AssetKey(ASSET) for e in result.asset_events
    )
    again = live_paper_trading_alerts(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert not again.asset_events and again.skip_reason.skip_message == "all clear"  # once per episode
