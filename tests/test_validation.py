"""GX validation from the spec plus user expectations (severity error/warn), on the Spark DataFrame."""

from pathlib import Path

import pytest
import yaml

from kennel.demo import generate
from kennel.ingestion.cleaning import clean_partition
from kennel.ingestion.validation import (
    build_suite,
    check_definitions,
    validate_dataframe,
)
from kennel.spec import DEFAULT_SPEC_PATH, SpecError, load_spec

USER_EXPECTATIONS = [
    # Fails: demo applicants are older on average. Error severity: blocks.
    {
        "type": "expect_column_mean_to_be_between",
        "kwargs": {"column": "age", "min_value": 18, "max_value": 25},
        "name": "young_applicants",
    },
    # Fails for most rows: warn severity, reported only.
    {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "loan_amount", "max_value": 2000},
        "severity": "WARN",
        "description": "Loans are small",
    },
    # Passes.
    {
        "type": "expect_column_values_to_match_regex",
        "kwargs": {"column": "application_id", "regex": "^app-"},
        "severity": "error",
    },
]


def _spec(tmp_path: Path, expectations) -> Path:
    raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    raw["expectations"] = expectations
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_user_expectations_are_checks_with_their_severity(spark, tmp_path):
    spec = load_spec(_spec(tmp_path, USER_EXPECTATIONS))
    checks = {c.name: c.severity for c in check_definitions(spec)}
    assert checks == {
        "not_null": "error",
        "ranges": "error",
        "categories": "error",
        "unique_id": "error",
        "row_count": "error",
        "young_applicants": "error",
        "values_to_be_between_loan_amount": "warn",
        "values_to_match_regex_application_id": "error",
    }

    generate(spec, tmp_path / "landing", days=1, rows_per_day=300)
    day = spec.start_date.isoformat()
    files = sorted((tmp_path / "landing" / day).glob("*.csv"))
    clean_partition(spark, spec, files, day, tmp_path / "clean", tmp_path / "quarantine", tmp_path / "_staging")
    groups = {g.group: g for g in validate_dataframe(spark.read.parquet(str(tmp_path / "clean")).cache(), spec)}

    young = groups["young_applicants"].outcomes[0]
    assert not young.success and young.severity == "error" and 30 < young.observed < 60
    small = groups["values_to_be_between_loan_amount"].outcomes[0]
    assert not small.success and small.severity == "warn"
    assert small.unexpected_count > 100 and len(small.unexpected_sample) == 10
    assert all(v > 2000 for v in small.unexpected_sample)
    assert groups["values_to_match_regex_application_id"].success
    for name in ("not_null", "ranges", "categories", "unique_id", "row_count"):
        assert groups[name].success, name
    assert groups["row_count"].outcomes[0].observed == 300
    not_null = groups["not_null"].outcomes[0]
    assert (not_null.observed, not_null.unexpected_count) == (0.0, 0)


def test_failing_built_in_expectation_reports_a_sample_of_failing_values(spark, tmp_path):
    spec = load_spec(DEFAULT_SPEC_PATH)
    frame = spark.createDataFrame(
        [("a1", 17.0, "own"), ("a2", 40.0, "castle"), ("a2", 150.0, "rent")],
        "application_id string, age double, home_ownership string",
    )
    narrow = spec.model_copy(
        update={"features": tuple(f for f in spec.features if f.name in ("age", "home_ownership"))}
    )
    groups = {g.group: g for g in validate_dataframe(frame, narrow)}
    ranges = next(o for o in groups["ranges"].outcomes if o.column == "age")
    assert not ranges.success and sorted(ranges.unexpected_sample) == [17.0, 150.0] and ranges.unexpected_count == 2
    assert groups["categories"].outcomes[0].unexpected_sample == ["castle"]
    assert groups["unique_id"].outcomes[0].unexpected_sample == ["a2", "a2"]


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        ({"type": "expect_column_mean_to_be_between", "kwargs": {"column": "salary"}}, "unknown column"),
        ({"type": "ExpectColumnMean"}, "not a GX expectation name"),
        ({"type": "expect_column_mean_to_be_between", "kwargs": {"column": "age"}, "severity": "fatal"}, "severity"),
        ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "age"}, "name": "not_null"}, "built-in"),
    ],
)
def test_invalid_user_expectations_fail_on_load(tmp_path, expectation, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_spec(tmp_path, [expectation]))


def test_unknown_gx_expectation_or_kwargs_name_the_spec_entry(tmp_path):
    spec = load_spec(_spec(tmp_path, [{"type": "expect_the_unexpected", "name": "surprise"}]))
    with pytest.raises(SpecError, match="gx_surprise.*no expectation 'expect_the_unexpected'"):
        build_suite(spec)
    spec = load_spec(
        _spec(tmp_path, [{"type": "expect_column_mean_to_be_between", "kwargs": {"column": "age", "min": 3}}])
    )
    with pytest.raises(SpecError, match="gx_mean_to_be_between_age.*invalid kwargs"):
        build_suite(spec)
