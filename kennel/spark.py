"""Spark for every Kennel stage that uses it: the settings each session needs (whoever starts it:
Dagster, tests, bench), whether the settings name a cluster, and a standalone cluster on this machine."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
DRIVER_HOST_SETTING = "KENNEL_SPARK_DRIVER_HOST"
BIND_ADDRESS_SETTING = "KENNEL_SPARK_BIND_ADDRESS"
# A DNS host name (RFC 1123): dot-separated labels of letters, digits and inner hyphens, 63 at most each.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _checked_host(setting: str, value: str) -> str:
    """`value` if it is an IP address or a host name, else a ValueError naming `setting`."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if len(value) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit():
        return value
    raise ValueError(f"{setting} must be an IP address or a host name, got {value!r}")


@dataclass(frozen=True)
class SparkNetwork:
    """Where the driver listens and how executors reach it. On one machine both are loopback; with workers
    on other hosts `driver_host` must be an address they can reach (the driver's, as they see it) and
    `bind_address` the local interface (or 0.0.0.0) that address arrives on."""

    driver_host: str = LOOPBACK
    bind_address: str = LOOPBACK

    def __post_init__(self) -> None:
        _checked_host(DRIVER_HOST_SETTING, self.driver_host)
        _checked_host(BIND_ADDRESS_SETTING, self.bind_address)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> SparkNetwork:
        """From KENNEL_SPARK_DRIVER_HOST and KENNEL_SPARK_BIND_ADDRESS (each 127.0.0.1 when unset or empty)."""
        return cls(
            driver_host=environ.get(DRIVER_HOST_SETTING, "").strip() or LOOPBACK,
            bind_address=environ.get(BIND_ADDRESS_SETTING, "").strip() or LOOPBACK,
        )


def prepare_spark_environment(network: SparkNetwork | None = None) -> None:
    """Must run before the first session of the process starts its JVM.

    PySpark 4.3 ignores spark.pyspark.python, so without PYSPARK_PYTHON the Python workers run the
    system interpreter (another version) and fail; binding to the configured address (loopback unless
    KENNEL_SPARK_BIND_ADDRESS says otherwise) keeps Spark off every other interface.
    """
    network = network or SparkNetwork.from_environ()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", network.bind_address)


