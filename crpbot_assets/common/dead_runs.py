"""Runs whose processes are all gone: found from the pids Dagster records, marked failed, their pool slots freed.

Dagster records the pid of every process that executes a run in the run's events: the run worker ("Started
process for run (pid: N)"), the CLI or worker running the executor ("Executing steps ... (pid: N)"), and each
step process ('Executing step "x" in subprocess.', a STEP_WORKER_STARTED event). A run none of whose recorded
processes still runs (same pid, started before it was recorded: a reused pid is another process) has nothing
left that could finish it or free its pool slots; if it is not finished, it never will be. Only the local sqlite
instance uses this: all its processes run on this machine, so a pid means something here.

`free_slots_of_dead_runs` is called by the local instance's storage when a step's pool claim is blocked
(`common/instance_storage.py`), so a killed run's slot goes to the next run at once, without the daemon;
`dead_run_reason` also answers run monitoring (`common/run_launcher.py`).
"""

from __future__ import annotations

import dagster as dg

from crpbot_assets.common.processes import alive_since

PID_EVENTS = {dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.STEP_WORKER_STARTED}
SHOWN_PARTITIONS = 3


def run_processes(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """{pid: when first recorded} of every process recorded as executing run `run_id`."""
    found: dict[int, float] = {}
    for record in instance.get_records_for_run(run_id, of_type=PID_EVENTS).records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event else None
        pid = data.metadata.get("pid") if data else None
        if pid is not None and str(pid.value).isdigit():
            found.setdefault(int(pid.value), record.event_log_entry.timestamp)
    return found


def dead_run_reason(instance: dg.DagsterInstance, run_id: str, exclude_pid: int | None = None) -> str | None:
    """Why run `run_id` is dead ("no process of the run is left: ..."), None while one of its processes
    (other than `exclude_pid`) runs, or when none was recorded yet (a run still starting)."""
    processes = {pid: at for pid, at in run_processes(instance, run_id).items() if pid != exclude_pid}
    if not processes or any(alive_since(pid, at) for pid, at in processes.items()):
        return None
    return f"no process of the run is left (pids {', '.join(map(str, sorted(processes)))} are gone)"


def committed_summary(instance: dg.DagsterInstance, run_id: str) -> str:
    """What run `run_id` stored before it ended: partitions recorded per asset and steps that succeeded."""
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.STEP_SUCCESS}
    ).records
    partitions: dict[str, list[str]] = {}
    steps = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            steps.append(event.step_key)
            continue
        materialization = event.step_materialization_data.materialization
        keys = partitions.setdefault(materialization.asset_key.to_user_string(), [])
        if materialization.partition and materialization.partition not in keys:
            keys.append(materialization.partition)
    if not partitions:
        return "It recorded no materialization."
    parts = []
    for asset, keys in partitions.items():
        shown = ", ".join(sorted(keys)[:SHOWN_PARTITIONS]) + (", ..." if len(keys) > SHOWN_PARTITIONS else "")
        parts.append(f"{asset}: {len(keys)} partition(s) ({shown})" if keys else asset)
    finished = f"Steps that finished: {', '.join(steps)}." if steps else "No step finished."
    return (
        f"Before that it committed {'; '.join(parts)}, stored and counted as materialized: only the rest needs "
        f"running again (a candles range run skips the months already stored). {finished}"
    )


def pools_held(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Pools in which run `run_id` holds a slot or has a step waiting."""
    storage = instance.event_log_storage
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    return sorted(
        key
        for key, info in infos.items()
        if any(s.run_id == run_id for s in info.claimed_slots)
        or any(p.run_id == run_id for p in info.pending_steps)
    )


def free_dead_run(instance: dg.DagsterInstance, run_id: str, reason: str) -> str:
    """Mark run `run_id` failed (unless it finished) with `reason` and what it committed, and free its pool
    slots; returns the message."""
    pools = pools_held(instance, run_id)
    message = f"crpbot: {reason}. {committed_summary(instance, run_id)}"
    if pools:
        message += f" Its slots in pool(s) {', '.join(pools)} were freed."
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, message)
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return message


def free_slots_of_dead_runs(instance: dg.DagsterInstance, pool: str, claimant_run_id: str) -> list[str]:
    """Free the slots (and waiting steps) in `pool` of every other run whose processes are all gone, marking
    an unfinished one failed; returns the messages (empty: every holder may still be working)."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    holders = {s.run_id for s in info.claimed_slots} | {p.run_id for p in info.pending_steps}
    messages = []
    for run_id in sorted(holders - {claimant_run_id}):
        reason = dead_run_reason(instance, run_id)
        if reason:
            messages.append(f"run {run_id}: " + free_dead_run(instance, run_id, reason))
    return messages
