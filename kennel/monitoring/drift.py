"""Drift statistics against a reference profile computed once, when a model is trained.

The profile keeps what drift needs and nothing more (quantile edges and bin shares, a quantile sketch,
category frequencies, the same per value of each slice column), so checking new data costs one pass over it
and never re-reads training data.

How a feature is declared drifted (the method, exactly):

1. Effect size. Numeric features: PSI over the reference's decile bins (right-closed, equal edges merged) plus
   a missing bin, and the Wasserstein-1 distance between the two quantile sketches (levels 0.005 … 0.995)
   divided by the reference standard deviation. Categorical and boolean features: PSI and the Jensen–Shannon
   distance (base 2) over the categories plus missing (a learned feature's values outside its frozen list
   count as "other"). `severity` is the largest statistic divided by its floor (PSI 0.2, JS 0.1,
   Wasserstein 0.1).
2. Significance. Pearson's chi-square test of homogeneity (no continuity correction) on the 2 × k table
   whose rows are the reference counts (share × reference rows, rounded: the stored shares are counts / rows)
   and the current counts, over the same cells as PSI (numeric: the decile bins and missing; categorical: the
   categories and missing). Cells empty in both rows are dropped; cells whose expected count (row total ×
   cell total / grand total) is below 5 in either row are pooled into one cell, and that pool, if still
   below 5, is merged into the smallest other cell, so the chi-square approximation holds; k − 1 degrees of
   freedom for the k cells left; one cell left means p = 1.
3. Multiple testing. The p-values of every feature measured together (one report: all its features with
   enough rows, model inputs and other columns alike; `compare_slices`: every feature of every slice
   evaluated in the call) are adjusted by Benjamini–Hochberg, p_adj(i) = min over j ≥ i of p(j) · m / j for
   the p-values sorted ascending, capped at 1.
4. Decision. A feature is "drifted" when severity > 1 AND p_adj < alpha (default 0.05); "insufficient_data"
   below `min_rows` rows (200), never drifted.

Why both gates: on large samples every p-value is tiny, so significance alone flags shifts too small to
matter, and the effect floors stop that; on small samples PSI and Wasserstein are noisy (PSI's expectation
alone is about (k − 1)(1/n_ref + 1/n_cur)), so effect floors alone raise false alarms, and the test stops
that. Why Benjamini–Hochberg rather than Holm: with no drift at all (the case a false alarm comes from) BH's
false-discovery rate equals the probability of flagging any feature, so a clean day raises an alarm with
probability at most alpha, as under Holm; when data do drift they usually drift in several features and
slices at once, and BH's cut-off grows with the number of discoveries, where Holm divides alpha by every
test, which with slices × features means hundreds and costs small slices their power. BH's guarantee
holds for independent or positively dependent tests; these are positively dependent in practice (features
share causes and move together, slices are parts of the whole), and tests/test_drift_statistics.py measures
the false-alarm rate on same-distribution demo days instead of taking that on trust.

Only the model's inputs count towards `drifted_share` and data-set drift; other profiled columns (sensitive
columns the model does not read, the score) are measured and reported apart (`model_input=False`).

Every statistic is a function of the multiset of rows, never their order (Spark partitioning changes it):
float sums run over sorted values, shares come from integer counts, dict outputs are in key order.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
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
MIN_EXPECTED = 5.0  # Cochran's rule: chi-square cells expecting fewer counts are pooled
MIN_SLICE_ROWS = 200  # a slice value with fewer reference rows gets no profile (as min_rows for new data)


@dataclass(frozen=True)
class DriftThresholds:
    psi: float = 0.2  # the usual "significant shift" line for PSI
    js_distance: float = 0.1
    wasserstein: float = 0.1  # in units of the reference standard deviation
    min_rows: int = 200  # below this a feature is "insufficient data", never "drifted"
    ks_max_rows: int = 1000  # KS is reported alongside for small samples, where it is informative
    drifted_share: float = 0.2  # data-set drift when at least this share of input features drifted
    alpha: float = 0.05  # Benjamini–Hochberg level over the features (and slices) tested together


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
    shares: dict[str, float]  # category (or MISSING) → share, in key order
    rows: int
    # A learned feature's frozen categories (the model's): any other value counts as "other", in the
    # reference and in new data alike. None: values count as they are.
    categories: list[str] | None = None


@dataclass
class ReferenceProfile:
    numeric: dict[str, NumericProfile] = field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = field(default_factory=dict)
    # Slice column → value → the profile of the reference rows holding that value (without the slice
    # column itself); values with fewer than MIN_SLICE_ROWS reference rows are left out.
    slices: dict[str, dict[str, ReferenceProfile]] = field(default_factory=dict)
    rows: int | None = None  # reference rows (None in profiles saved before it was recorded)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        return cls._from_dict(json.loads(text))

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> ReferenceProfile:
        # Profiles saved before slices and rows existed lack those keys.
        return cls(
            numeric={k: NumericProfile(**v) for k, v in raw["numeric"].items()},
            categorical={k: CategoricalProfile(**v) for k, v in raw["categorical"].items()},
            slices={
                column: {value: cls._from_dict(p) for value, p in values.items()}
                for column, values in raw.get("slices", {}).items()
            },
            rows=raw.get("rows"),
        )


def _numeric_values(col: pd.Series) -> np.ndarray:
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)


def _numeric_profile(values: np.ndarray, bins: int) -> NumericProfile:
    # Sorted, so the float sums behind mean and std do not depend on row order.
    present = np.sort(values[~np.isnan(values)])
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


def binned_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Values per bin (right-closed on reference quantile edges), missing values last."""
    missing = np.isnan(values)
    counts = np.bincount(np.searchsorted(edges, values[~missing], side="left"), minlength=len(edges) + 1)
    return np.append(counts, missing.sum())


