"""Distributed training with xgboost.spark, for a Spark cluster (kennel.spark.is_cluster).

SparkXGBClassifier with `num_workers` barrier tasks reads the training set where it lies in the lake.
The result is the same Model single-node training gives (sliced to its best iteration, feature names
and types set), so evaluation, the gate and the Bento never know where a model was trained.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kennel.model import threads
from kennel.model.booster import FitResult, finish_fit
from kennel.model.card import ModelCard
from kennel.spec import FeatureType

VALIDATION_FLAG = "_kennel_is_validation"


def _model_columns(card: ModelCard) -> list[Any]:
    """Spark columns that encode each card feature as to_model_frame does: float32, categories as
    their index in the card's list (missing → null, which XGBoost reads as missing; unknown → null, or
    the index of "other" for a learned feature)."""
    from pyspark.sql import functions as F

    columns = []
    for feat in card.features:
        source = F.col(feat.name)
        if feat.type is FeatureType.categorical:
            categories = list(feat.categories or ())
            # One lookup in a constant array (1-based; 0 when absent): a learned list may hold 10,000
            # categories, too many for a chain of CASE WHEN.
            position = F.array_position(F.array(*[F.lit(c) for c in categories]), source.cast("string"))
            unknown = F.lit(float(len(categories) - 1)) if feat.learned else F.lit(None)
            code = F.when(source.isNull(), F.lit(None)).when(position > 0, position - 1).otherwise(unknown)
            columns.append(code.cast("float").alias(feat.name))
        else:
            columns.append(source.cast("float").alias(feat.name))
    return columns


def fit_on_spark(
    spark: Any,
    card: ModelCard,
    train_path: str | Path,
    validation_path: str | Path,
    params: dict[str, Any],
    *,
    rounds: int,
    early_stopping_rounds: int,
    num_workers: int,
    train_rows: int,
) -> FitResult:
    """Train on the cluster behind `spark` from the train/validation Parquet files (paths the
    executors can read); `params` as booster_params gives them, `train_rows` as the caller counted them."""
    threads.configure_openmp()
    from pyspark.sql import functions as F
    from xgboost.spark import SparkXGBClassifier

    train = spark.read.parquet(str(train_path))

    def prepared(frame: Any, is_validation: bool) -> Any:
        return frame.select(
            *_model_columns(card),
            F.col("label").cast("double").alias("label"),
            F.lit(is_validation).alias(VALIDATION_FLAG),
        )

    data = prepared(train, False).unionByName(prepared(spark.read.parquet(str(validation_path)), True))
    # Our own shuffle into num_workers partitions, ordered by a hash of each row: xgboost.spark fails on
    # an Arrow batch that holds only training or only validation rows (its own repartition keeps the
    # two in blocks), a barrier stage cannot run on the union itself, and a content hash makes the
    # partitioning independent of how Spark split the files.
    row_hash = F.xxhash64(*data.columns)
    data = data.repartition(num_workers, row_hash).sortWithinPartitions(row_hash)
    # xgboost.spark sets the objective itself, runs one thread per Spark task (it rejects nthread) and
    # takes the seed as random_state.
    spark_params = {k: v for k, v in params.items() if k not in ("objective", "nthread", "seed")}
    classifier = SparkXGBClassifier(
        features_col=card.feature_names,
        label_col="label",
        validation_indicator_col=VALIDATION_FLAG,
        feature_types=["c" if f.type is FeatureType.categorical else "q" for f in card.features],
        num_workers=num_workers,
        n_estimators=rounds,
        early_stopping_rounds=early_stopping_rounds,
        random_state=params["seed"],
        verbose=False,
        **spark_params,
    )
    started = time.perf_counter()
    booster = classifier.fit(data).get_booster()
    seconds = time.perf_counter() - started
    booster.feature_names = card.feature_names
    booster.feature_types = ["c" if f.type is FeatureType.categorical else "float" for f in card.features]
    return finish_fit(
        booster,
        card,
        device=params["device"],
        params={**params, "num_workers": num_workers},
        seconds=seconds,
        train_rows=train_rows,
        distributed=True,
    )
