"""Ingestion in a real Dagster instance: a backfill of several days as one run, user expectations as
blocking (error) or reporting (warn) checks with their evidence, and a killed run that leaves no
half-written partition and whose re-run writes the very same bytes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from definitions import build_definitions
from kennel.demo import generate
from kennel.ingestion.cleaning import PART_FILE, clean_partition
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from resources.lake import LakeResource

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
CLEAN = dg.AssetKey("clean_records")


def _spec_file(tmp: Path, **changes) -> Path:
    raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    raw["source"]["uri"] = str(tmp / "landing")
    raw.update(changes)
    path = tmp / "credit_demo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_backfill_of_several_days_is_one_run_with_a_record_per_day(tmp_path):
    spec_path = _spec_file(
        tmp_path,
        expectations=[
            {
                "type": "expect_column_mean_to_be_between",
                "kwargs": {"column": "age", "min_value": 18, "max_value": 25},
                "name": "young_applicants",
                "severity": "warn",
            },
            {
                "type": "expect_column_max_to_be_between",
                "kwargs": {"column": "loan_amount", "max_value": 1000},
                "name": "small_loans",
            },
        ],
    )
    spec = load_spec(spec_path)
    generate(spec, tmp_path / "landing", days=len(DAYS), rows_per_day=150, scenario="corrupt")
    lake = LakeResource(root=str(tmp_path / "lake"))
    defs = build_definitions(str(spec_path), resources={"lake": lake})
    graph = defs.resolve_asset_graph()
    assert graph.get(CLEAN).backfill_policy == dg.BackfillPolicy.single_run()
    blocking = {c.name: graph.get(c).blocking for c in graph.get(CLEAN).check_keys}
    assert blocking["gx_young_applicants"] is False and blocking["gx_small_loans"] is True

    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("ingest_daily").execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]},
        )
        assert len(instance.get_runs()) == 1
        assert instance.get_materialized_partitions(CLEAN) == set(DAYS)
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}

    warn, error = checks["gx_young_applicants"], checks["gx_small_loans"]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert not error.passed and error.severity == dg.AssetCheckSeverity.ERROR
    failing = error.metadata["failing"].value
    assert [f["day"] for f in failing] == DAYS
    assert all(f["observed"] > 1000 and f["expectation"] == "expect_column_max_to_be_between" for f in failing)
    assert "observed" in error.metadata["results"].value
    for name in (
        "rows_reconcile",
        "quarantine_rate",
        "gx_not_null",
        "gx_ranges",
        "gx_categories",
        "gx_unique_id",
        "gx_row_count",
    ):
        assert checks[name].passed, name

    data = lake.dataset(spec.name)
    records = [data.quality(d) for d in DAYS]
    assert [r.day for r in records] == DAYS
    for r in records:
        # The error expectation fails every day; the warn one is listed but does not fail the day.
        assert r.passed is False and r.checks["gx_small_loans"] is False
        assert r.warnings == ["gx_young_applicants"]
        assert r.rows_in == r.rows_clean + r.rows_quarantined and r.reasons
        assert r.outputs["clean"].sha256 and r.schema_drift.missing_columns == (
            {"part-00001.csv": ["age"]} if r.day == DAYS[len(DAYS) // 2] else {}
        )
    assert records[0].row_count.trailing_mean is None
    assert records[-1].row_count.trailing_days == 3
    assert records[-1].row_count.trailing_mean == pytest.approx(sum(r.rows_clean for r in records[:3]) / 3)
    assert data.quality_records() == records, "one record per day, read back in day order"
    assert not any((tmp_path / "lake" / "_staging").iterdir()), "the run's staging folder is removed"


KILLABLE = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from kennel.ingestion.cleaning import clean_partition
from kennel.spec import load_spec
from kennel.spark import get_spark

spec, spark, lake = load_spec({spec!r}), get_spark(), Path({lake!r})
while True:  # cleans the days over and over until it is killed
    for day in {days!r}:
        files = sorted(Path({landing!r}, day).glob("*.csv"))
        clean_partition(spark, spec, files, day, lake / "clean" / day, lake / "quarantine" / day, lake / "_staging")
        print("done", day, flush=True)
"""


def _outputs(lake: Path) -> dict[str, object]:
    """Visible output files → their rows, in file order. (The bytes differ across Spark processes only
    in the footer's list of column encodings, which parquet-mr keeps in a hash set.)"""
    return {
        str(p.relative_to(lake)): pq.read_table(p)
        for p in sorted(lake.glob("*/*/*"))
        if not p.parts[-3].startswith("_")
    }


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    return a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)


def test_a_killed_run_leaves_no_half_written_partition_and_a_rerun_is_identical(spark, tmp_path):
    spec_path = _spec_file(tmp_path)
    spec = load_spec(spec_path)
    days = DAYS[:2]
    generate(spec, tmp_path / "landing", days=len(days), rows_per_day=300, scenario="corrupt")

    def clean_all(lake: Path) -> None:
        for day in days:
            files = sorted((tmp_path / "landing" / day).glob("*.csv"))
            clean_partition(spark, spec, files, day, lake / "clean" / day, lake / "quarantine" / day, lake / "_staging")

    reference = tmp_path / "reference"
    clean_all(reference)

    lake = tmp_path / "lake"
    script = tmp_path / "killable.py"
    script.write_text(
        KILLABLE.format(
            root=str(Path(__file__).parent.parent),
            spec=str(spec_path),
            lake=str(lake),
            days=days,
            landing=str(tmp_path / "landing"),
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        assert proc.stdout.readline().startswith("done"), "the cleaning process did not finish its first day"
        # Kill it (and its JVM) while it is writing: Spark has files in the staging folder.
        deadline = time.monotonic() + 120
        while not any(p.is_file() for p in (lake / "_staging").rglob("*")):
            assert time.monotonic() < deadline, "never caught the process mid-write"
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert any((lake / "_staging").rglob("*")), "killed mid-write: staging holds a half-written output"

    visible, expected = _outputs(lake), _outputs(reference)
    assert visible, "at least the first day was written before the kill"
    for name, rows in visible.items():
        assert name.endswith(PART_FILE), f"only whole files are visible: {name}"
        assert rows.equals(expected[name]), f"{name} is the complete output, not half of it"

    clean_all(lake)
    assert _same(_outputs(lake), expected), "the re-run writes the very same rows, in the same order"
