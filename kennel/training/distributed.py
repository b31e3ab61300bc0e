"""Train on a Spark cluster from a shell, in a driver process of its own (tests and benchmarks use it):

python -m kennel.training.distributed --master spark://host:7077 --training-dir DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from kennel.model import Model, ModelCard
from kennel.spec import load_spec
from kennel.training.config import TrainConfig
from kennel.training.trainer import train_distributed


def main(argv: list[str] | None = None) -> int:
    """Train from a training-set folder (train/validation Parquet) on a Spark cluster; writes the
    model folder and the training result (train_result.json) to --out."""
    parser = argparse.ArgumentParser(prog="python -m kennel.training.distributed", description=main.__doc__)
    parser.add_argument("--master", required=True, help="spark://host:port or sc://host:port")
    parser.add_argument("--training-dir", required=True, type=Path, help="folder with train/validation.parquet")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--spec", help="data-set spec (default: KENNEL_DATASET_SPEC or the demo's)")
    parser.add_argument("--config", default="{}", help="TrainConfig fields as JSON, e.g. '{\"num_workers\": 2}'")
    args = parser.parse_args(argv)

    from kennel.spark import connect_session, prepare_spark_environment, spark_conf

    prepare_spark_environment()
    from pyspark.sql import SparkSession

    if args.master.startswith("sc://"):
        spark = connect_session(args.master)  # the server owns master, memory and addresses
    else:
        builder = SparkSession.builder
        for key, value in spark_conf(args.master).items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    spec = load_spec(args.spec)
    # The driver reads the model features of the training rows: learned categories are frozen from them.
    train_rows = pd.read_parquet(args.training_dir / "train.parquet", columns=[f.name for f in spec.model_features])
    try:
        validation = pd.read_parquet(args.training_dir / "validation.parquet")
        trained, result = train_distributed(
            spark,
            ModelCard.for_spec(spec, training=train_rows),
            args.training_dir / "train.parquet",
            args.training_dir / "validation.parquet",
            validation,
            TrainConfig.model_validate_json(args.config),
        )
    finally:
        spark.stop()
    # The saved card carries what training chose, so the folder scores like the `model` asset's.
    card = ModelCard.for_spec(spec, threshold=result.threshold, params=result.params, training=train_rows)
    Model(trained.booster, card).save(args.out, spec.resolved_yaml())
    (args.out / "train_result.json").write_text(json.dumps(asdict(result), indent=2))
    print(json.dumps({k: v for k, v in asdict(result).items() if k != "feature_importance"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
