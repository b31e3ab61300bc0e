"""The lake: one root holding everything Kennel writes, and the only module that knows its layout.

Layout under the root (a local folder; an s3:// lake is worked on in a local mirror of the same
layout, see resources/lake.py):

    raw/<dataset>/<day>/…                              landed files, copied unchanged
    clean/<dataset>/date=<day>/v-<run>/part-00000.parquet  typed, deduplicated rows of the day
    quarantine/<dataset>/date=<day>/v-<run>/part-00000.parquet rows that failed cleaning, with reasons
    quality/<dataset>/<day>.json                       QualityRecord: publishes one version of the day
    warehouse/<dataset>.duckdb                         dbt feature models (rebuilt by each training run)
    training/<dataset>/v-<run>/{train,validation,test}.parquet  training sets
    training/<dataset>/current.json                    TrainingSetRecord: publishes one of them
    models/<dataset>/<run id>/                         a model folder (kennel.model) + its records
    monitoring/<dataset>/<day>/<kind>.json             MonitoringRecord per day and kind
    monitoring/<dataset>/decisions.jsonl               RetrainDecisionRecord log
    registry/<dataset>/                                champion pointer, history, gate decisions
    predictions/<dataset>/date=<day>/*.parquet         the serving prediction log
    feedback/<dataset>/date=<day>/*.parquet            labels sent to /feedback
    labels/<dataset>/date=<day>/{labels,rejected}.parquet  late labels landed as files that day, and their bad rows
    serving/<dataset>/request_id.key                   the key that signs request ids (mode 0600)
    _staging/                                          half-written outputs before their atomic swap

Callers ask for a location by what it holds (`lake.dataset(name).clean_dir(day)`) and read and write
records through the methods here, so the layout and the record formats change in one place.

Write-audit-publish: a run writes a day's clean and quarantine tables (or a training set) into a
version folder of its own, checks them, and publishes them by replacing one small record, written
last and atomically: the quality record of the day (the training-set record). A crash at any instant
leaves the previous record, still naming the previous version's intact files, or the new one.
Readers take files only through the records and verify their size and SHA-256 first
(`LakeIntegrityError` otherwise). The crash points of this code are in kennel/lake/faults.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from kennel.lake.faults import crash_point
from kennel.lake.records import (
    EvaluationRecord,
    FileDigest,
    GateDecision,
    MonitoringKind,
    MonitoringRecord,
    QualityRecord,
    RetrainDecisionRecord,
    ShadowEvaluationRecord,
    TrainingRecord,
    TrainingSetRecord,
)
from kennel.spec import PROJECT_ROOT

LAKE_ROOT_ENV = "KENNEL_LAKE_ROOT"
DEFAULT_ROOT = PROJECT_ROOT / ".kennel" / "lake"  # the embedded default: inside the project folder
MIRROR_ENV = "KENNEL_LAKE_MIRROR"
DEFAULT_MIRROR = PROJECT_ROOT / ".kennel" / "lake-mirror"  # the local working folder of an s3:// lake


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


def configured_mirror() -> str:
    """The local working folder of an s3:// lake: $KENNEL_LAKE_MIRROR as set, else DEFAULT_MIRROR."""
    return os.environ.get(MIRROR_ENV) or str(DEFAULT_MIRROR)


_DAY_DATA_WRITTEN = crash_point(
    "day.data_written", "the run's clean and quarantine files are in its version folder; the record is not"
)
_DAY_RECORD_WRITTEN = crash_point(
    "day.record_written", "the new quality record publishes the new version; older versions are still on disk"
)
_TRAINING_SET_WRITTEN = crash_point(
    "training_set.written", "the new training set is in its version folder; the record is not"
)
_TRAINING_SET_RECORD_WRITTEN = crash_point(
    "training_set.record_written", "the new training-set record is written; older versions are still on disk"
)


class LakeIntegrityError(RuntimeError):
    """A file in the lake is not what the record that publishes it says: refuse to use it."""


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks: what every checksum in Kennel compares."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: Path, lake_root: Path) -> FileDigest:
    """What a record says about a file it publishes (its path relative to the lake root)."""
    return FileDigest(file=path.relative_to(lake_root).as_posix(), bytes=path.stat().st_size, sha256=sha256_of(path))


