"""Monitoring a model against what it was trained on: the reference profile it ships with, drift of new
data and of its scores, and realized performance once labels exist."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kennel.lake.records import SliceRow
from kennel.model import Model
from kennel.model.card import ModelCard, learned_category_list
from kennel.monitoring.drift import (
    MISSING,
    DriftReport,
    DriftThresholds,
    ReferenceProfile,
    binned_shares,
    build_profile,
    compare,
    compare_slices,
    psi,
)
from kennel.monitoring.estimation import MISSING_GROUP as MISSING_SLICE
from kennel.spec import DatasetSpec, FeatureType
from kennel.training.evaluation import classification_metrics, group_metrics

if TYPE_CHECKING:
    from kennel.privacy import Redactor

PROFILE_FILE = "reference_profile.json"
SCORE = "__score__"  # the model's own output, profiled like a numeric feature for prediction drift
# Training rows the drift profile is built from, at most: a seeded canonical sample beyond. A share of 10%
# then carries a standard error of 0.07 percentage points, while a monitored day's tests are bounded by
# that day's rows (thousands): profiling a million rows would buy nothing but time.
REFERENCE_MAX_ROWS = 200_000


def build_reference(
    spec: DatasetSpec,
    train: pd.DataFrame,
    scores: np.ndarray,
    *,
    card: ModelCard,
    redactor: Redactor | None = None,
    window: pd.DataFrame | None = None,
) -> ReferenceProfile:
    """Profile the training rows and the model's scores on them, overall and per slice (each value of a
    sensitive or segment column); stored next to the model.

    A learned categorical feature is profiled over the categories `card` froze (its model reads every
    other value as "other", and so does drift); a sensitive one, which the model does not read, over
    categories frozen the same way from the whole training window (`window`, when `train` is a sample of
    it). Personal columns (`redactor`) are profiled as monitoring sees them: a categorical one over its
    hashed values (so served and landed days, hashed alike, still compare), a numeric or boolean one not
    at all (its values are dropped)."""
    window = train if window is None else window
    dropped = set(redactor.dropped_columns) if redactor else set()
    frame = train[spec.feature_names].copy()
    if redactor:
        frame = redactor.redact_frame(frame)
    frame[SCORE] = scores
    profiled = [f for f in spec.features if f.name not in dropped]
    numeric = [f.name for f in profiled if f.type is FeatureType.numeric] + [SCORE]
    categorical = [f.name for f in profiled if f.type is not FeatureType.numeric]
    frozen = {f.name: f.categories or () for f in card.features if f.learned}
    learned = {
        f.name: frozen.get(f.name) or learned_category_list(window[f.name], f.learned_categories)
        for f in spec.features
        if f.learned_categories is not None
    }
    return build_profile(frame, numeric, categorical, learned=learned, slices=spec.slice_columns)


def save_monitoring_reference(
    spec: DatasetSpec,
    model: Model,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    model_dir: Path,
    redactor: Redactor | None = None,
) -> None:
    """Everything monitoring compares the model against, written into its folder: the drift profile of
    its training rows (personal columns redacted by `redactor`), the calibration of its scores on the
    validation window (for label-free estimation only: served scores and the gate never use it) and the
    distribution of its explanations (per feature: no values). A window longer than REFERENCE_MAX_ROWS is
    profiled from a seeded sample of it that does not depend on the rows' order."""
    from kennel.monitoring.attribution import build_attribution_profile, canonical_sample, save_attribution_profile
    from kennel.monitoring.estimation import fit_calibrator, save_calibrator

    profiled = train
    if len(train) > REFERENCE_MAX_ROWS:
        profiled = canonical_sample(model, train, REFERENCE_MAX_ROWS, seed=0, tie_breakers=spec.feature_names)
    reference = build_reference(spec, profiled, model.score(profiled), card=model.card, redactor=redactor, window=train)
    save_reference(reference, model_dir)
    save_calibrator(fit_calibrator(model.score(validation), validation["label"].to_numpy(dtype=int)), model_dir)
    # A canonical sample of the canonical sample is one of the window: the window is not sorted twice.
    save_attribution_profile(build_attribution_profile(model, profiled), model_dir)


