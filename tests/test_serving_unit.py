"""Serving pieces in-process, no server: the model's serving paths against the training frame and
the bare library, the request
models, the HTTP guard, the OpenAPI document, registry labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from kennel.model import MODEL_FILE, SPEC_FILE, FeatureEncoder, Model, ModelCard, record_columns, to_model_frame
from kennel.serving.api import (
    ARROW_MEDIA_TYPE,
    ApiDoc,
    ArrowReader,
    InputError,
    batch_request_model,
    columns_model,
    example_record,
    feedback_model,
    input_field_names,
    new_request_ids,
    openapi_document,
    record_model,
)
from kennel.spec import PROJECT_ROOT, DatasetSpec, FeatureType, load_spec

DEMO_SPEC = PROJECT_ROOT / "datasets" / "credit_demo.yaml"


def synthetic_records(
    spec: DatasetSpec, n: int, rng: np.random.Generator, missing: float = 0.1
) -> list[dict[str, Any]]:
    """In-range records for every spec feature; nullable features are missing `missing` of the time.

    Plain Python values, because the service's record schema is strict (no numpy scalars).
    """
    records = []
    for i in range(n):
        record: dict[str, Any] = {spec.id_column: f"app-{i:05d}"}
        for feat in spec.features:
            if feat.nullable and rng.random() < missing:
                record[feat.name] = None
            elif feat.type is FeatureType.categorical:
                # A learned feature: codes, twice as many as it keeps, so training also sees "other".
                values = feat.categories or [f"c{i:02d}" for i in range(2 * (feat.learned_categories or 0))]
                record[feat.name] = str(rng.choice(list(values)))
            elif feat.type is FeatureType.boolean:
                record[feat.name] = bool(rng.random() < 0.5)
            else:
                low = feat.min if feat.min is not None else 0.0
                high = feat.max if feat.max is not None else low + 100.0
                record[feat.name] = round(float(rng.uniform(low, high)), 2)
        records.append(record)
    return records


def library_scores(model_dir: Path, records: Any) -> np.ndarray:
    """Probabilities from XGBoost itself on the training frame (native categoricals), bypassing
    kennel.model's encoder: the baseline every serving path must match."""
    import xgboost

    booster = xgboost.Booster(model_file=str(model_dir / MODEL_FILE))
    booster.set_param({"nthread": 1})
    frame = to_model_frame(records, ModelCard.load(model_dir))
    return np.asarray(booster.inplace_predict(frame), dtype=np.float64)


def synthetic_labels(spec: DatasetSpec, frame: Any, rng: np.random.Generator) -> np.ndarray:
    """Labels that depend on numeric and categorical features, so the booster splits on both."""
    score = np.zeros(len(frame))
    for feat in spec.model_features:
        if feat.type is FeatureType.numeric and feat.min is not None and feat.max is not None:
            scaled = (frame[feat.name].to_numpy(dtype=float) - feat.min) / (feat.max - feat.min) * 2 - 1
            score += rng.normal() * np.nan_to_num(scaled)
        elif feat.type is FeatureType.categorical:
            codes = frame[feat.name].cat.codes.to_numpy()
            # The frame's categories: the card's (a learned feature's are frozen there, not in the spec).
            score += np.where(codes >= 0, rng.normal(size=len(frame[feat.name].cat.categories) + 1)[codes], 0.0)
    return (rng.random(len(frame)) < 1 / (1 + np.exp(-2 * score))).astype(int)


def train_model_folder(
    folder: Path,
    spec: DatasetSpec,
    records: list[dict[str, Any]],
    rng: np.random.Generator,
    rounds: int = 20,
    spec_file: Path = DEMO_SPEC,
) -> None:
    import xgboost

    card = ModelCard.for_spec(
        spec, threshold=0.5, model_version="test-serving", training=pd.DataFrame.from_records(records)
    )
    frame = to_model_frame(records, card)
    dtrain = xgboost.DMatrix(frame, label=synthetic_labels(spec, frame, rng), enable_categorical=True)
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "nthread": 1}
    booster = xgboost.train(params, dtrain, num_boost_round=rounds)
    folder.mkdir(parents=True)
    booster.save_model(str(folder / MODEL_FILE))
    card.save(folder)
    shutil.copy2(spec_file, folder / SPEC_FILE)


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_spec(DEMO_SPEC)


