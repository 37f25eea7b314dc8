"""Checks on `features`: finite values after warm-up, and the exact column set and dtypes.

Both are blocking (training must not read broken features). Evaluated by the asset itself on the frames it
computed (`common/checks.py`): one result per partition, also in a range run, and nothing re-read.
"""

from __future__ import annotations

import polars as pl

from crpbot_assets.common.checks import PartitionCheck
from crpbot_assets.common.months import month_end
from crpbot_assets.common.partitions import split_key
from crpbot_assets.features.compute import FEATURES_SCHEMA, STORED_DTYPE


def non_finite_problems(frame: pl.DataFrame) -> list[str]:
    """Feature columns holding null, NaN or +-inf (stored rows are all past warm-up), with counts."""
    numeric = [c for c, dtype in frame.schema.items() if c != "ts" and dtype.is_float()]
    if not frame.height or not numeric:
        return []
    counts = frame.select(
        [(pl.col(c).is_null() | ~pl.col(c).is_finite()).sum().alias(c) for c in numeric]
        + [
            pl.col(c).null_count().alias(c)
            for c, dtype in frame.schema.items()
            if c != "ts" and not dtype.is_float()
        ]
    ).row(0, named=True)
    return [f"{column}: {count} null/NaN/inf" for column, count in counts.items() if count]


def schema_problems(frame: pl.DataFrame, month_start=None) -> list[str]:
    """Differences from `ts` + the catalogue's Float32 columns (names, order, dtypes); ts sorted inside the month."""
    problems = []
    expected = FEATURES_SCHEMA
    actual = dict(frame.schema)
    if missing := [c for c in expected if c not in actual]:
        problems.append(f"missing columns {missing}")
    if extra := [c for c in actual if c not in expected]:
        problems.append(f"unexpected columns {extra}")
    if wrong := {c: str(actual[c]) for c in expected if c in actual and actual[c] != expected[c]}:
        problems.append(f"wrong dtypes {wrong} (expected ts {expected['ts']}, features {STORED_DTYPE})")
    if not missing and not extra and list(actual) != list(expected):
        problems.append("columns not in catalogue order")
    if "ts" in actual and frame.height and not wrong.get("ts"):
        if not frame["ts"].is_sorted() or frame["ts"].n_unique() != frame.height:
            problems.append("ts not strictly increasing")
        if month_start is not None and (
            frame["ts"].min() < month_start or frame["ts"].max() >= month_end(month_start)
        ):
            problems.append(f"rows outside the month starting {month_start:%Y-%m-%d}")
    return problems


FEATURES_CHECKS = [
    PartitionCheck(
        "features_finite",
        "No null, NaN or infinite feature value in any stored row (rows are stored only after warm-up).",
        lambda key, frame: non_finite_problems(frame),
    ),
    PartitionCheck(
        "features_schema",
        "Exactly `ts` (Datetime us UTC) + the catalogue's features (Float32) in order; ts increasing "
        "inside the partition's month.",
        lambda key, frame: schema_problems(frame, split_key(key)[1]),
    ),
]
