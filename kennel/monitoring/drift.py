"""Drift statistics against a reference profile computed once, when a model is trained.

The profile keeps what drift needs and nothing more (quantile edges and bin shares, a quantile sketch,
category frequencies), so checking new data costs one pass over it and never re-reads training data.
Decisions use effect sizes with thresholds, not p-values: on large samples every p-value is tiny.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kennel.spec import OTHER_CATEGORY

MISSING = "__missing__"
SKETCH_POINTS = 100  # quantile sketch resolution for Wasserstein/KS
# Mid-point levels (0.005 … 0.995): the sample minimum and maximum are too noisy to compare, above all
# on heavy-tailed features, and W1 is the integral of the quantile gap over these levels.
SKETCH_LEVELS = (np.arange(SKETCH_POINTS) + 0.5) / SKETCH_POINTS
EPS = 1e-4  # floor for empty bins so PSI stays finite


@dataclass(frozen=True)
class DriftThresholds:
    psi: float = 0.2  # the usual "significant shift" line for PSI
    js_distance: float = 0.1
    wasserstein: float = 0.1  # in units of the reference standard deviation
    min_rows: int = 200  # below this a feature is "insufficient data", never "drifted"
    ks_max_rows: int = 1000  # KS is reported alongside for small samples, where it is informative
    drifted_share: float = 0.2  # data-set drift when at least this share of features drifted


@dataclass
class NumericProfile:
    edges: list[float]  # interior bin edges (reference deciles, de-duplicated)
    shares: list[float]  # reference share per bin (len(edges) + 1 bins), plus missing as the last entry
    sketch: list[float]  # reference quantiles at SKETCH_LEVELS
    mean: float
    std: float
    rows: int


@dataclass
class CategoricalProfile:
    shares: dict[str, float]  # category (or MISSING) → share
    rows: int
    # A learned feature's frozen categories (the model's): any other value counts as "other", in the
    # reference and in new data alike. None: values count as they are.
    categories: list[str] | None = None


@dataclass
class ReferenceProfile:
    numeric: dict[str, NumericProfile] = field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        raw = json.loads(text)
        return cls(
            numeric={k: NumericProfile(**v) for k, v in raw["numeric"].items()},
            categorical={k: CategoricalProfile(**v) for k, v in raw["categorical"].items()},
        )


def _numeric_values(col: pd.Series) -> np.ndarray:
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)


def _numeric_profile(values: np.ndarray, bins: int) -> NumericProfile:
    present = values[~np.isnan(values)]
    if present.size == 0:
        return NumericProfile(
            edges=[], shares=[0.0, 1.0], sketch=[], mean=float("nan"), std=float("nan"), rows=len(values)
        )
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    return NumericProfile(
        edges=edges.tolist(),
        shares=binned_shares(values, edges).tolist(),
        sketch=np.quantile(present, SKETCH_LEVELS).tolist(),
        mean=float(present.mean()),
        std=float(present.std()),
        rows=len(values),
    )


def binned_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values per bin (right-closed on reference quantile edges), missing values last."""
    missing = np.isnan(values)
    counts = np.bincount(np.searchsorted(edges, values[~missing], side="left"), minlength=len(edges) + 1)
    return np.append(counts, missing.sum()) / max(len(values), 1)


def _categorical_shares(col: pd.Series, categories: list[str] | None = None) -> dict[str, float]:
    values = col.astype("object")
    if categories is not None:
        values = values.where(values.isna() | values.isin(categories), OTHER_CATEGORY)
    counts = values.where(values.notna(), MISSING).astype(str).value_counts(normalize=True)
    return {str(k): float(v) for k, v in counts.items()}


