"""Late labels: outcomes that become known after their records landed.

A clean row may have no label (the outcome is not known yet, or never will be): cleaning keeps it, with
a null label, for drift monitoring and scoring. Its label may arrive later, from two places:

- **label files** landed in the spec's `label.late.uri` folder (`label: {…, late: {uri, format,
  options}}`), each holding the spec's id column and label column, the day in its path as for the
  source (kennel.ingestion.landing). `ingest_label_files` reads a day's files and writes the lake's
  labels table for that day (`DatasetLake.labels_dir`): `labels.parquet` holds one row per id (the
  day's last valid row for it), `rejected.parquet` every row that is no label, with its reason
  (kennel.ingestion.reasons), a detail naming the column and value, and the original record. Every
  row is counted in one of them or as superseded by a later row of its id (`LabelFileResult`).
- **the Bento's /feedback** (kennel.serving.prediction_log), joined to the prediction log by
  request_id: a prediction row carries the record's id column.

`latest_labels` gives the latest label per id from both. A label file's labels count as of the end of
its day (a daily file is complete once its day is over), feedback as of when it was received; on a tie
feedback wins. Past clean and quarantine partitions are never rewritten: the training set and realized
performance take `coalesce(label in the clean row, late label)` by id when they are built.
"""

from __future__ import annotations

import csv
import json
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.ingestion.cleaning import NUMBER_GRAMMAR, escaped, is_blank, landed_lines
from kennel.ingestion.reasons import Reason
from kennel.lake import DatasetLake
from kennel.spec import MAX_ID_LENGTH, PROJECT_ROOT, WHITESPACE, DatasetSpec, Label, LateLabels, SpecError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

LABELS_FILE = "labels.parquet"
REJECTED_FILE = "rejected.parquet"
# Where a late label came from, in the order that breaks a tie of labelled_at (the later one wins).
SOURCES = ("file", "feedback")
_NUMBER = re.compile(rf"(?:{NUMBER_GRAMMAR})")


def late_labels_location(spec: DatasetSpec) -> str:
    """The spec's label folder, a local relative path resolved against the spec file's folder. Like the
    source, a relative path stays inside that folder (or the Kennel project, for a spec kept in it)."""
    late = _late(spec)
    if late.uri.startswith("s3://") or not spec.spec_path or Path(late.uri).is_absolute():
        return late.uri
    folder = Path(spec.spec_path).parent
    target = Path(os.path.normpath(folder / late.uri))  # as written: a link inside may lead anywhere
    bounds = [folder, PROJECT_ROOT] if folder.is_relative_to(PROJECT_ROOT) else [folder]
    if not any(target.is_relative_to(bound) for bound in bounds):
        raise SpecError(
            f"data-set spec {spec.spec_path}: label.late.uri {late.uri!r} leads to {target}, outside "
            f"{bounds[-1]}; a relative uri may not climb out of it (write an absolute path to read elsewhere)"
        )
    return str(target.resolve())


def _late(spec: DatasetSpec) -> LateLabels:
    if spec.label.late is None:
        raise ValueError(f"data-set spec {spec.spec_path or spec.name} declares no label.late folder")
    return spec.label.late


def label_value(text: str | None, label: Label) -> int | None:
    """1 for the positive label value, 0 for the negative one, None for anything else (blank included).

    Cleaning's comparison (kennel.ingestion.cleaning._label_matches), in Python: trimmed of WHITESPACE, a
    numeric label value compares as a number with text in the number grammar, any other as text ignoring
    case."""
    if text is None:
        return None
    trimmed = text.strip(WHITESPACE)
    for value, meaning in ((label.positive, 1), (label.negative, 0)):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if _NUMBER.fullmatch(trimmed) and float(trimmed) == float(value):
                return meaning
        elif trimmed.lower() == str(value).lower():
            return meaning
    return None


