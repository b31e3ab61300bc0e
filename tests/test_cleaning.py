"""Spark cleaning on the demo's corrupt scenario: every bad row lands in quarantine with its reason."""

from pathlib import Path

import pandas as pd
import pytest

from kennel.demo import generate
from kennel.ingestion.cleaning import clean_partition
from kennel.ingestion.reasons import Reason
from kennel.spec import DEFAULT_SPEC_PATH, load_spec


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEFAULT_SPEC_PATH)


def _clean_day(spark, spec, landing: Path, lake: Path, day: str):
    files = sorted((landing / day).glob(f"*.{spec.source.format}"))
    return clean_partition(spark, spec, files, day, lake / "clean" / day, lake / "quarantine" / day, lake / "_staging")


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_corrupt_scenario_routes_every_bad_row_with_its_reason(spark, spec, tmp_path, file_format):
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"format": file_format})})
    report = generate(spec, tmp_path / "landing", days=3, rows_per_day=300, scenario="corrupt")
    for day, expected in report.expected_reasons_by_day.items():
        if file_format == "parquet":
            # Parquet has no lines to break, so the generator writes no unparsable ones.
            assert expected[Reason.unparsable_line.value] == 0
        result = _clean_day(spark, spec, tmp_path / "landing", tmp_path / "lake", day)
        assert result.rows_in == report.rows_per_day[day]
        assert result.reconciled, result
        assert result.reasons == {k: v for k, v in expected.items() if v}, day
        assert result.rows_clean == report.rows_per_day[day] - sum(expected.values())
        # The record's counts are the written files' (counted from them, not from the plan that wrote them).
        clean = pd.read_parquet(tmp_path / "lake" / "clean" / day)
        written = pd.read_parquet(tmp_path / "lake" / "quarantine" / day)["reason"].value_counts().to_dict()
        assert (result.rows_clean, result.rows_labelled) == (len(clean), clean[spec.label.column].notna().sum())
        assert result.reasons == written

    quarantine = pd.read_parquet(tmp_path / "lake" / "quarantine")
    assert set(quarantine["reason"]) <= {r.value for r in Reason}
    assert quarantine["detail"].notna().all() and quarantine["raw"].notna().all()
    missing = quarantine[quarantine["reason"] == Reason.missing_column.value]
    assert not missing.empty and missing["detail"].str.contains("age").all()


def test_clean_table_is_typed_and_unique(spark, spec, tmp_path):
    generate(spec, tmp_path / "landing", days=1, rows_per_day=200, scenario="corrupt")
    day = spec.start_date.isoformat()
    _clean_day(spark, spec, tmp_path / "landing", tmp_path / "lake", day)
    clean = pd.read_parquet(tmp_path / "lake" / "clean" / day)
    assert list(clean.columns) == spec.raw_columns
    assert clean[spec.id_column].is_unique
    assert set(clean[spec.label.column].unique()) <= {0, 1}
    assert clean["age"].between(18, 100).all()
    assert (clean[spec.timestamp_column].dt.strftime("%Y-%m-%d") == day).all()


def test_rerun_gives_identical_files(spark, spec, tmp_path):
    generate(spec, tmp_path / "landing", days=1, rows_per_day=200, scenario="corrupt")
    day = spec.start_date.isoformat()
    _clean_day(spark, spec, tmp_path / "landing", tmp_path / "lake", day)
    first = {p: p.read_bytes() for p in (tmp_path / "lake").glob("*/*/part-00000.parquet")}
    _clean_day(spark, spec, tmp_path / "landing", tmp_path / "lake", day)
    second = {p: p.read_bytes() for p in (tmp_path / "lake").glob("*/*/part-00000.parquet")}
    assert len(first) == 2 and first == second
    assert not list((tmp_path / "lake" / "_staging").iterdir()), "staging must be empty after a swap"