def build_profile(
    frame: pd.DataFrame,
    numeric: Iterable[str],
    categorical: Iterable[str],
    bins: int = 10,
    learned: Mapping[str, Sequence[str]] | None = None,
) -> ReferenceProfile:
    """Profile the reference (training) rows; booleans count as categoricals. `learned`: the frozen
    categories of learned categorical features (see CategoricalProfile.categories)."""
    frozen = {name: list(categories) for name, categories in (learned or {}).items()}
    return ReferenceProfile(
        numeric={c: _numeric_profile(_numeric_values(frame[c]), bins) for c in numeric},
        categorical={
            c: CategoricalProfile(
                shares=_categorical_shares(frame[c], frozen.get(c)), rows=len(frame), categories=frozen.get(c)
            )
            for c in categorical
        },
    )


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.maximum(expected, EPS), np.maximum(actual, EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen–Shannon distance (base 2, so in [0, 1]) between two category share maps."""
    keys = sorted(set(p) | set(q))
    a, b = np.array([p.get(k, 0.0) for k in keys]), np.array([q.get(k, 0.0) for k in keys])
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return float(np.sqrt(max((kl(a) + kl(b)) / 2, 0.0)))


@dataclass
class FeatureDrift:
    feature: str
    kind: str  # numeric | categorical
    status: str  # ok | drifted | insufficient_data
    rows: int
    psi: float | None = None
    js_distance: float | None = None
    wasserstein: float | None = None  # normalized by the reference std
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    severity: float = 0.0  # the largest statistic divided by its threshold: > 1 means drifted


@dataclass
class DriftReport:
    features: list[FeatureDrift]
    thresholds: DriftThresholds

    @property
    def evaluated(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.status != "insufficient_data"]

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.status == "drifted"]

    @property
    def drifted_share(self) -> float:
        return len(self.drifted) / len(self.evaluated) if self.evaluated else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.evaluated) and self.drifted_share >= self.thresholds.drifted_share

    def table(self) -> list[dict[str, Any]]:
        """Per-feature rows sorted by severity, most drifted first."""
        return [asdict(f) for f in sorted(self.features, key=lambda f: -f.severity)]


def _numeric_drift(name: str, ref: NumericProfile, values: np.ndarray, t: DriftThresholds) -> FeatureDrift:
    present = values[~np.isnan(values)]
    if len(values) < t.min_rows or not ref.sketch or present.size == 0:
        return FeatureDrift(name, "numeric", "insufficient_data", len(values))
    score_psi = psi(np.array(ref.shares), binned_shares(values, np.array(ref.edges)))
    current_sketch = np.quantile(present, SKETCH_LEVELS)
    # W1 between the two distributions is the mean gap between their quantile functions.
    scale = ref.std if ref.std > 0 else 1.0
    wasserstein = float(np.mean(np.abs(current_sketch - np.array(ref.sketch))) / scale)
    drift = FeatureDrift(name, "numeric", "ok", len(values), psi=score_psi, wasserstein=wasserstein)
    if len(values) <= t.ks_max_rows:
        from scipy.stats import ks_2samp

        ks = ks_2samp(np.array(ref.sketch), present)
        drift.ks_statistic, drift.ks_pvalue = float(ks.statistic), float(ks.pvalue)
    drift.severity = max(score_psi / t.psi, wasserstein / t.wasserstein)
    drift.status = "drifted" if drift.severity > 1 else "ok"
    return drift


def _categorical_drift(name: str, ref: CategoricalProfile, col: pd.Series, t: DriftThresholds) -> FeatureDrift:
    if len(col) < t.min_rows:
        return FeatureDrift(name, "categorical", "insufficient_data", len(col))
    current = _categorical_shares(col, ref.categories)
    keys = sorted(set(ref.shares) | set(current))
    score_psi = psi(np.array([ref.shares.get(k, 0.0) for k in keys]), np.array([current.get(k, 0.0) for k in keys]))
    js = js_distance(ref.shares, current)
    severity = max(score_psi / t.psi, js / t.js_distance)
    return FeatureDrift(
        name,
        "categorical",
        "drifted" if severity > 1 else "ok",
        len(col),
        psi=score_psi,
        js_distance=js,
        severity=severity,
    )


def compare(profile: ReferenceProfile, frame: pd.DataFrame, thresholds: DriftThresholds | None = None) -> DriftReport:
    """Drift of `frame` against the profile, feature by feature (features absent from `frame` are skipped)."""
    t = thresholds or DriftThresholds()
    features = [
        _numeric_drift(name, ref, _numeric_values(frame[name]), t)
        for name, ref in profile.numeric.items()
        if name in frame.columns
    ] + [
        _categorical_drift(name, ref, frame[name], t)
        for name, ref in profile.categorical.items()
        if name in frame.columns
    ]
    return DriftReport(features=features, thresholds=t)
