"""The per-partition data-quality record: one small JSON file per day, written after the day's clean
and quarantine files, that training and sensors read without touching the data.

It says whether the day passed (every error-severity check passed), each check and expectation with
its observed value and a sample of failing values, the quarantine rate and reasons, schema drift,
and the day's clean row count against the trailing average of the days before it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kennel.cleaning import CleaningResult
from kennel.spec import DatasetSpec
from kennel.validation import GroupOutcome

RECORD_VERSION = 2
TRAILING_DAYS = 7


def read_records(folder: Path) -> list[dict[str, Any]]:
    """Every day's record in a data set's quality folder, oldest day first."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def trailing_rows(folder: Path, day: str, days: int = TRAILING_DAYS) -> tuple[float | None, int]:
    """Mean clean rows of up to `days` recorded days before `day`, and how many days that mean covers."""
    before = [r["rows_clean"] for r in read_records(folder) if r["day"] < day][-days:]
    return (sum(before) / len(before) if before else None), len(before)


def file_digest(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def build_record(
    spec: DatasetSpec,
    result: CleaningResult,
    groups: list[GroupOutcome],
    *,
    run_id: str,
    trailing: tuple[float | None, int],
    outputs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    rate = result.rows_quarantined / result.rows_in if result.rows_in else 0.0
    checks = {
        "rows_reconcile": result.reconciled,
        "quarantine_rate": rate <= spec.quality.max_quarantine_fraction,
        **{f"gx_{g.group}": g.success for g in groups},
    }
    blocking = {"rows_reconcile", "quarantine_rate"} | {f"gx_{g.group}" for g in groups if g.severity == "error"}
    mean, covered = trailing
    return {
        "version": RECORD_VERSION,
        "dataset": spec.name,
        "day": result.partition,
        "passed": all(ok for name, ok in checks.items() if name in blocking),
        "run_id": run_id,
        "written_at": datetime.now(timezone.utc).isoformat(),
        "spec_fingerprint": spec.fingerprint(),
        "rows_in": result.rows_in,
        "rows_clean": result.rows_clean,
        "rows_quarantined": result.rows_quarantined,
        "quarantine_rate": rate,
        "max_quarantine_fraction": spec.quality.max_quarantine_fraction,
        "reasons": result.reasons,
        "schema_drift": {
            "extra_columns": result.extra_columns,
            "missing_columns": result.missing_columns,
            "unreadable_files": result.unreadable_files,
        },
        "mapped_to_other": result.mapped_to_other,
        "row_count": {
            "clean": result.rows_clean,
            "trailing_mean": mean,
            "trailing_days": covered,
            "ratio": result.rows_clean / mean if mean else None,
        },
        "checks": checks,
        "warnings": sorted(name for name, ok in checks.items() if not ok and name not in blocking),
        "expectations": [
            {"check": f"gx_{o.group}", "severity": o.severity, "expectation": o.expectation, "column": o.column,
             "success": o.success, "observed": o.observed, "unexpected_count": o.unexpected_count,
             "unexpected_sample": o.unexpected_sample}
            for g in groups for o in g.outcomes
        ],
        "outputs": outputs,
    }


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write beside the target and rename, so readers see the previous record or this one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False))
    os.replace(tmp, path)
