"""The champion's performance on a day: the rows it scored (validated data and served traffic, each
record once, labelled as far as labels have arrived), realized metrics on the labelled ones, estimated
metrics on all of them (no labels needed), how wrong the estimate was once labels came, and both per
slice (each value of a sensitive or segment column).

A slice is judged only on enough rows: below `SliceRules.min_rows` rows, or with too few of either class
for a realized AUC, it is "insufficient_data", never "decayed".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kennel.lake.records import MetricEstimate, SliceRow
from kennel.monitoring.estimation import MISSING_GROUP as MISSING_SLICE
from kennel.monitoring.estimation import Calibrator, PerformanceEstimate, estimate_by_group, estimate_performance
from kennel.spec import WHITESPACE, DatasetSpec
from kennel.training.evaluation import classification_metrics, roc_auc

if TYPE_CHECKING:
    from kennel.lake import DatasetLake
    from kennel.model import Model
    from kennel.privacy import Redactor

# The metrics estimated without labels, in the order the UI shows them.
ESTIMATED_METRICS = ("roc_auc", "precision", "recall", "positive_rate", "expected_calibration_error")


@dataclass(frozen=True)
class SliceRules:
    min_rows: int = 200  # a slice with fewer rows is not judged
    min_class_rows: int = 20  # realized AUC needs this many positives and negatives
    auc_drop: float = 0.05  # a slice this far below the champion's test AUC is "decayed"


@dataclass(frozen=True)
class MonitoredDay:
    """The rows the champion scored on one day, each record once, with `label` (0/1, NaN = not known yet)."""

    frame: pd.DataFrame
    late_labelled_rows: int  # labelled rows whose label did not land with them (a label file, /feedback)


def monitored_rows(spec: DatasetSpec, data: DatasetLake, day: str, late: pd.Series) -> MonitoredDay:
    """The day's validated rows and served requests (a record that landed and was served counts once,
    through its landed row), with labels: a row's own, else the latest late one for its id (`late`:
    record id → label, from kennel.ingestion.labels.latest_labels).

    A personal id column is hashed in the prediction log: served rows are matched to landed rows and late
    labels by the hashes of their ids (kennel.privacy). Served rows come as logged (personal columns
    redacted), landed rows as landed: redact the frame once it is scored (`monitored_scores`)."""
    from kennel.privacy import Redactor
    from kennel.serving.prediction_log import read_predictions

    redactor = Redactor.for_spec(spec, data)
    frames = []
    came_late = 0
    landed_ids = pd.Series([], dtype="string")
    if data.passed_validation(day):
        landed = pd.read_parquet(data.published(day))
        landed_ids = landed[spec.id_column].astype("string")
        own = landed[spec.label.column].astype(float)
        label = own.fillna(landed_ids.map(late))
        came_late += int((own.isna() & label.notna()).sum())
        frames.append(landed.assign(label=label))
    served = read_predictions(data, start=day, end=day)
    if len(served):
        served_ids = served[spec.id_column].astype("string").str.strip(WHITESPACE)
        if spec.id_column in redactor.hashed_columns:  # the log holds hashed ids: hash the other side too
            landed_ids = landed_ids.map(redactor.hash_value, na_action="ignore")
            late = late.set_axis(late.index.map(lambda record_id: redactor.hash_value(str(record_id))))
        once = ~served_ids.isin(landed_ids)
        served, served_ids = served[once], served_ids[once]
        label = served["actual_label"].astype(float).fillna(served_ids.map(late))
        came_late += int(label.notna().sum())  # a served row's label is always late
        frames.append(served.assign(label=label))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"label": pd.Series([], dtype=float)})
    return MonitoredDay(frame=frame, late_labelled_rows=came_late)


def monitored_scores(model: Model, frame: pd.DataFrame, redactor: Redactor) -> np.ndarray:
    """The model's scores of monitored rows (`monitored_rows`, or a day of the prediction log). Where the
    prediction log lacks a model input (a personal column: hashed or dropped), a served row keeps the
    probability it was served with, since scoring it again would read the redacted values."""
    scores = model.score(frame)
    if redactor and "probability" in frame.columns and set(redactor.columns) & set(model.card.feature_names):
        logged = frame["probability"].to_numpy(dtype=np.float64, na_value=np.nan)
        scores = np.where(np.isnan(logged), scores, logged)
    return scores


def slice_values(frame: pd.DataFrame, column: str) -> pd.Series:
    """A slice column's values as text (missing is a slice of its own), in a fixed order-free form."""
    values = frame[column].astype("object")
    return values.where(values.notna(), MISSING_SLICE).astype(str)


def metric_estimates(estimate: PerformanceEstimate) -> dict[str, MetricEstimate]:
    return {name: MetricEstimate.model_validate(vars(getattr(estimate, name))) for name in ESTIMATED_METRICS}


@dataclass(frozen=True)
class EstimatedDay:
    """Estimated performance of one day, and (on its labelled rows) how far the estimate was from the truth."""

    rows: int
    estimates: dict[str, MetricEstimate]
    labelled_rows: int
    estimation_error: dict[str, float] = field(default_factory=dict)  # metric → estimate − realized
    realized_roc_auc: float | None = None
    concept_drift_suspected: bool | None = None
    slices: list[SliceRow] = field(default_factory=list)


