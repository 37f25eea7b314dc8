"""The alert conditions against simulated timelines: the stall limit follows the candles' cadence, a stall or a
drawdown is reported once per episode, and the first evaluation reports nothing."""

from datetime import UTC, datetime, timedelta

import pytest

from crpbot_assets.signals.alerts import AlertConfig, SymbolFacts, conditions, evaluate

T0 = datetime(2024, 3, 10, 0, 0, tzinfo=UTC)
SYMBOL = "BTC-USD"


def due(arrivals: list[tuple[datetime, datetime]], now: datetime, limit: float) -> datetime | None:
    """The newest candle among batches (arrived at, newest minute) that arrived more than `limit` minutes ago."""
    old = [last for arrived, last in arrivals if arrived < now - timedelta(minutes=limit)]
    return max(old, default=None)


def replay(config: AlertConfig, minutes: int, candles_every: int, signals_after: int, signals_stop=None):
    """Every minute from T0: candle batches every `candles_every` minutes (covering up to the minute before),
    signals catching up `signals_after` minutes later (never again from `signals_stop` on); the alerts."""
    limit = config.stall_minutes(candles_every)
    arrivals, newest_signal, cursor, reported = [], None, {}, []
    for m in range(minutes + 1):
        now = T0 + timedelta(minutes=m)
        if m % candles_every == 0:
            arrivals.append((now, now - timedelta(minutes=1)))
        caught_up = [last for arrived, last in arrivals if arrived + timedelta(minutes=signals_after) <= now]
        if caught_up and (signals_stop is None or now < signals_stop):
            newest_signal = max(caught_up)
        facts = {SYMBOL: SymbolFacts(due(arrivals, now, limit), newest_signal, "v1", -0.01, limit)}
        alerts, cursor = evaluate(facts, cursor, config)
        reported += [(now, a) for a in alerts]
    return reported


def test_hourly_candles_with_signals_following_never_alert():
    # candles every hour, signals 20 minutes later: the old 30-minute limit on the newest candle fired each hour
    assert replay(AlertConfig(cadence_minutes=60), minutes=24 * 60, candles_every=60, signals_after=20) == []


def test_a_stall_is_reported_once_at_the_limit_after_the_first_uncovered_batch():
    config = AlertConfig(cadence_minutes=60, catch_up_minutes=15)
    stop = T0 + timedelta(hours=3, minutes=10)  # signals never cover the batch that arrives at 04:00
    reported = replay(config, minutes=12 * 60, candles_every=60, signals_after=5, signals_stop=stop)
    ((when, alert),) = reported
    assert when == T0 + timedelta(
        hours=4, minutes=75, seconds=60
    )  # arrived 04:00, strictly older than 75 min
    assert alert.kind == "stalled" and "2024-03-10 03:59:00+00:00" in alert.message


def test_minute_fresh_candles_get_a_minute_based_limit():
    config = AlertConfig(cadence_minutes=60, catch_up_minutes=5)
    assert replay(config, minutes=240, candles_every=1, signals_after=3) == []
    stop = T0 + timedelta(minutes=100)
    ((when, alert),) = replay(config, minutes=240, candles_every=1, signals_after=3, signals_stop=stop)
    assert alert.kind == "stalled" and when - stop < timedelta(minutes=1 + 5 + 4)
    assert config.stall_minutes(1) == 6 and config.stall_minutes() == 65


def facts(signal: datetime | None = T0, version="v1", drawdown: float | None = -0.01, due_at=T0):
    return {SYMBOL: SymbolFacts(due_at, signal, version, drawdown)}


def test_first_evaluation_records_and_reports_nothing_then_once_per_episode():
    config = AlertConfig(max_drawdown=0.1)
    stuck = T0 - timedelta(minutes=45)
    alerts, cursor = evaluate(facts(signal=stuck, drawdown=-0.2), {}, config)
    assert alerts == [] and conditions(SYMBOL, facts(stuck)[SYMBOL], config)["stalled"]  # state, not news
    alerts, cursor = evaluate(
        facts(signal=stuck, drawdown=-0.2, due_at=T0 + timedelta(hours=1)), cursor, config
    )
    assert alerts == []  # the same stall (same newest signal) and the same drawdown episode
    alerts, cursor = evaluate(facts(), cursor, config)
    assert alerts == []  # both cleared
    alerts, cursor = evaluate(facts(signal=stuck + timedelta(minutes=5)), cursor, config)
    assert [a.kind for a in alerts] == ["stalled"] and "40 minutes behind" in alerts[0].message
    alerts, cursor = evaluate(facts(version="v2", drawdown=-0.15), cursor, config)
    assert sorted(a.kind for a in alerts) == ["drawdown", "model_changed"]
    assert "from v1 to v2" in next(a.message for a in alerts if a.kind == "model_changed")
    alerts, cursor = evaluate(facts(version=None, signal=None), cursor, config)
    assert [a.kind for a in alerts] == ["model_changed"] and "demoted" in alerts[0].message
    alerts, _ = evaluate(facts(version=None, signal=None), cursor, config)
    assert alerts == []  # nothing trades: no signals are expected


def test_drawdown_boundary_and_bad_config():
    config = AlertConfig(max_drawdown=0.1)
    assert conditions(SYMBOL, facts(drawdown=-0.1)[SYMBOL], config)["drawdown"]
    assert conditions(SYMBOL, facts(drawdown=-0.0999)[SYMBOL], config)["drawdown"] is None
    with pytest.raises(ValueError, match="cadence_minutes > 0"):
        AlertConfig(cadence_minutes=0)
