"""Unlabelled rows are data, and labels may come late (kennel.ingestion.labels).

Real Spark cleaning on a few small days: a blank label is a clean row with a null label, the quality
record says how much of a day is labelled, and the training set takes late labels (label files and
/feedback) by id without rewriting a past partition.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kennel.ingestion.cleaning import PART_FILE, CleaningResult, clean_partition
from kennel.ingestion.labels import LABELS_FILE, REJECTED_FILE, ingest_label_files, label_value, latest_labels
from kennel.ingestion.quality import build_record
from kennel.ingestion.reasons import Reason
from kennel.ingestion.validation import validate_dataframe
from kennel.lake import Lake, day_partition, sha256_of
from kennel.lake.records import ChampionEntry, QualityRecord
from kennel.serving.prediction_log import prediction_schema
from kennel.spec import MAX_ID_LENGTH, Label, load_spec

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
HEADER = "id,ts,amount,color,y"
SPEC = """
name: tiny
source: {uri: landing, format: csv}
start_date: 2026-01-01
timestamp_column: ts
id_column: id
label: {column: y, positive: "yes", negative: "no", late: {uri: labels, format: csv}}
split: {train_days: 1, validation_days: 1, test_days: 1}
features:
  - {name: amount, type: numeric, min: 0, max: 1000, nullable: false}
  - {name: color, type: categorical, categories: [red, green]}
"""


def _rows(day: str, labels: list[str]) -> list[str]:
    """One CSV line per label text, ids <day's digit>-<n>."""
    return [f"d{day[-1]}-{n},{day}T08:00:{n:02d},{n},red,{label}" for n, label in enumerate(labels)]


# Six of ten rows unlabelled (blank, spaces), one invalid label.
LANDED = _rows(DAYS[0], ["yes", "no", "", "  ", "", "", "", "", "YES", "maybe"])
# The clean tables of the next two days, as cleaning writes them (1 yes, 0 no, None unlabelled).
LATER = {DAYS[1]: [1, 0, None, None, 0, 1], DAYS[2]: [0, 1, None, 0, 1, 0]}


@dataclass
class _Log:
    lines: list[str] = field(default_factory=list)

    def info(self, message: str) -> None:
        self.lines.append(message)

    warning = info


@dataclass
class _Context:
    """What build_training_set and the monitoring assets ask of Dagster's context."""

    run_id: str
    log: _Log = field(default_factory=_Log)
    partition_keys: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spec")
    (folder / "spec.yaml").write_text(SPEC)
    return load_spec(folder / "spec.yaml")


@pytest.fixture(scope="module")
def cleaned(spark, spec, tmp_path_factory):
    """A lake of three published days: the first landed, cleaned by Spark and validated by GX; the next two
    written as cleaning writes them (a training set needs three days; Spark is the slow part)."""
    root = tmp_path_factory.mktemp("labels")
    lake = Lake(root / "lake")
    data = lake.dataset(spec.name)
    landed = root / "landing" / DAYS[0] / "part-0.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text("\n".join([HEADER, *LANDED]) + "\n")
    clean_dir, quarantine_dir = data.clean_version_dir(DAYS[0], "run1"), data.quarantine_version_dir(DAYS[0], "run1")
    result = clean_partition(spark, spec, [landed], DAYS[0], clean_dir, quarantine_dir, lake.staging())
    frame = spark.read.parquet(str(clean_dir)).cache()
    groups = validate_dataframe(frame, spec)
    frame.unpersist()
    records = {DAYS[0]: _published(data, spec, result, groups)}
    for day, labels in LATER.items():
        clean = pd.DataFrame(
            {
                "id": [f"d{day[-1]}-{n}" for n in range(len(labels))],
                "ts": pd.to_datetime([f"{day}T08:00:{n:02d}Z" for n in range(len(labels))]),
                "amount": [float(n) for n in range(len(labels))],
                "color": ["green"] * len(labels),
                "y": pd.array(labels, dtype="Int32"),
            }
        )
        clean_dir, quarantine_dir = data.clean_version_dir(day, "run1"), data.quarantine_version_dir(day, "run1")
        for folder, frame in (
            (clean_dir, clean),
            (quarantine_dir, pd.DataFrame({"record_id": pd.Series([], dtype="string")})),
        ):
            folder.mkdir(parents=True)
            frame.to_parquet(folder / PART_FILE, index=False)
        rows_labelled = sum(label is not None for label in labels)
        result = CleaningResult(day, len(labels), len(labels), 0, {}, rows_labelled)
        records[day] = _published(data, spec, result, [])
    return lake, records