@pytest.fixture(scope="module")
def model_dir(spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("unit-model") / "m"
    train_model_folder(folder, spec, synthetic_records(spec, 600, rng), rng, rounds=30)
    return folder


# --- encoder -------------------------------------------------------------------------------------


def test_encoder_scores_exactly_like_the_training_frame(spec: DatasetSpec, model_dir: Path) -> None:
    model = Model.load(model_dir)
    card = model.card
    rng = np.random.default_rng(5)
    # A third of nullable values missing, so NaN handling in every feature type is exercised.
    records = synthetic_records(spec, 2_000, rng, missing=0.33)
    record_cls = record_model(spec, card)
    validated = [record_cls.model_validate(r) for r in records]
    columns = record_columns(validated, input_field_names(spec, card))
    served = model.score_columns(columns, len(records))  # the JSON request path
    expected = library_scores(model_dir, records)  # XGBoost on the training frame
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
    # the frame path (training, evaluation, monitoring) and a separately built encoder agree too
    np.testing.assert_allclose(model.score(records), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        model.score_matrix(FeatureEncoder(card).encode(columns, len(records))), expected, rtol=0, atol=1e-6
    )
    assert len(np.unique(np.round(expected, 6))) > 100  # the model really varies with its inputs


def test_encoder_codes_match_the_frame_builder(spec: DatasetSpec, model_dir: Path) -> None:
    card = ModelCard.load(model_dir)
    records = synthetic_records(spec, 300, np.random.default_rng(8), missing=0.3)
    frame = to_model_frame(records, card)
    for name in card.feature_names:
        if hasattr(frame[name], "cat"):
            frame[name] = frame[name].cat.codes.astype("float32").where(frame[name].cat.codes >= 0)
    matrix = FeatureEncoder(card).encode(record_columns(records, card.feature_names), len(records))
    np.testing.assert_array_equal(matrix, frame.to_numpy(dtype=np.float32))


def test_encoder_treats_an_absent_column_as_missing(model_dir: Path) -> None:
    card = ModelCard.load(model_dir)
    matrix = FeatureEncoder(card).encode({}, 3)
    assert matrix.shape == (3, len(card.features)) and np.isnan(matrix).all()


def _arrow_body(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=700)  # several record batches
    return sink.getvalue().to_pybytes()


def test_arrow_tables_score_exactly_like_the_training_frame(spec: DatasetSpec, model_dir: Path) -> None:
    import pyarrow as pa

    model = Model.load(model_dir)
    card = model.card
    records = synthetic_records(spec, 2_000, np.random.default_rng(6), missing=0.33)
    for record in records:
        record["loan_term_months"] = float(round(record["loan_term_months"]))
    table = pa.Table.from_pylist(records)
    # categories as dictionary-encoded text, an integer column: both are accepted
    table = table.set_column(table.column_names.index("region"), "region", table.column("region").dictionary_encode())
    table = table.set_column(
        table.column_names.index("loan_term_months"),
        "loan_term_months",
        table.column("loan_term_months").cast(pa.int32()),
    )
    checked = ArrowReader(spec, card).read(_arrow_body(table))
    served = model.score_numbers(checked.values, checked.table.num_rows)  # the Arrow request path
    np.testing.assert_allclose(served, library_scores(model_dir, records), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        model.encoder.encode_numbers(checked.values, checked.table.num_rows), model.encoder.encode_frame(records)
    )


@pytest.mark.parametrize(
    ("change", "loc", "kind"),
    [
        (lambda t, pa: t.drop_columns(["age"]), ["age"], "missing"),
        (lambda t, pa: t.append_column("colour", pa.array(["red"] * t.num_rows)), ["colour"], "extra_forbidden"),
        (lambda t, pa: t.set_column(1, "age", pa.array([40.0, 12.0, 50.0])), ["age", 1], "greater_than_equal"),
        (lambda t, pa: t.set_column(1, "age", pa.array([40.0, float("nan"), 50.0])), ["age", 1], "finite_number"),
        (lambda t, pa: t.set_column(1, "age", pa.array(["40", "41", "42"])), ["age"], "float_type"),
        (lambda t, pa: t.set_column(1, "age", pa.array([40.0, None, 50.0])), ["age", 1], "null"),
        (
            lambda t, pa: t.set_column(t.column_names.index("region"), "region", pa.array(["west", "west", "mars"])),
            ["region", 2],
            "literal_error",
        ),
        (
            lambda t, pa: t.set_column(
                t.column_names.index("is_repeat_customer"), "is_repeat_customer", pa.array([1, 0, 1])
            ),
            ["is_repeat_customer"],
            "bool_type",
        ),
        (lambda t, pa: t.slice(0, 0), [], "row_count"),
    ],
)
def test_arrow_tables_are_checked_like_json(
    spec: DatasetSpec, model_dir: Path, change: Any, loc: list[Any], kind: str
) -> None:
    import pyarrow as pa

    table = pa.Table.from_pylist(synthetic_records(spec, 3, np.random.default_rng(2), missing=0.0))
    assert table.column_names[1] == "age"
    with pytest.raises(InputError) as exc:
        ArrowReader(spec, ModelCard.load(model_dir)).read(_arrow_body(change(table, pa)))
    assert {"type": kind, "loc": loc} in [{k: p[k] for k in ("type", "loc")} for p in exc.value.problems]


def test_several_bad_numeric_columns_are_each_named_in_column_order(spec: DatasetSpec, model_dir: Path) -> None:
    """Numeric columns are checked together as one matrix (a fast path); every failing column is still
    named with its own problem, in the table's column order, and the clean ones score unchanged."""
    import pyarrow as pa

    records = synthetic_records(spec, 4, np.random.default_rng(3), missing=0.0)
    table = pa.Table.from_pylist(records)
    numeric = [f for f in spec.features if f.type is FeatureType.numeric and f.min is not None]
    first, second = numeric[0], numeric[-1]
    bad = table.set_column(
        table.column_names.index(second.name), second.name, pa.array([1.0, float("inf"), 1.0, 1.0])
    ).set_column(table.column_names.index(first.name), first.name, pa.array([first.min - 1.0] * 4))
    reader = ArrowReader(spec, ModelCard.load(model_dir))
    with pytest.raises(InputError) as exc:
        reader.read(_arrow_body(bad))
    problems = [(p["type"], p["loc"]) for p in exc.value.problems]
    assert problems == sorted(problems, key=lambda p: table.column_names.index(p[1][0]))
    assert ("greater_than_equal", [first.name, 0]) in problems and ("finite_number", [second.name, 1]) in problems
    clean = reader.read(_arrow_body(table))
    for feature in numeric:
        expected = np.array([r[feature.name] for r in records], dtype=np.float64)
        np.testing.assert_array_equal(clean.values[feature.name], expected)


@pytest.mark.parametrize("column", ["region", "application_id"])
def test_a_dictionary_naming_one_huge_value_from_every_row_is_refused_before_decoding(
    spec: DatasetSpec, model_dir: Path, column: str
) -> None:
    """A 1 MB dictionary value referenced by 100,000 rows would be 100 GB as plain text."""
    import pyarrow as pa

    rows = 100_000
    table = pa.Table.from_pylist(synthetic_records(spec, 1, np.random.default_rng(2), missing=0.0) * rows)
    huge = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array(["w" * 1_000_000]))
    table = table.set_column(table.column_names.index(column), column, huge)
    with pytest.raises(InputError) as exc:
        ArrowReader(spec, ModelCard.load(model_dir)).read(_arrow_body(table))
    assert [p["type"] for p in exc.value.problems] == ["arrow_too_large"]


