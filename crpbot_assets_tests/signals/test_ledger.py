"""Paper ledger: fills at the next open with fee + half-spread, one position, idempotent, resumable."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from crpbot_assets.signals import ledger as lg

T0 = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 4, 1, tzinfo=UTC)
CONFIG = lg.PaperConfig(starting_capital=1000.0, fee_bps=10.0, half_spread_bps=5.0)


def minute(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


def candles_for(n: int, missing=()) -> pl.DataFrame:
    rows = [m for m in range(n) if m not in missing]
    return pl.DataFrame(
        {
            "ts": [minute(m) for m in rows],
            "open": [100.0 + m for m in rows],
            "high": [101.0 + m for m in rows],
            "low": [99.0 + m for m in rows],
            "close": [100.5 + m for m in rows],
            "volume": [1.0] * len(rows),
        }
    )


def signals_for(positions: dict[int, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [minute(m) for m in sorted(positions)],
            "p_down": [0.2] * len(positions),
            "p_flat": [0.3] * len(positions),
            "p_up": [0.5] * len(positions),
            "decision": [m % 15 == 0 for m in sorted(positions)],  # the decision grid
            "position": [positions[m] for m in sorted(positions)],
            "model_version": ["v1"] * len(positions),
        }
    ).with_columns(pl.col("position").cast(pl.Int8))


def test_fills_at_the_next_open_with_stated_costs():
    # every minute has a signal; decisions only on the 15-minute grid: minute 0 long, 15 long (no trade), 30 short
    positions = {m: (1 if m < 30 else -1) for m in range(45)}
    result = lg.advance(lg.empty_ledger(), None, signals_for(positions), candles_for(46), T0, END, CONFIG)
    opening, *trades = result.iter_rows(named=True)
    assert opening["kind"] == "open" and opening["cash"] == 1000.0 and opening["units"] == 0.0
    assert [t["decision_ts"] for t in trades] == [minute(0), minute(30)]
    assert [t["fill_ts"] for t in trades] == [minute(1), minute(31)]  # the next minute's open
    buy, sell = trades
    # buy: target 1 x equity 1000 at open 101: 9.90099 units; price 101 x (1 + 5 bps); fee 10 bps of notional
    units = 1000.0 / 101.0
    price = 101.0 * 1.0005
    assert buy["traded_units"] == pytest.approx(units)
    assert buy["fill_price"] == pytest.approx(price)
    assert buy["fee"] == pytest.approx(units * price * 0.001)
    assert buy["spread_cost"] == pytest.approx(units * 101.0 * 0.0005)
    assert buy["cash"] == pytest.approx(1000.0 - units * price - units * price * 0.001)
    # sell: to -1 x equity marked at open 131
    equity = buy["cash"] + units * 131.0
    target = -equity / 131.0
    assert sell["traded_units"] == pytest.approx(target - units)
    assert sell["fill_price"] == pytest.approx(131.0 * (1 - 0.0005))
    assert sell["units"] == pytest.approx(target) and sell["position"] == -1
    assert sell["equity"] == pytest.approx(sell["cash"] + target * 131.0)
    assert opening["hold_units"] == pytest.approx(1000.0 / (101.0 * 1.0005 * 1.001))


def test_pending_until_the_fill_candle_arrives_then_resumes_without_double_trading():
    positions = {0: 1, 15: 0, 30: 1}
    signals = signals_for(positions)
    full = lg.advance(lg.empty_ledger(), None, signals, candles_for(40), T0, END, CONFIG)
    # tick by tick: candles arrive one minute at a time; each tick starts from the stored ledger
    stored = lg.empty_ledger()
    for n in range(1, 41):
        known = signals.filter(pl.col("ts") < minute(n))
        stored = lg.advance(stored, None, known, candles_for(n), T0, END, CONFIG)
        if n == 16:  # decision at 15 waits for minute 16's candle: pending until now
            assert stored.filter(pl.col("kind") == "trade").height == 1
    assert stored.equals(full)
    assert lg.advance(stored, None, signals, candles_for(40), T0, END, CONFIG).equals(full)  # re-run: no-op


def test_a_missing_next_minute_fills_at_the_next_candle():
    result = lg.advance(
        lg.empty_ledger(), None, signals_for({0: 1}), candles_for(5, missing=(1, 2)), T0, END, CONFIG
    )
    assert result.filter(pl.col("kind") == "trade")["fill_ts"].to_list() == [minute(3)]


def test_a_month_opens_with_the_previous_months_state_and_is_rebuilt_if_it_changes():
    march = lg.advance(lg.empty_ledger(), None, signals_for({0: 1, 15: -1}), candles_for(20), T0, END, CONFIG)
    april_start = END
    april_candles = candles_for(20).with_columns(pl.col("ts") + (april_start - T0))
    april_signals = signals_for({0: 0}).with_columns(pl.col("ts") + (april_start - T0))
    april = lg.advance(
        lg.empty_ledger(),
        lg.last_state(march),
        april_signals,
        april_candles,
        april_start,
        END + timedelta(days=30),
        CONFIG,
    )
    opening = april.row(0, named=True)
    assert opening["kind"] == "open" and opening["units"] == lg.last_state(march)["units"]
    assert april.row(-1, named=True)["position"] == 0
    # March gains a fill after April began: April is recomputed from the new closing state
    changed = {**lg.last_state(march), "units": 0.0, "position": 0}
    rebuilt = lg.advance(
        april, changed, april_signals, april_candles, april_start, END + timedelta(days=30), CONFIG
    )
    assert rebuilt.row(0, named=True)["units"] == 0.0
    assert rebuilt.filter(pl.col("kind") == "trade").height == 0  # already flat: nothing to trade


def test_marks_equity_hold_and_drawdown():
    result = lg.advance(lg.empty_ledger(), None, signals_for({0: 1, 15: 0}), candles_for(30), T0, END, CONFIG)
    frame = lg.marks(result, candles_for(30), 1000.0, None)
    assert frame["ts"][0] == minute(1)
    buy = result.row(1, named=True)
    assert frame["equity"][0] == pytest.approx(buy["cash"] + buy["units"] * 101.5)
    assert frame["hold_equity"][-1] == pytest.approx(result["hold_units"][0] * 129.5)
    flat = frame.filter(pl.col("ts") >= minute(16))
    assert flat["position"].unique().to_list() == [0] and flat["equity"].n_unique() == 1
    assert (frame["drawdown"] <= 0).all()
    assert frame["peak"].to_list() == sorted(frame["peak"].to_list())


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="costs must be >= 0"):
        lg.PaperConfig(fee_bps=-1.0)
    with pytest.raises(ValueError, match="starting_capital"):
        lg.PaperConfig(starting_capital=0.0)
