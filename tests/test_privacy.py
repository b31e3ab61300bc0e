"""Private by declaration: a spec's personal columns keep their values in the data tables (raw, clean,
quarantine) only. Unit tests of the spec rules, the redactor, drift on hashed categories, the card's
coarse ranges and the prediction log; then the whole graph on a real Dagster instance, scanning every
file it wrote outside the data tables for planted values."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from kennel.lake import Lake
from kennel.model import ModelCard
from kennel.model.card import coarse_range
from kennel.monitoring.drift import compare
from kennel.monitoring.performance import monitored_rows
from kennel.monitoring.profile import SCORE, build_reference, drift_summary
from kennel.privacy import HASH_PREFIX, SALT_ENV, Redactor, is_hashed, salt_path
from kennel.serving.prediction_log import FeedbackLog, PredictionLog, read_predictions
from kennel.spec import DEFAULT_SPEC_PATH, DatasetSpec, SpecError, load_spec
from tests.projects import Project, days, small_model_params, spec_file
from tests.training_data import training_frame

PERSONAL = ["application_id", "region", "annual_income"]
ID_MARK = "zqxid"  # every planted id holds it
MARK = "zqxcat"  # every category of the personal categorical feature starts with it
INCOME_MARK = 4876543.5  # a planted income, exact in float32 too, above every generated one
INCOME_TEXT = "4876543.5"


def _spec(tmp: Path, **changes: object) -> DatasetSpec:
    return load_spec(spec_file(tmp, tmp / "landing", **changes))


def _features_with_marked_categories(name: str) -> list[dict]:
    features = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())["features"]
    for feature in features:
        if feature["name"] == name:
            feature["categories"] = [f"{MARK}_{c}" for c in feature["categories"]]
    return features


def _plant(frame: pd.DataFrame, seed: int = 0, categorical: str = "region") -> pd.DataFrame:
    """Marked ids and categories; INCOME_MARK in a few rows (the largest income of all)."""
    frame = frame.copy()
    frame["application_id"] = [f"{ID_MARK}-{seed}-{i:06d}" for i in range(len(frame))]
    frame[categorical] = frame[categorical].map(
        lambda c: f"{MARK}_{c}" if isinstance(c, str) and c and not c.startswith(MARK) else c
    )
    frame.loc[frame.index[:3], "annual_income"] = INCOME_MARK
    return frame


@pytest.fixture
def salt(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SALT_ENV, "test salt, not a secret")
    return "test salt, not a secret"


# --- the spec --------------------------------------------------------------------------------------


def test_personal_columns_are_the_id_or_declared_features(tmp_path: Path) -> None:
    spec = _spec(tmp_path, personal_columns=PERSONAL)
    assert spec.personal_columns == tuple(PERSONAL)
    for column, message in (
        ("defaulted", "is the label"),
        ("applied_at", "is the timestamp column"),
        ("nickname", "is not a declared column"),
    ):
        with pytest.raises(SpecError, match=message) as caught:
            _spec(tmp_path, personal_columns=[column])
        assert "personal_columns may list the id column and declared features" in str(caught.value)


def test_a_personal_number_cannot_slice_monitoring_and_a_personal_category_cannot_be_learned(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="boolean sensitive column.*only when it is categorical"):
        _spec(tmp_path, personal_columns=["has_cosigner"], sensitive_columns=["has_cosigner"])
    assert _spec(tmp_path, personal_columns=["gender", "region"]).personal_columns == ("gender", "region")
    features = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())["features"]
    for feature in features:
        if feature["name"] == "channel":
            feature.pop("categories")
            feature["learned_categories"] = 3
    assert _spec(tmp_path, features=features).feature("channel").learned_categories == 3
    with pytest.raises(SpecError, match="uses learned_categories.*list its categories"):
        _spec(tmp_path, features=features, personal_columns=["channel"])


def test_declaring_personal_columns_leaves_the_fingerprint_alone(tmp_path: Path) -> None:
    # Redacting what leaves the data tables changes neither the data nor the model.
    assert _spec(tmp_path, personal_columns=PERSONAL).fingerprint() == _spec(tmp_path).fingerprint()


# --- the redactor ----------------------------------------------------------------------------------


def test_hashes_are_stable_salted_and_idempotent(tmp_path: Path) -> None:
    redactor = Redactor(("id",), (), b"a" * 32)
    hashed = redactor.hash_value("alice")
    assert hashed.startswith(HASH_PREFIX) and is_hashed(hashed) and "alice" not in hashed
    assert redactor.hash_value(" alice\t") == hashed  # trimmed, as cleaning trims landed values
    assert Redactor(("id",), (), b"a" * 32).hash_value("alice") == hashed
    assert Redactor(("id",), (), b"b" * 32).hash_value("alice") != hashed
    assert redactor.hash_value(hashed) == hashed
    assert "a" * 8 not in repr(redactor)


def test_a_frame_and_a_table_are_redacted_alike(tmp_path: Path, salt: str) -> None:
    spec = _spec(tmp_path, personal_columns=PERSONAL)
    redactor = Redactor.for_spec(spec, Lake(tmp_path / "lake").dataset(spec.name))
    assert redactor.hashed_columns == ("application_id", "region") and redactor.dropped_columns == ("annual_income",)
    frame = pd.DataFrame(
        {"application_id": ["a1", "a2", None], "region": ["west", "west", "north"], "annual_income": [1.0, 2, 3]}
    )
    redacted = redactor.redact_frame(frame)
    assert list(frame["application_id"]) == ["a1", "a2", None]  # the input is left alone
    assert redacted["application_id"][0] == redactor.hash_value("a1") and redacted["application_id"][2] is None
    assert redacted["region"][0] == redacted["region"][1] != redacted["region"][2]
    assert redacted["annual_income"].isna().all()
    table = redactor.redact_table(pa.Table.from_pandas(frame, preserve_index=False))
    assert table.schema == pa.Table.from_pandas(frame, preserve_index=False).schema
    assert table.to_pandas().equals(redacted)
    assert redactor.redact_frame(redacted).equals(redacted)  # a second pass changes nothing


def test_without_personal_columns_the_redactor_is_a_no_op(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    lake = Lake(tmp_path / "lake").dataset(spec.name)
    redactor = Redactor.for_spec(spec, lake)
    frame = pd.DataFrame({"application_id": ["a1"], "region": ["west"]})
    assert not redactor and redactor.redact_frame(frame) is frame
    assert not salt_path(lake).exists()  # no salt read, none created


def test_without_the_env_var_the_salt_is_a_private_file_of_the_data_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    spec = _spec(tmp_path, personal_columns=["application_id"])
    lake = Lake(tmp_path / "lake").dataset(spec.name)
    first = Redactor.for_spec(spec, lake).hash_value("alice")
    assert stat.S_IMODE(salt_path(lake).stat().st_mode) == 0o600
    assert Redactor.for_spec(spec, lake).hash_value("alice") == first  # created once, then read
    assert sum(SALT_ENV in r.getMessage() for r in caplog.records) == 1
    salt_bytes = salt_path(lake).read_bytes()
    assert all(salt_bytes.hex() not in r.getMessage() for r in caplog.records)
    other = Lake(tmp_path / "other").dataset(spec.name)
    assert Redactor.for_spec(spec, other).hash_value("alice") != first


# --- what monitoring keeps -------------------------------------------------------------------------


def test_a_hashed_categorical_still_drift_compares(tmp_path: Path, salt: str) -> None:
    spec = _spec(tmp_path, personal_columns=PERSONAL)
    redactor = Redactor.for_spec(spec, Lake(tmp_path / "lake").dataset(spec.name))
    train = training_frame(spec, "2026-01-01", 3000, seed=1)
    card = ModelCard.for_spec(spec, training=train)
    profile = build_reference(spec, train, np.zeros(len(train)), card=card, redactor=redactor)
    assert "annual_income" not in profile.numeric  # dropped values are not profiled
    assert all(is_hashed(value) for value in profile.categorical["region"].shares if value != "(missing)")
    assert all(is_hashed(value) for value in profile.slices["region"])

    same = redactor.redact_frame(training_frame(spec, "2026-01-02", 3000, seed=2))
    assert compare(profile, same).drifted == []
    shifted = redactor.redact_frame(training_frame(spec, "2026-01-02", 3000, seed=2))
    shifted["region"] = redactor.hash_value("north")
    drifted = [f.feature for f in compare(profile, shifted).drifted]
    assert "region" in drifted
    scores = np.zeros(len(same))
    assert "annual_income" not in [f.feature for f in drift_summary(profile, same, scores).report.features]
    assert SCORE in profile.numeric


def test_the_card_keeps_a_personal_range_only_coarsely(tmp_path: Path) -> None:
    assert coarse_range(17.3, 986.41) == (17.0, 990.0)
    assert coarse_range(-3.14159, 0.0) == (-3.2, 0.0)
    spec = _spec(tmp_path, personal_columns=PERSONAL)
    train = training_frame(spec, "2026-01-01", 500, seed=1)
    train.loc[train.index[:3], "annual_income"] = INCOME_MARK
    seen = {f.name: f.seen for f in ModelCard.for_spec(spec, training=train).features}
    assert seen["annual_income"] is not None and seen["annual_income"].max == 4_900_000.0
    plain = {f.name: f.seen for f in ModelCard.for_spec(_spec(tmp_path), training=train).features}
    assert plain["annual_income"] is not None and plain["annual_income"].max == INCOME_MARK
    assert seen["age"] == plain["age"]  # other features keep their exact ranges
    # Out-of-distribution flags still fire well outside the training range.
    from kennel.model.frame import FeatureEncoder

    card = ModelCard.for_spec(spec, training=train)
    encoder = FeatureEncoder(card)
    row = {name: [None] for name in card.feature_names} | {"annual_income": [9_000_000.0]}
    flags = encoder.out_of_distribution(encoder.encode(row, 1))
    assert flags is not None and flags[0, card.feature_names.index("annual_income")]


def test_the_prediction_log_holds_no_personal_value_and_joins_by_hashed_id(tmp_path: Path, salt: str) -> None:
    spec = _spec(tmp_path, personal_columns=PERSONAL)
    lake = Lake(tmp_path / "lake").dataset(spec.name)
    rows = _plant(training_frame(spec, "2026-01-01", 20, seed=3))
    log = PredictionLog(lake, spec, model_tag="clf:v1", threshold=0.5)
    half = len(rows) // 2
    log.append("/predict", [f"r{i}" for i in range(half)], np.full(half, 0.7), rows[:half].to_dict("list"))
    log.append("/predict_arrow", [f"r{i}" for i in range(half, len(rows))], np.full(len(rows) - half, 0.2),
               pa.Table.from_pandas(rows[half:], preserve_index=False))  # fmt: skip
    assert log.flush() == len(rows)
    feedback = FeedbackLog(lake, verifier=None)
    feedback.append(["r0"], [1])
    feedback.flush()
    served = read_predictions(lake)
    assert served["annual_income"].isna().all()
    for column in ("application_id", "region"):
        assert served[column].map(is_hashed).all()
    cells = [str(v) for path in lake.predictions_dir().rglob("*.parquet") for v in _cells(path)]
    assert not [c for c in cells if ID_MARK in c or MARK in c or INCOME_TEXT in c]

    # Realized performance joins served rows to late labels by the id, hashed on both sides.
    day = str(served["predicted_at"].dt.strftime("%Y-%m-%d").iloc[0])
    late = pd.Series({rows["application_id"].iloc[1]: 0.0})
    frame = monitored_rows(spec, lake, day, late).frame
    assert len(frame) == len(rows) and frame["label"].notna().sum() == 2  # r0 by /feedback, r1 by its id


# --- the whole graph -------------------------------------------------------------------------------


def _cells(path: Path) -> list[object]:
    table = pq.read_table(path)
    return [value for column in table.columns for value in column.to_pylist()]


def _leaks(value: object, markers: tuple[str, ...] = (ID_MARK, MARK, INCOME_TEXT)) -> bool:
    if isinstance(value, float):
        return value == INCOME_MARK
    return isinstance(value, (str, bytes)) and any(
        (m.encode() if isinstance(value, bytes) else m) in value for m in markers
    )


# The spec's copies (one beside each model) hold its declared categories: the spec's own text, no record's.
_SPEC_COPY = "spec.yaml"
# A Bento's API schema lists every request field's declared categories (a personal one's too): spec text.
_API_SCHEMAS = {"openapi.yaml", "schema.json", "bento.yaml"}
# Tables of the landed rows themselves, as training reads them: the dbt warehouse and the training sets
# (the model is trained on the values).
DATA_TABLES = ("raw", "clean", "quarantine", "warehouse", "training")


def _scan(folder: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Files under `folder` (but the `skip` sub-folders) holding a planted value: Parquet cell by cell,
    SQLite by every cell and as bytes, anything else as bytes."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if relative.parts[0] in skip or path.name == _SPEC_COPY:
            continue
        if path.suffix == ".parquet":
            if any(_leaks(v) for v in _cells(path)):
                found.append(str(relative))
        elif _leaks(
            path.read_bytes(), (ID_MARK, INCOME_TEXT) if path.name in _API_SCHEMAS else (ID_MARK, MARK, INCOME_TEXT)
        ):
            found.append(str(relative))
        elif path.suffix in (".db", ".sqlite", ".sqlite3") and path.read_bytes()[:16] == b"SQLite format 3\x00":
            # Other .db files (Prometheus's multiprocess files of an earlier serving test) were read as bytes above.
            with sqlite3.connect(path) as db:
                tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
                for table in tables:
                    if any(_leaks(v) for row in db.execute(f'select * from "{table}"') for v in row):
                        found.append(f"{relative}:{table}")
    return found


def test_what_training_and_monitoring_write_to_the_lake_holds_no_planted_value(tmp_path: Path, salt: str) -> None:
    """The lake-level half of the end-to-end test below, for `make test`: a model, its monitoring reference,
    the gate's decision with fairness groups, logged predictions and a day's monitoring measures, written
    through kennel's own functions (no Dagster, Spark or dbt), then every file scanned."""
    import json

    from kennel.lake.champion import ChampionRegistry
    from kennel.model import fit
    from kennel.monitoring.performance import monitored_scores, realized_slices
    from kennel.monitoring.profile import (
        drift_slices,
        load_reference,
        realized_performance,
        save_monitoring_reference,
    )
    from kennel.training.config import GateConfig
    from kennel.training.gate import Candidate, decide

    personal = ["application_id", "gender", "annual_income"]
    spec = _spec(tmp_path, personal_columns=personal, features=_features_with_marked_categories("gender"))
    data = Lake(tmp_path / "lake").dataset(spec.name)
    redactor = Redactor.for_spec(spec, data)
    train, validation, test = (
        _plant(training_frame(spec, day, 1500, seed=seed), seed=seed, categorical="gender")
        for seed, day in enumerate(("2026-01-01", "2026-01-02", "2026-01-03"))
    )
    card = ModelCard.for_spec(spec, training=train, run_id="r1")
    model = fit(card, train, validation, small_model_params(0), rounds=20, early_stopping_rounds=5).model
    model_dir = data.model_dir("r1")
    model.save(model_dir, spec.resolved_yaml())
    save_monitoring_reference(spec, model, train, validation, model_dir, redactor)
    decision = decide(Candidate("r1", model_dir, "m:r1"), None, test, ["gender"], GateConfig(), redactor)
    assert any(is_hashed(g) for g in json.dumps(decision.model_dump()).split('"'))
    ChampionRegistry(data).record_decision(decision)

    log = PredictionLog(data, spec, model_tag="m:r1", threshold=card.threshold)
    served = test.head(200)
    at = pd.Timestamp("2026-01-03", tz="UTC").timestamp()
    log.append("/predict", [f"q{i}" for i in range(len(served))], model.score(served), served.to_dict("list"), at=at)
    log.close()
    late = pd.Series({served["application_id"].iloc[0]: 1.0})
    frame = monitored_rows(spec, data, "2026-01-03", late).frame
    scores = monitored_scores(model, frame, redactor)
    assert np.allclose(scores, model.score(served))  # served rows keep the probability they were served with
    frame = redactor.redact_frame(frame.assign(label=test["label"].head(200).to_numpy()))
    measures = {
        "groups": {
            c: t.to_dict("records") for c, t in realized_performance(frame, scores, 0.5, ["gender"]).groups.items()
        },
        "slices": [s.model_dump() for s in realized_slices(frame, scores, 0.5, spec.slice_columns, 0.8)],
        "drift_slices": [s.model_dump() for s in drift_slices(load_reference(model_dir), frame)],
    }
    (data.monitoring_dir() / "measures.json").parent.mkdir(parents=True, exist_ok=True)
    (data.monitoring_dir() / "measures.json").write_text(json.dumps(measures, default=str))
    assert any(is_hashed(g.get("group")) for g in measures["groups"]["gender"])
    assert _scan(tmp_path / "lake") == []


