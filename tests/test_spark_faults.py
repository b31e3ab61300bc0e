"""A Spark worker killed in the middle of cleaning on a real standalone cluster (master + 2 workers on
127.0.0.1): the job either completes with the rows of an undisturbed run (Spark reran the lost tasks
on the surviving worker) or fails with a clear error, and never leaves a half-written output."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from kennel.demo import generate
from kennel.ingestion.cleaning import clean_partition
from kennel.spark import WORKER_CLASS, local_standalone_cluster
from kennel.spec import DEFAULT_SPEC_PATH, PROJECT_ROOT, load_spec

ROWS = 4000
# The driver is a process of its own: this test session's local Spark context cannot point elsewhere.
DRIVER = """
import dataclasses, json, sys
from pathlib import Path
from kennel.ingestion.cleaning import clean_partition
from kennel.spark import get_spark
from kennel.spec import load_spec

master, spec_path, day_dir, lake, out = sys.argv[1:]
spec, day, lake = load_spec(spec_path), Path(day_dir).name, Path(lake)
files = sorted(Path(day_dir).glob(f"*.{spec.source.format}"))
result = clean_partition(
    get_spark(master), spec, files, day, lake / "clean" / day, lake / "quarantine" / day, lake / "_staging"
)
Path(out).write_text(json.dumps(dataclasses.asdict(result)))
"""


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(poll_s)
    raise TimeoutError(f"{what} within {timeout_s:.0f}s")


def worker_pids(cluster_dir: Path) -> list[int]:
    """From the pid files spark-daemon.sh writes into SPARK_PID_DIR (local_standalone_cluster sets it)."""
    return [int(p.read_text()) for p in sorted((cluster_dir / "pids").glob(f"*{WORKER_CLASS}-*.pid"))]


def executor_running_a_task(worker_pid: int, cluster_dir: Path) -> bool:
    """True once the worker's executor has logged starting a task (executors log at INFO to stderr in
    their work folder, SPARK_WORKER_DIR/<app>/<executor id>/)."""
    for child in psutil.Process(worker_pid).children():
        try:
            args = child.cmdline()
        except psutil.Error:  # an executor that already ended (a zombie until the worker reaps it)
            continue
        if "--executor-id" in args and "--app-id" in args:
            app, executor = args[args.index("--app-id") + 1], args[args.index("--executor-id") + 1]
            stderr = cluster_dir / "work" / app / executor / "stderr"
            return stderr.is_file() and "Running task" in stderr.read_text(errors="replace")
    return False


def outputs(lake: Path, day: str) -> dict[str, bytes]:
    return {table: (lake / table / day / "part-00000.parquet").read_bytes() for table in ("clean", "quarantine")}


def clean_day(spark, spec, day_dir: Path, lake: Path):
    files = sorted(day_dir.glob(f"*.{spec.source.format}"))
    day = day_dir.name
    return clean_partition(spark, spec, files, day, lake / "clean" / day, lake / "quarantine" / day, lake / "_staging")


@pytest.mark.slow
@pytest.mark.full
def test_a_worker_killed_mid_job_is_survived_or_fails_clearly_without_a_half_written_output(spark, tmp_path):
    spec = load_spec(DEFAULT_SPEC_PATH)
    day = spec.start_date.isoformat()
    generate(spec, tmp_path / "landing", days=1, rows_per_day=ROWS, scenario="corrupt")
    generate(spec, tmp_path / "previous", days=1, rows_per_day=ROWS // 4, scenario="corrupt", seed=1)
    # The undisturbed run, in this session's local Spark: what the cluster run must give.
    expected = clean_day(spark, spec, tmp_path / "landing" / day, tmp_path / "expected")
    # The lake already holds another version of the day, which a failed run must leave as it was.
    lake = tmp_path / "lake"
    clean_day(spark, spec, tmp_path / "previous" / day, lake)
    previous = outputs(lake, day)

    cluster_dir, result_file = tmp_path / "cluster", tmp_path / "result.json"
    with local_standalone_cluster(cluster_dir, workers=2, cores=1, memory="1g") as master:
        args = [master, str(DEFAULT_SPEC_PATH), str(tmp_path / "landing" / day), str(lake), str(result_file)]
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, *args],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def busy_worker() -> int | None:
            if driver.poll() is not None:
                pytest.fail(f"the driver ended before a task ran:\n{driver.communicate()[0][-3000:]}")
            return next((p for p in worker_pids(cluster_dir) if executor_running_a_task(p, cluster_dir)), None)

        try:
            victim = wait_for(busy_worker, timeout_s=180, what="no executor started a task")
            os.kill(victim, signal.SIGKILL)
            assert driver.poll() is None, "the job ended before the worker was killed: nothing was tested"
            log, _ = driver.communicate(timeout=300)
        finally:
            if driver.poll() is None:
                driver.kill()

    for table in ("clean", "quarantine"):
        assert sorted(p.name for p in (lake / table / day).iterdir()) == ["part-00000.parquet"], table
    assert sorted(p.name for p in (lake / "_staging").iterdir()) == [], "staging must be empty after the run"
    if driver.returncode == 0:
        assert "Lost executor" in log, f"the driver never noticed the lost worker:\n{log[-3000:]}"
        result = json.loads(result_file.read_text())
        assert (result["rows_in"], result["rows_clean"], result["reasons"]) == (
            expected.rows_in,
            expected.rows_clean,
            expected.reasons,
        )
        for table in ("clean", "quarantine"):
            pd.testing.assert_frame_equal(
                pd.read_parquet(lake / table / day), pd.read_parquet(tmp_path / "expected" / table / day)
            )
    else:
        assert re.search(r"Job aborted|SparkException|Lost executor", log), log[-3000:]
        assert outputs(lake, day) == previous, "a failed run must leave the previous version of the day"
