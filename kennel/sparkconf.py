"""Spark settings that every Kennel Spark session needs, whoever starts it (Dagster, tests, bench)."""

from __future__ import annotations

import os
import sys


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
