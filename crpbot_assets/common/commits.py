"""The commit rule: a stored partition counts only when its materialization record describes the file on disk.

A partition is committed in two steps: its file is written atomically (`common/storage.py`), then its
materialization is recorded with the file's stamp (`stored_file`: size and modification time) in the metadata.
A process killed between the two leaves a file without a record, or (when it overwrote an older version) a file
that its latest record does not describe. Both count as absent: loads refuse them, range runs recompute them
and the rewrite replaces the file. A record whose file is gone fails the load naming the file.
Records without a stamp (a range written by the IO manager at step end) describe whatever file is there.
A file that is not described is explained by `why_not_described`: a whole file is what a run killed between the
two steps leaves, a damaged one never is (the writes are atomic).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import dagster as dg

STAMP_KEY = "stored_file"  # materialization metadata: `size:mtime_ns` of the file the record describes
COMMIT_TAG = "crpbot/commit"  # tag of the record a range run writes as soon as a partition's file is written
RECOMPUTE_TAG = "crpbot/recompute"  # run tag "true": a range run recomputes partitions it could resume


def latest_records(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_keys: Iterable[str] | None
) -> dict[str | None, dg.EventLogRecord]:
    """The latest materialization record of each partition (key None: a non-partitioned asset), in two queries."""
    if partition_keys is None:
        found = instance.fetch_materializations(asset_key, limit=1).records
        return {None: found[0]} if found else {}
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partition_keys)
    )
    if not ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(ids.values())), limit=len(ids)
    ).records
    return {record.partition_key: record for record in records}


def record_metadata(record: dg.EventLogRecord) -> dict:
    """A record's metadata as plain values."""
    return {name: value.value for name, value in record.asset_materialization.metadata.items()}


def describes(record: dg.EventLogRecord | None, stamp: str | None) -> bool:
    """True when `record` describes the stored file whose stamp is `stamp` (None: no file)."""
    if record is None or stamp is None:
        return False
    recorded = record.asset_materialization.metadata.get(STAMP_KEY)
    return recorded is None or recorded.value == stamp


def why_not_described(record: dg.EventLogRecord | None, stamp: str, damaged: bool) -> str:
    """Why a stored file (stamp `stamp`) is not the one its latest record describes, from what can be told:
    whether a record exists, what it recorded, and whether the file is `damaged` (cannot be decoded). A run
    killed between writing and recording leaves a whole file (writes are atomic), never a damaged one."""
    size, mtime_ns = _parse_stamp(stamp)
    found = f"{size} bytes, modified {_when(mtime_ns)}"
    if record is None:
        seen = f"no materialization was recorded for it (the file: {found})"
    else:
        recorded = record.asset_materialization.metadata[STAMP_KEY].value
        was_size, was_mtime_ns = _parse_stamp(recorded)
        source = f"run {record.run_id[:8]}" if record.run_id else "recorded outside a run"
        seen = (
            f"its latest materialization ({source}) recorded {was_size} bytes modified "
            f"{_when(was_mtime_ns)}, the file is {found}"
        )
    if damaged:
        return (
            f"{seen}, and it is damaged (cannot be decoded): changed outside crpbot (truncated, overwritten or a "
            "disk fault); crpbot's writes are atomic, so no run, killed or not, leaves a partial file"
        )
    return f"{seen}: written by a run killed before it recorded it, or replaced outside crpbot"


def _parse_stamp(stamp: str) -> tuple[int, int]:
    size, mtime_ns = stamp.split(":")
    return int(size), int(mtime_ns)


def _when(mtime_ns: int) -> str:
    """A modification time to the nanosecond the stamp holds (two writes within a second differ)."""
    seconds, nanoseconds = divmod(mtime_ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%d %H:%M:%S}.{nanoseconds:09d} UTC"
