"""The training dataset: 1-minute features joined causally with hourly sentiment, labelled and split by time.

Pure polars/numpy (no Dagster, no torch), so the remote training job can read what this writes.

Rows and labels
- One row per `features` row (minute `ts`). Its close price comes from `candles` at the same minute.
- Sentiment: the minute's close instant (`ts + 1 minute`) is joined `asof`/backward onto the sentiment `ts`
  (the end of each hour), so a minute sees only completed hours, and only the last one: an hour (or a month)
  without a sentiment row gives nulls, never the values of an older hour.
- Sentiment values enter relative to their own recent past (`relative_sentiment`): each hour end's value minus
  the mean of that column over the hour ends of the previous 7 days (the hour itself excluded), divided by their
  standard deviation; null when that week has fewer than `RELATIVE_MIN_HOURS` values or none of them differ.
  Raw levels drift in slow regimes (search interest, Fear & Greed) that differ between a training window and the
  month it is tested on; the relative value is stationary and uses only hours ended by the hour end itself.
  Training, the walk-forward and live scoring all go through `join_relative_sentiment`; the first week of a
  source's history (or of the months given) has no relative value.
- Label: the forward N-minute simple return `close[ts+N] / close[ts] - 1` (N = `horizon_minutes`, default 15)
  mapped to 0 = down (< -dead zone), 1 = flat, 2 = up (> +dead zone). The price at `ts+N` must be a real candle:
  if that minute has no trade the row keeps its features (it is still a valid input inside a window) but gets a
  null label and is never a training target. Rows whose label would need data past the last candle are dropped.
- `past_return` (the last completed N-minute return, known at `ts`) feeds the persistence baseline.
- `row_valid`: every technical feature is finite. Windows containing an invalid row are never used; nothing is filled.

Null sentiment
- Sources do not cover all history (Reddit history is short, Trends may be absent). A null sentiment value is
  imputed with the training mean of that column, i.e. 0 after standardisation; a column with no training values at
  all scales to constant 0. The share of nulls per split is reported so the ablation can be read in that light.

Splits and scaling
- Labelled rows are split by time into train / validation / test (`val_fraction`, `test_fraction`). Between
  segments a purge gap of `horizon_minutes + max_sequence_length + feature_lookback_minutes` minutes is dropped
  (split = -1): no training label overlaps a validation label or window, and no validation input (including the
  features' own lookback, by default the feature catalogue's longest, ~13.4 days) reaches back into training rows.
  Strictly, non-overlapping labels need only the horizon; the lookback part is a conservative embargo. Months of
  data are needed for three non-empty segments; fewer gives a clear error (lower `feature_lookback_minutes`).
  The walk-forward (walk_forward.py) passes explicit `SplitCuts` instead of fractions; everything else is shared.
- Mean/std per feature are computed on training rows only and stored with the data (parquet key-value metadata);
  features are stored raw (float32) and scaled on load with `scale()`.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from crpbot_assets.features.catalogue import MAX_LOOKBACK_MINUTES
from crpbot_assets.sentiment.features import FEATURE_COLUMNS as SENTIMENT_COLUMNS

CLASSES = ("down", "flat", "up")
SPLITS = {"train": 0, "val": 1, "test": 2}
PURGED = -1
METADATA_KEY = b"crpbot_dataset"
FORMAT = "crpbot-dataset/2"  # 2: sentiment columns relative to their trailing week
RELATIVE_WINDOW = "7d"
RELATIVE_MIN_HOURS = 24


class DatasetError(ValueError):
    """The inputs cannot make a training dataset (named problem)."""


@dataclass(frozen=True)
class DatasetConfig:
    horizon_minutes: int = 15
    dead_zone_bps: float = 10.0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    max_sequence_length: int = 240
    feature_lookback_minutes: int = MAX_LOOKBACK_MINUTES  # the feature catalogue's longest lookback
    clip: float = 10.0

    @property
    def purge_minutes(self) -> int:
        return self.horizon_minutes + self.max_sequence_length + self.feature_lookback_minutes


@dataclass(frozen=True)
class SplitCuts:
    """Explicit split boundaries: train ts < train_end; val train_end + gap <= ts < val_end; test ts >= test_start
    (test_start >= val_end + gap). Rows in between are purged."""

    train_end: datetime
    val_end: datetime
    test_start: datetime


@dataclass
class Dataset:
    """The stored frame plus what is needed to use it: feature lists, scaler and split boundaries."""

    frame: pl.DataFrame
    feature_columns: list[str]
    sentiment_columns: list[str]
    mean: np.ndarray
    std: np.ndarray
    config: DatasetConfig
    symbol: str = ""

    @property
    def technical_columns(self) -> list[str]:
        return [c for c in self.feature_columns if c not in self.sentiment_columns]

    def scaler(self, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) for a subset of the feature columns, in the given order."""
        positions = [self.feature_columns.index(c) for c in columns]
        return self.mean[positions], self.std[positions]


