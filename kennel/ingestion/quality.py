"""The per-partition data-quality record (kennel.lake.records.QualityRecord), written after the day's
clean and quarantine files, that training and sensors read without touching the data.

It says whether the day passed (every error-severity check passed), each check and expectation with
its observed value and a sample of failing values, the quarantine rate and reasons, schema drift,
the day's clean row count against the trailing average of the days before it, and the share of the
clean rows that is labelled (the quarantine rate counts defects only: an unlabelled row is clean).
"""

from __future__ import annotations

from datetime import UTC, datetime

from kennel.ingestion.cleaning import CleaningResult
from kennel.ingestion.validation import GroupOutcome
from kennel.lake import DatasetLake
from kennel.lake.records import FileDigest, QualityRecord
from kennel.spec import DatasetSpec

TRAILING_DAYS = 7


def trailing_rows(lake: DatasetLake, day: str, days: int = TRAILING_DAYS) -> tuple[float | None, int]:
    """Mean clean rows of up to `days` recorded days before `day`, and how many days that mean covers."""
    before = [r.rows_clean for r in lake.quality_records() if r.day < day][-days:]
    return (sum(before) / len(before) if before else None), len(before)


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
