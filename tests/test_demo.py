"""Tests for the demo data generator: determinism, realism of the credit data, scenarios, CLI."""

from __future__ import annotations

import csv
import re
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel import demo
from kennel.ingestion.landing import landed_files
from kennel.ingestion.reasons import Reason
from kennel.spec import (
    DEFAULT_SPEC_PATH,
    MAX_ID_LENGTH,
    DatasetSpec,
    FeatureType,
    category_text_problem,
    load_spec,
)

SENSOR_SPEC = """
name: sensor_demo
source: {uri: landing/sensor_demo, format: csv, options: {delimiter: ";"}}
start_date: 2025-03-01
timestamp_column: reading_time
id_column: sensor_id
label: {column: failed, positive: "yes", negative: "no"}
split: {train_days: 4, validation_days: 1, test_days: 1}
features:
  - {name: temperature, type: numeric, min: -40, max: 120, nullable: false}
  - {name: vibration, type: numeric, min: 0, max: 1}
  - {name: pressure, type: numeric}
  - {name: site, type: categorical, categories: [plant_a, plant_b, plant_c]}
  - {name: model, type: categorical, categories: [m1, m2], nullable: false}
  - {name: under_warranty, type: boolean}
  - {name: firmware, type: categorical, learned_categories: 5}
"""


# --- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_spec(DEFAULT_SPEC_PATH)


@pytest.fixture(scope="module")
def sensor_spec(tmp_path_factory: pytest.TempPathFactory) -> DatasetSpec:
    path = tmp_path_factory.mktemp("spec") / "sensor.yaml"
    path.write_text(SENSOR_SPEC)
    return load_spec(path)


def read_day(spec: DatasetSpec, path: Path) -> pd.DataFrame:
    """A written file as text, "" for missing values; lines of the wrong width are skipped."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path).fillna("")
    with path.open(newline="") as fh:
        header, *lines = list(csv.reader(fh, delimiter=spec.source.options.get("delimiter", ",")))
    return pd.DataFrame([line for line in lines if len(line) == len(header)], columns=header)


def read_all(spec: DatasetSpec, report: demo.GenerationReport) -> pd.DataFrame:
    return pd.concat(
        [read_day(spec, f).assign(_day=f.parent.name) for f in report.files if f.name == "part-00000.csv"],
        ignore_index=True,
    )


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    ranks = pd.Series(score).rank().to_numpy()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def design(spec: DatasetSpec, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Standardised numerics, missing indicators and one-hot categories for a least-squares model."""
    cols = [np.ones(len(frame))]
    for name in features:
        feat, text = spec.feature(name), frame[name]
        if feat.type is FeatureType.numeric:
            x = pd.to_numeric(text.replace("", np.nan))
            cols += [((x - x.mean()) / x.std()).fillna(0).to_numpy(), x.isna().to_numpy(float)]
        elif feat.type is FeatureType.boolean:
            cols.append(text.map({"true": 1.0, "false": 0.0, "": 0.5}).to_numpy(float))
        else:
            cols += [(text == c).to_numpy(float) for c in feat.categories or ()]
    return np.column_stack(cols)