@pytest.mark.slow
@pytest.mark.full  # about 6 minutes at load 7: ingestion, training and monitoring of 8 days
def test_no_planted_value_leaves_the_data_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from kennel.demo import generate

    monkeypatch.setenv(SALT_ENV, "pipeline salt")
    # The personal categorical feature is a sensitive column: its values name fairness groups and slices.
    personal = ["application_id", "gender", "annual_income"]
    features = _features_with_marked_categories("gender")
    spec_path = spec_file(tmp_path, tmp_path / "landing", personal_columns=personal, features=features)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        project = Project(tmp_path, spec_path, instance)
        spec = project.spec
        n_days = 8
        generate(load_spec(DEFAULT_SPEC_PATH), tmp_path / "landing", days=n_days, rows_per_day=400)
        for i, csv in enumerate(sorted((tmp_path / "landing").rglob("part-*.csv"))):
            frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
            _plant(frame.astype(object), seed=i, categorical="gender").to_csv(csv, index=False)
        run_days = days(spec, n_days)
        assert project.run("ingest_daily", run_days).success
        assert project.run("train_and_package").success
        data = project.lake.dataset(spec.name)
        served = _plant(pd.read_parquet(data.published(run_days[-1])).head(50), seed=99, categorical="gender")
        log = PredictionLog(data, spec, model_tag="clf:v1", threshold=0.5)
        at = pd.Timestamp(run_days[-1], tz="UTC").timestamp() + 3600  # served on the last day
        log.append("/predict", [f"r{i}" for i in range(len(served))], np.full(len(served), 0.4),
                   served[[spec.id_column, *spec.feature_names]].to_dict("list"), at=at)  # fmt: skip
        log.close()
        assert project.run("monitor_daily", run_days).success

        lake_root = Path(project.lake.root)
        assert _scan(lake_root / "clean") != []  # the scan finds what is planted
        leaks = [
            *(f"lake: {f}" for f in _scan(lake_root, skip=DATA_TABLES)),
            *(f"dagster: {f}" for f in _scan(home)),
            *(f"bentoml: {f}" for f in _scan(Path(os.environ["BENTOML_HOME"]))),
        ]
        assert leaks == [], "\n".join(leaks)
