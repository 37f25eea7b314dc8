"""`crpbot-demo`: the main job offline on the embedded defaults.

Starts the replay server on loopback, then materializes the whole graph for a small window (every symbol,
the last complete months) into the sqlite instance under dagster_home/, so `dagster dev` shows the results.
Then a short walk-forward for BTC-USD (every month after the first as a test month, small model) and the
report's headline, the month in progress (as the schedules and sensors keep it), and a short paper-trading
stretch (signals, simulated fills) on the last replayed days.

The console shows one progress line per step and the results as small tables. Everything else written to
stdout/stderr (Dagster's console log, Python warnings, the training subprocesses) goes to the log file named
on the first lines, under $DAGSTER_HOME/logs/. Every run is tagged `crpbot/demo=true` (signals/gate.py): the
demo's permissive promotion is labelled as such, and automation does not paper-trade it after the demo.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import fill, indent
from typing import TextIO
from urllib.parse import urlparse

from crpbot_assets.common.settings import REPO_ROOT, local_storage_uri
from crpbot_assets.common.symbols import SYMBOLS
from crpbot_assets.signals.gate import DEMO_RUN_TAGS
from crpbot_assets.training.report_page import Table, text

# A CPU-sized model so the demo trains 3 symbols x 2 variants in minutes; production uses LstmConfig's defaults.
DEMO_MODEL = {"hidden_size": 32, "num_layers": 1, "sequence_length": 30}
# Two months leave no room for the default embargo (the features' 13.4-day lookback) around three segments;
# the demo purges horizon + window + one day instead.
DEMO_DATASET = {"feature_lookback_minutes": 1440}
# The demo's walk-forward has two test months of synthetic data without an edge: the default gate (3 months
# before the month, the LSTM beating every baseline after costs) cannot pass, so the demo judges the one month
# before and promotes the fold model whatever the gate says, to show the paper-trading stretch. Not a verdict;
# the promotion records it (signals/gate.py) and no signal is scored with it outside the demo.
DEMO_PROMOTION = {"recent_months": 1, "enforce": False}
# Dagster's console logger (into the log file) at INFO: progress lines, not every DEBUG step event.
CONSOLE_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
PAPER_DAYS = 3  # the paper-trading stretch: the last days of the last replayed month
LIVE_MINUTES = 1.5  # the live stretch: real clock against the replayed WebSocket
WIDTH = 110  # the verdict's line width on the console


def ui_commands(dagster_home: str) -> str:
    """How to open the UI on the demo's instance and stop the replay server afterwards (from the repo root)."""
    return (
        "Open the UI:  .venv/bin/crpbot-replay & REPLAY_PID=$!   (the replay server the UI's runs call)\n"
        f"              DAGSTER_HOME={dagster_home} .venv/bin/dagster dev -w workspace.yaml\n"
        "              then http://127.0.0.1:3000 ; afterwards: kill $REPLAY_PID"
    )


class DemoStepFailed(Exception):
    pass


@contextmanager
def console_and_log(log_path: Path) -> Iterator[TextIO]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so also subprocesses and native
    libraries) to `log_path` (appended); yield a stream on the original stdout for the demo's own lines."""
    sys.stdout.flush()
    sys.stderr.flush()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    saved = (os.dup(1), os.dup(2))
    streams = (sys.stdout, sys.stderr)  # replaced ones too (a test runner's, an IDE's)
    console = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    with open(log_path, "a", buffering=1, encoding="utf-8") as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            sys.stdout = sys.stderr = log
            yield console
        finally:
            log.flush()
            sys.stdout, sys.stderr = streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            console.close()


def _range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def _first_failure(result) -> str:
    """The first failed step's error (the innermost cause: the user code's exception), in one line."""
    for event in result.all_events:
        error = event.step_failure_data.error if event.is_step_failure else None
        if error is not None:
            while error.cause is not None:
                error = error.cause
            message = error.message.strip().splitlines()
            return f"{event.step_key}: {message[0] if message else 'failed'}"
    return "the run failed before any step"


