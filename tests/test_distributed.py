"""Distributed training with xgboost.spark on a real Spark standalone cluster (master + 2 workers on 127.0.0.1)."""

import numpy as np
import pandas as pd
import pytest

from kennel.model import MODEL_FILE, SPEC_FILE, Model, ModelCard, to_model_frame
from kennel.model.distributed import _model_columns
from kennel.spark import is_cluster, local_standalone_cluster
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from kennel.training.config import TrainConfig
from kennel.training.evaluation import roc_auc
from kennel.training.trainer import train_model
from tests.training_data import train_on_spark, training_frame


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEFAULT_SPEC_PATH)


def test_only_standalone_masters_and_spark_connect_count_as_clusters():
    assert is_cluster({"spark.master": "spark://10.0.0.5:7077"}, environ={})
    assert is_cluster({"spark.master": "local[2]", "spark.remote": "sc://spark.internal:15002"}, environ={})
    assert is_cluster({"spark.master": "local[2]"}, environ={"SPARK_REMOTE": "sc://spark.internal:15002"})
    assert not is_cluster({"spark.master": "local[2]"}, environ={})
    assert not is_cluster({"spark.master": "local-cluster[2,1,1024]"}, environ={})
    assert not is_cluster({}, environ={})


def test_spark_encoding_equals_the_pandas_model_frame(spec, spark, tmp_path):
    """The cluster must see exactly the values single-node training and serving see."""
    card = ModelCard.for_spec(spec)
    frame = training_frame(spec, "2026-01-01", 300, 11)
    frame.loc[:4, "region"] = "atlantis"  # unknown category → missing, as in to_model_frame
    frame.to_parquet(tmp_path / "rows.parquet")
    encoded = spark.read.parquet(str(tmp_path / "rows.parquet")).select(*_model_columns(card)).toPandas()
    expected = to_model_frame(pd.read_parquet(tmp_path / "rows.parquet"), card)
    for feat in card.features:
        want = expected[feat.name]
        if isinstance(want.dtype, pd.CategoricalDtype):
            want = want.cat.codes.astype("float32").where(want.cat.codes >= 0)
        np.testing.assert_array_equal(
            encoded[feat.name].to_numpy(dtype="float32"), want.to_numpy(dtype="float32"), err_msg=feat.name
        )


@pytest.mark.slow
def test_training_on_a_standalone_cluster_gives_a_model_folder_as_good_as_native(spec, tmp_path):
    data = tmp_path / "training"
    data.mkdir()
    # More rows per worker than one Arrow batch (10,000): every batch must hold training and validation rows.
    train, validation, test = (
        training_frame(spec, "2026-01-01", 24000, 1),
        training_frame(spec, "2026-01-02", 6000, 2),
        training_frame(spec, "2026-01-03", 2000, 3),
    )
    train.to_parquet(data / "train.parquet")
    validation.to_parquet(data / "validation.parquet")
    config = TrainConfig(device="cpu", n_estimators=60, num_workers=2)

    with local_standalone_cluster(tmp_path / "cluster", workers=2, cores=1, memory="1g") as master:
        # A driver process of its own: this test session's local Spark context cannot point elsewhere.
        result = train_on_spark(master, data, tmp_path / "model", config, timeout=600)
    assert result["distributed"] and result["params"]["num_workers"] == 2

    # A full model folder, loadable (and checked) the way evaluation, the gate and the Bento load one.
    assert (tmp_path / "model" / MODEL_FILE).is_file() and (tmp_path / "model" / SPEC_FILE).is_file()
    cluster = Model.load(tmp_path / "model")
    card = ModelCard.for_spec(spec)
    assert cluster.card.feature_names == card.feature_names
    assert cluster.card.threshold == result["threshold"] and cluster.card.params == result["params"]
    assert cluster.booster.feature_names == card.feature_names
    assert cluster.booster.num_boosted_rounds() == result["best_iteration"] + 1
    native, _ = train_model(card, train, validation, config)
    y = test["label"].to_numpy()
    cluster_auc, native_auc = roc_auc(y, cluster.score(test)), roc_auc(y, native.score(test))
    assert cluster_auc > 0.8 and abs(cluster_auc - native_auc) < 0.02