def spark_conf(
    master: str = "local[2]", driver_memory: str = "2g", network: SparkNetwork | None = None
) -> dict[str, str]:
    """Kennel's session settings; the driver's addresses from `network` (default: from the environment)."""
    network = network or SparkNetwork.from_environ()
    return {
        "spark.master": master,
        "spark.app.name": "kennel",
        "spark.driver.host": network.driver_host,
        "spark.driver.bindAddress": network.bind_address,
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
    """A session with Kennel's settings (reused if one is already running in this process): a Spark
    Connect session when KENNEL_SPARK_REMOTE names a server, else a classic one on `master`."""
    remote = spark_remote()
    if remote:
        return connect_session(remote)
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
    work_dir: Path,
    workers: int = 2,
    cores: int = 1,
    memory: str = "1g",
    ready_timeout_s: float = 90.0,
    host: str = LOOPBACK,
    command_prefix: Sequence[str] = (),
) -> Iterator[str]:
    """A Spark standalone master and `workers` workers listening on `host`, started with the pip package's
    spark-daemon.sh run through `command_prefix` (e.g. `ip netns exec NAME`, to start them in another
    network namespace); yields the master URL and stops every daemon on exit. Ports are picked among
    those free on this machine's loopback."""
    import pyspark

    host = _checked_host("host", host)
    spark_home = Path(pyspark.__file__).parent
    work_dir = Path(work_dir)
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": host,
        "SPARK_LOG_DIR": str(work_dir / "logs"),
        "SPARK_PID_DIR": str(work_dir / "pids"),
        "SPARK_WORKER_DIR": str(work_dir / "work"),
    }
    daemon = str(spark_home / "sbin" / "spark-daemon.sh")
    port, ui_port = _free_port(), _free_port()
    master = f"spark://{host}:{port}"
    started: list[tuple[str, int]] = []

    def run(*args: str) -> None:
        subprocess.run([*command_prefix, daemon, *args], env=env, check=True, capture_output=True, timeout=60)

    try:
        run("start", MASTER_CLASS, "1", "--host", host, "--port", str(port), "--webui-port", str(ui_port))
        started.append((MASTER_CLASS, 1))
        for instance in range(1, workers + 1):
            run(
                "start",
                WORKER_CLASS,
                str(instance),
                "--host",
                host,
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
                with urllib.request.urlopen(f"http://{host}:{ui_port}/json/", timeout=2) as answer:
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
            subprocess.run(
                [*command_prefix, daemon, "stop", cls, str(instance)], env=env, capture_output=True, timeout=60
            )


# --- Spark Connect: a session on a remote server, and such a server on this machine ------------------

REMOTE_SETTING = "KENNEL_SPARK_REMOTE"
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def spark_remote(environ: Mapping[str, str] = os.environ) -> str | None:
    """The Spark Connect server KENNEL_SPARK_REMOTE names (sc://host:port), or None when unset or empty."""
    value = environ.get(REMOTE_SETTING, "").strip()
    if not value:
        return None
    host = value.removeprefix("sc://").split("/", 1)[0].rsplit(":", 1)[0]
    if not value.startswith("sc://") or not host:
        # Not echoed: the URL may carry a token (sc://host:port/;token=...).
        raise ValueError(f"{REMOTE_SETTING} must be a Spark Connect URL, sc://host:port")
    return value


def connect_conf(remote: str) -> dict[str, str]:
    """Kennel's settings for a Spark Connect session: the server's URL and the SQL settings of spark_conf.
    The others (master, memory, addresses) are the server's own, fixed when it starts."""
    sql = {k: v for k, v in spark_conf(network=SparkNetwork()).items() if k.startswith("spark.sql.")}
    return {"spark.remote": remote, **sql}


def connect_session(remote: str) -> Any:
    """A Spark Connect session on `remote` with Kennel's SQL settings. From then on this process is a
    Connect client (pyspark switches its functions to Connect's process-wide), so it cannot also hold a
    classic session: pyspark refuses one while the other is running."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in connect_conf(remote).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def is_connect(spark: Any) -> bool:
    """Whether `spark` is a Spark Connect session (it has no SparkContext, RDDs or broadcasts)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


@contextmanager
def local_connect_server(
    work_dir: Path, master: str = "local[2]", driver_memory: str = "1g", ready_timeout_s: float = 90.0
) -> Iterator[str]:
    """A Spark Connect server on 127.0.0.1 (the pip package's SparkConnectServer, run by spark-submit as a
    child process with Kennel's settings and `master`); yields its sc:// URL once it accepts connections
    and stops it on exit. Its log is work_dir/connect-server.log."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    conf = spark_conf(master, driver_memory, network=SparkNetwork()) | {
        "spark.connect.grpc.binding.address": LOOPBACK,
        # INFO would log every plan a client sends, and the literals in it.
        "spark.log.level": "WARN",
        "spark.connect.grpc.binding.port": str(port),
    }
    command = [str(spark_home / "bin" / "spark-submit"), "--class", CONNECT_SERVER_CLASS, "--master", master]
    for key, value in conf.items():
        if key != "spark.master":
            command += ["--conf", f"{key}={value}"]
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": LOOPBACK,
        # The server's Python workers (a pandas UDF, xgboost.spark) must run this interpreter.
        "PYSPARK_PYTHON": sys.executable,
    }
    log_path = work_dir / "connect-server.log"
    with open(log_path, "wb") as log:
        # A session of its own: stopping its process group stops spark-submit's JVM and anything it started.
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not _accepts_connections(port):
            if server.poll() is not None:
                raise RuntimeError(f"the Spark Connect server exited with {server.returncode}; log: {log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no Spark Connect server on 127.0.0.1:{port} within {ready_timeout_s:.0f}s; log: {log_path}"
                )
            time.sleep(0.5)
        yield f"sc://{LOOPBACK}:{port}"
    finally:
        _stop_process_group(server)


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def _stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    import signal

    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass
