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

CALIBRATION_FILE = "calibration.json"
DRAWS = 200  # Monte-Carlo label draws per estimate: a 95% interval's ends move by about 0.2 sd between seeds
LEVEL = 0.95
# A metric whose denominator holds fewer expected rows than this is reported as None: its estimate and
# its interval would both be noise.
MIN_EXPECTED = 10.0
CALIBRATION_BINS = 10  # the reliability bins of kennel.training.evaluation.calibration_table
MISSING_GROUP = "(missing)"  # as kennel.training.evaluation.group_metrics names a missing group
_DRAW_BUDGET = 4_000_000  # label draws held at once (draws × rows): 20 MB of 32-bit uniforms and 0/1 labels


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


@dataclass(frozen=True)
class _SortedRows:
    """The rows in ascending score, and what every metric reads from that order, computed once per estimate.

    A segment is a run of rows sharing a reliability bin and a side of the threshold: both are score
    intervals, so in this order each is contiguous, and a draw's positives per segment give its label
    count, its true positives and its positives per bin at once."""

    scores: np.ndarray
    ranks: np.ndarray  # per row: its score's rank, ties sharing their mean rank (1-based)
    tie_starts: np.ndarray  # first row of each run of equal scores
    segment_starts: np.ndarray  # first row of each non-empty segment
    segment_bin: np.ndarray  # per segment: its reliability bin
    segment_predicted: np.ndarray  # per segment: scored at or above the threshold


