"""Checks on `sentiment_features`: pure functions of one partition's frame, evaluated by the asset itself on
the frames it computed (`common/checks.py`): one result per partition, also in a range run."""

from __future__ import annotations

import polars as pl

from crpbot_assets.common.checks import PartitionCheck
from crpbot_assets.common.months import month_end
from crpbot_assets.common.partitions import split_key
from crpbot_assets.sentiment.features import FEATURE_COLUMNS, TS


def schema_problems(key: str, frame: pl.DataFrame) -> list[str]:
    """What is wrong with one partition of `sentiment_features` (empty list when nothing)."""
    expected = {"ts": TS, **{c: pl.Float64 for c in FEATURE_COLUMNS}}
    if dict(frame.schema) != expected:
        return [f"schema {dict(frame.schema)} != {expected}"]
    problems = []
    ts = frame["ts"]
    _, start = split_key(key)
    if frame.height and (not ts.is_sorted() or ts.is_duplicated().any()):
        problems.append("ts not sorted and unique")
    if frame.height and (ts.dt.minute().max() or ts.dt.second().max()):
        problems.append("ts not on hour boundaries")
    if frame.height and (ts.min() <= start or ts.max() > month_end(start)):
        problems.append(f"ts outside ({start}, {month_end(start)}]")
    return problems


SENTIMENT_CHECKS = [
    PartitionCheck(
        "sentiment_features_schema",
        "Exactly `ts` + the seven Float64 columns; sorted, unique hour ends inside the partition's month.",
        schema_problems,
    )
]