def test_a_body_that_is_not_arrow_is_refused(spec: DatasetSpec, model_dir: Path) -> None:
    with pytest.raises(InputError) as exc:
        ArrowReader(spec, ModelCard.load(model_dir)).read(b'{"age": [40]}')
    assert exc.value.problems[0]["type"] == "arrow_invalid"


def test_model_load_refuses_a_card_that_lists_other_features(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    card = ModelCard.load(folder)
    card.model_copy(update={"features": card.features[:-1]}).save(folder)
    with pytest.raises(ValueError, match="takes 20 features, its card lists 19"):
        Model.load(folder)


def test_request_ids_are_unique_hex() -> None:
    ids = new_request_ids(10_000)
    assert len(set(ids)) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids[:100])


# --- request models ------------------------------------------------------------------------------


def _errors(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[str, ...]]:
    return [tuple(str(p) for p in e["loc"]) for e in exc.value.errors()]


def test_columns_model_accepts_aligned_columns_and_names_a_misaligned_one(spec: DatasetSpec, model_dir: Path) -> None:
    card = ModelCard.load(model_dir)
    columns = columns_model(spec, card)
    rows = synthetic_records(spec, 5, np.random.default_rng(1))
    body = {name: [r[name] for r in rows] for name in rows[0]}
    assert columns.model_validate(body).n_rows == 5
    body["region"] = body["region"][:4]
    with pytest.raises(ValidationError, match="region has 4"):
        columns.model_validate(body)
    nullable = next(f.name for f in spec.features if f.nullable and f.type is FeatureType.numeric)
    body = {name: [r[name] for r in rows] for name in rows[0] if name != nullable}
    assert columns.model_validate(body).n_rows == 5  # a nullable column may be left out
    with pytest.raises(ValidationError) as exc:
        columns.model_validate({**body, "age": [1.0] * 5})
    assert ("age", "0") in _errors(exc)