def holdout_scores(spec: DatasetSpec, frame: pd.DataFrame, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Fit a linear probability model on even rows; return (scores, held-out mask) for odd rows."""
    x = design(spec, frame, features)
    y = (frame[spec.label.column] == str(spec.label.positive)).to_numpy(float)
    train = np.arange(len(frame)) % 2 == 0
    weights = np.linalg.lstsq(x[train], y[train], rcond=None)[0]
    return x[~train] @ weights, ~train


def classify_day(spec: DatasetSpec, day_dir: Path) -> Counter[str]:
    """An independent reference for the cleaning rules: quarantine reason counts for one day's CSVs."""
    delimiter = spec.source.options.get("delimiter", ",")
    day = day_dir.name
    reasons: Counter[str] = Counter()
    survivors: list[tuple[str, str, tuple[str, ...]]] = []
    for path in sorted(day_dir.glob("part-*.csv")):
        with path.open(newline="") as fh:
            header, *lines = list(csv.reader(fh, delimiter=delimiter))
        for fields in lines:
            reason = _row_reason(spec, header, fields, day)
            if reason:
                reasons[reason] += 1
            else:
                row = dict(zip(header, fields))
                survivors.append((row[spec.id_column], row[spec.timestamp_column], tuple(fields)))
    # Per id the latest version stays; every other copy (older or identical) is a duplicate.
    by_id: dict[str, int] = Counter(rid for rid, _, _ in survivors)
    reasons[Reason.duplicate_id.value] += sum(n - 1 for n in by_id.values())
    reasons["clean"] += len(by_id)
    return reasons


def _row_reason(spec: DatasetSpec, header: list[str], fields: list[str], day: str) -> str | None:
    if len(fields) != len(header):
        return Reason.unparsable_line.value
    if set(spec.raw_columns) - set(header):
        return Reason.missing_column.value
    row = dict(zip(header, fields))
    for feat in spec.features:
        text = row[feat.name]
        if not text:
            continue
        if feat.type is FeatureType.numeric:
            try:
                float(text)
            except ValueError:
                return Reason.wrong_type.value
        if feat.type is FeatureType.boolean and text not in ("true", "false"):
            return Reason.wrong_type.value
    ts_text = row[spec.timestamp_column]
    if ts_text:
        try:
            ts = datetime.fromisoformat(ts_text)
        except ValueError:
            return Reason.wrong_type.value
    if len(row[spec.id_column]) > MAX_ID_LENGTH:
        return Reason.id_too_long.value
    # The label is not required: a row without one is clean (unlabelled).
    required = [spec.id_column, spec.timestamp_column]
    required += [f.name for f in spec.features if not f.nullable]
    if any(not row[c] for c in required):
        return Reason.missing_required.value
    label = row[spec.label.column]
    if label and label not in (str(spec.label.positive), str(spec.label.negative)):
        return Reason.invalid_label.value
    for feat in spec.features:
        text = row[feat.name]
        if text and feat.type is FeatureType.numeric:
            if (feat.min is not None and float(text) < feat.min) or (feat.max is not None and float(text) > feat.max):
                return Reason.out_of_range.value
    for feat in spec.features:
        if feat.learned_categories is not None:
            continue  # any value is one of its categories (cleaning checks only the text, below)
        if row[feat.name] and feat.type is FeatureType.categorical and row[feat.name] not in (feat.categories or ()):
            return Reason.unknown_category.value
    for feat in spec.features:
        if feat.learned_categories is not None and row[feat.name] and category_text_problem(row[feat.name]):
            return Reason.invalid_category.value
    if ts.date().isoformat() != day:
        return Reason.timestamp_outside_partition.value
    return None


# --- module-scoped data sets -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline(spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> tuple[demo.GenerationReport, float]:
    started = time.perf_counter()
    report = demo.generate(spec, tmp_path_factory.mktemp("baseline"), days=20, rows_per_day=2000)
    return report, time.perf_counter() - started


@pytest.fixture(scope="module")
def baseline_frame(spec: DatasetSpec, baseline: tuple[demo.GenerationReport, float]) -> pd.DataFrame:
    return read_all(spec, baseline[0])


@pytest.fixture(scope="module")
def baseline_scores(spec: DatasetSpec, baseline_frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Held-out scores of a model trained without the sensitive column."""
    return holdout_scores(spec, baseline_frame, [f.name for f in spec.model_features])


@pytest.fixture(scope="module")
def drift(spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> demo.GenerationReport:
    return demo.generate(spec, tmp_path_factory.mktemp("drift"), days=20, rows_per_day=2000, scenario="drift")


@pytest.fixture(scope="module")
def corrupt(spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> demo.GenerationReport:
    return demo.generate(spec, tmp_path_factory.mktemp("corrupt"), days=5, rows_per_day=1000, scenario="corrupt")


# --- determinism and layout ------------------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("scenario", "file_format"), [("baseline", "csv"), ("corrupt", "csv"), ("drift", "parquet")])
def test_same_arguments_write_identical_bytes(
    spec: DatasetSpec, tmp_path: Path, scenario: str, file_format: str
) -> None:
    kwargs = dict(days=3, rows_per_day=300, scenario=scenario, file_format=file_format)
    demo.generate(spec, tmp_path / "a", **kwargs)
    demo.generate(spec, tmp_path / "b", **kwargs)
    demo.generate(spec, tmp_path / "c", seed=8, **kwargs)
    first, second, other_seed = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert first and first == second
    assert first.keys() == other_seed.keys() and first != other_seed


def test_baseline_layout_rows_and_columns(spec: DatasetSpec, baseline: tuple[demo.GenerationReport, float]) -> None:
    report, _ = baseline
    days = [f"2026-01-{d:02d}" for d in range(1, 21)]
    assert report.files == [report.out_dir / d / "part-00000.csv" for d in days]
    assert report.rows_per_day == dict.fromkeys(days, 2000)
    assert report.total_rows == 40_000 and report.expected_reasons == {}
    for path in report.files:
        lines = path.read_text().splitlines()
        assert lines[0].split(",") == spec.raw_columns
        assert len(lines) - 1 == 2000


def test_twenty_days_is_fast(baseline: tuple[demo.GenerationReport, float]) -> None:
    assert baseline[1] < 10


def test_baseline_values_respect_the_spec(spec: DatasetSpec, baseline_frame: pd.DataFrame) -> None:
    frame = baseline_frame
    ids = frame[spec.id_column]
    assert ids.is_unique
    assert ids.str.fullmatch(r"app-\d{8}-\d{6}").all()
    assert (ids.str[4:12] == frame["_day"].str.replace("-", "")).all()
    ts = frame[spec.timestamp_column]
    assert ts.str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}").all()
    assert (ts.str[:10] == frame["_day"]).all()
    assert set(frame[spec.label.column]) == {"0", "1"}
    for feat in spec.features:
        text = frame[feat.name]
        missing = (text == "").mean()
        if not feat.nullable:
            assert missing == 0, feat.name
        else:
            assert missing < 0.15, feat.name
        present = text[text != ""]
        if feat.type is FeatureType.numeric:
            values = pd.to_numeric(present)
            assert values.between(feat.min, feat.max).all(), feat.name
            assert not present.str.contains("e", case=False).any(), feat.name
        elif feat.type is FeatureType.categorical:
            assert set(present) == set(feat.categories or ()), feat.name
        else:
            assert set(present) == {"true", "false"}, feat.name
    # Realistic gaps: the nullable columns the brief names all have some missing values.
    for name in (
        "credit_score",
        "annual_income",
        "employment_type",
        "loan_purpose",
        "channel",
        "has_cosigner",
        "gender",
    ):
        assert 0.005 < (frame[name] == "").mean(), name


def test_thin_files_lack_a_credit_score_more_often(baseline_frame: pd.DataFrame) -> None:
    thin = pd.to_numeric(baseline_frame["num_open_accounts"]) <= 1
    missing = baseline_frame["credit_score"] == ""
    assert missing[thin].mean() > 5 * missing[~thin].mean()


def test_numerics_are_correlated_like_credit_data(baseline_frame: pd.DataFrame) -> None:
    num = baseline_frame[["credit_score", "num_delinquencies_2y", "interest_rate", "annual_income", "age"]]
    corr = num.replace("", np.nan).apply(pd.to_numeric).corr()
    assert corr.loc["credit_score", "num_delinquencies_2y"] < -0.2
    assert corr.loc["credit_score", "interest_rate"] < -0.3
    assert corr.loc["annual_income", "credit_score"] > 0.1


def test_label_rate_and_learnability(
    spec: DatasetSpec, baseline_frame: pd.DataFrame, baseline_scores: tuple[np.ndarray, np.ndarray]
) -> None:
    positive = baseline_frame[spec.label.column] == "1"
    assert 0.10 < positive.mean() < 0.20
    scores, held_out = baseline_scores
    assert auc(scores, positive.to_numpy()[held_out]) > 0.75


def test_gender_bias_reaches_a_model_that_never_sees_gender(
    spec: DatasetSpec, baseline_frame: pd.DataFrame, baseline_scores: tuple[np.ndarray, np.ndarray]
) -> None:
    frame = baseline_frame
    female, male = frame["gender"] == "female", frame["gender"] == "male"
    positive = frame[spec.label.column] == "1"
    assert positive[female].mean() - positive[male].mean() > 0.02
    # Worse terms for the same risk: higher rates within the same credit-score band.
    score = pd.to_numeric(frame["credit_score"].replace("", np.nan))
    band = score.between(680, 720)
    rate = pd.to_numeric(frame["interest_rate"])
    assert rate[band & female].mean() - rate[band & male].mean() > 2
    assert "gender" not in [f.name for f in spec.model_features]
    scores, held_out = baseline_scores
    predicted = pd.Series(scores)
    assert predicted[female.to_numpy()[held_out]].mean() - predicted[male.to_numpy()[held_out]].mean() > 0.02


# --- drift -----------------------------------------------------------------------------------------


def test_drift_starts_half_way_and_leaves_earlier_days_as_baseline(
    baseline: tuple[demo.GenerationReport, float], drift: demo.GenerationReport
) -> None:
    assert drift.drift_start_day == 10
    for base_file, drift_file in zip(baseline[0].files, drift.files):
        same = base_file.read_bytes() == drift_file.read_bytes()
        assert same == (drift_file.parent.name < "2026-01-11"), drift_file


def test_drift_shifts_inputs_and_the_label_relation(spec: DatasetSpec, drift: demo.GenerationReport) -> None:
    frame = read_all(spec, drift)
    after = frame["_day"] >= "2026-01-11"
    before = ~after
    income = pd.to_numeric(frame["annual_income"].replace("", np.nan))
    util = pd.to_numeric(frame["credit_utilization"].replace("", np.nan))
    online = frame["channel"] == "online"
    assert income[after].median() < 0.92 * income[before].median()
    assert util[after].mean() > util[before].mean() + 0.08
    assert online[after].mean() > online[before].mean() + 0.1
    # Concept drift: being an online applicant becomes much riskier than applying in a branch.
    positive = frame[spec.label.column] == "1"
    branch = frame["channel"] == "branch"

    def online_gap(part: pd.Series) -> float:
        return positive[part & online].mean() - positive[part & branch].mean()

    assert online_gap(after) > online_gap(before) + 0.03


# --- corrupt ---------------------------------------------------------------------------------------


def test_corrupt_counts_add_up_and_cover_every_reason(spec: DatasetSpec, corrupt: demo.GenerationReport) -> None:
    assert list(corrupt.expected_reasons) == [r.value for r in demo.ROW_REASONS]
    # The demo spec lists every category: invalid_category (learned features' text) has nothing to break.
    reasons = dict(corrupt.expected_reasons)
    assert reasons.pop(Reason.invalid_category.value) == 0
    assert all(count > 0 for count in reasons.values())
    assert corrupt.expected_reasons[Reason.missing_column.value] == 20  # one file, 2 % of a day
    lines = sum(len(p.read_text().splitlines()) - 1 for p in corrupt.files)
    assert lines == corrupt.total_rows == corrupt.expected_clean_rows + sum(corrupt.expected_reasons.values())
    corrupt_share = 1 - corrupt.expected_clean_rows / corrupt.total_rows
    assert 0.01 < corrupt_share < 0.06
    # Each day's part-00000 keeps the requested size; only the missing-column day has more lines.
    assert [len(p.read_text().splitlines()) - 1 for p in corrupt.files if p.name == "part-00000.csv"] == [1000] * 5
    extra = [p for p in corrupt.files if p.name != "part-00000.csv"]
    assert [p.relative_to(corrupt.out_dir).as_posix() for p in extra] == ["2026-01-03/part-00001.csv"]


def test_corrupt_rows_are_classified_as_reported(spec: DatasetSpec, corrupt: demo.GenerationReport) -> None:
    for day, expected in corrupt.expected_reasons_by_day.items():
        found = classify_day(spec, corrupt.out_dir / day)
        assert found.pop("clean") == corrupt.rows_per_day[day] - sum(expected.values())
        assert {r: found[r] for r in expected} == expected, day


def test_corrupt_duplicates_keep_the_latest_version(spec: DatasetSpec, corrupt: demo.GenerationReport) -> None:
    frame = read_day(spec, corrupt.files[0])
    dupes = frame[frame[spec.id_column].duplicated(keep=False)]
    assert len(dupes) == 2 * corrupt.expected_reasons_by_day["2026-01-01"][Reason.duplicate_id.value]
    exact = dupes.duplicated(keep=False)
    older_versions = dupes[~exact].groupby(spec.id_column)
    assert older_versions.ngroups == len(dupes[exact]) // 2  # as many older-version pairs as exact pairs
    # The day's records come first from the (seed, day index) stream, so they can be regenerated
    # to tell the original from its copy: the original must be the later of the two.
    records = max(int(seq) for seq in re.findall(r"app-20260101-(\d{6})", corrupt.files[0].read_text()))
    original = demo.generate_frame(spec, date(2026, 1, 1), records, np.random.default_rng([7, 0]))
    original_ts = dict(zip(original[spec.id_column], original[spec.timestamp_column].dt.strftime("%Y-%m-%dT%H:%M:%S")))
    for record_id, pair in older_versions:
        assert pair[spec.timestamp_column].nunique() == 2
        assert set(pair[spec.timestamp_column].str[:10]) == {"2026-01-01"}
        assert original_ts[record_id] == pair[spec.timestamp_column].max()
        features = pair.drop(columns=[spec.timestamp_column])
        assert features.iloc[0].equals(features.iloc[1])


def test_missing_column_file_lacks_one_required_column(spec: DatasetSpec, corrupt: demo.GenerationReport) -> None:
    extra = read_day(spec, corrupt.out_dir / "2026-01-03" / "part-00001.csv")
    assert set(spec.raw_columns) - set(extra.columns) == {"age"}
    main_ids = set(read_day(spec, corrupt.out_dir / "2026-01-03" / "part-00000.csv")[spec.id_column])
    assert not main_ids & set(extra[spec.id_column])


def test_corrupt_parquet_has_text_columns_and_no_unparsable_lines(spec: DatasetSpec, tmp_path: Path) -> None:
    report = demo.generate(spec, tmp_path, days=3, rows_per_day=500, scenario="corrupt", file_format="parquet")
    assert report.expected_reasons[Reason.unparsable_line.value] == 0
    assert report.expected_reasons[Reason.invalid_category.value] == 0  # no learned feature in the demo spec
    assert all(
        count > 0
        for code, count in report.expected_reasons.items()
        if code not in (Reason.unparsable_line.value, Reason.invalid_category.value)
    )
    main = pd.read_parquet(report.files[0])
    assert list(main.columns) == spec.raw_columns
    assert all(dtype is np.dtype(object) for dtype in main.dtypes)
    assert len(main) == report.rows_per_day["2026-01-01"]
    # Corrupt text survives, and missing values are nulls rather than empty strings.
    expected = report.expected_reasons_by_day["2026-01-01"]
    bad_type = ((main == demo.WRONG_TYPE_NUMERIC) | (main == demo.WRONG_TYPE_BOOLEAN)).to_numpy().sum()
    assert bad_type == expected[Reason.wrong_type.value]
    assert (main[spec.label.column] == "2").sum() == expected[Reason.invalid_label.value]
    assert main["credit_score"].isna().any() and not (main == "").to_numpy().any()


def test_rerun_replaces_files_of_a_previous_run(spec: DatasetSpec, tmp_path: Path) -> None:
    demo.generate(spec, tmp_path, days=2, rows_per_day=100, scenario="corrupt")
    assert (tmp_path / "2026-01-02" / "part-00001.csv").exists()
    report = demo.generate(spec, tmp_path, days=2, rows_per_day=100)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.csv")) == sorted(
        p.relative_to(tmp_path).as_posix() for p in report.files
    )


# --- only into the demo's own folder ----------------------------------------------------------------


def _land_a_real_file(landing: Path) -> dict[str, bytes]:
    """A landing folder that already holds a real export: what a user's spec points at."""
    real = landing / "2026-01-01" / "export.csv"
    real.parent.mkdir(parents=True)
    real.write_text("application_id,applied_at\nreal-000001,2026-01-01T09:00:00\n")
    return _files(landing)


def test_a_folder_holding_other_files_is_refused_and_left_untouched(spec: DatasetSpec, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    before = _land_a_real_file(landing)
    with pytest.raises(demo.NotADemoFolder) as refused:
        demo.generate(spec, landing, days=2, rows_per_day=10)
    message = str(refused.value)
    assert str(landing) in message and "2026-01-01" in message
    assert "new or empty folder" in message and f"touch {landing / demo.DEMO_FOLDER_MARKER}" in message
    assert _files(landing) == before, "nothing written, not even the marker"


def test_the_cli_refuses_the_landing_folder_of_a_users_spec(
    sensor_spec: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    landing = tmp_path / "real_landing"
    spec_path = tmp_path / "users_spec.yaml"
    spec_path.write_text(SENSOR_SPEC.replace("uri: landing/sensor_demo", f"uri: {landing}"))
    before = _land_a_real_file(landing)
    monkeypatch.setenv("KENNEL_DATASET_SPEC", str(spec_path))
    assert demo.main(["--rows-per-day", "50"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("kennel.demo: error: refusing to write demo data into") and str(landing) in error
    assert _files(landing) == before


def test_the_demos_own_folder_is_marked_and_reused(spec: DatasetSpec, tmp_path: Path) -> None:
    landing = tmp_path / "landing"  # does not exist yet
    demo.generate(spec, landing, days=1, rows_per_day=10)
    marker = landing / demo.DEMO_FOLDER_MARKER
    assert marker.is_file()
    report = demo.generate(spec, landing, days=2, rows_per_day=10, seed=8)
    assert [p.relative_to(landing).as_posix() for p in report.files] == [
        "2026-01-01/part-00000.csv",
        "2026-01-02/part-00000.csv",
    ]
    # Ingestion never takes the marker for data (its name starts with ".").
    assert {day: [p.name for p in paths] for day, paths in landed_files(landing, "csv").items()} == {
        "2026-01-01": ["part-00000.csv"],
        "2026-01-02": ["part-00000.csv"],
    }


# --- a second spec ---------------------------------------------------------------------------------


def test_generic_generator_follows_another_spec(sensor_spec: DatasetSpec, tmp_path: Path) -> None:
    report = demo.generate(sensor_spec, tmp_path, days=6, rows_per_day=1500)
    assert report.files[0] == tmp_path / "2025-03-01" / "part-00000.csv"
    assert report.files[0].read_text().splitlines()[0] == ";".join(sensor_spec.raw_columns)
    frame = read_all(sensor_spec, report)
    assert list(frame.columns[:-1]) == sensor_spec.raw_columns
    assert frame["sensor_id"].str.fullmatch(r"sensor-\d{8}-\d{6}").all() and frame["sensor_id"].is_unique
    assert (frame["reading_time"].str[:10] == frame["_day"]).all()
    assert set(frame["failed"]) == {"yes", "no"}
    assert 0.05 < (frame["failed"] == "yes").mean() < 0.6
    temperature = pd.to_numeric(frame["temperature"])
    assert temperature.between(-40, 120).all() and temperature.std() > 10
    vibration = pd.to_numeric(frame["vibration"].replace("", np.nan))
    assert vibration.dropna().between(0, 1).all() and 0.005 < vibration.isna().mean() < 0.1
    assert set(frame["site"]) == {"plant_a", "plant_b", "plant_c", ""}
    assert set(frame["model"]) == {"m1", "m2"}
    assert set(frame["under_warranty"]) == {"true", "false", ""}
    scores, held_out = holdout_scores(sensor_spec, frame, sensor_spec.feature_names)
    assert auc(scores, (frame["failed"] == "yes").to_numpy()[held_out]) > 0.7


def test_generic_drift_shifts_means_and_flips_the_main_signal(sensor_spec: DatasetSpec, tmp_path: Path) -> None:
    report = demo.generate(sensor_spec, tmp_path, days=6, rows_per_day=1500, scenario="drift", drift_start_day=3)
    frame = read_all(sensor_spec, report)
    after = frame["_day"] >= "2025-03-04"
    positive = (frame["failed"] == "yes").astype(float)
    temperature = pd.to_numeric(frame["temperature"])
    assert temperature[after].mean() > temperature[~after].mean() + 10  # one sd of (120 - -40) / 6
    corr_before = np.corrcoef(temperature[~after], positive[~after])[0, 1]
    corr_after = np.corrcoef(temperature[after], positive[after])[0, 1]
    assert np.sign(corr_before) != np.sign(corr_after) and abs(corr_before) > 0.1


def test_generic_corrupt_rows_are_classified_as_reported(sensor_spec: DatasetSpec, tmp_path: Path) -> None:
    report = demo.generate(sensor_spec, tmp_path, days=3, rows_per_day=400, scenario="corrupt")
    assert all(count > 0 for count in report.expected_reasons.values())
    for day, expected in report.expected_reasons_by_day.items():
        found = classify_day(sensor_spec, tmp_path / day)
        assert found.pop("clean") == report.rows_per_day[day] - sum(expected.values())
        assert {r: found[r] for r in expected} == expected, day


# --- command line ----------------------------------------------------------------------------------


def test_cli_writes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = demo.main(["--scenario", "corrupt", "--days", "2", "--rows-per-day", "200", "--out", str(tmp_path),
                      "--spec", str(DEFAULT_SPEC_PATH), "--start", "2026-02-01"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "2026-02-01" / "part-00000.csv").exists()
    assert "corrupt" in out and "duplicate_id" in out and "Expected in quarantine" in out


def test_cli_defaults_to_the_env_spec_and_its_landing_folder(
    sensor_spec: DatasetSpec, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KENNEL_DATASET_SPEC", sensor_spec.spec_path)
    assert demo.main(["--rows-per-day", "50"]) == 0
    landing = Path(sensor_spec.source_location())
    days = [f"2025-03-{d:02d}" for d in range(1, 7)]
    assert sorted(p.name for p in landing.iterdir()) == [demo.DEMO_FOLDER_MARKER, *days]
    assert "sensor_demo" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "0"], "days must be at least 1"),
        (["--rows-per-day", "0"], "rows per day must be at least 1"),
        (["--scenario", "corrupt", "--rows-per-day", "5"], "at least 20 rows per day"),
        (["--scenario", "drift", "--days", "4", "--drift-start-day", "4"], "drift_start_day must be a day index"),
        (["--drift-start-day", "1"], "drift and covariate_shift scenarios only"),
        (["--seed", "-1"], "seed must be non-negative"),
        (["--spec", "/nonexistent/spec.yaml"], "does not exist"),
    ],
)
def test_cli_rejects_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = [*args, "--out", str(tmp_path)]
    if "--spec" not in args:
        argv += ["--spec", str(DEFAULT_SPEC_PATH)]
    assert demo.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_cli_rejects_an_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        demo.main(["--scenario", "chaos"])
    assert exc.value.code == 2
    assert "invalid choice: 'chaos'" in capsys.readouterr().err


def test_generate_rejects_unknown_scenario_and_format(spec: DatasetSpec, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        demo.generate(spec, tmp_path, days=1, rows_per_day=10, scenario="chaos")
    with pytest.raises(ValueError, match="unknown file format"):
        demo.generate(spec, tmp_path, days=1, rows_per_day=10, file_format="json")


def test_generate_frame_is_typed(spec: DatasetSpec) -> None:
    frame = demo.generate_frame(spec, date(2026, 1, 5), 50, np.random.default_rng(1), first_seq=101)
    assert list(frame.columns) == spec.raw_columns
    assert frame[spec.id_column].iloc[0] == "app-20260105-000101"
    assert frame[spec.timestamp_column].is_monotonic_increasing
    assert frame[spec.timestamp_column].dt.date.eq(date(2026, 1, 5)).all()
    assert set(frame[spec.label.column]) <= {1, 0}
    assert re.fullmatch(r"\d+(\.\d+)?", demo.frame_to_rows(spec, frame)[0][spec.raw_columns.index("interest_rate")])


def test_covariate_shift_moves_the_inputs_of_the_drift_scenario_and_keeps_the_label_model(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    """The world label-free estimation assumes: from the drift start the inputs are the drift scenario's,
    byte for byte, and the labels follow the baseline's model (so they differ from the drift scenario's)."""
    kwargs = dict(days=4, rows_per_day=2000, drift_start_day=2)
    covariate = demo.generate(spec, tmp_path / "covariate", scenario="covariate_shift", **kwargs)
    drifted = demo.generate(spec, tmp_path / "drift", scenario="drift", **kwargs)
    label = spec.label.column
    for i, (ours, theirs) in enumerate(zip(covariate.files, drifted.files, strict=True)):
        a, b = pd.read_csv(ours, dtype=str), pd.read_csv(theirs, dtype=str)
        assert a.drop(columns=label).equals(b.drop(columns=label))
        assert a[label].equals(b[label]) == (i < 2)  # the same days before the shift, other labels after
    # The shifted days' labels are drawn from the baseline label model on the shifted inputs.
    start = spec.start_date + timedelta(days=2)
    rng = np.random.default_rng([7, 2])
    same_world = demo.generate_frame(spec, start, 2000, rng, drifted=True, concept_drift=False)
    shifted = pd.read_csv(covariate.files[2], dtype=str)
    assert (shifted[label] == same_world[label].astype(str)).all()