# --- reading label files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One landed row: its id and label text (None where absent), once judged its label value (1/0), or
    why it is no label."""

    source_file: str
    line: int  # line number (text files) or row number from 1 (Parquet)
    raw: str
    record_id: str | None = None
    label: str | None = None
    value: int | None = None
    reason: Reason | None = None
    detail: str = ""


def _as_text(value: Any) -> str | None:
    """A JSON or Parquet value as the text cleaning would compare (Spark's string form of it)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _csv_rows(spec: DatasetSpec, path: Path, options: dict[str, Any]) -> list[_Row]:
    delimiter = str(options.get("delimiter", ","))
    lines = [(n, line) for n, line in landed_lines(path) if not is_blank(line)]
    if not lines:
        return []
    (header_line, header_bytes), data = lines[0], lines[1:]
    try:
        header = [h.strip(WHITESPACE) for h in next(csv.reader([header_bytes.decode("utf-8")], delimiter=delimiter))]
    except (UnicodeDecodeError, csv.Error) as exc:
        return _whole_file(path, data, Reason.unreadable_file, f"its header (line {header_line}) cannot be read: {exc}")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        return _whole_file(path, data, Reason.unreadable_file, f"the header names {', '.join(twice)} more than once")
    absent = [c for c in (spec.id_column, spec.label.column) if c not in header]
    if absent:
        return _whole_file(path, data, Reason.missing_column, f"file lacks required column(s): {', '.join(absent)}")
    rows = []
    for number, line in data:
        try:
            fields = next(csv.reader([line.decode("utf-8")], delimiter=delimiter, strict=True))
        except (UnicodeDecodeError, csv.Error) as exc:
            rows.append(_Row(path.name, number, escaped(line), reason=Reason.unparsable_line, detail=f"line {exc}"))
            continue
        if len(fields) != len(header):
            why = f"{len(fields)} fields where the header names {len(header)}"
            rows.append(_Row(path.name, number, escaped(line), reason=Reason.unparsable_line, detail=why))
            continue
        record = dict(zip(header, fields, strict=True))
        rows.append(_Row(path.name, number, escaped(line), record[spec.id_column], record[spec.label.column]))
    return rows


def _jsonl_rows(spec: DatasetSpec, path: Path) -> list[_Row]:
    rows = []
    for number, line in landed_lines(path):
        if is_blank(line):
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            rows.append(_Row(path.name, number, escaped(line), reason=Reason.unparsable_line, detail=f"line {exc}"))
            continue
        if not isinstance(record, dict):
            rows.append(
                _Row(path.name, number, escaped(line), reason=Reason.unparsable_line, detail="not a JSON object")
            )
            continue
        id_text, label_text = _as_text(record.get(spec.id_column)), _as_text(record.get(spec.label.column))
        rows.append(_Row(path.name, number, escaped(line), id_text, label_text))
    return rows


def _parquet_rows(spec: DatasetSpec, path: Path) -> list[_Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        note = f"<{path.stat().st_size} bytes that cannot be read as Parquet>"
        return [_Row(path.name, 1, note, reason=Reason.unreadable_file, detail=f"file {path.name}: {exc}")]
    records = table.to_pylist()
    raws = [json.dumps(r, default=str) for r in records]
    absent = [c for c in (spec.id_column, spec.label.column) if c not in table.column_names]
    if absent:
        detail = f"file lacks required column(s): {', '.join(absent)}"
        return [_Row(path.name, n, raw, reason=Reason.missing_column, detail=detail) for n, raw in enumerate(raws, 1)]
    return [
        _Row(path.name, n, raw, _as_text(r[spec.id_column]), _as_text(r[spec.label.column]))
        for n, (r, raw) in enumerate(zip(records, raws, strict=True), 1)
    ]


def _whole_file(path: Path, data: list[tuple[int, bytes]], reason: Reason, detail: str) -> list[_Row]:
    return [_Row(path.name, n, escaped(line), reason=reason, detail=f"file {path.name}: {detail}") for n, line in data]


def _judged(spec: DatasetSpec, row: _Row) -> _Row:
    """The row with its id trimmed and its label value, or with the reason it is no label."""
    if row.reason is not None:
        return row
    record_id = (row.record_id or "").strip(WHITESPACE)
    label_text = (row.label or "").strip(WHITESPACE)
    if not record_id:
        return _rejected(row, Reason.missing_required, f"{spec.id_column}: required value is empty")
    if len(record_id) > MAX_ID_LENGTH:
        return _rejected(row, Reason.id_too_long, f"{spec.id_column}: longer than {MAX_ID_LENGTH} characters")
    if not label_text:
        return _rejected(row, Reason.missing_required, f"{spec.label.column}: required value is empty")
    value = label_value(label_text, spec.label)
    if value is None:
        expected = f"neither {spec.label.positive!r} nor {spec.label.negative!r}"
        return _rejected(row, Reason.invalid_label, f"{spec.label.column}: {expected}: '{label_text[:80]}'")
    return _Row(row.source_file, row.line, row.raw, record_id, label_text, value)


def _rejected(row: _Row, reason: Reason, detail: str) -> _Row:
    return _Row(row.source_file, row.line, row.raw, reason=reason, detail=detail)


# --- ingesting a day ---------------------------------------------------------------------------------


@dataclass
class LabelFileResult:
    """What one day's label files held: every row is kept, superseded or rejected with a reason."""

    day: str
    files: list[str]
    rows_in: int  # data rows (a CSV file's header is none; an unreadable Parquet file counts as one)
    rows_kept: int  # one per id: the day's last valid row for it
    rows_superseded: int  # valid rows of an id that a later row of the same day replaced
    rejected: dict[str, int] = field(default_factory=dict)  # reason → rows
    rejected_sample: list[dict[str, Any]] = field(default_factory=list)  # the first few, for people to look at

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())


def _read_label_files(spec: DatasetSpec, files: list[Path]) -> list[_Row]:
    """Every data row of the label files, judged, in file-name then line order."""
    late = _late(spec)
    rows: list[_Row] = []
    for path in sorted(files, key=lambda p: p.name):
        if late.format == "csv":
            rows += _csv_rows(spec, path, late.options)
        elif late.format == "jsonl":
            rows += _jsonl_rows(spec, path)
        else:
            rows += _parquet_rows(spec, path)
    return [_judged(spec, row) for row in rows]


def ingest_label_files(
    spec: DatasetSpec, data: DatasetLake, day: str, files: list[Path], staging_root: Path
) -> LabelFileResult:
    """Replace the lake's labels of `day` with what the day's landed label files hold (see the module's
    docstring). Each file is written in staging and renamed into place: a reader sees the old or the new one."""
    import pyarrow as pa

    rows = _read_label_files(spec, files)
    valid = [r for r in rows if r.reason is None]
    latest: dict[str, _Row] = {}
    for row in valid:  # in file then line order: the last row of an id wins
        latest[row.record_id or ""] = row
    kept = sorted(latest.values(), key=lambda r: r.record_id or "")
    # The day's files are complete once the day is over: that is when their labels became known.
    labelled_at = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    labels = pa.table(
        {
            "record_id": pa.array([r.record_id for r in kept], pa.string()),
            "label": pa.array([r.value for r in kept], pa.int8()),
            "labelled_at": pa.array([labelled_at] * len(kept), pa.timestamp("us", tz="UTC")),
            "source_file": pa.array([r.source_file for r in kept], pa.string()),
            "line": pa.array([r.line for r in kept], pa.int64()),
        }
    )
    bad = [(r, r.reason.value) for r in rows if r.reason is not None]
    rejected = pa.table(
        {
            "source_file": pa.array([r.source_file for r, _ in bad], pa.string()),
            "line": pa.array([r.line for r, _ in bad], pa.int64()),
            "reason": pa.array([reason for _, reason in bad], pa.string()),
            "detail": pa.array([r.detail for r, _ in bad], pa.string()),
            "raw": pa.array([r.raw for r, _ in bad], pa.string()),
        }
    )
    folder = data.labels_dir(day)
    _write_replacing(rejected, folder / REJECTED_FILE, staging_root)
    _write_replacing(labels, folder / LABELS_FILE, staging_root)
    return LabelFileResult(
        day=day,
        files=sorted(p.name for p in files),
        rows_in=len(rows),
        rows_kept=len(kept),
        rows_superseded=len(valid) - len(kept),
        rejected=dict(sorted(Counter(reason for _, reason in bad).items())),
        rejected_sample=[
            {"file": r.source_file, "line": r.line, "reason": reason, "detail": r.detail} for r, reason in bad[:10]
        ],
    )


def _write_replacing(table: pa.Table, target: Path, staging_root: Path) -> None:
    import pyarrow.parquet as pq

    staging_root.mkdir(parents=True, exist_ok=True)
    tmp = staging_root / f"{target.name}-{uuid.uuid4().hex}"
    try:
        pq.write_table(table, tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# --- the latest label per id ---------------------------------------------------------------------------


def latest_labels(spec: DatasetSpec, data: DatasetLake) -> pd.DataFrame:
    """One row per record id that has a late label: record_id, label (0/1), labelled_at (UTC), source
    ("file" or "feedback"). The latest label wins (see the module's docstring). Feedback for a prediction
    logged without a record id has nothing to be joined to and is left out."""
    import pandas as pd

    from kennel.serving.prediction_log import read_feedback, read_predictions

    frames = []
    for day in data.labelled_days():
        path = data.labels_dir(day) / LABELS_FILE
        if path.is_file():
            frames.append(
                pd.read_parquet(path, columns=["record_id", "label", "labelled_at", "source_file"])
                .rename(columns={"source_file": "tiebreak"})
                .assign(source="file")
            )
    feedback = read_feedback(data)
    if len(feedback):
        served = read_predictions(data, with_feedback=False)
        ids = served[["request_id", spec.id_column]].rename(columns={spec.id_column: "record_id"})
        joined = feedback.merge(ids.drop_duplicates("request_id"), on="request_id", how="inner")
        joined["record_id"] = joined["record_id"].astype("string").str.strip(WHITESPACE)
        joined = joined[joined["record_id"].notna() & (joined["record_id"] != "")]
        frames.append(
            pd.DataFrame(
                {
                    "record_id": joined["record_id"],
                    "label": joined["actual_label"],
                    "labelled_at": joined["feedback_at"],
                    "tiebreak": joined["request_id"],
                    "source": "feedback",
                }
            )
        )
    columns = ["record_id", "label", "labelled_at", "source"]
    if not frames:
        return pd.DataFrame(
            {
                "record_id": pd.Series(dtype="string"),
                "label": pd.Series(dtype="int8"),
                "labelled_at": pd.Series(dtype="datetime64[us, UTC]"),
                "source": pd.Series(dtype="string"),
            }
        )
    every = pd.concat(frames, ignore_index=True)
    every["source_rank"] = every["source"].map(SOURCES.index)
    every = every.sort_values(["labelled_at", "source_rank", "tiebreak"], kind="stable")
    latest = every.drop_duplicates("record_id", keep="last")[columns]
    return latest.astype({"record_id": "string", "label": "int8", "source": "string"}).reset_index(drop=True)
