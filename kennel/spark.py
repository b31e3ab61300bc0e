"""Spark for every Kennel stage that uses it: the settings each session needs (whoever starts it:
Dagster, tests, bench), whether the settings name a cluster, and a standalone cluster on this machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def prepare_spark_environment() -> None:
    """Must run before the first session of the process starts its JVM.

    PySpark 4.3 ignores spark.pyspark.python, so without PYSPARK_PYTHON the Python workers run the
    system interpreter (another version) and fail; binding to loopback keeps Spark off the network.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def spark_conf(master: str = "local[2]", driver_memory: str = "2g") -> dict[str, str]:
    return {
        "spark.master": master,
        "spark.app.name": "kennel",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.memory": driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Small daily partitions: the default 200 shuffle partitions would be 200 tiny tasks.
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        # With pruning, a CSV line with too few fields is not flagged as malformed when only some
        # columns are selected; every row must be judged on all of its fields.
        "spark.sql.csv.parser.columnPruning.enabled": "false",
        # A barrier stage (xgboost.spark's training) that cannot get all its slots, e.g. after a worker
        # died, fails after 12 checks 5 s apart instead of Spark's default 40 × 15 s (ten minutes).
        "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "5s",
        "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "12",
    }


def get_spark(master: str = "local[2]"):
    """A session with Kennel's settings (reused if one is already running in this process)."""
    prepare_spark_environment()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in spark_conf(master).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def is_cluster(spark_config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> bool:
    """True when the Spark settings name a cluster: a standalone `spark://` master, or Spark Connect
    (`spark.remote` or the SPARK_REMOTE variable that pyspark itself honours)."""
    master = str(spark_config.get("spark.master", ""))
    remote = str(spark_config.get("spark.remote", "")) or environ.get("SPARK_REMOTE", "")
    return master.startswith("spark://") or remote.startswith("sc://")


# --- a standalone cluster on this machine (tests, benchmarks, trying the distributed path) ---------

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_standalone_cluster(
    work_dir: Path, workers: int = 2, cores: int = 1, memory: str = "1g", ready_timeout_s: float = 90.0
) -> Iterator[str]:
    """A Spark standalone master and `workers` workers on 127.0.0.1, started with the pip package's
    spark-daemon.sh; yields the master URL and stops every daemon on exit."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    work_dir = Path(work_dir)
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(work_dir / "logs"),
        "SPARK_PID_DIR": str(work_dir / "pids"),
        "SPARK_WORKER_DIR": str(work_dir / "work"),
    }
    daemon = str(spark_home / "sbin" / "spark-daemon.sh")
    port, ui_port = _free_port(), _free_port()
    master = f"spark://127.0.0.1:{port}"
    started: list[tuple[str, int]] = []

    def run(*args: str) -> None:
        subprocess.run([daemon, *args], env=env, check=True, capture_output=True, timeout=60)

    try:
        run("start", MASTER_CLASS, "1", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port))
        started.append((MASTER_CLASS, 1))
        for instance in range(1, workers + 1):
            run(
                "start",
                WORKER_CLASS,
                str(instance),
                "--host",
                "127.0.0.1",
                "--cores",
                str(cores),
                "--memory",
                memory,
                "--webui-port",
                str(_free_port()),
                master,
            )
            started.append((WORKER_CLASS, instance))
        deadline = time.monotonic() + ready_timeout_s
        alive = 0
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as answer:
                    alive = int(json.load(answer).get("aliveworkers", 0))
            except OSError:
                alive = 0
            if alive >= workers:
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(
                f"{alive} of {workers} Spark workers registered with {master} within "
                f"{ready_timeout_s:.0f}s; logs in {work_dir / 'logs'}"
            )
        yield master
    finally:
        for cls, instance in reversed(started):
            subprocess.run([daemon, "stop", cls, str(instance)], env=env, capture_output=True, timeout=60)
