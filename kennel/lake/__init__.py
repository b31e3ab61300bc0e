"""The lake: one root holding everything Kennel writes, and the only module that knows its layout.

Layout under the root (a local folder; an s3:// lake is worked on in a local mirror of the same
layout, see resources/lake.py):

    raw/<dataset>/<day>/…                              landed files, copied unchanged
    clean/<dataset>/date=<day>/part-00000.parquet      typed, deduplicated rows of the day
    quarantine/<dataset>/date=<day>/part-00000.parquet rows that failed cleaning, with reasons
    quality/<dataset>/<day>.json                       QualityRecord (written after the data)
    warehouse.duckdb                                   dbt feature models
    training/<dataset>/{train,validation,test}.parquet the current training set
    models/<dataset>/<run id>/                         a model folder (kennel.model) + its records
    monitoring/<dataset>/<day>/<kind>.json             MonitoringRecord per day and kind
    monitoring/<dataset>/decisions.jsonl               RetrainDecisionRecord log
    registry/<dataset>/                                champion pointer, history, gate decisions
    predictions/<dataset>/date=<day>/*.parquet         the serving prediction log
    feedback/<dataset>/date=<day>/*.parquet            labels sent to /feedback
    _staging/                                          half-written outputs before their atomic swap

Callers ask for a location by what it holds (`lake.dataset(name).clean_dir(day)`) and read and write
records through the methods here, so the layout and the record formats change in one place.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from pydantic import BaseModel

from kennel.lake.records import (
    EvaluationRecord,
    GateDecision,
    MonitoringKind,
    MonitoringRecord,
    QualityRecord,
    RetrainDecisionRecord,
    TrainingRecord,
)
from kennel.spec import PROJECT_ROOT

LAKE_ROOT_ENV = "KENNEL_LAKE_ROOT"
DEFAULT_ROOT = PROJECT_ROOT / ".kennel" / "lake"  # the embedded default: inside the project folder


_DAY_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def day_partition(folder: Path, day: str) -> Path:
    """The folder of `day` inside a day-partitioned table (hive style, so DuckDB and Spark read the day)."""
    return folder / f"date={day}"


def partition_day(folder: Path) -> str | None:
    """The day a `day_partition` folder holds, or None for any other folder."""
    match = _DAY_PARTITION.match(folder.name)
    return match.group(1) if match else None


def configured_root() -> str:
    """The lake every Kennel entry point (the project, the CLI, the demo, a Bento from a checkout) uses
    unless told otherwise: $KENNEL_LAKE_ROOT as set (a folder or an s3:// URI), else DEFAULT_ROOT."""
    return os.environ.get(LAKE_ROOT_ENV) or str(DEFAULT_ROOT)


def write_atomically(path: Path, text: str) -> None:
    """Write beside the target, fsync, rename: readers see the previous file or this one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_lines(path: Path, records: list[BaseModel]) -> None:
    """Append records to a JSON-lines log, fsynced (an audit log must not lose acknowledged lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_lines[R: BaseModel](path: Path, model: type[R]) -> list[R]:
    if not path.is_file():
        return []
    return [model.model_validate_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_record[R: BaseModel](path: Path, model: type[R]) -> R | None:
    return model.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None


class Lake:
    """A lake on local disk (for an s3:// lake: its local mirror)."""

    def __init__(self, root: str | os.PathLike[str]):
        if "://" in str(root):
            raise ValueError(f"{root} is not a local folder: an s3:// lake is worked on in its local mirror")
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    def dataset(self, name: str) -> DatasetLake:
        return DatasetLake(self, name)

    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    def staging(self) -> Path:
        return self.root / "_staging"


class DatasetLake:
    """One data set's part of a lake: its locations and its records."""

    def __init__(self, lake: Lake, name: str):
        self.lake, self.name = lake, name

    # --- data ------------------------------------------------------------------------------------------

    def raw_root(self) -> Path:
        return self.lake.root / "raw" / self.name

    def raw_dir(self, day: str) -> Path:
        return self.raw_root() / day

    def clean_root(self) -> Path:
        return self.lake.root / "clean" / self.name

    def clean_dir(self, day: str) -> Path:
        return day_partition(self.clean_root(), day)

    def clean_glob(self) -> str:
        """Every day's clean Parquet file, as a glob DuckDB reads with hive partitioning (the dbt source)."""
        return str(self.clean_root()) + "/*/*.parquet"

    def quarantine_root(self) -> Path:
        return self.lake.root / "quarantine" / self.name

    def quarantine_dir(self, day: str) -> Path:
        return day_partition(self.quarantine_root(), day)

    def training_dir(self) -> Path:
        return self.lake.root / "training" / self.name

    def model_dir(self, run_id: str) -> Path:
        return self.lake.root / "models" / self.name / run_id

    def registry_dir(self) -> Path:
        return self.lake.root / "registry" / self.name

    def predictions_dir(self) -> Path:
        return self.lake.root / "predictions" / self.name

    def feedback_dir(self) -> Path:
        return self.lake.root / "feedback" / self.name

    # --- quality records -------------------------------------------------------------------------------

    def quality_dir(self) -> Path:
        return self.lake.root / "quality" / self.name

    def quality_path(self, day: str) -> Path:
        return self.quality_dir() / f"{day}.json"

    def quality(self, day: str) -> QualityRecord | None:
        return read_record(self.quality_path(day), QualityRecord)

    def quality_records(self) -> list[QualityRecord]:
        """Every day's quality record, oldest day first."""
        return [
            QualityRecord.model_validate_json(p.read_text(encoding="utf-8"))
            for p in sorted(self.quality_dir().glob("*.json"))
        ]

    def write_quality(self, record: QualityRecord) -> Path:
        path = self.quality_path(record.day)
        write_atomically(path, record.model_dump_json(indent=2))
        return path

    def passed_validation(self, day: str) -> bool:
        record = self.quality(day)
        return record is not None and record.passed

    # --- monitoring records and the decision log ------------------------------------------------------

    def monitoring_dir(self) -> Path:
        return self.lake.root / "monitoring" / self.name

    def monitoring_path(self, day: str, kind: MonitoringKind) -> Path:
        return self.monitoring_dir() / day / f"{kind}.json"

    def monitoring_records(self, kind: MonitoringKind) -> dict[str, MonitoringRecord]:
        """Day → what the monitoring asset of `kind` recorded (small files: cheap enough for a sensor tick)."""
        return {
            p.parent.name: MonitoringRecord.model_validate_json(p.read_text(encoding="utf-8"))
            for p in sorted(self.monitoring_dir().glob(f"*/{kind}.json"))
        }

    def write_monitoring(self, record: MonitoringRecord) -> Path:
        if record.kind is None:
            raise ValueError("a monitoring record needs its kind to be written")
        path = self.monitoring_path(record.day, record.kind)
        write_atomically(path, record.model_dump_json(indent=2))
        return path

    def decision_log(self) -> Path:
        return self.monitoring_dir() / "decisions.jsonl"

    def decisions(self) -> list[RetrainDecisionRecord]:
        return read_lines(self.decision_log(), RetrainDecisionRecord)

    def append_decisions(self, decisions: list[RetrainDecisionRecord]) -> None:
        append_lines(self.decision_log(), list(decisions))


_MODEL_RECORD_FILES: dict[type[BaseModel], str] = {
    TrainingRecord: "training.json",  # how the model was trained
    EvaluationRecord: "evaluation.json",  # the model on its test window
    GateDecision: "gate_decision.json",  # the gate's verdict (what promotion reads)
}


def write_model_record(model_dir: Path, record: TrainingRecord | EvaluationRecord | GateDecision) -> Path:
    """Keep a record about a model in its model folder."""
    path = Path(model_dir) / _MODEL_RECORD_FILES[type(record)]
    write_atomically(path, record.model_dump_json(indent=2))
    return path


def read_model_record[R: BaseModel](model_dir: Path, model: type[R]) -> R | None:
    return read_record(Path(model_dir) / _MODEL_RECORD_FILES[model], model)