class Demo:
    """Runs the demo's steps on the instance: a progress line each on `console`, Dagster's log in the file."""

    def __init__(self, console: TextIO, log_path: Path, defs=None, instance=None):
        """`defs` (default: crpbot's, imported now) and `instance` (default: $DAGSTER_HOME's) for tests."""
        import dagster as dg

        if defs is None:
            from crpbot_assets.definitions import defs
        self.console = console
        self.log_path = log_path
        self.instance = instance or dg.DagsterInstance.get()
        self.job = defs.resolve_implicit_global_asset_job_def()
        self.started = time.monotonic()

    def say(self, line: str = "") -> None:
        print(line, file=self.console, flush=True)

    def table(self, title: str, table: Table) -> None:
        self.say(f"\n{title}")
        self.say(indent(text(table), "  "))

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    def run(self, title: str, assets: list[str], tags: dict | None = None, run_config: dict | None = None):
        """Materialize `assets` in one run; DemoStepFailed (after printing the first error) when it fails."""
        import dagster as dg

        started = time.monotonic()
        self.console.write(f"[{self.elapsed()}] {title} ... ")
        self.console.flush()
        result = self.job.execute_in_process(
            instance=self.instance,
            asset_selection=[dg.AssetKey(a) for a in assets],
            tags={**DEMO_RUN_TAGS, **(tags or {})},
            run_config={**(run_config or {}), **CONSOLE_INFO},
            raise_on_error=False,
        )
        if result.success:
            self.say(f"ok, {time.monotonic() - started:.0f} s")
            return result
        self.say("FAILED")
        self.say(f"  {_first_failure(result)}")
        self.say(f"  run {result.run_id}: its events are in the UI and in {self.log_path}")
        raise DemoStepFailed(title)

    def latest(self, asset: str, partition: str) -> dict:
        """Metadata values of the partition's latest materialization ({} when there is none)."""
        from crpbot_assets.signals.assets import latest_metadata

        return latest_metadata(self.instance, asset, partition)


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
    log_path = Path(os.environ["DAGSTER_HOME"]) / "logs" / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.log"
    with console_and_log(log_path) as console:
        print(
            f"crpbot demo: {args.months} months x {len(SYMBOLS)} symbols on the embedded defaults",
            file=console,
        )
        print(f"Dagster's log (every run's events, warnings, training output): {log_path}", file=console)
        try:
            from crpbot_assets.replay.server import ReplayServer

            with ReplayServer() as replay:
                os.environ["CRPBOT_REPLAY_URL"] = replay.url
                demo = Demo(console, log_path)
                demo.say(f"replay server (Coinbase, Reddit, alternative.me, Google Trends) on {replay.url}\n")
                last_month, current = _materialize_window(
                    demo,
                    args.months,
                    DEMO_MODEL
                    | {"epochs": args.epochs, "max_train_windows_per_epoch": args.windows_per_epoch},
                )
                _live_stretch(demo, replay.url)
                demo.say(f"\nDone in {demo.elapsed()}. Asset files: {local_storage_uri()}")
                demo.say(f"Dagster instance (runs, metadata, plots): {os.environ['DAGSTER_HOME']}")
                _print_results(demo, last_month, current)
        except DemoStepFailed as failed:
            print(f"demo stopped: {failed} failed", file=console, flush=True)
            raise SystemExit(1) from None
        except (Exception, KeyboardInterrupt) as exc:
            traceback.print_exc()  # into the log
            print(f"demo stopped: {type(exc).__name__}: {exc}\n(traceback in {log_path})", file=console)
            raise SystemExit(1) from None