def binned_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values per bin (right-closed on reference quantile edges), missing values last."""
    return binned_counts(values, edges) / max(len(values), 1)


def _category_keys(col: pd.Series, categories: Sequence[str] | None = None) -> pd.Series:
    """Each value as the text drift counts it under: MISSING for a missing one, "other" for a learned
    feature's value outside its frozen categories."""
    values = col.astype("object")
    if categories is not None:
        values = values.where(values.isna() | values.isin(categories), OTHER_CATEGORY)
    return values.where(values.notna(), MISSING).astype(str)


@dataclass(frozen=True)
class _CodedKeys:
    """A column's category keys (`_category_keys`) as codes into their sorted distinct texts: a slice of
    the rows counts its keys with one bincount instead of turning its values into text again."""

    codes: np.ndarray
    names: list[str]

    @classmethod
    def of(cls, col: pd.Series, categories: Sequence[str] | None) -> _CodedKeys:
        # The keys are text already, so 1 and 1.0 (or True and 1) stay apart as their texts do.
        codes, names = pd.factorize(_category_keys(col, categories), sort=True)
        return cls(np.asarray(codes), [str(name) for name in names])

    def counts(self, rows: np.ndarray | None = None) -> dict[str, int]:
        """Rows per key, in key order, keys that occur only; `rows`: a mask selecting some rows."""
        codes = self.codes if rows is None else self.codes[rows]
        found = np.bincount(codes, minlength=len(self.names))
        return {self.names[i]: int(found[i]) for i in np.flatnonzero(found)}

    def holding(self, key: str) -> np.ndarray:
        """The mask of the rows whose key is `key` (one of `names`)."""
        return self.codes == self.names.index(key)


def build_profile(
    frame: pd.DataFrame,
    numeric: Iterable[str],
    categorical: Iterable[str],
    bins: int = 10,
    learned: Mapping[str, Sequence[str]] | None = None,
    slices: Collection[str] = (),
    min_slice_rows: int = MIN_SLICE_ROWS,
) -> ReferenceProfile:
    """Profile the reference (training) rows; booleans count as categoricals. `learned`: the frozen
    categories of learned categorical features (see CategoricalProfile.categories). `slices`: categorical
    or boolean columns whose every value with at least `min_slice_rows` rows gets its own profile of the
    other columns (a learned column slices by its frozen categories and "other")."""
    numeric, categorical = list(numeric), list(categorical)
    for column in slices:
        if column in numeric:
            raise ValueError(f"slice column {column!r} is numeric; slices are categorical or boolean columns")
    frozen = {name: list(categories) for name, categories in (learned or {}).items()}
    # Every column is read once; the profile of a slice selects from these arrays.
    values = {c: _numeric_values(frame[c]) for c in numeric}
    keys = {c: _CodedKeys.of(frame[c], frozen.get(c)) for c in {*categorical, *slices}}

    def profile_of(rows: np.ndarray | None, count: int, without: str | None = None) -> ReferenceProfile:
        def pick(array: np.ndarray) -> np.ndarray:
            return array if rows is None else array[rows]

        total = max(count, 1)
        return ReferenceProfile(
            numeric={c: _numeric_profile(pick(values[c]), bins) for c in numeric if c != without},
            categorical={
                c: CategoricalProfile(
                    shares={k: n / total for k, n in keys[c].counts(rows).items()},
                    rows=count,
                    categories=frozen.get(c),
                )
                for c in categorical
                if c != without
            },
            rows=count,
        )

    profile = profile_of(None, len(frame))
    for column in sorted(slices):
        by_value = keys[column]
        profile.slices[column] = {
            value: profile_of(by_value.holding(value), n, without=column)
            for value, n in by_value.counts().items()
            if n >= min_slice_rows
        }
    return profile


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


