"""Learned categorical features (`learned_categories: N`): cleaning keeps any category text and quarantines
only text that can be no category; training freezes the N most frequent values of its train window (then
"other") into the model card; every reader of that model (encoder, Spark encoder, drift, serving) reads
any other value as "other"."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from kennel.ingestion.cleaning import clean_partition
from kennel.model import FeatureEncoder, Model, ModelCard, fit, to_model_frame
from kennel.model.card import CARD_FILE
from kennel.monitoring.drift import MISSING, ReferenceProfile, compare
from kennel.monitoring.profile import build_reference
from kennel.serving.api import (
    ArrowReader,
    InputError,
    RequestWarnings,
    UnseenCategory,
    example_record,
    record_model,
    unseen_categories,
)
from kennel.spec import MAX_CATEGORY_LENGTH, OTHER_CATEGORY, DatasetSpec, category_text_problem
from tests.projects import small_model_params

DAY = "2026-03-02"
KEEP = 20  # part_code's learned_categories
CODES = 150  # distinct codes in the long-tailed training column


def learned_spec(folder: Path) -> DatasetSpec:
    """Readings with one learned model feature (part_code), a listed one, and a learned sensitive one."""
    return DatasetSpec.model_validate(
        {
            "name": "parts",
            "source": {"uri": str(folder / "landing"), "format": "jsonl"},
            "start_date": "2026-03-01",
            "timestamp_column": "read_at",
            "id_column": "reading_id",
            "label": {"column": "failed", "positive": 1, "negative": 0},
            "split": {"train_days": 1, "validation_days": 1, "test_days": 1},
            "sensitive_columns": ["dealer"],
            "features": [
                {"name": "temperature", "type": "numeric", "min": -40, "max": 150},
                {"name": "part_code", "type": "categorical", "learned_categories": KEEP},
                {"name": "site", "type": "categorical", "categories": ["north", "south"]},
                {"name": "dealer", "type": "categorical", "learned_categories": 2},
            ],
        }
    )


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> DatasetSpec:
    return learned_spec(tmp_path_factory.mktemp("learned-spec"))


def long_tailed_rows(n: int, rng: np.random.Generator, prefix: str = "c") -> pd.DataFrame:
    """Training-like rows: part_code drawn from CODES codes with Zipf-like frequencies; the label depends
    on the code (the first ones fail often) and on temperature."""
    weights = 1.0 / np.arange(1, CODES + 1)
    index = rng.choice(CODES, n, p=weights / weights.sum())
    temperature = rng.uniform(-40, 150, n)
    risk = np.where(index < 5, 2.0, -1.0) + (temperature - 55) / 60
    codes = np.array([f"{prefix}{i:03d}" for i in range(CODES)], dtype=object)[index]
    codes[rng.random(n) < 0.02] = None
    return pd.DataFrame(
        {
            "reading_id": [f"r{i}" for i in range(n)],
            "temperature": temperature,
            "part_code": codes,
            "site": rng.choice(["north", "south"], n),
            "dealer": rng.choice(["d1", "d2", "d3", "d4"], n),
            "label": (rng.random(n) < 1 / (1 + np.exp(-risk))).astype(int),
        }
    )


@pytest.fixture(scope="module")
def trained(spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> tuple[Model, pd.DataFrame]:
    """A model trained through kennel's seam (ModelCard.for_spec, fit) on the long-tailed rows, saved
    and loaded back as serving loads it; with its train rows."""
    rng = np.random.default_rng(7)
    train, validation = long_tailed_rows(3000, rng), long_tailed_rows(800, rng)
    card = ModelCard.for_spec(spec, training=train, model_version="learned")
    params = small_model_params(1)
    result = fit(card, train, validation, params, rounds=30, early_stopping_rounds=10)
    folder = result.model.save(tmp_path_factory.mktemp("learned-model") / "m", spec.resolved_yaml())
    return Model.load(folder), train


# --- cleaning ---------------------------------------------------------------------------------------------

# (part_code as landed, kept as, or quarantined with a detail that starts so)
CLEANING_CASES: list[tuple[str, str | None, str | None]] = [
    ("c017", "c017", None),
    ("  c017\t", "c017", None),
    ("a code with spaces", "a code with spaces", None),
    ("zürich-中", "zürich-中", None),
    (OTHER_CATEGORY, OTHER_CATEGORY, None),  # kept as landed: only a model reads values as "other"
    ("x" * MAX_CATEGORY_LENGTH, "x" * MAX_CATEGORY_LENGTH, None),
    ("   ", None, None),  # blank: missing, and part_code is nullable
    ("x" * (MAX_CATEGORY_LENGTH + 1), None, f"part_code: longer than {MAX_CATEGORY_LENGTH} characters: 'xxx"),
    ("bell\u0007code", None, "part_code: holds a control or invisible character: 'bell"),
    ("zero\u200bwidth", None, "part_code: holds a control or invisible character: 'zero"),
    ("no\u00a0break", None, "part_code: holds a control or invisible character: 'no"),
    ("tab\tinside", None, "part_code: holds a control or invisible character: 'tab"),
]


def test_cleaning_keeps_category_text_and_quarantines_what_can_be_no_category(
    spark: Any, spec: DatasetSpec, tmp_path: Path
) -> None:
    landing = tmp_path / "landing" / DAY
    landing.mkdir(parents=True)
    lines = [
        json.dumps(
            {
                "reading_id": f"r{i}",
                "read_at": f"{DAY}T10:00:{i:02d}",
                "temperature": 20,
                "part_code": landed,
                "site": "north",
                "dealer": "d1",
                "failed": 0,
            }
        )
        for i, (landed, _, _) in enumerate(CLEANING_CASES)
    ]
    (landing / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    result = clean_partition(
        spark, spec, [landing / "part-0.jsonl"], DAY, tmp_path / "clean", tmp_path / "quarantine", tmp_path / "staging"
    )
    clean = pd.read_parquet(tmp_path / "clean").set_index("reading_id")
    quarantine = pd.read_parquet(tmp_path / "quarantine").set_index("record_id")
    assert result.reconciled and result.mapped_to_other == {}
    for i, (landed, kept, detail) in enumerate(CLEANING_CASES):
        if detail is None:
            got = clean.loc[f"r{i}", "part_code"]
            assert pd.isna(got) if kept is None else got == kept, (landed, got)
        else:
            row = quarantine.loc[f"r{i}"]
            assert row["reason"] == "invalid_category", (landed, row["reason"])
            assert row["detail"].startswith(detail), row["detail"]
            assert len(row["detail"]) < 140  # the value quoted cut short
    assert result.reasons == {"invalid_category": 5}
    # Serving's rule is cleaning's.
    for landed, _, detail in CLEANING_CASES:
        text = landed.strip(" \t")
        assert (category_text_problem(text) is not None) == (detail is not None), landed


def test_the_validation_suite_bounds_a_learned_category_instead_of_listing_it(spec: DatasetSpec) -> None:
    from kennel.ingestion.validation import build_suite

    checks = {
        (e.configuration.kwargs.get("column"), type(e).__name__)
        for group, e in build_suite(spec)
        if group == "categories"
    }
    assert checks == {
        ("part_code", "ExpectColumnValueLengthsToBeBetween"),
        ("dealer", "ExpectColumnValueLengthsToBeBetween"),
        ("site", "ExpectColumnValuesToBeInSet"),
    }


# --- the card ---------------------------------------------------------------------------------------------


def test_the_card_freezes_the_most_frequent_values_of_the_train_window(spec: DatasetSpec) -> None:
    counts = {"a": 5, "b": 3, "d": 3, "c": 3, "e": 1, OTHER_CATEGORY: 9}
    values = [v for v, n in counts.items() for _ in range(n)] + [None, None]
    narrow = spec.model_copy(
        update={"features": tuple(f.model_copy(update={"learned_categories": 3}) if f.name == "part_code" else f
                                  for f in spec.features)}
    )  # fmt: skip
    cards = []
    for seed in (1, 2):  # the row order does not matter; equal counts go in text order
        order = np.random.default_rng(seed).permutation(len(values))
        frame = pd.DataFrame(
            {"part_code": [values[i] for i in order], "temperature": 1.0, "site": "north", "dealer": "d1"}
        )
        cards.append(ModelCard.for_spec(narrow, training=frame))
    assert cards[0] == cards[1]
    part = next(f for f in cards[0].features if f.name == "part_code")
    # A value "other" in the data is the catch-all, not one of the three.
    assert part.learned and part.categories == ("a", "b", "c", OTHER_CATEGORY)
    assert part.seen is not None and part.seen.categories == ("a", "b", "c", OTHER_CATEGORY) and part.seen.nulls
    site = next(f for f in cards[0].features if f.name == "site")
    assert not site.learned and site.categories == ("north", "south")
    assert "dealer" not in cards[0].feature_names  # sensitive: not a model input
    with pytest.raises(ValueError, match="part_code.*training rows"):
        ModelCard.for_spec(spec)


def test_a_card_written_before_learned_categories_still_loads(spec: DatasetSpec, tmp_path: Path) -> None:
    frame = long_tailed_rows(200, np.random.default_rng(1))
    card = ModelCard.for_spec(spec, training=frame)
    card.save(tmp_path)
    assert ModelCard.load(tmp_path) == card
    old = json.loads(card.model_dump_json())
    for feature in old["features"]:
        del feature["learned"]
    (tmp_path / CARD_FILE).write_text(json.dumps(old))
    assert not any(f.learned for f in ModelCard.load(tmp_path).features)


# --- the encoders -----------------------------------------------------------------------------------------


def test_the_encoder_reads_an_unseen_value_as_other(trained: tuple[Model, pd.DataFrame]) -> None:
    model, _ = trained
    card = model.card
    part = next(f for f in card.features if f.name == "part_code")
    assert part.categories is not None and len(part.categories) == KEEP + 1
    other_code = float(len(part.categories) - 1)
    values = [part.categories[0], "never-seen", None, OTHER_CATEGORY, UnseenCategory("never-seen")]
    columns = {"part_code": values, "site": ["north", "east", None, "south", "north"], "temperature": [1.0] * 5}
    matrix = FeatureEncoder(card).encode(columns, 5)
    j, s = card.feature_names.index("part_code"), card.feature_names.index("site")
    np.testing.assert_array_equal(matrix[:, j], [0.0, other_code, np.nan, other_code, other_code])
    np.testing.assert_array_equal(matrix[:, s], [0.0, np.nan, np.nan, 1.0, 0.0])  # a listed feature: unknown = missing
    records = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    np.testing.assert_array_equal(FeatureEncoder(card).encode_frame(records), matrix)
    frame = to_model_frame(records, card)
    assert list(frame["part_code"].astype(object).where(frame["part_code"].notna(), None)) == [
        part.categories[0],
        OTHER_CATEGORY,
        None,
        OTHER_CATEGORY,
        OTHER_CATEGORY,
    ]


def test_the_spark_encoder_codes_like_the_frame_builder(spark: Any, trained: tuple[Model, pd.DataFrame]) -> None:
    from kennel.model.distributed import _model_columns

    model, train = trained
    rows = train.head(300).copy()
    rows.loc[rows.index[:10], "part_code"] = "never-seen"
    rows.loc[rows.index[10:15], "site"] = "east"
    columns = model.card.feature_names
    encoded = spark.createDataFrame(rows[columns].astype(object).where(rows[columns].notna(), None))
    got = pd.DataFrame(encoded.select(*_model_columns(model.card)).collect(), columns=columns)
    np.testing.assert_array_equal(got.to_numpy(dtype=np.float32), model.encoder.encode_frame(rows))


def test_a_model_trained_on_a_long_tailed_column_scores_unseen_codes_as_other(
    trained: tuple[Model, pd.DataFrame],
) -> None:
    from sklearn.metrics import roc_auc_score

    model, _ = trained
    test = long_tailed_rows(1000, np.random.default_rng(99))
    assert roc_auc_score(test["label"], model.score(test)) > 0.7
    # Codes no training row held score exactly as "other" does.
    unseen = test.assign(part_code=[f"new-{i}" for i in range(len(test))])
    np.testing.assert_array_equal(model.score(unseen), model.score(test.assign(part_code=OTHER_CATEGORY)))


# --- serving ----------------------------------------------------------------------------------------------


def test_the_request_model_takes_any_category_text_and_flags_an_unseen_one(
    spec: DatasetSpec, trained: tuple[Model, pd.DataFrame]
) -> None:
    model, _ = trained
    record = record_model(spec, model.card)
    known = (model.card.features[model.card.feature_names.index("part_code")].categories or ())[0]
    base = example_record(spec, model.card)
    assert base["part_code"] == known and base["dealer"] == OTHER_CATEGORY

    values = [record.model_validate(base | {"part_code": code}).part_code for code in (known, "  c999 ", "")]
    assert values == [known, "c999", None]
    assert type(values[0]) is str and type(values[1]) is UnseenCategory
    dealer = record.model_validate(base | {"dealer": "d9"}).dealer
    assert type(dealer) is str and dealer == "d9"  # sensitive: kept as sent, never flagged

    for bad in ("x" * (MAX_CATEGORY_LENGTH + 1), "bell\u0007", "zero\u200bwidth"):
        with pytest.raises(ValidationError, match="not a category"):
            record.model_validate(base | {"part_code": bad})

    schema = record.model_json_schema()["properties"]["part_code"]
    assert "enum" not in json.dumps(schema) and f'"maxLength": {MAX_CATEGORY_LENGTH}' in json.dumps(schema)

    columns = {"part_code": values, "site": ["north"] * 3, "temperature": [20.0] * 3}
    matrix = model.encoder.encode(columns, 3)
    unseen = unseen_categories(columns, ["part_code"])
    warnings = RequestWarnings.find(3, unseen=unseen, out_of_distribution=None, features=model.card.feature_names)
    assert warnings.per_row() == [[], [{"field": "part_code", "kind": "unseen_category"}], []]
    scored_as_other = model.encoder.encode(columns | {"part_code": [known, OTHER_CATEGORY, None]}, 3)
    np.testing.assert_array_equal(matrix, scored_as_other)


def _arrow_body(columns: dict[str, list[Any]]) -> bytes:
    import pyarrow as pa

    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_the_arrow_reader_keeps_an_unseen_category_and_codes_it_as_other(
    spec: DatasetSpec, trained: tuple[Model, pd.DataFrame]
) -> None:
    model, _ = trained
    part = model.card.features[model.card.feature_names.index("part_code")]
    assert part.categories is not None
    reader = ArrowReader(spec, model.card)
    batch = reader.read(
        _arrow_body(
            {
                "temperature": [20.0, 21.0, 22.0],
                "part_code": [part.categories[1], "  c999 ", " "],
                "dealer": ["d1", " d9", None],
            }
        )
    )
    np.testing.assert_array_equal(batch.values["part_code"], [1.0, len(part.categories) - 1, np.nan])
    assert batch.unseen["part_code"].tolist() == [False, True, False] and "dealer" not in batch.unseen
    assert batch.table.column("part_code").to_pylist() == [part.categories[1], "c999", None]  # logged as sent
    assert batch.table.column("dealer").to_pylist() == ["d1", "d9", None]
    for bad in ("x" * (MAX_CATEGORY_LENGTH + 1), "bell\u0007", "zero\u200bwidth"):
        with pytest.raises(InputError) as refused:
            reader.read(_arrow_body({"temperature": [1.0, 2.0], "part_code": ["c001", bad]}))
        assert refused.value.problems[0]["loc"] == ["part_code", 1], refused.value.problems


# --- drift ------------------------------------------------------------------------------------------------


def test_drift_reads_the_long_tail_through_the_models_list(
    spec: DatasetSpec, trained: tuple[Model, pd.DataFrame]
) -> None:
    model, train = trained
    profile = build_reference(spec, train, model.score(train), card=model.card)
    part = next(f for f in model.card.features if f.name == "part_code")
    reference = profile.categorical["part_code"]
    assert reference.categories == list(part.categories or ())
    assert set(reference.shares) <= {*reference.categories, MISSING}
    # The sensitive learned column is frozen the same way, from the same rows.
    assert profile.categorical["dealer"].categories is not None
    assert len(profile.categorical["dealer"].categories) == 3
    loaded = ReferenceProfile.from_json(profile.to_json())
    assert loaded.categorical["part_code"].categories == reference.categories

    # The same head, a tail of codes no training row held: the model reads the tail as "other" either way.
    rng = np.random.default_rng(5)
    current = long_tailed_rows(3000, rng)
    tail = ~current["part_code"].isin(part.categories or ()) & current["part_code"].notna()
    current.loc[tail, "part_code"] = [f"new-{i}" for i in range(int(tail.sum()))]
    steady = {f.feature: f for f in compare(loaded, current).features}["part_code"]
    assert steady.status == "ok", steady
    # A head value that moves is drift.
    head = (part.categories or ())[0]
    moved = current.assign(part_code=np.where(rng.random(len(current)) < 0.5, head, current["part_code"]))
    assert {f.feature: f for f in compare(loaded, moved).features}["part_code"].status == "drifted"


def test_a_profile_written_before_learned_categories_still_loads(spec: DatasetSpec) -> None:
    raw = {"numeric": {}, "categorical": {"site": {"shares": {"north": 0.5, "south": 0.5}, "rows": 10}}}
    profile = ReferenceProfile.from_json(json.dumps(raw))
    assert profile.categorical["site"].categories is None


# --- demo data --------------------------------------------------------------------------------------------


def test_the_demo_generator_makes_codes_for_a_learned_feature(spec: DatasetSpec) -> None:
    from kennel.demo import generate_frame

    frame = generate_frame(spec, date(2026, 3, 2), 500, np.random.default_rng(1))
    codes = set(frame["part_code"].dropna())
    assert len(codes) > KEEP and all(code.startswith("c") for code in codes)