def test_batch_request_is_closed_and_bounded(spec: DatasetSpec, model_dir: Path) -> None:
    card = ModelCard.load(model_dir)
    batch = batch_request_model(record_model(spec, card), max_records=3)
    record = example_record(spec, card)
    assert len(batch.model_validate({"records": [record] * 3}).records) == 3
    for body, where in (
        ({"records": []}, ("records",)),
        ({"records": [record] * 4}, ("records",)),
        ({"records": [record], "extra": 1}, ("extra",)),
    ):
        with pytest.raises(ValidationError) as exc:
            batch.model_validate(body)
        assert where in _errors(exc)


def test_feedback_labels_must_have_the_specs_type(spec: DatasetSpec) -> None:
    feedback = feedback_model(spec)
    rid = "0" * 32
    assert feedback.model_validate_json(json.dumps({"labels": [{"request_id": rid, "label": 1}]}))
    for label in (True, 1.0, "1", 2):
        with pytest.raises(ValidationError) as exc:
            feedback.model_validate_json(json.dumps({"labels": [{"request_id": rid, "label": label}]}))
        assert ("labels", "0", "label") in _errors(exc)
    with pytest.raises(ValidationError) as exc:
        feedback.model_validate_json(json.dumps({"labels": [{"request_id": "not-an-id", "label": 0}]}))
    assert ("labels", "0", "request_id") in _errors(exc)


def test_openapi_document_states_nullability_ranges_and_closed_objects(spec: DatasetSpec, model_dir: Path) -> None:
    from kennel.serving.api import ColumnarPredictions, FeedbackReceipt, Prediction

    card = ModelCard.load(model_dir)
    record = record_model(spec, card)
    doc = openapi_document(
        title="t",
        version="v",
        description="d",
        apis=[
            ApiDoc("/predict", "one", record, Prediction, example_record(spec, card)),
            ApiDoc("/predict_columns", "cols", columns_model(spec, card), ColumnarPredictions),
            ApiDoc("/predict_arrow", "arrow", {"type": "string"}, ColumnarPredictions, media_type=ARROW_MEDIA_TYPE),
            ApiDoc("/feedback", "fb", feedback_model(spec), FeedbackReceipt, extra_statuses=(503,)),
        ],
    )
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    rec = schemas[record.__name__]
    assert rec["additionalProperties"] is False
    assert set(rec["required"]) == {
        f.name for f in spec.features if not f.nullable and f.name not in spec.sensitive_columns
    }
    income = rec["properties"]["annual_income"]
    assert {"type": "null"} in income["anyOf"]
    number = next(s for s in income["anyOf"] if s.get("type") == "number")
    assert (number["minimum"], number["maximum"]) == (0, 5_000_000)
    assert rec["properties"]["region"]["enum"] == ["north", "south", "east", "west", "central"]
    responses = doc["paths"]["/predict"]["post"]["responses"]
    assert set(responses) == {"200", "400", "413", "415", "500", "504"}
    assert responses["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationErrorBody"
    }
    assert doc["paths"]["/readyz"]["get"]["responses"].keys() == {"200", "503"}
    assert "503" in doc["paths"]["/feedback"]["post"]["responses"]
    assert doc["paths"]["/predict_arrow"]["post"]["requestBody"]["content"] == {
        ARROW_MEDIA_TYPE: {"schema": {"type": "string"}}
    }
    record.model_validate(doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"])


# --- registry labels -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("team:ML Platform", "team-ml-platform"),
        ("credit_demo_clf:4qw62axlqoivwax4", "credit_demo_clf-4qw62axlqoivwax4"),
        ("--x--", "x"),
        ("a" * 62 + "-b", "a" * 62),
        ("", ""),
    ],
)
def test_sanitize_label(raw: str, clean: str) -> None:
    from kennel.serving.model_store import sanitize_label

    assert sanitize_label(raw) == clean


def test_sanitize_labels_rejects_colliding_or_empty_keys() -> None:
    from kennel.serving.model_store import sanitize_labels

    with pytest.raises(ValueError, match="collide"):
        sanitize_labels({"Team": "a", "team": "b"})
    with pytest.raises(ValueError, match="no letters or digits"):
        sanitize_labels({"::": "a"})


