"""The paper-trading ledger and portfolio marks of one symbol: simulated fills, never real orders.

Pure polars/numpy (no Dagster). Rules:
- Decisions: the signals marked `decision` (the fold model's decision grid, every 15 minutes: the minutes the
  walk-forward verdict trades), each known at its minute's close, its position from the one decision function
  (training/decisions.py). A grid minute without a signal keeps the position.
- Fill: at the open of the first candle after the decision minute (the next minute, or the next one that
  traded); a decision whose fill candle has not arrived yet is pending and is filled by a later run.
- Sizing: one position per symbol, a target of position x equity (long_short: -1, 0, +1), equity marked at
  the fill minute's open. Only a change of target trades.
- Costs: the verdict's cost model (training/costs.py, walk_forward.trade_columns): the fill price is the open
  moved against the trade by the half-spread (fixed bps, or SPREAD_FRACTION of the fill minute's high-low range),
  and the taker fee is charged on the traded notional at that price.
- Ledger rows: one "open" row carrying the state the month starts from (the previous month's last row, or the
  starting capital), then one "trade" row per fill, each with the state after it. A month's ledger holds the
  fills inside the month; the last processed decision is carried in every row, so `advance` only looks at
  later decisions: re-running with the same inputs appends nothing, a restart resumes from the stored rows.
- Buy and hold, the reference: the starting capital bought at the first fill opportunity, with the same costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from crpbot_assets.training import costs

TS = pl.Datetime("us", "UTC")
LEDGER_SCHEMA = {
    "kind": pl.String,  # "open" (state carried into the month) or "trade"
    "decision_ts": TS,  # the signal minute; on "open" rows the last decision processed before the month
    "fill_ts": TS,
    "fill_open": pl.Float64,
    "half_spread_bps": pl.Float64,
    "fill_price": pl.Float64,
    "traded_units": pl.Float64,  # signed
    "fee": pl.Float64,
    "spread_cost": pl.Float64,  # included in fill_price, shown separately
    "position": pl.Int8,  # after the row
    "units": pl.Float64,
    "cash": pl.Float64,
    "equity": pl.Float64,  # at the fill, after costs, marked at fill_open
    "hold_units": pl.Float64,  # the buy-and-hold reference's units
    "model_version": pl.String,
}
MARK_SCHEMA = {
    "ts": TS,
    "close": pl.Float64,
    "position": pl.Int8,
    "equity": pl.Float64,
    "hold_equity": pl.Float64,
    "peak": pl.Float64,
    "drawdown": pl.Float64,
}


@dataclass(frozen=True)
class PaperConfig:
    starting_capital: float = 10_000.0  # quote currency (USD)
    fee_bps: float = costs.DEFAULT_FEE_BPS
    half_spread_bps: float | None = None  # None: costs.SPREAD_FRACTION of the fill minute's high-low range

    def __post_init__(self):
        costs.CostModel(self.fee_bps, self.half_spread_bps)  # validates the costs
        if self.starting_capital <= 0:
            raise ValueError(f"need starting_capital > 0: {self}")


def empty_ledger() -> pl.DataFrame:
    return pl.DataFrame(schema=LEDGER_SCHEMA)


def fills(signals: pl.DataFrame, candles: pl.DataFrame) -> pl.DataFrame:
    """Decisions joined to their fill candle (the first candle after the decision minute); decisions without
    one yet are left out (pending)."""
    grid = signals.filter(pl.col("decision")).sort("ts")
    prices = candles.select(
        pl.col("ts").alias("fill_ts"), pl.col("open").alias("fill_open"), "high", "low", "close"
    ).sort("fill_ts")
    joined = grid.with_columns((pl.col("ts") + timedelta(minutes=1)).alias("_next")).join_asof(
        prices, left_on="_next", right_on="fill_ts", strategy="forward"
    )
    return joined.filter(pl.col("fill_ts").is_not_null()).rename({"ts": "decision_ts"}).drop("_next")


def _hold_units(capital: float, price: float, fee_bps: float) -> float:
    return capital / (price * (1 + fee_bps / 1e4))


def advance(
    ledger: pl.DataFrame,
    opening: dict | None,
    signals: pl.DataFrame,
    candles: pl.DataFrame,
    month_start: datetime,
    month_end: datetime,
    config: PaperConfig,
) -> pl.DataFrame:
    """The month's ledger with every new fill in [month_start, month_end) appended (module docstring).

    `ledger`: the month's stored rows (may be empty); `opening`: the previous month's last row (None: start
    from the starting capital). A stored "open" row that differs from `opening` (the previous month gained
    fills after this month began) is rebuilt from the new opening."""
    if ledger.height and opening is not None and not _same_state(ledger.row(0, named=True), opening):
        ledger = empty_ledger()
    candidates = fills(signals, candles).filter(
        (pl.col("fill_ts") >= month_start) & (pl.col("fill_ts") < month_end)
    )
    if ledger.height == 0:
        if opening is None:
            if candidates.height == 0:
                return empty_ledger()
            first = candidates.row(0, named=True)
            opening = {
                "decision_ts": None,
                "fill_ts": first["fill_ts"],
                "fill_open": first["fill_open"],
                "position": 0,
                "units": 0.0,
                "cash": config.starting_capital,
                "equity": config.starting_capital,
                "hold_units": _hold_units(
                    config.starting_capital,
                    first["fill_open"] * (1 + _spread(first, config) / 1e4),
                    config.fee_bps,
                ),
                "model_version": first["model_version"],
            }
        ledger = pl.DataFrame([_open_row(opening)], schema=LEDGER_SCHEMA)
    state = ledger.row(-1, named=True)
    if state["decision_ts"] is not None:
        candidates = candidates.filter(pl.col("decision_ts") > state["decision_ts"])
    rows = []
    for decision in candidates.iter_rows(named=True):
        target = int(decision["position"])
        if target == state["position"]:
            state = {**state, "decision_ts": decision["decision_ts"]}
            continue
        state = _fill(state, decision, target, config)
        rows.append(state)
    if not rows:
        return ledger
    return pl.concat([ledger, pl.DataFrame(rows, schema=LEDGER_SCHEMA)])


def _open_row(state: dict) -> dict:
    return {
        **{k: None for k in LEDGER_SCHEMA},
        **{k: state[k] for k in ("decision_ts", "fill_ts", "fill_open", "position", "units", "cash")},
        **{k: state[k] for k in ("equity", "hold_units", "model_version")},
        "kind": "open",
        "traded_units": 0.0,
        "fee": 0.0,
        "spread_cost": 0.0,
    }


def _same_state(row: dict, opening: dict) -> bool:
    return all(row[k] == opening[k] for k in ("decision_ts", "position", "units", "cash", "hold_units"))


def _spread(candle: dict, config: PaperConfig) -> float:
    if config.half_spread_bps is not None:
        return config.half_spread_bps
    return float(
        costs.half_spread_bps(np.array(candle["high"]), np.array(candle["low"]), np.array(candle["close"]))
    )


def _fill(state: dict, decision: dict, target: int, config: PaperConfig) -> dict:
    mid = decision["fill_open"]
    spread = _spread(decision, config)
    equity = state["cash"] + state["units"] * mid
    traded = target * equity / mid - state["units"]
    price = mid * (1 + np.sign(traded) * spread / 1e4)
    fee = abs(traded) * price * config.fee_bps / 1e4
    cash = state["cash"] - traded * price - fee
    units = state["units"] + traded
    return {
        "kind": "trade",
        "decision_ts": decision["decision_ts"],
        "fill_ts": decision["fill_ts"],
        "fill_open": mid,
        "half_spread_bps": spread,
        "fill_price": float(price),
        "traded_units": float(traded),
        "fee": float(fee),
        "spread_cost": float(abs(traded) * mid * spread / 1e4),
        "position": target,
        "units": float(units),
        "cash": float(cash),
        "equity": float(cash + units * mid),
        "hold_units": state["hold_units"],
        "model_version": decision["model_version"],
    }


def last_state(ledger: pl.DataFrame) -> dict | None:
    """The state a following month opens with (the last row), None for an empty ledger."""
    return ledger.row(-1, named=True) if ledger.height else None


def marks(
    ledger: pl.DataFrame, candles: pl.DataFrame, starting_capital: float, previous_peak: float | None
) -> pl.DataFrame:
    """Equity at each candle's close from the ledger's first fill opportunity on: the state of the last fill
    at or before the minute (a fill happens at the minute's open), the buy-and-hold reference, the running
    peak (carried from `previous_peak`) and the drawdown from it."""
    if ledger.height == 0:
        return pl.DataFrame(schema=MARK_SCHEMA)
    states = ledger.select(pl.col("fill_ts").alias("ts"), "position", "units", "cash", "hold_units")
    # a trade row and the open row may share a fill minute: keep the last state of each minute
    states = states.unique("ts", keep="last", maintain_order=True).sort("ts")
    frame = (
        candles.select("ts", "close")
        .filter(pl.col("ts") >= states["ts"][0])
        .sort("ts")
        .join_asof(states, on="ts", strategy="backward")
        .with_columns(
            (pl.col("cash") + pl.col("units") * pl.col("close")).alias("equity"),
            (pl.col("hold_units") * pl.col("close")).alias("hold_equity"),
        )
    )
    peak = np.maximum.accumulate(
        np.concatenate([[previous_peak or starting_capital], frame["equity"].to_numpy()])
    )[1:]
    return frame.with_columns(
        pl.Series("peak", peak), (pl.col("equity") / pl.Series(peak) - 1).alias("drawdown")
    ).select(list(MARK_SCHEMA))