def _check_frame(frame: pl.DataFrame, name: str, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(f"{name}: missing column(s) {missing}; has {frame.columns}")
    if frame["ts"].is_duplicated().any():
        raise DatasetError(
            f"{name}: duplicate timestamps, e.g. {frame.filter(pl.col('ts').is_duplicated())['ts'][0]}"
        )


def build_dataset(
    features: pl.DataFrame,
    sentiment: pl.DataFrame,
    candles: pl.DataFrame,
    config: DatasetConfig = DatasetConfig(),
    symbol: str = "",
    cuts: SplitCuts | None = None,
    require_test: bool = True,
) -> Dataset:
    """Join, label, split and fit the scaler; see the module docstring for every rule. `cuts` (the walk-forward's
    fold) replaces the fractional split with explicit boundaries; `require_test=False` allows an empty test
    segment (a fold model made before its test month has data)."""
    where = f" for {symbol}" if symbol else ""
    if features.height == 0:
        raise DatasetError(f"features{where}: no rows (materialize `features` first)")
    if candles.height == 0:
        raise DatasetError(f"candles{where}: no rows (materialize `candles` first)")
    _check_frame(features, f"features{where}", ("ts",))
    _check_frame(candles, f"candles{where}", ("ts", "close"))
    technical = [c for c in features.columns if c != "ts" and c not in SENTIMENT_COLUMNS]
    non_numeric = [c for c in technical if not features.schema[c].is_numeric()]
    if not technical or non_numeric:
        raise DatasetError(
            f"features{where}: need numeric feature columns; non-numeric: {non_numeric or 'none at all'}"
        )
    if sentiment.height:
        _check_frame(sentiment, f"sentiment_features{where}", ("ts", *SENTIMENT_COLUMNS))
        sentiment = sentiment.select("ts", *SENTIMENT_COLUMNS)
    else:  # nothing materialized: every sentiment value is null (imputed, see docstring)
        sentiment = pl.DataFrame(
            schema={"ts": features.schema["ts"], **{c: pl.Float64 for c in SENTIMENT_COLUMNS}}
        )

    # Memory: the wide feature columns are never copied. Labels and sentiment are joined onto `ts` alone and
    # attached beside the (sorted) features; only the narrow columns are filtered, joined or computed.
    if not features["ts"].is_sorted():
        features = features.sort("ts")
    narrow = join_relative_sentiment(label_rows(features.select("ts"), candles, config), sentiment)
    features = features.head(narrow.height)  # label_rows keeps a prefix
    # Cut into the features' chunks: polars copies (rechunks) every column of a frame whose columns are
    # chunked differently, which for the concatenated monthly partitions would copy all the features.
    narrow = _chunked_like(narrow.drop("ts"), features["ts"])
    frame = features.hstack(narrow.get_columns())
    frame = frame.with_columns(row_valid(technical, features.schema))
    labelled = frame["ts"].filter(frame["label"].is_not_null())
    if labelled.len() < 3:
        raise DatasetError(
            f"features{where}: only {labelled.len()} labelled rows; need history beyond {config.horizon_minutes} minutes"
        )
    gap = timedelta(minutes=config.purge_minutes)
    if cuts is None:
        last = labelled.len() - 1
        train_end = labelled[
            min(last, int(labelled.len() * (1 - config.val_fraction - config.test_fraction)))
        ]
        val_end = labelled[min(last, int(labelled.len() * (1 - config.test_fraction)))]
        cuts = SplitCuts(train_end, val_end, val_end + gap)
    elif cuts.test_start < cuts.val_end + gap or cuts.val_end < cuts.train_end + gap:
        raise DatasetError(
            f"split cuts {cuts} leave less than the purge gap of {config.purge_minutes} minutes"
        )
    ts = pl.col("ts")
    split = frame.select(
        pl.when(ts < cuts.train_end)
        .then(0)
        .when((ts >= cuts.train_end + gap) & (ts < cuts.val_end))
        .then(1)
        .when(ts >= cuts.test_start)
        .then(2)
        .otherwise(PURGED)
        .cast(pl.Int8)
        .alias("split")
    )
    frame = frame.hstack(_chunked_like(split.rechunk(), frame["ts"]).get_columns())
    columns = technical + list(SENTIMENT_COLUMNS)
    frame = frame.with_columns(
        pl.col(c).cast(pl.Float32) for c in columns if frame.schema[c] != pl.Float32
    ).select("ts", "split", "label", "fwd_return", "past_return", "row_valid", *columns)
    labelled_per_split = frame.select(
        [
            ((pl.col("split") == code) & pl.col("label").is_not_null()).sum().alias(name)
            for name, code in SPLITS.items()
        ]
    ).row(0, named=True)
    for name, count in labelled_per_split.items():
        if count == 0 and (require_test or name != "test"):
            raise DatasetError(
                f"features{where}: the {name} segment is empty after a purge gap of {config.purge_minutes} minutes; "
                f"{labelled.len()} labelled rows from {labelled[0]} to {labelled[-1]} are too few "
                "(materialize more months, or lower feature_lookback_minutes / max_sequence_length)"
            )
    train = (frame["split"] == 0) & frame["row_valid"]  # one column filtered at a time: no copy of the rows
    # One contiguous column at a time: a sum's order, hence its last bits, must not depend on the chunks.
    mean = np.array([frame[c].filter(train).rechunk().mean() or 0.0 for c in columns], dtype=np.float64)
    std = np.array([frame[c].filter(train).rechunk().std(ddof=0) or 0.0 for c in columns], dtype=np.float64)
    mean, std = np.nan_to_num(mean), np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    return Dataset(frame, columns, list(SENTIMENT_COLUMNS), mean, std, config, symbol)


def _chunked_like(frame: pl.DataFrame, column: pl.Series) -> pl.DataFrame:
    """`frame` (as many rows as `column`) cut into `column`'s chunks, without copying."""
    parts = []
    offset = 0
    for chunk in column.get_chunks():
        parts.append(frame.slice(offset, chunk.len()))
        offset += chunk.len()
    return pl.concat(parts, rechunk=False) if len(parts) > 1 else frame


def row_valid(technical: list[str], schema: pl.Schema) -> pl.Expr:
    """`row_valid`: every technical feature of the row is finite (also what live scoring uses). Float columns
    are tested as they are (no Float64 copy of Float32 features); others are cast first."""
    return pl.all_horizontal(
        [
            (pl.col(c) if schema[c].is_float() else pl.col(c).cast(pl.Float64)).is_finite().fill_null(False)
            for c in technical
        ]
    ).alias("row_valid")


def label_rows(features: pl.DataFrame, candles: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    """`features` (sorted) + close, forward/past N-minute returns and the down/flat/up label (null if unknowable);
    rows whose label would need candles past the last one are dropped. Row order is kept: windows are row runs."""
    n = timedelta(minutes=config.horizon_minutes)
    prices = candles.select("ts", "close").sort("ts")
    dead_zone = config.dead_zone_bps / 1e4
    fwd = pl.col("fwd_return")
    return (
        features.filter(pl.col("ts") + n <= prices["ts"][-1])
        .join(prices, on="ts", how="left", maintain_order="left")
        .join(
            prices.select((pl.col("ts") - n).alias("ts"), pl.col("close").alias("_fwd")),
            on="ts",
            how="left",
            maintain_order="left",
        )
        .join(
            prices.select((pl.col("ts") + n).alias("ts"), pl.col("close").alias("_past")),
            on="ts",
            how="left",
            maintain_order="left",
        )
        .with_columns(
            (pl.col("_fwd") / pl.col("close") - 1).alias("fwd_return"),
            (pl.col("close") / pl.col("_past") - 1).alias("past_return"),
        )
        .with_columns(
            pl.when(fwd > dead_zone)
            .then(2)
            .when(fwd < -dead_zone)
            .then(0)
            .when(fwd.is_not_null())
            .then(1)
            .otherwise(None)
            .cast(pl.Int8)
            .alias("label")
        )
    )


def join_sentiment(frame: pl.DataFrame, sentiment: pl.DataFrame) -> pl.DataFrame:
    """Attach the sentiment row of the last completed hour: `ts` (end of hour) at or before the minute's close
    (ts + 1 min) and at most 59 minutes before it, so a missing hour (or month) stays null instead of repeating
    an older hour's values."""
    return frame.with_columns((pl.col("ts") + timedelta(minutes=1)).alias("_close_ts")).join_asof(
        sentiment.sort("ts").rename({"ts": "_sent_ts"}),
        left_on="_close_ts",
        right_on="_sent_ts",
        strategy="backward",
        tolerance=timedelta(minutes=59),
    )


def relative_sentiment(sentiment: pl.DataFrame) -> pl.DataFrame:
    """Each sentiment column at an hour end relative to the previous 7 days of hour ends: (value - their mean) /
    their std (nulls skipped); null with fewer than RELATIVE_MIN_HOURS values in that week or a zero std."""
    sentiment = sentiment.sort("ts")
    columns = [c for c in SENTIMENT_COLUMNS if c in sentiment.columns]

    def trailing(c: str, statistic: str) -> pl.Expr:
        rolling = getattr(pl.col(c), f"rolling_{statistic}_by")
        options = {"ddof": 0} if statistic == "std" else {}
        return rolling("ts", RELATIVE_WINDOW, min_samples=RELATIVE_MIN_HOURS, closed="left", **options)

    return sentiment.with_columns(
        [
            pl.when(trailing(c, "std") > 1e-12)
            .then((pl.col(c) - trailing(c, "mean")) / trailing(c, "std"))
            .otherwise(None)
            .alias(c)
            for c in columns
        ]
    )


def join_relative_sentiment(frame: pl.DataFrame, sentiment: pl.DataFrame) -> pl.DataFrame:
    """The sentiment inputs of training and serving alike: `relative_sentiment` joined by `join_sentiment`."""
    return join_sentiment(frame, relative_sentiment(sentiment))


def scale(
    frame: pl.DataFrame, columns: list[str], mean: np.ndarray, std: np.ndarray, clip: float
) -> np.ndarray:
    """Standardised C-contiguous float32 matrix (rows x columns); nulls/NaN become 0 (= the training mean), clipped."""
    raw = np.ascontiguousarray(frame.select(columns).to_numpy(), dtype=np.float32)
    scaled = (raw - mean.astype(np.float32)) / std.astype(np.float32)
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=clip, neginf=-clip)
    return np.clip(scaled, -clip, clip, out=scaled)


def summary(dataset: Dataset) -> dict:
    """Rows per split, class balance, date ranges and sentiment null shares (asset metadata)."""
    out: dict = {"features": len(dataset.feature_columns), "purge_minutes": dataset.config.purge_minutes}
    narrow = dataset.frame.select("ts", "split", "label", *dataset.sentiment_columns)  # shares the columns
    for name, code in SPLITS.items():
        part = narrow.filter(pl.col("split") == code)
        labels = part["label"].drop_nulls()
        counts = np.bincount(labels.to_numpy(), minlength=3) if labels.len() else np.zeros(3, int)
        out[name] = {
            "rows": part.height,
            "labelled_rows": labels.len(),
            "first_ts": str(part["ts"].min()),
            "last_ts": str(part["ts"].max()),
            "class_share": {c: round(float(k / max(1, counts.sum())), 4) for c, k in zip(CLASSES, counts)},
            "sentiment_null_share": {
                c: round(float(part[c].null_count() / max(1, part.height)), 4)
                for c in dataset.sentiment_columns
            },
        }
    out["purged_rows"] = narrow.filter(pl.col("split") == PURGED).height
    return out


def write_parquet(dataset: Dataset, out: BinaryIO) -> None:
    """Write the frame to the binary file `out` as zstd parquet with feature lists, scaler and config in the
    key-value metadata (streamed: no copy of the file's bytes in memory)."""
    table = dataset.frame.to_arrow()
    meta = {
        "format": FORMAT,
        "symbol": dataset.symbol,
        "feature_columns": dataset.feature_columns,
        "sentiment_columns": dataset.sentiment_columns,
        "mean": dataset.mean.tolist(),
        "std": dataset.std.tolist(),
        "config": asdict(dataset.config),
    }
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(meta).encode()}
    )
    pq.write_table(table, out, compression="zstd")


def to_parquet_bytes(dataset: Dataset) -> bytes:
    """`write_parquet` into bytes."""
    buffer = io.BytesIO()
    write_parquet(dataset, buffer)
    return buffer.getvalue()


def from_parquet_bytes(data: bytes, source: str = "dataset") -> Dataset:
    """Inverse of `to_parquet_bytes`; a clear error for anything that is not a crpbot dataset."""
    try:
        table = pq.read_table(io.BytesIO(data))
        meta = json.loads((table.schema.metadata or {})[METADATA_KEY])
    except (pa.ArrowInvalid, KeyError, ValueError) as exc:
        raise DatasetError(f"{source} is not a crpbot training dataset: {exc!r}") from exc
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{source}: unsupported dataset format {meta.get('format')!r} (expected {FORMAT})")
    return Dataset(
        frame=pl.from_arrow(table),
        feature_columns=meta["feature_columns"],
        sentiment_columns=meta["sentiment_columns"],
        mean=np.asarray(meta["mean"], dtype=np.float64),
        std=np.asarray(meta["std"], dtype=np.float64),
        config=DatasetConfig(**meta["config"]),
        symbol=meta.get("symbol", ""),
    )