def _published(data, spec, result: CleaningResult, groups) -> QualityRecord:
    day = result.partition
    clean_dir, quarantine_dir = data.clean_version_dir(day, "run1"), data.quarantine_version_dir(day, "run1")
    outputs = {"clean": data.digest(clean_dir / PART_FILE), "quarantine": data.digest(quarantine_dir / PART_FILE)}
    record = build_record(spec, result, groups, run_id="run1", trailing=(None, 0), outputs=outputs)
    data.publish_day(record)
    return record


def test_a_blank_label_is_clean_and_null_and_an_invalid_one_is_quarantined(cleaned, spec):
    lake, records = cleaned
    data = lake.dataset(spec.name)
    clean = pd.read_parquet(data.published(DAYS[0])).set_index("id")
    assert clean["y"].isna().sum() == 6  # "", "  " and the other blanks
    assert clean["y"].dropna().astype(int).to_dict() == {"d1-0": 1, "d1-1": 0, "d1-8": 1}
    quarantine = pd.read_parquet(data.published(DAYS[0], "quarantine"))
    assert quarantine[["record_id", "reason"]].values.tolist() == [["d1-9", Reason.invalid_label.value]]
    assert "maybe" in quarantine["detail"].iloc[0]


def test_the_quality_record_reports_the_labelled_share_and_a_mostly_unlabelled_day_passes(cleaned):
    _, records = cleaned
    first = records[DAYS[0]]
    assert (first.rows_clean, first.rows_labelled, first.rows_quarantined) == (9, 3, 1)
    assert first.labelled_share == pytest.approx(3 / 9)
    # 60% of the landed rows have no label; only the invalid one is a defect.
    assert first.quarantine_rate == pytest.approx(0.1) and first.checks["quarantine_rate"]
    assert first.checks["gx_not_null"] and first.checks["gx_ranges"] and first.passed
    assert records[DAYS[1]].labelled_share == pytest.approx(4 / 6)
    # Records written before the label counts existed still load, without them.
    old = first.model_dump(exclude={"rows_labelled", "labelled_share"})
    assert QualityRecord.model_validate(old).labelled_share is None


def test_label_value_compares_as_cleaning_does():
    words = Label(column="y", positive="Yes", negative="no")
    assert [label_value(t, words) for t in ["yes", " YES\t", "no", "No ", "", "   ", None, "y"]] == [
        1,
        1,
        0,
        0,
        None,
        None,
        None,
        None,
    ]
    numbers = Label(column="y", positive=1, negative=0)
    assert [label_value(t, numbers) for t in ["1", " 1.0", "+1e0", ".0", "0.", "1d", "0x1", "true", "1e400"]] == [
        1,
        1,
        1,
        0,
        0,
        None,
        None,
        None,
        None,
    ]