def chi_square_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    """p-value of Pearson's chi-square test of homogeneity of two count vectors over the same cells;
    sparse cells pooled as the module docstring says."""
    from scipy.stats import chi2

    table = np.vstack([reference, current]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    if table.shape[1] < 2 or (rows == 0).any():
        return 1.0
    expected_min = rows.min() * table.sum(axis=0) / rows.sum()
    sparse = expected_min < MIN_EXPECTED
    if sparse.any():
        pool = table[:, sparse].sum(axis=1, keepdims=True)
        table = table[:, ~sparse]
        if table.shape[1] and rows.min() * pool.sum() / rows.sum() < MIN_EXPECTED:
            smallest = int(np.argmin(table.sum(axis=0)))
            table[:, smallest] += pool[:, 0]
        else:
            table = np.hstack([table, pool])
    if table.shape[1] < 2:
        return 1.0
    expected = np.outer(rows, table.sum(axis=0)) / rows.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return float(chi2.sf(statistic, table.shape[1] - 1))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values, in the order given (ties get the same value whatever their order)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


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
    severity: float = 0.0  # the largest statistic divided by its floor: > 1 is past the effect floor
    p_value: float | None = None  # chi-square test of homogeneity against the reference counts
    p_adjusted: float | None = None  # Benjamini–Hochberg over the features tested together
    model_input: bool = True  # False: measured and reported, but not counted in drifted_share


@dataclass
class DriftReport:
    features: list[FeatureDrift]
    thresholds: DriftThresholds

    @property
    def input_features(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.model_input]

    @property
    def other_features(self) -> list[FeatureDrift]:
        """Profiled columns the model does not read (e.g. sensitive ones): reported, never counted."""
        return [f for f in self.features if not f.model_input]

    @property
    def evaluated(self) -> list[FeatureDrift]:
        return [f for f in self.input_features if f.status != "insufficient_data"]

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.input_features if f.status == "drifted"]

    @property
    def other_drifted(self) -> list[FeatureDrift]:
        return [f for f in self.other_features if f.status == "drifted"]

    @property
    def drifted_share(self) -> float:
        return len(self.drifted) / len(self.evaluated) if self.evaluated else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.evaluated) and self.drifted_share >= self.thresholds.drifted_share

    def table(self) -> list[dict[str, Any]]:
        """Per-feature rows, most severe first: drifted features, then the rest, each by severity."""
        return [asdict(f) for f in sorted(self.features, key=_severity_order)]


def _severity_order(f: FeatureDrift) -> tuple[bool, float, str]:
    return (f.status != "drifted", -f.severity, f.feature)


@dataclass
class SliceDrift:
    """Drift within one value of a slice column, against the reference rows holding that value."""

    column: str
    value: str
    rows: int  # current rows holding the value
    status: str  # ok | drifted (an input feature drifted) | insufficient_data | no_reference
    drifted_share: float = 0.0  # of the input features evaluated in the slice
    drifted_features: list[str] = field(default_factory=list)  # input features, most severe first
    severity: float = 0.0  # the worst input feature's severity
    features: list[FeatureDrift] = field(default_factory=list)


def _numeric_drift(name: str, ref: NumericProfile, values: np.ndarray, t: DriftThresholds) -> FeatureDrift:
    present = np.sort(values[~np.isnan(values)])
    if len(values) < t.min_rows or not ref.sketch or present.size == 0:
        return FeatureDrift(name, "numeric", "insufficient_data", len(values))
    edges = np.array(ref.edges)
    counts = binned_counts(values, edges)
    score_psi = psi(np.array(ref.shares), counts / len(values))
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
    drift.p_value = chi_square_pvalue(np.rint(np.array(ref.shares) * ref.rows), counts)
    return drift


