"""Performance estimated without labels (confidence-based, as NannyML's CBPE): the model's scores are
calibrated once on a labelled reference window, then each unlabelled row's calibrated probability is
taken as the chance its label is positive, and every metric is its expected value under those chances.

The estimate is right as long as P(label | score) stays what the reference saw: it follows covariate
shift (the rows move, the relation between score and label does not) and is blind to concept drift,
so a gap between the estimate and the realized metric once labels land is itself a drift signal.

The metrics are the realized ones of `kennel.training.evaluation` (ROC-AUC of the served scores,
precision and recall at the served threshold, the reliability-bin calibration error), so an estimated
and a realized number for the same day compare directly. Each comes with a Monte-Carlo interval: where
the realized metric falls when the labels are drawn from the calibrated probabilities. It holds only
the sampling noise of the labels, not the calibrator's own error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kennel.training.evaluation import calibration_table, expected_calibration_error

CALIBRATION_FILE = "calibration.json"
DRAWS = 200  # Monte-Carlo label draws per estimate: a 95% interval's ends move by about 0.2 sd between seeds
LEVEL = 0.95
# A metric whose denominator holds fewer expected rows than this is reported as None: its estimate and
# its interval would both be noise.
MIN_EXPECTED = 10.0
CALIBRATION_BINS = 10  # the reliability bins of kennel.training.evaluation.calibration_table
MISSING_GROUP = "(missing)"  # as kennel.training.evaluation.group_metrics names a missing group
_DRAW_BUDGET = 4_000_000  # label draws held in memory at once (draws × rows), about 32 MB as float64


@dataclass(frozen=True)
class Calibrator:
    """Isotonic map from a served score to P(label = 1): linear between `thresholds` (increasing scores)
    and their `probabilities` (non-decreasing), flat beyond the ends."""

    thresholds: tuple[float, ...]
    probabilities: tuple[float, ...]
    reference_rows: int
    reference_positives: int

    def __post_init__(self) -> None:
        x, y = np.asarray(self.thresholds, dtype=np.float64), np.asarray(self.probabilities, dtype=np.float64)
        if len(x) == 0 or len(x) != len(y):
            raise ValueError("a calibrator needs as many probabilities as thresholds, and at least one")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("a calibrator's thresholds and probabilities must be finite")
        if (np.diff(x) <= 0).any() or (np.diff(y) < 0).any() or y[0] < 0 or y[-1] > 1:
            raise ValueError("a calibrator needs increasing thresholds and non-decreasing probabilities in [0, 1]")

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for `scores` (any shape), in [0, 1]."""
        calibrated = np.interp(np.asarray(scores, dtype=np.float64), self.thresholds, self.probabilities)
        return np.clip(calibrated, 0.0, 1.0)

    def to_json(self) -> str:
        return json.dumps({"method": "isotonic", **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        raw = json.loads(text)
        if raw.get("method") != "isotonic":
            raise ValueError(f"unknown calibration method {raw.get('method')!r}: this release reads isotonic")
        return cls(
            thresholds=tuple(float(v) for v in raw["thresholds"]),
            probabilities=tuple(float(v) for v in raw["probabilities"]),
            reference_rows=int(raw["reference_rows"]),
            reference_positives=int(raw["reference_positives"]),
        )


def fit_calibrator(scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Isotonic regression of the 0/1 `labels` on `scores` (the reference window's, at training time)."""
    from sklearn.isotonic import IsotonicRegression

    s, y = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).ravel()
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite to calibrate on them")
    if not np.isin(y, (0, 1)).all() or len(np.unique(y)) != 2:
        raise ValueError("calibration needs 0/1 labels holding both values")
    # Duplicated scores are pooled and the knots kept are only those the interpolation needs, so the
    # map is a pure function of the rows whatever their order.
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, y.astype(np.float64))
    return Calibrator(
        thresholds=tuple(float(v) for v in iso.X_thresholds_),
        probabilities=tuple(float(v) for v in iso.y_thresholds_),
        reference_rows=len(y),
        reference_positives=int(y.sum()),
    )


def save_calibrator(calibrator: Calibrator, model_dir: Path) -> Path:
    path = Path(model_dir) / CALIBRATION_FILE
    path.write_text(calibrator.to_json())
    return path


def load_calibrator(model_dir: Path) -> Calibrator:
    return Calibrator.from_json((Path(model_dir) / CALIBRATION_FILE).read_text())


@dataclass(frozen=True)
class MetricEstimate:
    """One estimated metric with its Monte-Carlo interval; `value` None says why in `reason`."""

    value: float | None
    low: float | None = None
    high: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class PerformanceEstimate:
    rows: int
    threshold: float
    expected_positives: float  # sum of the calibrated probabilities
    predicted_positives: int  # rows scored at or above the threshold
    roc_auc: MetricEstimate
    precision: MetricEstimate
    recall: MetricEstimate
    # Of the served scores against the calibrated probabilities: the value is the calibration gap itself;
    # the interval is where a realized ECE falls, and sits above the value on small days because the
    # observed rate per bin is noisy even when the calibration holds.
    expected_calibration_error: MetricEstimate
    positive_rate: MetricEstimate
    level: float
    draws: int
    seed: int

    def metrics(self) -> dict[str, float | None]:
        """The estimated values under the names `classification_metrics` and `evaluate` give realized ones."""
        return {
            "roc_auc": self.roc_auc.value,
            "precision": self.precision.value,
            "recall": self.recall.value,
            "expected_calibration_error": self.expected_calibration_error.value,
            "positive_rate": self.positive_rate.value,
        }


@dataclass(frozen=True)
class GroupEstimate:
    """The estimate for one value of a column; None when the value has too few rows (`reason` says)."""

    value: str
    rows: int
    estimate: PerformanceEstimate | None
    reason: str | None = None


def _midranks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row rank of the score (ties share their mean rank, 1-based), the tie group of each row (in
    ascending score) and the rows per group."""
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts
    return (before + (counts + 1) / 2.0)[group], group, counts


def _cbpe_auc(group: np.ndarray, counts: np.ndarray, p: np.ndarray) -> float:
    """Area under the expected ROC curve: rows by score descending, each adding p to the true positives
    and 1 - p to the false ones; rows with the same score form one step (their order is arbitrary)."""
    positives = np.bincount(group, weights=p, minlength=len(counts))[::-1]
    negatives = counts[::-1] - positives
    tpr = np.concatenate(([0.0], np.cumsum(positives))) / positives.sum()
    fpr = np.concatenate(([0.0], np.cumsum(negatives))) / negatives.sum()
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def _bin_index(scores: np.ndarray) -> np.ndarray:
    """The reliability bin of each score, as `calibration_table` assigns them."""
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    return np.clip(np.digitize(scores, edges[1:-1]), 0, CALIBRATION_BINS - 1)


def _label_draws(p: np.ndarray, columns: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """For each of `draws` label vectors y ~ Bernoulli(p): y @ columns (draws × columns' width).

    Every entry of `columns` is a half-integer (counts, ranks, 0/1 masks), so each sum is exact in
    float64 and the result does not depend on how BLAS orders the additions."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _DRAW_BUDGET // max(len(p), 1))
    out = np.empty((draws, columns.shape[1]))
    for start in range(0, draws, chunk):
        stop = min(start + chunk, draws)
        labels = rng.random((stop - start, len(p))) < p
        out[start:stop] = labels.astype(np.float64) @ columns
    return out


def _interval(samples: np.ndarray, level: float) -> tuple[float | None, float | None]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return None, None
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def estimate_performance(
    scores: np.ndarray,
    *,
    calibrated: np.ndarray,
    threshold: float,
    seed: int = 0,
    draws: int = DRAWS,
    level: float = LEVEL,
    min_expected: float = MIN_EXPECTED,
) -> PerformanceEstimate:
    """Estimated metrics of the served `scores` on unlabelled rows whose calibrated probabilities are
    `calibrated` (the reference calibrator's `apply(scores)`); same inputs, same estimate."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    p = np.asarray(calibrated, dtype=np.float64).ravel()
    if len(s) != len(p):
        raise ValueError(f"{len(s)} scores but {len(p)} calibrated probabilities")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("calibrated probabilities must lie in [0, 1]")
    if draws < 1 or not 0 < level < 1 or min_expected < 1:
        raise ValueError("draws and min_expected must be at least 1, and level within (0, 1)")

    n = len(s)
    predicted = s >= threshold
    n_predicted = int(predicted.sum())
    expected_pos = float(p.sum())
    expected_neg = n - expected_pos

    def estimate(**metrics: MetricEstimate) -> PerformanceEstimate:
        return PerformanceEstimate(
            rows=n,
            threshold=float(threshold),
            expected_positives=expected_pos,
            predicted_positives=n_predicted,
            level=level,
            draws=draws,
            seed=seed,
            **metrics,
        )

    if n < min_expected:
        too_few = MetricEstimate(None, reason=f"{n} row(s): fewer than {min_expected:g}")
        names = ("roc_auc", "precision", "recall", "expected_calibration_error", "positive_rate")
        return estimate(**dict.fromkeys(names, too_few))

    ranks, group, counts = _midranks(s)
    bins = _bin_index(s)
    bin_onehot = (bins[:, None] == np.arange(CALIBRATION_BINS)).astype(np.float64)
    # One pass of draws gives every metric: label count, rank sum, true positives, positives per bin.
    sums = _label_draws(p, np.column_stack([np.ones(n), ranks, predicted, bin_onehot]), draws, seed)
    n_pos, rank_sum, true_pos, bin_pos = sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3:]

    def interval_of(value: float, samples: np.ndarray) -> MetricEstimate:
        low, high = _interval(samples, level)
        return MetricEstimate(value=value, low=low, high=high)

    few_pos = f"{expected_pos:.1f} expected positives: fewer than {min_expected:g}"
    with np.errstate(divide="ignore", invalid="ignore"):
        # A draw without both labels has no AUC (nor recall without positives): NaN, dropped from the interval.
        auc_draws = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * (n - n_pos))
        recall_draws = true_pos / n_pos
    if len(counts) == 1:
        roc_auc = MetricEstimate(None, reason="every row has the same score: there is no ranking to judge")
    elif expected_pos < min_expected:
        roc_auc = MetricEstimate(None, reason=few_pos)
    elif expected_neg < min_expected:
        roc_auc = MetricEstimate(None, reason=f"{expected_neg:.1f} expected negatives: fewer than {min_expected:g}")
    else:
        roc_auc = interval_of(_cbpe_auc(group, counts, p), auc_draws)

    expected_true_pos = float(p[predicted].sum())
    if n_predicted < min_expected:
        precision = MetricEstimate(
            None, reason=f"{n_predicted} row(s) scored at or above {threshold:g}: fewer than {min_expected:g}"
        )
    else:
        precision = interval_of(expected_true_pos / n_predicted, true_pos / n_predicted)
    recall = (
        MetricEstimate(None, reason=few_pos)
        if expected_pos < min_expected
        else interval_of(expected_true_pos / expected_pos, recall_draws)
    )

    # The realized metric's own definition, with the calibrated probabilities as the observed rates.
    ece = float(expected_calibration_error(calibration_table(p, s, bins=CALIBRATION_BINS)) or 0.0)
    score_per_bin = np.bincount(bins, weights=s, minlength=CALIBRATION_BINS)
    ece_draws = np.abs(score_per_bin - bin_pos).sum(axis=1) / n
    return estimate(
        roc_auc=roc_auc,
        precision=precision,
        recall=recall,
        expected_calibration_error=interval_of(ece, ece_draws),
        positive_rate=interval_of(expected_pos / n, n_pos / n),
    )


def estimate_by_group(
    frame: pd.DataFrame,
    scores: np.ndarray,
    calibrated: np.ndarray,
    threshold: float,
    columns: Sequence[str],
    min_rows: int,
    *,
    seed: int = 0,
    draws: int = DRAWS,
    level: float = LEVEL,
    min_expected: float = MIN_EXPECTED,
) -> dict[str, list[GroupEstimate]]:
    """Per column, the estimate for each of its values (missing = its own value, in text order as
    `group_metrics` lists them); a value held by fewer than `min_rows` rows is never estimated."""
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise KeyError(f"no column(s) {absent} in the rows to estimate by")
    s, p = np.asarray(scores, dtype=np.float64), np.asarray(calibrated, dtype=np.float64)
    if not len(frame) == len(s) == len(p):
        raise ValueError(f"{len(frame)} rows, {len(s)} scores and {len(p)} calibrated probabilities")
    out: dict[str, list[GroupEstimate]] = {}
    for column in columns:
        values = frame[column].astype("object").where(frame[column].notna(), MISSING_GROUP).astype(str).to_numpy()
        groups = []
        for value in sorted(np.unique(values)):
            mask = values == value
            rows = int(mask.sum())
            if rows < min_rows:
                groups.append(GroupEstimate(value, rows, None, f"{rows} row(s): fewer than {min_rows}"))
                continue
            estimate = estimate_performance(
                s[mask],
                calibrated=p[mask],
                threshold=threshold,
                seed=seed,
                draws=draws,
                level=level,
                min_expected=min_expected,
            )
            groups.append(GroupEstimate(value, rows, estimate))
        out[column] = groups
    return out