def test_a_label_file_with_bad_rows_reports_each_by_reason(spec, tmp_path):
    data = Lake(tmp_path / "lake").dataset(spec.name)
    landed = tmp_path / "labels" / DAYS[1] / "late.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text(
        "\n".join(
            [
                "y,id,note",  # its own column order, and a column the labels do not need
                "yes,d1-2,ok",
                "no,d1-3,ok",
                "yes,d1-3,a later row of the same id wins",
                "yes,,no id",
                f"yes,{'x' * (MAX_ID_LENGTH + 1)},too long",
                ",d1-4,no label",
                "perhaps,d1-5,not a label value",
                "yes,d1-6",  # a field short
            ]
        )
        + "\n"
    )
    result = ingest_label_files(spec, data, DAYS[1], [landed], tmp_path / "staging")
    assert (result.rows_in, result.rows_kept, result.rows_superseded) == (8, 2, 1)
    assert result.rejected == {
        Reason.id_too_long.value: 1,
        Reason.invalid_label.value: 1,
        Reason.missing_required.value: 2,
        Reason.unparsable_line.value: 1,
    }
    assert result.rows_in == result.rows_kept + result.rows_superseded + result.rows_rejected
    labels = pd.read_parquet(data.labels_dir(DAYS[1]) / LABELS_FILE)
    assert labels[["record_id", "label"]].values.tolist() == [["d1-2", 1], ["d1-3", 1]]
    rejected = pd.read_parquet(data.labels_dir(DAYS[1]) / REJECTED_FILE)
    assert sorted(rejected["line"]) == [5, 6, 7, 8, 9] and rejected["raw"].str.len().gt(0).all()
    assert "y: neither 'yes' nor 'no': 'perhaps'" in rejected["detail"].tolist()

    # A file without the label column: every row rejected, none dropped.
    (landed.parent / "late.csv").write_text("id,note\nd1-2,x\nd1-3,y\n")
    result = ingest_label_files(spec, data, DAYS[1], [landed], tmp_path / "staging")
    assert (result.rows_in, result.rows_kept, result.rejected) == (2, 0, {Reason.missing_column.value: 2})


def _served(spec, data, rows: list[tuple[str, str, int, str]]) -> None:
    """Prediction rows (request id, record id) and their /feedback (label, received at), as the Bento logs them."""
    predictions = pa.table(
        {
            "request_id": [r[0] for r in rows],
            "predicted_at": pa.array([datetime(2026, 1, 1, 9, tzinfo=UTC)] * len(rows), pa.timestamp("us", tz="UTC")),
            "model_tag": ["m:1"] * len(rows),
            "endpoint": ["predict"] * len(rows),
            "probability": [0.5] * len(rows),
            "predicted_label": pa.array([1] * len(rows), pa.int8()),
            "warnings": pa.array([None] * len(rows), pa.string()),
            "id": [r[1] for r in rows],
            "amount": [1.0] * len(rows),
            "color": ["red"] * len(rows),
        },
        schema=prediction_schema(spec),
    )
    folder = day_partition(data.predictions_dir(), "2026-01-01")
    folder.mkdir(parents=True)
    pq.write_table(predictions, folder / "part-1.parquet")
    at = [datetime.fromisoformat(r[3]) for r in rows]
    feedback = pa.table(
        {
            "request_id": [r[0] for r in rows],
            "actual_label": pa.array([r[2] for r in rows], pa.int8()),
            "feedback_at": pa.array(at, pa.timestamp("us", tz="UTC")),
        }
    )
    folder = day_partition(data.feedback_dir(), "2026-01-02")
    folder.mkdir(parents=True)
    pq.write_table(feedback, folder / "part-1.parquet")


def _features(data, spec) -> None:
    """The dbt `features` model of the published clean days (its columns, without dbt)."""
    warehouse = data.warehouse()
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    selects = [
        f"select id as record_id, ts as event_ts, date '{record.day}' as event_date, y as label, amount, color "
        f"from read_parquet('{data.published(record.day)}')"
        for record in data.quality_records()
    ]
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create or replace table features as " + " union all ".join(selects))


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


class _Champion:
    """The served champion as monitoring sees it: a model that scores, and its registry entry."""

    def __init__(self, data) -> None:
        self.entry = ChampionEntry(run_id="r", model_dir="m", model_tag="m:1", since="", reason="", event="promoted")
        self.model = SimpleNamespace(
            score=lambda frame: np.linspace(0.1, 0.9, len(frame)), card=SimpleNamespace(threshold=0.5)
        )


