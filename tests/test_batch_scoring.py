"""Batch scoring on real Spark: the champion's scores of a table are the service's scores of the same rows,
rows the service would refuse land in the rejected output with their reasons, a re-run replaces a day."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_serving import served  # noqa: F401  (the fixture: a real `bentoml serve` of a test Bento)
from test_serving_unit import DEMO_SPEC, synthetic_records, train_model_folder
from training_data import training_frame

from kennel.lake import Lake
from kennel.model import Model
from kennel.serving.api import ArrowReader
from kennel.serving.batch import (
    BatchScorer,
    published_scores,
    read_batch_rejections,
    read_batch_scores,
    score_day,
)
from kennel.serving.prediction_log import PREDICTION_COLUMNS, prediction_schema
from kennel.serving.request_ids import RequestIds
from kennel.spec import DatasetSpec, load_spec

DAY = "2026-01-05"
MODEL_TAG = "credit_demo_clf:batchtest"
# Rows the service refuses, planted in a demo day: (id, changes, the reasons batch scoring gives).
PLANTED = {
    "bad-age-high": ({"age": 150.0}, "less_than_equal:age"),
    "bad-channel": ({"channel": "pigeon"}, "literal_error:channel"),
    "bad-age-missing": ({"age": None}, "null:age"),
    "bad-two-reasons": (
        {"loan_amount": 10.0, "region": "atlantis"},
        "greater_than_equal:loan_amount;literal_error:region",
    ),
}


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_spec(DEMO_SPEC)


@pytest.fixture(scope="module")
def model_dir(spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("batch-model") / "credit_demo"
    train_model_folder(folder, spec, synthetic_records(spec, 600, rng), rng)
    return folder


@pytest.fixture(scope="module")
def day_rows(spec: DatasetSpec) -> pd.DataFrame:
    """A demo day as cleaning leaves it (label and timestamp columns included), plus the planted rows."""
    frame = training_frame(spec, DAY, 1_500, seed=5).drop(columns=["label"])
    planted = []
    for i, (row_id, (changes, _)) in enumerate(PLANTED.items()):
        row = frame.iloc[i].to_dict() | changes
        row[spec.id_column] = row_id
        planted.append(row)
    return pd.concat([frame, pd.DataFrame(planted)], ignore_index=True)


def _arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)  # NaN → null, as in a clean Parquet file


def _service_scores(model_dir: Path, frame: pd.DataFrame) -> np.ndarray:
    """What /predict_arrow answers for these rows, in process: its reader, the encoder, Model.score_matrix."""
    from kennel.serving.batch import _ipc_bytes

    model = Model.load(model_dir)
    spec = load_spec(model_dir / "spec.yaml")
    reader = ArrowReader(spec, model.card, max_rows=100_000)
    table = _arrow(frame)
    read = reader.read(_ipc_bytes(table.select([n for n in table.column_names if n in reader.required])))
    return model.score_matrix(model.encoder.encode_numbers(read.values, read.table.num_rows))


@pytest.fixture(scope="module")
def scored(spark, spec: DatasetSpec, model_dir: Path, day_rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    data = Lake(tmp_path_factory.mktemp("batch-lake")).dataset(spec.name)
    frame = spark.createDataFrame(_arrow(day_rows))
    result = score_day(frame, data, DAY, model_dir=model_dir, model_tag=MODEL_TAG)
    return data, frame, result


def test_batch_scores_equal_the_services_scores(scored, spec: DatasetSpec, model_dir: Path, day_rows) -> None:
    data, _, result = scored
    scores = read_batch_scores(data)
    clean = day_rows[~day_rows[spec.id_column].isin(PLANTED)]
    assert len(scores) == len(clean) == result.published.rows_scored
    expected = pd.Series(_service_scores(model_dir, clean), index=clean[spec.id_column].to_numpy())
    got = scores.set_index(spec.id_column)["probability"]
    np.testing.assert_allclose(got.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-6)
    # and the training path's encoding (Model.score on the frame) agrees too
    np.testing.assert_allclose(Model.load(model_dir).score(clean), expected.to_numpy(), rtol=0, atol=1e-6)
    threshold = Model.load(model_dir).card.threshold
    assert (scores["predicted_label"] == (scores["probability"] >= threshold).astype("int8")).all()


def test_scores_are_in_the_prediction_logs_schema(scored, spec: DatasetSpec) -> None:
    data, _, result = scored
    scores = read_batch_scores(data, start=DAY, end=DAY)
    assert list(scores.columns) == prediction_schema(spec).names
    assert list(scores.columns[: len(PREDICTION_COLUMNS)]) == list(PREDICTION_COLUMNS)
    assert set(scores["endpoint"]) == {"batch"} and set(scores["model_tag"]) == {MODEL_TAG}
    assert str(scores["predicted_at"].dt.tz) == "UTC"
    assert (scores["predicted_label"].dtype, scores["probability"].dtype, scores["age"].dtype) == (
        "int8",
        "float64",
        "float64",
    )
    ids = RequestIds.for_dataset(data)
    assert scores["request_id"].is_unique and all(ids.was_issued(r) for r in scores["request_id"])
    assert read_batch_scores(data, start="2026-01-06").empty and read_batch_scores(data, end="2026-01-04").empty
    assert result.mean_probability == pytest.approx(scores["probability"].mean())
    flagged = scores["warnings"].dropna()
    assert sum(result.warnings.values()) >= len(flagged)
    assert all(w.split(":")[0] in ("unseen_category", "out_of_distribution") for w in result.warnings)


def test_monitoring_reads_batch_scores_with_the_served_predictions(scored) -> None:
    from kennel.serving.prediction_log import read_predictions

    data, _, _ = scored
    batch = read_batch_scores(data, start=DAY, end=DAY)
    logged = read_predictions(data, start=DAY, end=DAY, with_feedback=False)
    assert set(logged["request_id"]) == set(batch["request_id"]) and set(logged["endpoint"]) == {"batch"}
    assert read_predictions(data, start=DAY, end=DAY, with_batch=False).empty


def test_refused_rows_are_rejected_with_their_reasons(scored, spec: DatasetSpec) -> None:
    data, _, result = scored
    rejected = read_batch_rejections(data).set_index(spec.id_column)
    assert rejected["rejection"].to_dict() == {row_id: reasons for row_id, (_, reasons) in PLANTED.items()}
    assert rejected.loc["bad-age-high", "age"] == 150.0  # the values as they came
    assert result.published.rows_rejected == len(PLANTED)
    assert result.rejected_by_reason == {
        "greater_than_equal:loan_amount": 1,
        "less_than_equal:age": 1,
        "literal_error:channel": 1,
        "literal_error:region": 1,
        "null:age": 1,
    }
    assert not set(read_batch_scores(data)[spec.id_column]) & set(PLANTED)


def test_a_rerun_replaces_the_day(scored, spec: DatasetSpec, model_dir: Path) -> None:
    data, frame, first = scored
    before = read_batch_scores(data)
    again = score_day(frame, data, DAY, model_dir=model_dir, model_tag=MODEL_TAG)
    after = read_batch_scores(data)
    assert len(after) == len(before) and after[spec.id_column].is_unique
    assert not set(after["request_id"]) & set(before["request_id"])  # new ids: the new version's rows only
    np.testing.assert_allclose(
        after.set_index(spec.id_column)["probability"].sort_index(),
        before.set_index(spec.id_column)["probability"].sort_index(),
        rtol=0,
        atol=0,
    )
    assert published_scores(data, DAY) == again.published != first.published
    versions = sorted(p.name for p in again.path.parent.glob("version=*"))
    assert versions == [f"version={again.published.version}"]
    assert len(read_batch_rejections(data)) == len(PLANTED)


def test_a_whole_column_of_the_wrong_type_rejects_every_row(spec: DatasetSpec, model_dir: Path, day_rows) -> None:
    scorer = BatchScorer.for_model(model_dir)
    table = _arrow(day_rows.head(5)).set_column(
        _arrow(day_rows).column_names.index("age"), "age", pa.array(["forty"] * 5, pa.string())
    )
    out = scorer.score(table, ids=RequestIds(b"k" * 32), model_tag=MODEL_TAG, at=0.0)
    assert out.column("outcome").to_pylist() == ["rejected"] * 5
    assert set(out.column("rejection").to_pylist()) == {"float_type:age"}
    assert out.column("age").null_count == 5  # text that is no number is not kept as one


def test_the_asset_refuses_an_unvalidated_day_and_scores_a_users_table(
    spark, spec: DatasetSpec, model_dir: Path, day_rows, tmp_path: Path
) -> None:
    import dagster as dg
    import pyarrow.parquet as pq
    from dagster_pyspark import LazyPySparkResource

    from assets.batch_scoring import build_batch_scoring_assets
    from assets.graph import DatasetGraph
    from kennel.lake.champion import ChampionRegistry
    from kennel.lake.records import ChampionEntry, ChampionPointer
    from kennel.spark import spark_conf
    from resources.lake import LakeResource

    lake = LakeResource(root=str(tmp_path / "lake"))
    data = lake.dataset(spec.name)
    (asset,) = build_batch_scoring_assets(spec, DatasetGraph(spec.name))
    resources = {"lake": lake, "pyspark": LazyPySparkResource(spark_config=spark_conf())}
    table = tmp_path / "mine.parquet"
    pq.write_table(_arrow(day_rows), table, coerce_timestamps="us")  # Spark reads no nanosecond timestamps

    def materialize(instance: dg.DagsterInstance, config: dict) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [asset],
            partition_key=DAY,
            resources=resources,
            instance=instance,
            run_config={"ops": {"batch_scores": {"config": config}}},
            raise_on_error=False,
        )

    with dg.instance_for_test() as instance:
        failed = materialize(instance, {})
        assert not failed.success
        assert "no champion" in str(failed.get_step_failure_events()[0].step_failure_data.error)
        registry = ChampionRegistry(data)
        champion = ChampionEntry(
            run_id="r1", model_dir=str(model_dir), model_tag=MODEL_TAG, since="", reason="", event="promoted"
        )
        registry.pointer_file.parent.mkdir(parents=True, exist_ok=True)
        registry.pointer_file.write_text(ChampionPointer(dataset=spec.name, current=champion).model_dump_json())
        failed = materialize(instance, {})
        assert not failed.success
        assert "no quality record" in str(failed.get_step_failure_events()[0].step_failure_data.error)

        result = materialize(instance, {"table": str(table)})
        assert result.success
        metadata = {k: v.value for k, v in result.asset_materializations_for_node("batch_scores")[0].metadata.items()}
    assert metadata["rows_scored"] == len(day_rows) - len(PLANTED) == len(read_batch_scores(data))
    assert metadata["rows_rejected"] == len(PLANTED) and metadata["model_tag"] == MODEL_TAG
    assert sum(metadata["rejected_by_reason"].values()) == 5 and metadata["rows_per_second"] > 0
    assert metadata["mean_score"] == pytest.approx(read_batch_scores(data)["probability"].mean())


@pytest.mark.serving
@pytest.mark.full  # builds a Bento and starts `bentoml serve`: beyond this file's budget in `make test`
def test_batch_scores_equal_a_real_predict_arrow_answer(spark, served, spec: DatasetSpec, day_rows, tmp_path) -> None:  # noqa: F811
    import requests

    from kennel.serving.batch import _ipc_bytes

    clean = day_rows[~day_rows[spec.id_column].isin(PLANTED)]
    table = _arrow(clean)
    reader = BatchScorer.for_model(served.model_dir).reader
    body = _ipc_bytes(table.select([n for n in table.column_names if n in reader.required]))
    resp = requests.post(
        f"{served.base_url}/predict_arrow",
        data=body,
        headers={"Content-Type": "application/vnd.apache.arrow.stream"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    data = Lake(tmp_path / "lake").dataset(spec.name)
    score_day(spark.createDataFrame(table), data, DAY, model_dir=served.model_dir, model_tag=served.model_tag)
    batch = read_batch_scores(data).set_index(spec.id_column)["probability"]
    answered = pd.Series(resp.json()["probability"], index=clean[spec.id_column].to_numpy())
    np.testing.assert_allclose(batch.loc[answered.index].to_numpy(), answered.to_numpy(), rtol=0, atol=1e-6)


def test_personal_columns_leave_batch_scoring_redacted(spec: DatasetSpec, model_dir: Path, day_rows, tmp_path) -> None:
    """What an executor writes: a personal text column hashed, a personal number dropped, in scored and
    rejected rows alike (the same partition function score_day hands to Spark, run in-process)."""
    from kennel.privacy import Redactor
    from kennel.serving.batch import PersonalColumns, _score_partition

    data = Lake(tmp_path).dataset(spec.name)
    personal = PersonalColumns((spec.id_column,), ("annual_income",), b"salt-for-this-test-0123456789abc")
    score = _score_partition(str(model_dir), str(data.request_id_key_path()), MODEL_TAG, personal)
    out = pa.Table.from_batches(list(score(iter(_arrow(day_rows).to_batches(max_chunksize=500)))))

    redactor = Redactor(personal.hashed, personal.dropped, personal.salt)
    ids = out.column(spec.id_column).to_pylist()
    assert ids == [redactor.hash_value(str(i)) for i in ids] and not set(ids) & set(day_rows[spec.id_column])
    assert out.column("annual_income").null_count == out.num_rows
    assert set(out.column("outcome").to_pylist()) == {"scored", "rejected"}
