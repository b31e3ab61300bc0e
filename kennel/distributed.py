"""Distributed training with xgboost.spark, used when the Spark resource points at a cluster.

A `spark://` master (standalone cluster) or a Spark Connect URL (`sc://`, as `spark.remote` or in
SPARK_REMOTE) means the cluster trains: SparkXGBClassifier with `num_workers` barrier tasks reads the
training set where it lies in the lake. The result is the same plain Booster single-node training
gives (sliced to its best iteration, feature names and types set), so evaluation, the gate and the
Bento never know where a model was trained. Local masters (`local[...]`) train in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd

from kennel.features import MODEL_FILE, ModelCard
from kennel.hyperparameters import TrainConfig
from kennel.spec import FeatureType, load_spec
from kennel.training import TrainResult, booster_params, finish_training, require_two_classes, resolve_device

VALIDATION_FLAG = "_kennel_is_validation"


def is_cluster(spark_config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> bool:
    """True when the Spark settings name a cluster: a standalone `spark://` master, or Spark Connect
    (`spark.remote` or the SPARK_REMOTE variable that pyspark itself honours)."""
    master = str(spark_config.get("spark.master", ""))
    remote = str(spark_config.get("spark.remote", "")) or environ.get("SPARK_REMOTE", "")
    return master.startswith("spark://") or remote.startswith("sc://")


def _model_columns(card: ModelCard) -> list[Any]:
    """Spark columns that encode each card feature as to_model_frame does: float32, categories as
    their index in the card's list (unknown or missing → null, which XGBoost reads as missing)."""
    from pyspark.sql import functions as F

    columns = []
    for feat in card.features:
        source = F.col(feat.name)
        if feat.type is FeatureType.categorical:
            code = F.lit(None)
            for index, category in reversed(list(enumerate(feat.categories or ()))):
                code = F.when(source.cast("string") == category, F.lit(float(index))).otherwise(code)
            columns.append(code.cast("float").alias(feat.name))
        else:
            columns.append(source.cast("float").alias(feat.name))
    return columns


def train_distributed(
    spark: Any, card: ModelCard, train_path: str | Path, validation_path: str | Path,
    validation: pd.DataFrame, config: TrainConfig,
) -> tuple[Any, TrainResult]:
    """Train on the cluster behind `spark` from the train/validation Parquet files (paths the
    executors can read); `validation` (the same rows, in pandas) picks the threshold on the driver."""
    from pyspark.sql import functions as F
    from xgboost.spark import SparkXGBClassifier

    device = resolve_device(config.device)
    train = spark.read.parquet(str(train_path))
    counts = train.agg(F.count(F.lit(1)).alias("rows"), F.sum("label").alias("positives")).first()
    rows, positives = int(counts["rows"]), float(counts["positives"] or 0)
    require_two_classes(positives, rows)
    params = booster_params(config, device, positives, rows)

    def prepared(frame: Any, is_validation: bool) -> Any:
        return frame.select(*_model_columns(card), F.col("label").cast("double").alias("label"),
                            F.lit(is_validation).alias(VALIDATION_FLAG))

    data = prepared(train, False).unionByName(prepared(spark.read.parquet(str(validation_path)), True))
    # Our own shuffle into num_workers partitions, ordered by a hash of each row: xgboost.spark fails on
    # an Arrow batch that holds only training or only validation rows (its own repartition keeps the
    # two in blocks), a barrier stage cannot run on the union itself, and a content hash makes the
    # partitioning independent of how Spark split the files.
    row_hash = F.xxhash64(*data.columns)
    data = data.repartition(config.num_workers, row_hash).sortWithinPartitions(row_hash)
    # xgboost.spark sets the objective itself, runs one thread per Spark task (it rejects nthread) and
    # takes the seed as random_state.
    spark_params = {k: v for k, v in params.items() if k not in ("objective", "nthread", "seed")}
    classifier = SparkXGBClassifier(
        features_col=card.feature_names,
        label_col="label",
        validation_indicator_col=VALIDATION_FLAG,
        feature_types=["c" if f.type is FeatureType.categorical else "q" for f in card.features],
        num_workers=config.num_workers,
        n_estimators=config.n_estimators,
        early_stopping_rounds=config.early_stopping_rounds,
        random_state=config.seed,
        verbose=False,
        **spark_params,
    )
    started = time.perf_counter()
    booster = classifier.fit(data).get_booster()
    seconds = time.perf_counter() - started
    booster.feature_names = card.feature_names
    booster.feature_types = ["c" if f.type is FeatureType.categorical else "float" for f in card.features]
    return finish_training(booster, card, validation, device=device, params={**params, "num_workers": config.num_workers},
                           seconds=seconds, train_rows=rows, distributed=True)


# --- a standalone cluster on this machine (tests, benchmarks, trying the distributed path) ---------

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_standalone_cluster(work_dir: Path, workers: int = 2, cores: int = 1, memory: str = "1g",
                             ready_timeout_s: float = 90.0) -> Iterator[str]:
    """A Spark standalone master and `workers` workers on 127.0.0.1, started with the pip package's
    spark-daemon.sh; yields the master URL and stops every daemon on exit."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    work_dir = Path(work_dir)
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(work_dir / "logs"), "SPARK_PID_DIR": str(work_dir / "pids"),
           "SPARK_WORKER_DIR": str(work_dir / "work")}
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
            run("start", WORKER_CLASS, str(instance), "--host", "127.0.0.1", "--cores", str(cores),
                "--memory", memory, "--webui-port", str(_free_port()), master)
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
            raise TimeoutError(f"{alive} of {workers} Spark workers registered with {master} within "
                               f"{ready_timeout_s:.0f}s; logs in {work_dir / 'logs'}")
        yield master
    finally:
        for cls, instance in reversed(started):
            subprocess.run([daemon, "stop", cls, str(instance)], env=env, capture_output=True, timeout=60)


def main(argv: list[str] | None = None) -> int:
    """Train from a training-set folder (train/validation Parquet) on a Spark cluster; writes the
    booster (model.ubj) and the training result (train_result.json) to --out."""
    parser = argparse.ArgumentParser(prog="python -m kennel.distributed", description=main.__doc__)
    parser.add_argument("--master", required=True, help="spark://host:port or sc://host:port")
    parser.add_argument("--training-dir", required=True, type=Path, help="folder with train/validation.parquet")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--spec", help="data-set spec (default: KENNEL_DATASET_SPEC or the demo's)")
    parser.add_argument("--config", default="{}", help="TrainConfig fields as JSON, e.g. '{\"num_workers\": 2}'")
    args = parser.parse_args(argv)

    from kennel.sparkconf import prepare_spark_environment, spark_conf

    prepare_spark_environment()
    from pyspark.sql import SparkSession

    conf = spark_conf(args.master)
    if args.master.startswith("sc://"):
        conf = {k: v for k, v in conf.items() if k != "spark.master"} | {"spark.remote": args.master}
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        card = ModelCard.for_spec(load_spec(args.spec))
        validation = pd.read_parquet(args.training_dir / "validation.parquet")
        booster, result = train_distributed(spark, card, args.training_dir / "train.parquet",
                                            args.training_dir / "validation.parquet", validation,
                                            TrainConfig.model_validate_json(args.config))
    finally:
        spark.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(args.out / MODEL_FILE))
    (args.out / "train_result.json").write_text(json.dumps(asdict(result), indent=2))
    print(json.dumps({k: v for k, v in asdict(result).items() if k != "feature_importance"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