def test_training_and_performance_leave_unlabelled_rows_out_and_take_late_labels_by_id(
    cleaned, spec, tmp_path, monkeypatch
):
    from assets import monitoring
    from assets.training import build_training_set
    from resources.lake import LakeResource

    lake, _ = cleaned
    data = lake.dataset(spec.name)
    past = {table: _digests(lake.root / table) for table in ("clean", "quarantine")}
    assert past["clean"] and past["quarantine"]

    # Day 1's unlabelled rows d1-2 … d1-7: a label file on 2026-01-02 (labelled as of the day's end, 2026-01-03
    # 00:00) for d1-2, d1-3 and d1-4 (d1-4 also says "no" for d1-0, whose landed "yes" stands), and feedback for
    # d1-3 (after the file: it wins), d1-4 (before it: the file wins) and d1-5 (no file: taken).
    landed = tmp_path / "labels" / DAYS[1] / "late.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text("id,y\nd1-2,yes\nd1-3,yes\nd1-4,yes\nd1-0,no\n")
    ingest_label_files(spec, data, DAYS[1], [landed], lake.staging())
    _served(
        spec,
        data,
        [
            ("r3", "d1-3", 0, "2026-01-03T10:00:00+00:00"),
            ("r4", "d1-4", 0, "2026-01-02T10:00:00+00:00"),
            ("r5", " d1-5", 0, "2026-01-02T11:00:00+00:00"),
        ],
    )
    late = latest_labels(spec, data).set_index("record_id")
    assert late["label"].to_dict() == {"d1-0": 0, "d1-2": 1, "d1-3": 0, "d1-4": 1, "d1-5": 0}
    assert late.loc["d1-3", "source"] == "feedback" and late.loc["d1-4", "source"] == "file"

    _features(data, spec)
    context = _Context(run_id="training-run")
    result = build_training_set(context, spec, LakeResource(root=str(lake.root)))

    train = pd.read_parquet(data.training_file("train")).set_index("record_id")
    assert train["label"].to_dict() == {"d1-0": 1, "d1-1": 0, "d1-2": 1, "d1-3": 0, "d1-4": 1, "d1-5": 0, "d1-8": 1}
    for split in ("validation", "test"):
        assert pd.read_parquet(data.training_file(split))["label"].notna().all()
    meta = result.metadata or {}
    # d1-6, d1-7 (day 1), d2-2, d2-3 (day 2) and d3-2 (day 3) have no label anywhere.
    assert (meta["unlabelled_left_out"], meta["labels_came_late"]) == (5, 4)
    assert any("left out 5 unlabelled row(s)" in line for line in context.log.lines)

    # Realized performance joins the same labels; the served rows of records that landed count once.
    monkeypatch.setattr(monitoring, "ServedChampion", _Champion)
    context = _Context(run_id="monitoring-run", partition_keys=[DAYS[0]])
    performance = monitoring.measure_realized_performance(context, spec, data)
    record = data.monitoring_records("realized_performance")[DAYS[0]]
    assert (record.status, record.rows, record.late_labelled_rows) == ("ok", 7, 4)
    assert (performance.metadata or {})["labels_came_late"] == 4

    # Nothing of a past partition was rewritten.
    assert {table: _digests(lake.root / table) for table in ("clean", "quarantine")} == past


def test_the_late_labels_asset_ingests_the_days_label_files(spec, tmp_path):
    import dagster as dg
    from dagster_aws.s3 import S3Resource

    from assets.graph import DatasetGraph
    from assets.ingestion import build_ingestion_assets
    from resources.lake import LakeResource

    landed = Path(spec.spec_path).parent / "labels" / DAYS[1] / "part-0.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text("id,y\nd1-2,yes\nd1-3,no\nd1-4,unknown\n")
    graph = DatasetGraph(spec.name)
    late_labels = next(a for a in build_ingestion_assets(spec, graph) if graph.late_labels in a.keys)
    lake = LakeResource(root=str(tmp_path / "lake"))
    result = dg.materialize([late_labels], partition_key=DAYS[1], resources={"lake": lake, "s3": S3Resource()})

    meta = result.asset_materializations_for_node(late_labels.op.name)[0].metadata
    assert (meta["labels"].value, meta["rejected"].value) == (2, 1)
    data = lake.dataset(spec.name)
    assert data.labelled_days() == [DAYS[1]]
    assert latest_labels(spec, data)["label"].tolist() == [1, 0]