def test_record_model_refuses_a_card_for_another_spec(spec: DatasetSpec) -> None:
    card = ModelCard.for_spec(spec).model_copy(update={"spec_fingerprint": "0" * 16})
    with pytest.raises(ValueError, match="fingerprint"):
        record_model(spec, card)


def test_logged_warnings_are_counted_for_monitoring(spec: DatasetSpec, tmp_path: Path) -> None:
    from kennel.lake import Lake
    from kennel.serving.prediction_log import PredictionLog, count_warnings, read_predictions

    lake = Lake(tmp_path).dataset(spec.name)
    log = PredictionLog(lake, spec, model_tag="m:1", threshold=0.5)
    columns = {"region": ["west", "other", "east"]}
    flags = ["unseen_category:region;out_of_distribution:age", None, "out_of_distribution:age"]
    log.append("/predict_batch", ["a" * 32, "b" * 32, "c" * 32], np.array([0.1, 0.5, 0.9]), columns, warnings=flags)
    log.append("/predict", ["d" * 32], np.array([0.2]), {"region": ["north"]})
    log.flush()
    served = read_predictions(lake, with_feedback=False)
    assert list(served.sort_values("request_id")["warnings"].fillna("")) == [*(f or "" for f in flags), ""]
    assert count_warnings(served) == {"out_of_distribution:age": 2, "unseen_category:region": 1}
    assert count_warnings(served.drop(columns="warnings")) == {}  # a log written before warnings were


def test_request_warnings_flag_what_training_never_saw(spec: DatasetSpec, model_dir: Path) -> None:
    from kennel.serving.api import RequestWarnings, UnseenCategory, unseen_categories

    model = Model.load(model_dir)
    assert all(f.seen is not None for f in model.card.features)
    record: dict[str, Any] = {}
    for feature in model.card.features:  # a value training saw, in every feature
        seen = feature.seen
        assert seen is not None
        if feature.type is FeatureType.categorical:
            record[feature.name] = (seen.categories or ())[0]
        elif feature.type is FeatureType.boolean:
            record[feature.name] = bool(seen.min)
        else:
            assert seen.min is not None and seen.max is not None
            record[feature.name] = (seen.min + seen.max) / 2
    age = model.card.features[model.card.feature_names.index("age")].seen
    assert age is not None and age.max is not None
    far = record | {"age": 100.0 if age.max < 100 else 18.0}
    columns = record_columns([record, far, record], model.card.feature_names)
    columns["region"] = ["west", "west", UnseenCategory("other")]
    matrix = model.encoder.encode(columns, 3)
    warnings = RequestWarnings.find(
        3,
        unseen=unseen_categories(columns, ["region"]),
        out_of_distribution=model.encoder.out_of_distribution(matrix),
        features=model.card.feature_names,
    )
    logged = warnings.log_column()
    assert logged is not None and logged[0] is None
    assert "out_of_distribution:age" in (logged[1] or "") and "unseen_category:region" in (logged[2] or "")
    by_field = {(w.field, w.kind): w.rows for w in warnings.by_field()}
    nothing = RequestWarnings.find(
        1, unseen={}, out_of_distribution=model.encoder.out_of_distribution(matrix[:1]), features=["x"]
    )
    assert not nothing and nothing.log_column() is None and nothing.by_field() == []
    assert by_field[("age", "out_of_distribution")] == [1] and by_field[("region", "unseen_category")] == [2]


def test_one_row_and_many_rows_are_flagged_alike(model_dir: Path) -> None:
    """A single row takes a plain-Python path; it must flag exactly what the matrix comparisons do."""
    encoder = Model.load(model_dir).encoder
    rng = np.random.default_rng(4)
    lows = np.nan_to_num(encoder._lowest, neginf=0.0)
    highs = np.nan_to_num(encoder._highest, posinf=100.0)
    matrix = (rng.uniform(-0.2, 1.2, size=(400, len(lows))) * (highs - lows) + lows).astype(np.float32)
    matrix[rng.random(matrix.shape) < 0.1] = np.nan
    inside = (matrix >= lows) & (matrix <= highs)
    assert inside.mean() > 0.5 and (~inside).any()
    many = encoder.out_of_distribution(matrix)
    assert many is not None
    for i in range(len(matrix)):
        one = encoder.out_of_distribution(matrix[i : i + 1])
        assert (one is None) == (not many[i].any()), i
        if one is not None:
            assert (one[0] == many[i]).all(), i