def _materialize_window(demo: Demo, month_count: int, model_config: dict) -> tuple[datetime, datetime]:
    """Every step up to the paper-trading stretch; (the last complete month, the month in progress)."""
    from crpbot_assets.common.months import last_complete_months, month_key, month_start
    from crpbot_assets.common.partitions import symbol_month_key

    now = datetime.now(UTC)
    warm_up, *months = last_complete_months(month_count + 1, now)
    current = month_start(now)
    run = demo.run

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
    run(  # the research model: trained 70/15/15 on all months, never promoted (the fold models trade)
        f"research model (never traded): training_dataset -> lstm_model -> model_evaluation, {SYMBOLS[0]}",
        ["training_dataset", "lstm_model", "model_evaluation"],
        {"dagster/partition": SYMBOLS[0]},
        {"ops": {"lstm_model": {"config": model_config}, "training_dataset": {"config": DEMO_DATASET}}},
    )

    fold_config = {
        "model": model_config,
        "dataset": DEMO_DATASET,
        "baselines": {"max_train_rows": 50_000, "lgbm_rounds": 100},
    }
    tested = [str(symbol_month_key(SYMBOLS[0], month)) for month in months[1:]]
    run(
        f"fold_model, {SYMBOLS[0]} {months[1]:%Y-%m}..{current:%Y-%m} (each trained on the months before it; "
        f"{current:%Y-%m}'s trades live)",
        ["fold_model"],
        _range_tags(tested[0], str(symbol_month_key(SYMBOLS[0], current))),
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

    _paper_trading_stretch(run, months[-1], current)
    return months[-1], current


def _live_stretch(demo: Demo, rest_url: str) -> None:
    """A short stretch of `crpbot-live` (issue 19): real clock against the replayed WebSocket; its latency line."""
    from crpbot_assets.live.cli import live_stretch
    from crpbot_assets.replay.coinbase_ws import CoinbaseFeed

    demo.say(f"[{demo.elapsed()}] live paper trading, {LIVE_MINUTES:g} min of real clock (crpbot-live):")
    with CoinbaseFeed() as feed:
        live_stretch(
            local_storage_uri(),
            rest_url,
            feed.url,
            minutes=LIVE_MINUTES,
            symbols=[SYMBOLS[0]],  # the symbol whose fold model the demo promoted
            log_line=lambda line: demo.say(f"  {line}"),
        )


def _print_results(demo: Demo, last_month: datetime, current: datetime) -> None:
    """The results as small tables, the way to the UI, and last the walk-forward verdict and its page."""
    demo.table(
        "Research model, test segment (model_evaluation; never traded):", _evaluation_table(demo, SYMBOLS[:1])
    )
    _print_sentiment_coverage(demo, current)
    _print_paper_trading(demo, last_month)
    demo.say("\n" + ui_commands(demo.instance.root_directory))
    _print_verdict(demo, SYMBOLS[0])


def _print_verdict(demo: Demo, symbol: str) -> None:
    """The demo's last lines: the walk-forward verdict in words, its table and where its report page is."""
    import json

    from crpbot_assets.training.verdict_words import table

    meta = demo.latest("walk_forward_report", symbol)
    if not meta:
        demo.say(f"\nNo walk-forward report for {symbol}.")
        return
    demo.say(f"\nWalk-forward verdict, {symbol} (replayed synthetic data; a simulation, not trading advice):")
    demo.say(fill(meta["verdict"], width=WIDTH, initial_indent="  ", subsequent_indent="  "))
    page = Path(urlparse(meta["report page"]).path)
    report = json.loads(page.with_suffix(".json").read_text())  # the asset's value, beside its page
    demo.table(
        "Trading comparison (each model's own decision rule, after fee and half-spread):", table(report)
    )
    demo.say(f"Report page (open in a browser): {page}")


def _percent(value, signed: bool = False) -> str:
    """A fraction as a percentage for people (n/a when missing)."""
    if value is None:
        return "n/a"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def _worst_missing(null_share: dict[str, float], prefix: str) -> str:
    """The largest share of missing values among the columns starting with `prefix`, as a percentage."""
    shares = [share for column, share in null_share.items() if column.startswith(prefix)]
    return _percent(max(shares)) if shares else "n/a"


def _evaluation_table(demo: Demo, symbols) -> Table:
    rows = []
    fee = None
    for symbol in symbols:
        meta = demo.latest("model_evaluation", symbol)
        fee = meta.get("fee_bps", fee)
        rows.append(
            (
                symbol,
                _percent(meta.get("with_sentiment/model/balanced_accuracy")),
                _percent(meta.get("with_sentiment/majority_baseline/balanced_accuracy")),
                _percent(meta.get("with_sentiment/persistence_baseline/balanced_accuracy")),
                _percent(meta.get("with_sentiment/long_short/total_return"), signed=True),
                _percent(meta.get("sentiment_ablation/balanced_accuracy_delta"), signed=True),
            )
        )
    return Table(
        ("symbol", "LSTM bacc (%)", "majority (%)", "persistence (%)", "LSTM net (%)", "sentiment (points)"),
        rows,
        "bacc: balanced accuracy, mean recall of down/flat/up (33.3 % = chance); net: long/short return after "
        f"a {fee if fee is not None else 'n/a'} bps fee; sentiment: bacc with minus without the sentiment inputs.",
    )


def _print_sentiment_coverage(demo: Demo, month: datetime) -> None:
    """How many hours of the month in progress the sentiment sources cover, per symbol."""
    from crpbot_assets.common.partitions import symbol_month_key

    rows = []
    for symbol in SYMBOLS:
        meta = demo.latest("sentiment_features", str(symbol_month_key(symbol, month)))
        nulls = meta.get("null_share", {}) if meta.get("rows") else {}
        sources = ("reddit_sentiment", "fear_greed", "search_interest")
        rows.append((symbol, str(meta.get("rows", 0)), *(_worst_missing(nulls, s) for s in sources)))
    demo.table(
        f"Sentiment of the month in progress ({month:%Y-%m}), hours without a value:",
        Table(
            ("symbol", "hours so far", "Reddit posts (%)", "Fear & Greed (%)", "Google Trends (%)"),
            rows,
            "Missing by the as-of rules (README, sentiment): Reddit counts from the oldest listed post on, Trends "
            "values from their retrieval on (hours fetched just now stay empty until the next refresh).",
        ),
    )


def _paper_trading_stretch(run, month: datetime, current: datetime) -> None:
    """Promote BTC-USD's fold models of `month` and of the month in progress (the live stretch trades it) with a
    permissive rule, then signals and paper trades on `month`'s last days."""
    from crpbot_assets.common.months import month_end
    from crpbot_assets.common.partitions import symbol_month_key

    symbol = SYMBOLS[0]
    key = str(symbol_month_key(symbol, month))
    first_minute = (month_end(month) - timedelta(days=PAPER_DAYS)).isoformat()
    for promoted in (key, str(symbol_month_key(symbol, current))):
        run(
            f"promoted_model, {promoted} (demo rule: {DEMO_PROMOTION})",
            ["promoted_model"],
            {"dagster/partition": promoted},
            {"ops": {"promoted_model": {"config": DEMO_PROMOTION}}},
        )
    run(
        f"signals -> paper_trades -> paper_portfolio, {symbol}, the last {PAPER_DAYS} days of {month:%Y-%m}",
        ["signals", "paper_trades", "paper_portfolio"],
        {"dagster/partition": key},
        {"ops": {"signals": {"config": {"first_minute": first_minute}}}},
    )


def _print_paper_trading(demo: Demo, month: datetime) -> None:
    from crpbot_assets.common.months import month_end
    from crpbot_assets.common.partitions import symbol_month_key

    symbol = SYMBOLS[0]
    key = str(symbol_month_key(symbol, month))
    trades = demo.latest("paper_trades", key)
    book = demo.latest("paper_portfolio", key)
    first = month_end(month) - timedelta(days=PAPER_DAYS)
    title = f"Paper trading (simulation, not trading advice), {symbol}, {first:%Y-%m-%d %H:%M} UTC on:"
    promoted = demo.latest("promoted_model", key)
    title += f"\n  fold model {promoted.get('model_version')} of {promoted.get('fold_month')}: {promoted.get('reason')}"
    if not book.get("minutes"):
        demo.say(
            f"\n{title}\n  no paper portfolio: {demo.latest('signals', key).get('status', 'no signals')}"
        )
        return
    demo.table(
        title,
        Table(
            (
                "symbol",
                "fills",
                "costs (USD)",
                "equity (USD)",
                "return (%)",
                "buy & hold (%)",
                "worst drawdown (%)",
            ),
            [
                (
                    symbol,
                    str(trades["trades"]),
                    f"{trades['fees_paid'] + trades['spread_paid']:,.2f}",
                    f"{book['equity']:,.2f}",
                    _percent(book["return"], signed=True),
                    _percent(book["buy_and_hold_return"], signed=True),
                    _percent(book["max_drawdown_month"]),
                )
            ],
            "costs: taker fees + half-spreads paid; the model was promoted on the demo's permissive rule, so "
            "automation will not paper-trade it after the demo (promoted_model: demo_rule, signals/gate.py).",
        ),
    )


if __name__ == "__main__":
    main()
