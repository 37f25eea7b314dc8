"""`crpbot-demo`: the main job offline on the embedded defaults.

Starts the replay server on loopback, then materializes the whole graph for a small window (every symbol,
the last complete months) into the sqlite instance under dagster_home/, so `dagster dev` shows the results.
Then a short walk-forward for BTC-USD (every month after the first as a test month, small model) and the
report's headline, the month in progress (as the schedules and sensors keep it), and a short paper-trading
stretch (signals, simulated fills) on the last replayed days.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta

from crpbot_assets.common.settings import REPO_ROOT

# A CPU-sized model so the demo trains 3 symbols x 2 variants in minutes; production uses LstmConfig's defaults.
DEMO_MODEL = {"hidden_size": 32, "num_layers": 1, "sequence_length": 30}
# Two months leave no room for the default embargo (the features' 13.4-day lookback) around three segments;
# the demo purges horizon + window + one day instead.
DEMO_DATASET = {"feature_lookback_minutes": 1440}
# The demo's walk-forward has two test months of synthetic data without an edge: the default gate (3 months
# before the month, the LSTM beating every baseline after costs) cannot pass, so the demo judges the one month
# before and promotes the fold model whatever the gate says, to show the paper-trading stretch. Not a verdict.
DEMO_PROMOTION = {"recent_months": 1, "enforce": False}
TAKER_FEE_BPS = 60
# Dagster's console logs at INFO (progress lines), not every DEBUG step event.
CONSOLE_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
PAPER_DAYS = 3  # the paper-trading stretch: the last days of the last replayed month


def _range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--months",
        type=int,
        default=3,
        help="complete months to materialize (default 3; the walk-forward tests all but the first)",
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="LSTM epochs per symbol (default 3; production 15)"
    )
    parser.add_argument(
        "--windows-per-epoch",
        type=int,
        default=20_000,
        help="training windows sampled per epoch (default 20000; production: all)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / "dagster_home"))
    os.environ["CRPBOT_ENV"] = "local"
    from crpbot_assets.replay.server import ReplayServer

    with ReplayServer() as replay:
        os.environ["CRPBOT_REPLAY_URL"] = replay.url
        print(f"replay server (Coinbase, Reddit, alternative.me, Google Trends) on {replay.url}", flush=True)
        _materialize_window(
            args.months,
            DEMO_MODEL | {"epochs": args.epochs, "max_train_windows_per_epoch": args.windows_per_epoch},
        )


def _materialize_window(month_count: int, model_config: dict) -> None:
    import dagster as dg

    from crpbot_assets.common.months import last_complete_months, month_key, month_start
    from crpbot_assets.common.partitions import symbol_month_key
    from crpbot_assets.common.settings import local_storage_uri
    from crpbot_assets.common.symbols import SYMBOLS
    from crpbot_assets.definitions import defs

    instance = dg.DagsterInstance.get()
    warm_up, *months = last_complete_months(month_count + 1, datetime.now(UTC))
    job = defs.resolve_implicit_global_asset_job_def()

    def run(title: str, assets: list[str], tags: dict | None = None, run_config: dict | None = None) -> None:
        started = time.monotonic()
        print(f"\n== {title} ==", flush=True)
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(a) for a in assets],
            tags=tags or {},
            run_config={**(run_config or {}), **CONSOLE_INFO},
            raise_on_error=False,
        )
        status = "ok" if result.success else "FAILED"
        print(
            f"== {title}: {status} in {time.monotonic() - started:.0f}s (run {result.run_id}) ==", flush=True
        )
        if not result.success:
            sys.exit(f"demo stopped: {title} failed; see the run's logs in the UI or above")

    def symbol_months(first: datetime, last: datetime) -> dict:
        return _range_tags(str(symbol_month_key(SYMBOLS[0], first)), str(symbol_month_key(SYMBOLS[-1], last)))

    window = f"{months[0]:%Y-%m}..{months[-1]:%Y-%m}"
    run("Fear & Greed index (whole history)", ["fear_greed_index"])
    run(
        f"Reddit posts and Google Trends, {window}",
        ["reddit_posts", "google_trends_hourly"],
        _range_tags(month_key(months[0]), month_key(months[-1])),
    )
    run(
        f"candles, {warm_up:%Y-%m}..{months[-1]:%Y-%m} x {len(SYMBOLS)} symbols (first month is warm-up)",
        ["candles"],
        symbol_months(warm_up, months[-1]),
    )
    run(
        f"features and sentiment_features, {window} x {len(SYMBOLS)} symbols",
        ["features", "reddit_hourly", "sentiment_features"],
        symbol_months(months[0], months[-1]),
    )
    for symbol in SYMBOLS:
        run(
            f"training_dataset -> lstm_model -> model_evaluation, {symbol}",
            ["training_dataset", "lstm_model", "model_evaluation"],
            {"dagster/partition": symbol},
            {"ops": {"lstm_model": {"config": model_config}, "training_dataset": {"config": DEMO_DATASET}}},
        )

    fold_config = {
        "model": model_config,
        "dataset": DEMO_DATASET,
        "baselines": {"max_train_rows": 50_000, "lgbm_rounds": 100},
    }
    tested = [str(symbol_month_key(SYMBOLS[0], month)) for month in months[1:]]
    run(
        f"fold_model, {SYMBOLS[0]} {months[1]:%Y-%m}..{months[-1]:%Y-%m} (each trained on the months before it)",
        ["fold_model"],
        _range_tags(tested[0], tested[-1]),
        {"ops": {"fold_model": {"config": fold_config}}},
    )
    for key in tested:
        run(
            f"walk_forward_predictions, {key} (scored by its own fold model)",
            ["walk_forward_predictions"],
            {"dagster/partition": key},
        )
    run(f"walk_forward_report, {SYMBOLS[0]}", ["walk_forward_report"], {"dagster/partition": SYMBOLS[0]})

    # The month in progress, as the schedules and sensors keep it once the daemon runs: the replay's Reddit
    # listings reach back only hours to days, so Reddit columns are filled here and null in past months.
    current = month_start(datetime.now(UTC))
    run(
        f"month in progress {current:%Y-%m}: Reddit posts and Google Trends",
        ["reddit_posts", "google_trends_hourly"],
        {"dagster/partition": month_key(current)},
    )
    run(
        f"month in progress {current:%Y-%m}: candles, features and sentiment_features x {len(SYMBOLS)} symbols",
        ["candles", "features", "reddit_hourly", "sentiment_features"],
        symbol_months(current, current),
    )
    _print_sentiment_coverage(instance, current)

    _paper_trading_stretch(run, instance, months[-1])

    print(f"\nDone. Asset files: {local_storage_uri()}")
    print(f"Dagster instance (runs, metadata, plots): {os.environ['DAGSTER_HOME']}")
    for symbol in SYMBOLS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_evaluation"), asset_partitions=[symbol]),
            limit=1,
        )
        for record in records.records:
            meta = record.asset_materialization.metadata
            shown = {
                k: v.value
                for k, v in meta.items()
                if k.endswith("/accuracy") or k.startswith("sentiment_ablation/")
            }
            print(f"  {symbol} test-segment results: {shown}")
    report = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("walk_forward_report"), asset_partitions=[SYMBOLS[0]]),
        limit=1,
    )
    for record in report.records:
        meta = record.asset_materialization.metadata
        print(f"\nWalk-forward verdict, {SYMBOLS[0]}: {meta['headline'].value}")
        print(f"Trading comparison (net of the {TAKER_FEE_BPS:g} bps taker fee and half-spread):")
        print(meta["trading comparison"].value)
    print(
        "Open the UI: .venv/bin/crpbot-replay &  then  "
        "DAGSTER_HOME=$PWD/dagster_home .venv/bin/dagster dev -w workspace.yaml  ->  http://127.0.0.1:3000"
    )


def _print_sentiment_coverage(instance, month: datetime) -> None:
    """How many hours of the month in progress each sentiment source covers, per symbol."""
    import dagster as dg

    from crpbot_assets.common.partitions import symbol_month_key
    from crpbot_assets.common.symbols import SYMBOLS

    print(f"\nsentiment_features of {month:%Y-%m}, share of the hours so far without a value:")
    for symbol in SYMBOLS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("sentiment_features"),
                asset_partitions=[str(symbol_month_key(symbol, month))],
            ),
            limit=1,
        ).records
        meta = records[0].asset_materialization.metadata if records else {}
        rows = meta["rows"].value if "rows" in meta else 0
        print(f"  {symbol}: {rows} hours, null share {meta['null_share'].value if rows else 'n/a'}")
    print(
        "  As-of rules (README, sentiment): Reddit hours count only from the oldest listed post on, engagement only\n"
        "  with scores observed by the hour's end; Trends values of the month in progress count from their\n"
        "  retrieval on, so hours fetched just now stay null until google_trends_refresh fetches later ones."
    )


def _paper_trading_stretch(run, instance, month: datetime) -> None:
    """Promote BTC-USD's fold model of `month` (demo rule), then signals and paper trades on its last days."""
    import dagster as dg

    from crpbot_assets.common.months import month_end
    from crpbot_assets.common.partitions import symbol_month_key
    from crpbot_assets.common.symbols import SYMBOLS

    symbol = SYMBOLS[0]
    key = str(symbol_month_key(symbol, month))
    first_minute = (month_end(month) - timedelta(days=PAPER_DAYS)).isoformat()
    run(
        f"promoted_model, {key} (demo rule: {DEMO_PROMOTION})",
        ["promoted_model"],
        {"dagster/partition": key},
        {"ops": {"promoted_model": {"config": DEMO_PROMOTION}}},
    )
    run(
        f"signals -> paper_trades -> paper_portfolio, {symbol}, the last {PAPER_DAYS} days of {month:%Y-%m}",
        ["signals", "paper_trades", "paper_portfolio"],
        {"dagster/partition": key},
        {"ops": {"signals": {"config": {"first_minute": first_minute}}}},
    )

    def latest(asset: str, partition: str) -> dict:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
        ).records
        return {k: v.value for k, v in records[0].asset_materialization.metadata.items()} if records else {}

    trades = latest("paper_trades", key)
    book = latest("paper_portfolio", key)
    promoted = latest("promoted_model", key)
    print(f"\nPaper trading (simulation, not trading advice), {symbol}, from {first_minute}:")
    print(
        f"  fold model {promoted.get('model_version')} of {promoted.get('fold_month')}: {promoted.get('reason')}"
    )
    if not book.get("minutes"):
        print(f"  no paper portfolio: {latest('signals', key).get('status', 'no signals')}")
        return
    print(
        f"  {trades['trades']} fills, fees {trades['fees_paid']:.2f} + spread {trades['spread_paid']:.2f} USD; "
        f"equity {book['equity']:.2f} USD (P&L {book['pnl']:+.2f}, {book['return']:+.2%}) vs buy and hold "
        f"{book['buy_and_hold_return']:+.2%}; drawdown now {book['drawdown']:.2%}, "
        f"worst {book['max_drawdown_month']:.2%}"
    )


if __name__ == "__main__":
    main()