def verified(path: Path, expected: FileDigest, lake_root: Path, what: str) -> Path:
    """`path`, once its size and SHA-256 match `expected`; LakeIntegrityError (naming `what`) otherwise."""
    if not path.is_file():
        raise LakeIntegrityError(f"{what}: {path} is missing; the record that publishes it cannot be used")
    actual = file_digest(path, lake_root) if path.is_relative_to(lake_root) else None
    if actual is None or (actual.bytes, actual.sha256) != (expected.bytes, expected.sha256):
        found = f"{actual.bytes} bytes, sha256 {actual.sha256}" if actual else "a file outside the lake"
        raise LakeIntegrityError(
            f"{what}: {path} holds {found}, but its record says {expected.bytes} bytes, sha256 {expected.sha256}; "
            "refusing to read it (re-run the step that writes it)"
        )
    return path


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock (a file next to what it guards) while publishing: one publisher at a time."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fsync_path(path: Path) -> None:
    """fsync a file or folder by path (a folder: so a rename or a new entry in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


class _ParsedDayRecords:
    """Per-day record files, parsed once per content. A sensor tick reads every day's quality and
    monitoring records (up to four a day: ~4,400 files over three years), and between two ticks almost
    none changes: reading the bytes again is cheap, validating them is not. A file whose bytes are those
    parsed before gives the same record (records are frozen, so it is shared); file metadata would not do
    (an inode is reused, timestamps are coarse). Bounded: past `limit` entries the cache starts over."""

    def __init__(self, limit: int = 20_000):  # three years of a data set's four kinds of daily records, and more
        self.limit = limit
        self._parsed: dict[tuple[str, type[BaseModel]], tuple[bytes, BaseModel]] = {}

    def read[R: BaseModel](self, path: str, model: type[R]) -> R | None:
        """The record in the file at `path`; None when there is no such file."""
        try:
            with open(path, "rb") as file:
                content = file.read()
        except FileNotFoundError:
            return None
        key = (path, model)
        hit = self._parsed.get(key)
        if hit is not None and hit[0] == content:
            return hit[1]  # type: ignore[return-value]  # stored under its model type
        record = model.model_validate_json(content)
        if len(self._parsed) >= self.limit:
            self._parsed.clear()
        self._parsed[key] = (content, record)
        return record


_DAY_RECORDS = _ParsedDayRecords()


def _entry_names(folder: Path, *, directories: bool) -> list[str]:
    """Names of the folders (or else the files) in `folder`, in no particular order; none when it is
    missing. One directory listing: per-day records are read by name, with no pattern matching (a
    glob over three years of day folders cost a sensor tick more than reading the records)."""
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if e.is_dir() == directories]
    except FileNotFoundError:
        return []


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
        """The day's folder of clean tables: one version folder per run that wrote the day."""
        return day_partition(self.clean_root(), day)

    def clean_version_dir(self, day: str, version: str) -> Path:
        return self.clean_dir(day) / f"v-{version}"

    def quarantine_root(self) -> Path:
        return self.lake.root / "quarantine" / self.name

    def quarantine_dir(self, day: str) -> Path:
        return day_partition(self.quarantine_root(), day)

    def quarantine_version_dir(self, day: str, version: str) -> Path:
        return self.quarantine_dir(day) / f"v-{version}"

    def training_dir(self) -> Path:
        return self.lake.root / "training" / self.name

    def training_version_dir(self, version: str) -> Path:
        return self.training_dir() / f"v-{version}"

    def model_dir(self, run_id: str) -> Path:
        return self.lake.root / "models" / self.name / run_id

    def registry_dir(self) -> Path:
        return self.lake.root / "registry" / self.name

    def predictions_dir(self) -> Path:
        return self.lake.root / "predictions" / self.name

    def feedback_dir(self) -> Path:
        return self.lake.root / "feedback" / self.name

    def shadow_predictions_dir(self) -> Path:
        """A shadow challenger's scores of served requests, by request id (kennel.serving.prediction_log)."""
        return self.lake.root / "shadow_predictions" / self.name

    def batch_scores_dir(self) -> Path:
        """Scores of whole tables by the champion (kennel.serving.batch), one folder per day."""
        return self.lake.root / "batch_scores" / self.name

    def cards_dir(self) -> Path:
        """Human-readable model cards (HTML), one folder per model run (kennel.training.card_page)."""
        return self.lake.root / "cards" / self.name

    def warehouse(self) -> Path:
        """The DuckDB file of the data set's dbt models: one per data set, so two data sets' dbt runs
        never write one file."""
        return self.lake.root / "warehouse" / f"{self.name}.duckdb"

    def labels_root(self) -> Path:
        """Late labels (kennel.ingestion.labels): one folder per day on which label files landed."""
        return self.lake.root / "labels" / self.name

    def labels_dir(self, day: str) -> Path:
        return day_partition(self.labels_root(), day)

    def labelled_days(self) -> list[str]:
        """The days with a late-labels folder, oldest first."""
        if not self.labels_root().is_dir():
            return []
        return sorted(day for folder in self.labels_root().iterdir() if (day := partition_day(folder)))

    def request_id_key_path(self) -> Path:
        """The secret that signs the served request ids (kennel.serving.request_ids); never log it."""
        return self.lake.root / "serving" / self.name / "request_id.key"

    # --- quality records -------------------------------------------------------------------------------

    def quality_dir(self) -> Path:
        return self.lake.root / "quality" / self.name

    def quality_path(self, day: str) -> Path:
        return self.quality_dir() / f"{day}.json"

    def quality(self, day: str) -> QualityRecord | None:
        return read_record(self.quality_path(day), QualityRecord)

    def quality_records(self) -> list[QualityRecord]:
        """Every day's quality record, oldest day first."""
        folder = self.quality_dir()
        names = sorted(name for name in _entry_names(folder, directories=False) if name.endswith(".json"))
        return [r for name in names if (r := _DAY_RECORDS.read(f"{folder}/{name}", QualityRecord)) is not None]

    def write_quality(self, record: QualityRecord) -> Path:
        path = self.quality_path(record.day)
        write_atomically(path, record.model_dump_json(indent=2))
        return path

    def passed_validation(self, day: str) -> bool:
        record = self.quality(day)
        return record is not None and record.passed

    def digest(self, path: Path) -> FileDigest:
        return file_digest(path, self.lake.root)

    def _output_path(self, record: QualityRecord, table: str) -> Path:
        digest = record.outputs[table]
        if record.version >= 3:
            return self.lake.root / digest.file
        # Version 2 records name a file in the day's folder itself (one version per day, overwritten).
        folder = self.clean_dir(record.day) if table == "clean" else self.quarantine_dir(record.day)
        return folder / digest.file

    def published(self, day: str, table: str = "clean") -> Path | None:
        """The published clean (or quarantine) file of `day`, verified; None when no record publishes one."""
        record = self.quality(day)
        if record is None or table not in record.outputs:
            return None
        return verified(
            self._output_path(record, table),
            record.outputs[table],
            self.lake.root,
            f"the {table} table of {self.name} {day}",
        )

    def published_clean_files(self) -> list[Path]:
        """Every day's published clean file, verified, oldest day first (what the feature models read)."""
        return [path for record in self.quality_records() if (path := self.published(record.day)) is not None]

    def publish_day(self, record: QualityRecord) -> Path:
        """Publish the version of a day that `record` describes: check its files, replace the day's record,
        then remove every other version of the day. One publisher per day at a time; a run whose files
        were removed by a concurrent publisher of the same day fails here instead of publishing them."""
        _DAY_DATA_WRITTEN()
        with exclusive(self.quality_dir() / f".{record.day}.lock"):
            kept = {}
            for table in ("clean", "quarantine"):
                path = self._output_path(record, table)
                verified(
                    path, record.outputs[table], self.lake.root, f"the new {table} table of {self.name} {record.day}"
                )
                kept[table] = path.parent
            path = self.write_quality(record)
            _DAY_RECORD_WRITTEN()
            for version_dir in kept.values():
                day_dir = version_dir.parent
                for other in day_dir.iterdir():
                    if other != version_dir:
                        shutil.rmtree(other) if other.is_dir() else other.unlink()
        return path

    # --- the training set ---------------------------------------------------------------------------------

    def training_set(self) -> TrainingSetRecord | None:
        return read_record(self.training_dir() / "current.json", TrainingSetRecord)

    def training_file(self, split: str) -> Path:
        """The published training set's file of `split` ("train", "validation", "test"), verified."""
        record = self.training_set()
        if record is None:
            raise LakeIntegrityError(f"{self.name} has no published training set: materialize training_set")
        return verified(
            self.lake.root / record.files[split].file,
            record.files[split],
            self.lake.root,
            f"the {split} split of {self.name}'s training set {record.version}",
        )

    def publish_training_set(self, version: str, days: dict[str, list[str]]) -> TrainingSetRecord:
        """Publish the training set written in `training_version_dir(version)` (one Parquet file per
        split), then remove the other versions."""
        folder = self.training_version_dir(version)
        record = TrainingSetRecord(
            version=version,
            written_at=datetime.now(UTC).isoformat(),
            days=days,
            files={split: self.digest(folder / f"{split}.parquet") for split in days},
        )
        _TRAINING_SET_WRITTEN()
        with exclusive(self.training_dir() / ".lock"):
            write_atomically(self.training_dir() / "current.json", record.model_dump_json(indent=2))
            _TRAINING_SET_RECORD_WRITTEN()
            for other in self.training_dir().iterdir():
                if other.is_dir() and other != folder:
                    shutil.rmtree(other)
                elif other.suffix == ".parquet":  # the single, unversioned training set older releases wrote
                    other.unlink()
        return record

    # --- monitoring records and the decision log ------------------------------------------------------

    def monitoring_dir(self) -> Path:
        return self.lake.root / "monitoring" / self.name

    def monitoring_path(self, day: str, kind: MonitoringKind) -> Path:
        return self.monitoring_dir() / day / f"{kind}.json"

    def monitoring_records(self, kind: MonitoringKind) -> dict[str, MonitoringRecord]:
        """Day → what the monitoring asset of `kind` recorded (small files: cheap enough for a sensor tick)."""
        folder = self.monitoring_dir()
        records = {}
        for day in sorted(_entry_names(folder, directories=True)):
            record = _DAY_RECORDS.read(f"{folder}/{day}/{kind}.json", MonitoringRecord)
            if record is not None:
                records[day] = record
        return records

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

    def append_decisions(self, decisions: list[RetrainDecisionRecord]) -> list[RetrainDecisionRecord]:
        """Log the decisions whose id is not logged yet, and return them: evaluating the sensor twice on
        the same evidence (a preview and a tick, two ticks from one cursor) logs each decision once. The
        lock makes the check and the append one step for concurrent evaluations."""
        if not decisions:
            return []
        log = self.decision_log()
        with exclusive(log.with_name(f".{log.name}.lock")):
            logged = {d.decision_id for d in read_lines(log, RetrainDecisionRecord) if d.decision_id}
            new: list[RetrainDecisionRecord] = []
            for decision in decisions:
                if decision.decision_id in logged:
                    continue
                new.append(decision)
                if decision.decision_id:
                    logged.add(decision.decision_id)
            if new:
                append_lines(log, list(new))
        return new


_MODEL_RECORD_FILES: dict[type[BaseModel], str] = {
    TrainingRecord: "training.json",  # how the model was trained
    EvaluationRecord: "evaluation.json",  # the model on its test window
    GateDecision: "gate_decision.json",  # the gate's verdict (what promotion reads)
    ShadowEvaluationRecord: "shadow_evaluation.json",  # the verdict on live traffic (what a shadow promotion reads)
}

type ModelRecord = TrainingRecord | EvaluationRecord | GateDecision | ShadowEvaluationRecord


def write_model_record(model_dir: Path, record: ModelRecord) -> Path:
    """Keep a record about a model in its model folder."""
    path = Path(model_dir) / _MODEL_RECORD_FILES[type(record)]
    write_atomically(path, record.model_dump_json(indent=2))
    return path


def read_model_record[R: BaseModel](model_dir: Path, model: type[R]) -> R | None:
    return read_record(Path(model_dir) / _MODEL_RECORD_FILES[model], model)
