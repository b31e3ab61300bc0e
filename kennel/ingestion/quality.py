"""The per-partition data-quality record (kennel.lake.records.QualityRecord), written after the day's
clean and quarantine files, that training and sensors read without touching the data.

It says whether the day passed (every error-severity check passed), each check and expectation with
its observed value and a sample of failing values, the quarantine rate and reasons, schema drift,
the day's clean row count against the trailing average of the days before it, and the share of the
clean rows that is labelled (the quarantine rate counts defects only: an unlabelled row is clean).
"""

from __future__ import annotations

import bisect
from datetime import UTC, datetime

from kennel.ingestion.cleaning import CleaningResult
from kennel.ingestion.validation import GroupOutcome
from kennel.lake import DatasetLake
from kennel.lake.records import FileDigest, QualityRecord
from kennel.spec import DatasetSpec

TRAILING_DAYS = 7


class TrailingRows:
    """The recorded days' clean row counts, read once when a run starts and kept current as the run records
    its days (oldest first): a backfill of N days reads N records, not N records for each of its N days."""

    def __init__(self, lake: DatasetLake):
        self._rows = {r.day: r.rows_clean for r in lake.quality_records()}
        self._days = sorted(self._rows)

    def before(self, day: str, days: int = TRAILING_DAYS) -> tuple[float | None, int]:
        """Mean clean rows of up to `days` recorded days before `day`, and how many days that mean covers."""
        earlier = self._days[: bisect.bisect_left(self._days, day)][-days:]
        rows = [self._rows[d] for d in earlier]
        return (sum(rows) / len(rows) if rows else None), len(rows)

    def add(self, record: QualityRecord) -> None:
        """Count a day the run has just recorded (replacing what an earlier run recorded for it)."""
        if record.day not in self._rows:
            bisect.insort(self._days, record.day)
        self._rows[record.day] = record.rows_clean


def build_record(
    spec: DatasetSpec,
    result: CleaningResult,
    groups: list[GroupOutcome],
    *,
    run_id: str,
    trailing: tuple[float | None, int],
    outputs: dict[str, FileDigest],
) -> QualityRecord:
    rate = result.rows_quarantined / result.rows_in if result.rows_in else 0.0
    checks = {
        "rows_reconcile": result.reconciled,
        "quarantine_rate": rate <= spec.quality.max_quarantine_fraction,
        **{f"gx_{g.group}": g.success for g in groups},
    }
    blocking = {"rows_reconcile", "quarantine_rate"} | {f"gx_{g.group}" for g in groups if g.severity == "error"}
    mean, covered = trailing
    return QualityRecord.model_validate(
        {
            "dataset": spec.name,
            "day": result.partition,
            "passed": all(ok for name, ok in checks.items() if name in blocking),
            "run_id": run_id,
            "written_at": datetime.now(UTC).isoformat(),
            "spec_fingerprint": spec.fingerprint(),
            "rows_in": result.rows_in,
            "rows_clean": result.rows_clean,
            "rows_quarantined": result.rows_quarantined,
            "rows_labelled": result.rows_labelled,
            "labelled_share": result.rows_labelled / result.rows_clean if result.rows_clean else None,
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
                {
                    "check": f"gx_{o.group}",
                    "severity": o.severity,
                    "expectation": o.expectation,
                    "column": o.column,
                    "success": o.success,
                    "observed": o.observed,
                    "unexpected_count": o.unexpected_count,
                    "unexpected_sample": o.unexpected_sample,
                }
                for g in groups
                for o in g.outcomes
            ],
            "outputs": outputs,
        }
    )
