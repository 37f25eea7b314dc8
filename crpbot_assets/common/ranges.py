"""Range runs: one asset computation over every partition of a run, the same way for every asset.

A single-run backfill (`BackfillPolicy.single_run()`) hands an asset a key range; a normal run one key.
`run_partitions` computes each partition on its own, in key order, logs progress, and returns what the
IO manager writes: the value for a one-partition run, {partition_key: value} for a range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import dagster as dg

T = TypeVar("T")
PROGRESS_LINES = 10  # progress lines per range run, at most (about)


def run_partitions(context: dg.AssetExecutionContext, compute_one: Callable[[str], T]) -> T | dict[str, T]:
    """`compute_one(partition_key)` for every partition of the run, keys sorted (month keys, and the
    "month|symbol" keys of symbol x month, sort chronologically). Logs "N/M partitions" as it goes."""
    keys = sorted(map(str, context.partition_keys))
    name = context.asset_key.to_user_string()
    every = max(1, len(keys) // PROGRESS_LINES)
    results = {}
    for done, key in enumerate(keys, 1):
        results[key] = compute_one(key)
        if done == len(keys) or done % every == 0:
            context.log.info(f"{name}: {done}/{len(keys)} partitions done (last {key})")
    return results[keys[0]] if context.has_partition_key else results
