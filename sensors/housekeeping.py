"""Housekeeping for runs that ended without saying so.

A run worker killed outright (SIGKILL, the OOM killer, a closed laptop) cannot report its end: its run
stays STARTED and its staging folder stays in the lake. Under the daemon, run monitoring (dagster.yaml,
written by `make setup`) fails runs that never start or outlive their max runtime, and the code server
fails runs whose worker process it launched and saw die. Runs launched without a daemon
(`dagster job execute`, `make demo`, execute_in_process) have no one watching them: Kennel's sensors
sweep on every tick, and `make demo` sweeps before it runs (`main` below).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psutil
from dagster._core.storage.runs import SqliteRunStorage

from kennel.lake import DatasetLake, Lake
from kennel.serving.prediction_log import CompactionReport, compact_logs
from resources import build_resources

# psutil derives a process's start time from the boot time, which the kernel gives to the second.
START_TIME_TOLERANCE_S = 2.0
_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def worker_alive(pid: int, run_started_at: float) -> bool:
    """Whether the process that started a run (pid, at a Unix time) still runs on this machine."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # exited, not yet reaped by its parent
        # A process created after the run started is another one that was given the same pid.
        return process.create_time() <= run_started_at + START_TIME_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's process: it exists, and is not ours to judge


def _why_abandoned(instance: dg.DagsterInstance, record: dg.RunRecord) -> str | None:
    """Why an in-progress run can no longer end by itself, or None while it still may."""
    run = record.dagster_run
    if run.status == dg.DagsterRunStatus.STARTING:
        # No worker has reported a pid yet: wait as long as the daemon's run monitoring would.
        launched = instance.get_run_stats(run.run_id).launch_time or record.create_timestamp.timestamp()
        timeout = instance.run_monitoring_start_timeout_seconds
        if time.time() - launched < timeout:
            return None
        return f"its run worker did not start within {timeout} s of the launch"
    starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
    started = starts[-1] if starts else None
    if started is None or started.dagster_event is None or started.dagster_event.pid is None:
        return None
    pid = started.dagster_event.pid
    if worker_alive(pid, started.timestamp):
        return None
    return f"its run worker (pid {pid}) is gone, killed or crashed before it could report the run's end"


def fail_abandoned_runs(instance: dg.DagsterInstance, log: logging.Logger) -> list[str]:
    """Mark failed every STARTING or STARTED run whose worker is gone; the ids of those runs."""
    if not isinstance(instance.run_storage, SqliteRunStorage):
        # Runs of a shared instance (Postgres) may run on other machines, where a pid means nothing here:
        # the daemon's run monitoring watches those.
        return []
    in_progress = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    failed = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=in_progress)):
        why = _why_abandoned(instance, record)
        if why is None:
            continue
        run = instance.get_run_by_id(record.dagster_run.run_id)
        if run is None or run.status != record.dagster_run.status:
            continue  # it moved on while we looked
        message = f"Kennel's housekeeping marked run {run.run_id} failed: {why}."
        instance.report_run_failed(run, message)
        log.warning(message)
        failed.append(run.run_id)
    return failed


def remove_finished_staging(instance: dg.DagsterInstance, staging: Path, log: logging.Logger) -> list[Path]:
    """Remove the staging entries (named with a run id) of runs that have ended; the paths removed.

    Entries of runs still in progress are theirs; entries of runs this instance does not know may be
    another instance's sharing the lake: both stay.
    """
    by_run: dict[str, list[Path]] = {}
    for entry in staging.iterdir() if staging.is_dir() else ():
        match = _RUN_ID.search(entry.name)
        if match:
            by_run.setdefault(match.group(0), []).append(entry)
    if not by_run:
        return []
    removed = []
    for run in instance.get_runs(dg.RunsFilter(run_ids=list(by_run))):
        if not run.is_finished:
            continue
        for entry in by_run[run.run_id]:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        log.info(f"removed the staging of ended runs: {', '.join(p.name for p in removed)}")
    return removed


def sweep_abandoned_runs(instance: dg.DagsterInstance, lake: Lake, log: logging.Logger) -> list[str]:
    """Fail runs whose worker is gone, then remove ended runs' staging; the ids of the runs failed.
    Two queries and a folder listing when there is nothing to sweep."""
    failed = fail_abandoned_runs(instance, log)
    remove_finished_staging(instance, lake.staging(), log)
    return failed


def compact_served_logs(data: DatasetLake) -> list[CompactionReport]:
    """Merge each past day of the prediction log, the feedback log and the shadow scores into one file (a serving worker
    writes one file per flush: thousands a day). Days before yesterday only: a worker's buffer may
    still hold yesterday's rows for one flush interval after midnight. Lists each past day folder once
    per log when there is nothing to do (milliseconds); `compact_days` logs what it merged."""
    before = datetime.now(UTC).date() - timedelta(days=1)
    return compact_logs(data, before)


def main() -> None:
    """Sweep the instance in $DAGSTER_HOME and the lake the code location is configured with."""
    log = logging.getLogger("kennel.housekeeping")
    log.addHandler(logging.StreamHandler())
    log.setLevel(logging.INFO)
    lake = build_resources()["lake"]
    with dg.DagsterInstance.get() as instance:
        sweep_abandoned_runs(instance, lake.local, log)