def estimate_day(
    frame: pd.DataFrame,
    scores: np.ndarray,
    calibrator: Calibrator,
    *,
    threshold: float,
    champion_auc: float | None,
    slice_columns: list[str],
    rules: SliceRules = SliceRules(),
    concept_gap_floor: float = 0.02,
) -> EstimatedDay:
    """Estimate the day's metrics from the calibrated scores; where labels exist, estimate again on
    exactly the labelled rows and compare with the realized metrics there. A realized AUC below that
    estimate's interval by more than `concept_gap_floor` means the labels stopped following the scores:
    concept drift, which label-free estimation cannot see by construction."""
    calibrated = calibrator.apply(scores)
    overall = estimate_performance(scores, calibrated=calibrated, threshold=threshold)
    labelled = frame["label"].notna().to_numpy()
    errors: dict[str, float] = {}
    realized_auc = None
    suspected = None
    if labelled.sum() >= rules.min_rows:
        y = frame["label"].to_numpy()[labelled].astype(int)
        on_labelled = estimate_performance(scores[labelled], calibrated=calibrated[labelled], threshold=threshold)
        realized = classification_metrics(y, scores[labelled], threshold)
        realized["expected_calibration_error"] = None  # realized calibration is the evaluation's, not compared here
        for name in ESTIMATED_METRICS:
            estimated_value, realized_value = getattr(on_labelled, name).value, realized.get(name)
            if estimated_value is not None and realized_value is not None:
                errors[name] = float(estimated_value) - float(realized_value)
        realized_auc = realized["roc_auc"]
        auc = on_labelled.roc_auc
        if realized_auc is not None and auc.value is not None and auc.low is not None:
            suspected = bool(realized_auc < auc.low and auc.value - realized_auc >= concept_gap_floor)
    return EstimatedDay(
        rows=len(frame),
        estimates=metric_estimates(overall),
        labelled_rows=int(labelled.sum()),
        estimation_error=errors,
        realized_roc_auc=realized_auc,
        concept_drift_suspected=suspected,
        slices=estimated_slices(frame, scores, calibrated, threshold, slice_columns, champion_auc, rules),
    )


def _decay_severity(auc: float | None, champion_auc: float | None, rules: SliceRules) -> float:
    if auc is None or champion_auc is None:
        return 0.0
    return max(0.0, (champion_auc - auc) / rules.auc_drop)


def estimated_slices(
    frame: pd.DataFrame,
    scores: np.ndarray,
    calibrated: np.ndarray,
    threshold: float,
    columns: list[str],
    champion_auc: float | None,
    rules: SliceRules,
) -> list[SliceRow]:
    """Estimated metrics per slice, worst (largest estimated AUC drop) first."""
    present = [c for c in columns if c in frame]
    rows: list[SliceRow] = []
    for column, groups in estimate_by_group(frame, scores, calibrated, threshold, present, rules.min_rows).items():
        for group in groups:
            base: dict[str, Any] = {"column": column, "value": group.value, "rows": group.rows}
            auc = group.estimate.roc_auc.value if group.estimate is not None else None
            if group.estimate is None or auc is None:
                rows.append(SliceRow.model_validate({**base, "status": "insufficient_data"}))
                continue
            severity = _decay_severity(auc, champion_auc, rules)
            rows.append(
                SliceRow.model_validate(
                    {
                        **base,
                        "status": "decayed" if severity >= 1 else "ok",
                        "severity": severity,
                        **{f"estimated_{k}": v.value for k, v in metric_estimates(group.estimate).items()},
                        "estimated_roc_auc_low": group.estimate.roc_auc.low,
                        "estimated_roc_auc_high": group.estimate.roc_auc.high,
                    }
                )
            )
    return worst_first(rows)


def realized_slices(
    frame: pd.DataFrame,
    scores: np.ndarray,
    threshold: float,
    columns: list[str],
    champion_auc: float | None,
    rules: SliceRules = SliceRules(),
) -> list[SliceRow]:
    """Realized metrics per slice on labelled rows (`label` 0/1), worst (largest AUC drop) first."""
    rows: list[SliceRow] = []
    y = frame["label"].to_numpy()
    for column in columns:
        if column not in frame:
            continue
        values = slice_values(frame, column)
        for value in sorted(values.unique()):
            mask = (values == value).to_numpy()
            yv = y[mask].astype(int)
            positives, n = int(yv.sum()), int(mask.sum())
            base: dict[str, Any] = {"column": column, "value": value, "rows": n, "positives": positives}
            if n < rules.min_rows or min(positives, n - positives) < rules.min_class_rows:
                rows.append(SliceRow.model_validate({**base, "status": "insufficient_data"}))
                continue
            metrics = classification_metrics(yv, scores[mask], threshold)
            auc = roc_auc(yv, scores[mask])
            severity = _decay_severity(auc, champion_auc, rules)
            rows.append(
                SliceRow.model_validate(
                    {
                        **base,
                        "status": "decayed" if severity >= 1 else "ok",
                        "severity": severity,
                        "roc_auc": auc,
                        "precision": metrics["precision"],
                        "recall": metrics["recall"],
                    }
                )
            )
    return worst_first(rows)


def worst_first(rows: list[SliceRow]) -> list[SliceRow]:
    """Judged slices by severity (worst first), then the ones without enough rows; ties in a fixed order."""
    return sorted(rows, key=lambda r: (r.status == "insufficient_data", -r.severity, r.column, r.value))