def _sorted_rows(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, _SortedRows]:
    """The order that sorts `scores` (stable: ties keep their input order) and the rows in that order."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    n = len(s)
    tie_starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    tie_rows = np.diff(np.append(tie_starts, n))
    ranks = np.repeat(tie_starts + (tie_rows + 1) / 2.0, tie_rows)
    # Row i is in bin b when b inner edges lie at or below its score, as np.digitize in
    # `calibration_table` assigns it: a bin starts at the first row not below its lower edge.
    inner_edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)[1:-1]
    bin_starts = np.searchsorted(s, inner_edges, side="left")
    predicted_start = np.searchsorted(s, threshold, side="left")
    cuts = np.unique(np.concatenate(([0], bin_starts, [predicted_start])))
    segment_starts = cuts[cuts < n]
    return order, _SortedRows(
        scores=s,
        ranks=ranks,
        tie_starts=tie_starts,
        segment_starts=segment_starts,
        segment_bin=np.searchsorted(bin_starts, segment_starts, side="right"),
        segment_predicted=segment_starts >= predicted_start,
    )


def _cbpe_auc(rows: _SortedRows, p: np.ndarray) -> float:
    """Area under the expected ROC curve: rows by score descending, each adding p to the true positives
    and 1 - p to the false ones; rows with the same score form one step (their order is arbitrary).
    `p` is in the rows' sorted order."""
    tie_rows = np.diff(np.append(rows.tie_starts, len(p)))
    positives = np.add.reduceat(p, rows.tie_starts)[::-1]
    negatives = tie_rows[::-1] - positives
    tpr = np.concatenate(([0.0], np.cumsum(positives))) / positives.sum()
    fpr = np.concatenate(([0.0], np.cumsum(negatives))) / negatives.sum()
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def _label_sums(labels: np.ndarray, ranks: np.ndarray, segment_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For 0/1 label vectors (rows of `labels`, columns in score order): positives per segment and the
    rank sum of the positives. Counts are integers and ranks half-integers, so both sums are exact in
    float64 whatever order they are added in. einsum rather than a matrix product: BLAS would wake its
    threads for each chunk, which costs more than the sum on a busy machine."""
    as_bytes = labels.view(np.uint8)
    per_segment = np.add.reduceat(as_bytes, segment_starts, axis=1, dtype=np.int32).astype(np.float64)
    return per_segment, np.einsum("ij,j->i", as_bytes, ranks)


def _draw_sums(rows: _SortedRows, p: np.ndarray, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`_label_sums` of `draws` label vectors y ~ Bernoulli(p) (`p` in score order): positives per segment
    (draws × segments) and rank sums (draws).

    Rows with p = 0 or 1 are the same in every draw and enter as constants; each other row is positive
    when a 32-bit uniform integer falls below floor(p · 2³²), which is P(y = 1) within 2⁻³² of p and
    costs a quarter of the random bits and memory of a float64 uniform."""
    segment = np.repeat(np.arange(len(rows.segment_starts)), np.diff(np.append(rows.segment_starts, len(p))))
    certain = p == 1.0
    drawn = (p > 0.0) & ~certain
    per_segment = np.tile(
        np.bincount(segment[certain], minlength=len(rows.segment_starts)).astype(np.float64), (draws, 1)
    )
    rank_sums = np.full(draws, rows.ranks[certain].sum())
    m = int(drawn.sum())
    if m == 0:
        return per_segment, rank_sums
    # The drawn rows keep their segments: each non-empty one starts where the first of its rows lands.
    drawn_segment = segment[drawn]
    starts = np.flatnonzero(np.concatenate(([True], drawn_segment[1:] != drawn_segment[:-1])))
    below = (p[drawn] * 2.0**32).astype(np.uint32)
    ranks = rows.ranks[drawn]
    bits = np.random.PCG64(seed)
    words = (m + 1) // 2  # 64-bit words per draw, two 32-bit uniforms each
    chunk = max(1, _DRAW_BUDGET // m)
    for first in range(0, draws, chunk):
        last = min(first + chunk, draws)
        uniforms = bits.random_raw((last - first) * words).view(np.uint32).reshape(last - first, 2 * words)
        counts, sums = _label_sums(uniforms[:, :m] < below, ranks, starts)
        per_segment[first:last, drawn_segment[starts]] += counts
        rank_sums[first:last] += sums
    return per_segment, rank_sums


def _draw_metrics(rows: _SortedRows, per_segment: np.ndarray, rank_sums: np.ndarray) -> dict[str, np.ndarray]:
    """Each label vector's realized metrics (as `kennel.training.evaluation` computes them) from its
    positives per segment and rank sum; NaN where a metric is undefined (AUC without both labels,
    recall without positives)."""
    n = len(rows.scores)
    n_pos = per_segment.sum(axis=1)
    true_pos = per_segment[:, rows.segment_predicted].sum(axis=1)
    bin_pos = per_segment @ (rows.segment_bin[:, None] == np.arange(CALIBRATION_BINS))
    score_per_bin = _per_bin(rows, rows.scores)
    predicted_rows = np.diff(np.append(rows.segment_starts, n))[rows.segment_predicted].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "roc_auc": (rank_sums - n_pos * (n_pos + 1) / 2.0) / (n_pos * (n - n_pos)),
            "precision": true_pos / predicted_rows,
            "recall": true_pos / n_pos,
            "expected_calibration_error": np.abs(score_per_bin - bin_pos).sum(axis=1) / n,
            "positive_rate": n_pos / n,
        }


def _per_bin(rows: _SortedRows, values: np.ndarray) -> np.ndarray:
    """Sum of `values` (in score order) over each reliability bin."""
    per_segment = np.add.reduceat(values, rows.segment_starts)
    return np.bincount(rows.segment_bin, weights=per_segment, minlength=CALIBRATION_BINS)


def _intervals(samples: np.ndarray, level: float) -> list[tuple[float | None, float | None]]:
    """The central `level` interval of each row of `samples`, its non-finite entries left out."""
    tail = (1.0 - level) / 2.0
    finite = np.isfinite(samples)
    if finite.all():
        ends = np.quantile(samples, [tail, 1.0 - tail], axis=1).T
        return [(float(low), float(high)) for low, high in ends]
    out: list[tuple[float | None, float | None]] = []
    for row, keep in zip(samples, finite, strict=True):
        if keep.any():
            low, high = np.quantile(row[keep], [tail, 1.0 - tail])
            out.append((float(low), float(high)))
        else:
            out.append((None, None))
    return out


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
    n_predicted = int((s >= threshold).sum())
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

    names = ("roc_auc", "precision", "recall", "expected_calibration_error", "positive_rate")
    if n < min_expected:
        too_few = MetricEstimate(None, reason=f"{n} row(s): fewer than {min_expected:g}")
        return estimate(**dict.fromkeys(names, too_few))

    order, rows = _sorted_rows(s, threshold)
    p_sorted = p[order]
    # One pass of draws gives every metric: positives per segment and the rank sum of the positives.
    samples = _draw_metrics(rows, *_draw_sums(rows, p_sorted, draws, seed))
    intervals = dict(zip(names, _intervals(np.stack([samples[name] for name in names]), level), strict=True))

    def interval_of(name: str, value: float) -> MetricEstimate:
        low, high = intervals[name]
        return MetricEstimate(value=value, low=low, high=high)

    few_pos = f"{expected_pos:.1f} expected positives: fewer than {min_expected:g}"
    if len(rows.tie_starts) == 1:
        roc_auc = MetricEstimate(None, reason="every row has the same score: there is no ranking to judge")
    elif expected_pos < min_expected:
        roc_auc = MetricEstimate(None, reason=few_pos)
    elif expected_neg < min_expected:
        roc_auc = MetricEstimate(None, reason=f"{expected_neg:.1f} expected negatives: fewer than {min_expected:g}")
    else:
        roc_auc = interval_of("roc_auc", _cbpe_auc(rows, p_sorted))

    expected_true_pos = float(p[s >= threshold].sum())
    if n_predicted < min_expected:
        precision = MetricEstimate(
            None, reason=f"{n_predicted} row(s) scored at or above {threshold:g}: fewer than {min_expected:g}"
        )
    else:
        precision = interval_of("precision", expected_true_pos / n_predicted)
    recall = (
        MetricEstimate(None, reason=few_pos)
        if expected_pos < min_expected
        else interval_of("recall", expected_true_pos / expected_pos)
    )

    # The realized metric's own definition (`calibration_table`'s row-weighted gap between mean score
    # and observed rate per bin), with the calibrated probabilities as the observed rates.
    ece = float(np.abs(_per_bin(rows, rows.scores) - _per_bin(rows, p_sorted)).sum() / n)
    return estimate(
        roc_auc=roc_auc,
        precision=precision,
        recall=recall,
        expected_calibration_error=interval_of("expected_calibration_error", ece),
        positive_rate=interval_of("positive_rate", expected_pos / n),
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