def _categorical_drift(name: str, ref: CategoricalProfile, col: pd.Series, t: DriftThresholds) -> FeatureDrift:
    if len(col) < t.min_rows:
        return FeatureDrift(name, "categorical", "insufficient_data", len(col))
    counts = _CodedKeys.of(col, ref.categories).counts()
    current = {k: n / len(col) for k, n in counts.items()}
    keys = sorted(set(ref.shares) | set(current))
    score_psi = psi(np.array([ref.shares.get(k, 0.0) for k in keys]), np.array([current.get(k, 0.0) for k in keys]))
    js = js_distance(ref.shares, current)
    return FeatureDrift(
        name,
        "categorical",
        "ok",
        len(col),
        psi=score_psi,
        js_distance=js,
        severity=max(score_psi / t.psi, js / t.js_distance),
        p_value=chi_square_pvalue(
            np.rint(np.array([ref.shares.get(k, 0.0) for k in keys]) * ref.rows),
            np.array([counts.get(k, 0) for k in keys]),
        ),
    )


def _measure(
    profile: ReferenceProfile, frame: pd.DataFrame, t: DriftThresholds, inputs: Collection[str] | None
) -> list[FeatureDrift]:
    """Effect sizes and raw p-values of every profiled feature present in `frame`; no decision yet."""
    features = [
        _numeric_drift(name, ref, _numeric_values(frame[name]), t)
        for name, ref in profile.numeric.items()
        if name in frame.columns
    ] + [
        _categorical_drift(name, ref, frame[name], t)
        for name, ref in profile.categorical.items()
        if name in frame.columns
    ]
    for f in features:
        f.model_input = inputs is None or f.feature in inputs
    return features


def _decide(features: list[FeatureDrift], t: DriftThresholds) -> None:
    """Adjust the p-values of the features tested together and set each one's status."""
    tested = [f for f in features if f.p_value is not None]
    for f, adjusted in zip(tested, benjamini_hochberg([f.p_value or 0.0 for f in tested]), strict=True):
        f.p_adjusted = adjusted
        f.status = "drifted" if f.severity > 1 and adjusted < t.alpha else "ok"


def compare(
    profile: ReferenceProfile,
    frame: pd.DataFrame,
    thresholds: DriftThresholds | None = None,
    inputs: Collection[str] | None = None,
) -> DriftReport:
    """Drift of `frame` against the profile, feature by feature (features absent from `frame` are skipped).
    `inputs`: the model's input features (None: every profiled feature is one); the others are measured and
    reported with `model_input=False` but not counted in `drifted_share`."""
    t = thresholds or DriftThresholds()
    features = _measure(profile, frame, t, inputs)
    _decide(features, t)
    return DriftReport(features=features, thresholds=t)


_SLICE_ORDER = {"drifted": 0, "ok": 1, "insufficient_data": 2, "no_reference": 3}


def compare_slices(
    profile: ReferenceProfile,
    frame: pd.DataFrame,
    thresholds: DriftThresholds | None = None,
    inputs: Collection[str] | None = None,
) -> list[SliceDrift]:
    """Drift within each value of each slice column the profile holds (and `frame` has), worst first.

    A value without a reference profile is "no_reference"; one with fewer than `min_rows` current rows is
    "insufficient_data". The p-values of all features of all slices evaluated here are adjusted together."""
    t = thresholds or DriftThresholds()
    found: list[SliceDrift] = []
    for column in sorted(profile.slices):
        if column not in frame.columns:
            continue
        references = profile.slices[column]
        frozen = profile.categorical[column].categories if column in profile.categorical else None
        by_value = _CodedKeys.of(frame[column], frozen)
        counts = by_value.counts()
        for value in sorted(set(references) | set(counts)):
            rows = counts.get(value, 0)
            if value not in references:
                found.append(SliceDrift(column, value, rows, "no_reference"))
            elif rows < t.min_rows:
                found.append(SliceDrift(column, value, rows, "insufficient_data"))
            else:
                measured = _measure(references[value], frame[by_value.holding(value)], t, inputs)
                found.append(SliceDrift(column, value, rows, "ok", features=measured))
    _decide([f for s in found for f in s.features], t)
    for s in found:
        report = DriftReport(s.features, t)
        s.drifted_share = report.drifted_share
        s.drifted_features = [f.feature for f in sorted(report.drifted, key=_severity_order)]
        s.severity = max((f.severity for f in report.evaluated), default=0.0)
        if s.drifted_features:
            s.status = "drifted"
    return sorted(found, key=lambda s: (_SLICE_ORDER[s.status], -s.severity, s.column, s.value))