def save_reference(profile: ReferenceProfile, model_dir: Path) -> Path:
    path = Path(model_dir) / PROFILE_FILE
    path.write_text(profile.to_json())
    return path


def load_reference(model_dir: Path) -> ReferenceProfile:
    return ReferenceProfile.from_json((Path(model_dir) / PROFILE_FILE).read_text())


@dataclass(frozen=True)
class DriftSummary:
    """Feature drift of a batch of rows and the drift of the model's scores on them."""

    report: DriftReport
    rows: int
    prediction_psi: float | None
    mean_score: float | None
    reference_mean_score: float | None

    @property
    def drifted_share(self) -> float:
        return self.report.drifted_share

    @property
    def dataset_drift(self) -> bool:
        return self.report.dataset_drift

    @property
    def drifted_features(self) -> list[str]:
        """Drifted model inputs (what drifted_share counts)."""
        return [f.feature for f in self.report.drifted]

    @property
    def drifted_non_inputs(self) -> list[str]:
        """Drifted columns the model does not read (sensitive columns): reported apart."""
        return [f.feature for f in self.report.other_drifted]


@dataclass(frozen=True)
class RealizedPerformance:
    """Metrics on the rows whose label is known; `metrics` is None when no row is labelled yet."""

    labelled_rows: int
    metrics: dict[str, float | None] | None = None
    groups: dict[str, pd.DataFrame] = field(default_factory=dict)  # sensitive column → per-group metrics


def _without_score(profile: ReferenceProfile) -> ReferenceProfile:
    return replace(profile, numeric={k: v for k, v in profile.numeric.items() if k != SCORE})


def drift_summary(
    profile: ReferenceProfile,
    frame: pd.DataFrame,
    scores: np.ndarray,
    thresholds: DriftThresholds | None = None,
    *,
    inputs: list[str] | None = None,
) -> DriftSummary:
    """Feature drift (all features but the score; `inputs`: the model's, which alone count in the drifted
    share, None = all) and prediction drift (the score), in one pass."""
    report = compare(_without_score(profile), frame, thresholds, inputs=inputs)
    score_ref = profile.numeric[SCORE]
    score_shares = binned_shares(np.asarray(scores, dtype=np.float64), np.array(score_ref.edges))
    return DriftSummary(
        report=report,
        rows=len(frame),
        prediction_psi=psi(np.array(score_ref.shares), score_shares) if len(scores) else None,
        mean_score=float(np.mean(scores)) if len(scores) else None,
        reference_mean_score=score_ref.mean,
    )


def drift_slices(
    profile: ReferenceProfile,
    frame: pd.DataFrame,
    thresholds: DriftThresholds | None = None,
    *,
    inputs: list[str] | None = None,
) -> list[SliceRow]:
    """Feature drift inside each slice the profile holds, against the same slice of the training rows,
    worst first (a missing value's slice named as in every other slice table)."""
    return [
        SliceRow.model_validate(
            {
                "column": s.column,
                "value": MISSING_SLICE if s.value == MISSING else s.value,
                "rows": s.rows,
                "status": s.status,
                "severity": s.severity,
                "drifted_share": s.drifted_share,
                "drifted_features": list(s.drifted_features),
            }
        )
        for s in compare_slices(_without_score(profile), frame, thresholds, inputs=inputs)
    ]


def realized_performance(
    frame: pd.DataFrame, scores: np.ndarray, threshold: float, sensitive: list[str]
) -> RealizedPerformance:
    """Metrics on rows whose label is known (the `label` column, 0/1; missing = not yet labelled)."""
    labelled = frame["label"].notna().to_numpy()
    if not labelled.any():
        return RealizedPerformance(labelled_rows=0)
    frame, scores = frame[labelled], scores[labelled]
    y = frame["label"].to_numpy(dtype=int)
    return RealizedPerformance(
        labelled_rows=int(labelled.sum()),
        metrics=classification_metrics(y, scores, threshold),
        groups={c: group_metrics(frame.assign(label=y), scores, c, threshold) for c in sensitive if c in frame},
    )
