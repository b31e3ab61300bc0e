"""Performance estimated without labels (kennel/monitoring/estimation.py) on a synthetic world whose true
P(y=1|x) is known and whose model scores are a fixed, miscalibrated function of it."""

import math
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from kennel.monitoring.estimation import (
    CALIBRATION_FILE,
    Calibrator,
    MetricEstimate,
    PerformanceEstimate,
    _draw_metrics,
    _label_sums,
    _sorted_rows,
    estimate_by_group,
    estimate_performance,
    fit_calibrator,
    load_calibrator,
    save_calibrator,
)
from kennel.training.evaluation import calibration_table, classification_metrics, expected_calibration_error

THRESHOLD = 0.5
DAYS = 50


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def true_probability(x: np.ndarray, concept_drift: bool = False) -> np.ndarray:
    # Concept drift weakens the feature's link to the label and raises the base rate: P(y|x) moves.
    return _sigmoid(-0.8 + 0.5 * x) if concept_drift else _sigmoid(-1.5 + 1.2 * x)


def model_scores(x: np.ndarray) -> np.ndarray:
    """The served model: ranks rows by the true risk but is overconfident and biased upwards."""
    return _sigmoid(1.8 * _logit(true_probability(x)) + 0.7)


def draw_day(rng: np.random.Generator, rows: int, shift: float, spread: float = 1.0, concept_drift: bool = False):
    x = rng.normal(shift, spread, rows)
    labels = (rng.random(rows) < true_probability(x, concept_drift)).astype(int)
    return model_scores(x), labels


@pytest.fixture(scope="module")
def calibrator() -> Calibrator:
    scores, labels = draw_day(np.random.default_rng(1), 20_000, 0.0)
    return fit_calibrator(scores, labels)


def analysis_days(calibrator: Calibrator, concept_drift: bool) -> list[tuple[PerformanceEstimate, dict]]:
    """50 unlabelled days, 1,000 to 3,000 rows each, the feature's mean moving from -0.6 to 1.2 and its
    spread (which sets how well any score can rank) from 1.5 to 0.5: each day's estimate and its
    realized metrics."""
    rng = np.random.default_rng(2 if concept_drift else 3)
    out = []
    for day, (shift, spread) in enumerate(zip(np.linspace(-0.6, 1.2, DAYS), np.linspace(1.5, 0.5, DAYS))):
        scores, labels = draw_day(rng, int(rng.integers(1000, 3001)), shift, spread, concept_drift)
        estimate = estimate_performance(scores, calibrated=calibrator.apply(scores), threshold=THRESHOLD, seed=day)
        out.append((estimate, classification_metrics(labels, scores, THRESHOLD)))
    return out


def covered(metric: MetricEstimate, realized: float) -> bool:
    assert metric.low is not None and metric.high is not None
    return metric.low <= realized <= metric.high


def assert_no_nan(estimate: PerformanceEstimate) -> None:
    for f in fields(estimate):
        value = getattr(estimate, f.name)
        metrics = [value] if isinstance(value, MetricEstimate) else []
        for m in metrics:
            for number in (m.value, m.low, m.high):
                assert number is None or math.isfinite(number), f.name
            assert (m.value is None) == (m.reason is not None), f.name


def test_the_calibrator_is_monotone_and_fixes_a_miscalibrated_score(calibrator):
    grid = np.linspace(-0.5, 1.5, 2001)  # beyond the scores' range too: flat at the ends
    calibrated = calibrator.apply(grid)
    assert (np.diff(calibrated) >= 0).all() and calibrated.min() >= 0 and calibrated.max() <= 1

    scores, labels = draw_day(np.random.default_rng(4), 20_000, 0.0)  # held out from the fit
    raw_ece = expected_calibration_error(calibration_table(labels, scores))
    fixed_ece = expected_calibration_error(calibration_table(labels, calibrator.apply(scores)))
    assert raw_ece is not None and fixed_ece is not None
    assert raw_ece > 0.05 and fixed_ece < 0.02


def test_the_calibrator_round_trips_through_json_and_its_file(calibrator, tmp_path):
    again = Calibrator.from_json(calibrator.to_json())
    assert again == calibrator
    scores = np.random.default_rng(5).random(1000)
    assert np.array_equal(again.apply(scores), calibrator.apply(scores))

    path = save_calibrator(calibrator, tmp_path)
    assert path == tmp_path / CALIBRATION_FILE
    assert load_calibrator(tmp_path) == calibrator


def test_the_calibrator_is_a_function_of_the_rows_not_their_order():
    scores, labels = draw_day(np.random.default_rng(6), 5000, 0.0)
    scores = np.round(scores, 2)  # many tied scores, with mixed labels
    order = np.random.default_rng(7).permutation(len(scores))
    assert fit_calibrator(scores, labels) == fit_calibrator(scores[order], labels[order])


def test_a_broken_calibration_is_refused():
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibrator(thresholds=(0.1, 0.5), probabilities=(0.6, 0.2), reference_rows=10, reference_positives=4)
    with pytest.raises(ValueError, match="both values"):
        fit_calibrator(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="unknown calibration method"):
        Calibrator.from_json('{"method": "platt"}')


def test_under_covariate_shift_the_estimate_tracks_the_realized_metrics(calibrator):
    days = analysis_days(calibrator, concept_drift=False)
    estimated_auc = np.array([e.roc_auc.value for e, _ in days])
    realized_auc = np.array([r["roc_auc"] for _, r in days])
    # The shift is real: the realized AUC moves across the days, and the estimate moves with it.
    assert realized_auc.max() - realized_auc.min() > 0.1
    assert np.corrcoef(estimated_auc, realized_auc)[0, 1] > 0.9
    assert np.abs(estimated_auc - realized_auc).mean() <= 0.03
    assert sum(covered(e.roc_auc, r["roc_auc"]) for e, r in days) >= 0.8 * DAYS

    for metric in ("precision", "recall"):
        estimated = np.array([getattr(e, metric).value for e, _ in days])
        realized = np.array([r[metric] for _, r in days])
        assert np.abs(estimated - realized).mean() <= 0.03, metric
        assert sum(covered(getattr(e, metric), r[metric]) for e, r in days) >= 0.8 * DAYS, metric


def test_under_concept_drift_the_estimate_and_the_realized_auc_part(calibrator):
    days = analysis_days(calibrator, concept_drift=True)
    gap = np.array([e.roc_auc.value - r["roc_auc"] for e, r in days])
    # The model ranks by a relation that no longer holds: the labels say it got worse, the estimate
    # cannot see that, and the realized AUC leaves the interval.
    assert gap.mean() > 0.1
    assert sum(covered(e.roc_auc, r["roc_auc"]) for e, r in days) <= 0.1 * DAYS


def test_with_certain_labels_the_estimate_is_the_realized_metric():
    """Calibrated probabilities of exactly 0 or 1 are the labels: every estimate is the realized metric
    of kennel.training.evaluation (tied scores included), and every interval has no width."""
    scores, labels = draw_day(np.random.default_rng(8), 3000, 0.3)
    scores = np.round(scores, 1)
    estimate = estimate_performance(scores, calibrated=labels.astype(float), threshold=THRESHOLD)
    realized = classification_metrics(labels, scores, THRESHOLD)
    realized["expected_calibration_error"] = expected_calibration_error(calibration_table(labels, scores))
    for name, value in estimate.metrics().items():
        assert value == pytest.approx(realized[name], abs=1e-12), name
        metric = getattr(estimate, name)
        assert metric.low == pytest.approx(value, abs=1e-12) and metric.high == pytest.approx(value, abs=1e-12)


def realized(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """The metrics a draw stands for, as kennel.training.evaluation computes them from labels."""
    metrics = classification_metrics(labels, scores, THRESHOLD)
    metrics["expected_calibration_error"] = expected_calibration_error(calibration_table(labels, scores))
    return metrics


def test_each_draws_metrics_are_the_realized_metrics_of_its_labels():
    """The per-draw sums (positives per score segment, rank sum) give, for any label vector, exactly the
    AUC, precision, recall, positive rate and calibration error (pandas reliability table) of
    kennel.training.evaluation: tied scores, scores on bin edges and at the threshold included."""
    rng = np.random.default_rng(13)
    scores = np.concatenate([np.round(rng.random(1500), 2), [0.0, 0.1, 0.5, 0.9, 1.0, 0.5]])
    labels = np.vstack([rng.random(len(scores)) < q for q in (0.05, 0.3, 0.5, 0.8)])
    order, rows = _sorted_rows(scores, THRESHOLD)
    samples = _draw_metrics(rows, *_label_sums(labels[:, order], rows.ranks, rows.segment_starts))
    for draw, y in enumerate(labels.astype(int)):
        expected = realized(y, scores)
        for name, values in samples.items():
            assert values[draw] == pytest.approx(expected[name], abs=1e-12), (draw, name)


def test_rows_of_certain_label_are_fixed_and_the_others_drawn():
    """Probabilities of 0 and 1 give the same label in every draw; with one uncertain row left, each draw
    is one of two label vectors, and every interval runs between their two realized metrics."""
    scores, labels = draw_day(np.random.default_rng(14), 2000, 0.3)
    uncertain = int(np.argmax(scores >= THRESHOLD))  # predicted positive: its label moves precision too
    calibrated = labels.astype(float)
    calibrated[uncertain] = 0.5
    estimate = estimate_performance(scores, calibrated=calibrated, threshold=THRESHOLD, seed=1)
    outcomes = []
    for label in (0, 1):
        y = labels.copy()
        y[uncertain] = label
        outcomes.append(realized(y, scores))
    for name in estimate.metrics():
        metric = getattr(estimate, name)
        ends = sorted(outcome[name] for outcome in outcomes)
        assert ends[0] != ends[1], name
        assert metric.low == pytest.approx(ends[0], abs=1e-12) and metric.high == pytest.approx(ends[1], abs=1e-12)


def test_the_same_input_gives_the_same_estimate_and_the_seed_is_what_draws_the_interval(calibrator):
    scores, _ = draw_day(np.random.default_rng(9), 2000, 0.5)
    calibrated = calibrator.apply(scores)
    first = estimate_performance(scores, calibrated=calibrated, threshold=THRESHOLD, seed=3)
    assert estimate_performance(scores.copy(), calibrated=calibrated.copy(), threshold=THRESHOLD, seed=3) == first
    other = estimate_performance(scores, calibrated=calibrated, threshold=THRESHOLD, seed=4)
    assert other.roc_auc.value == first.roc_auc.value and other.roc_auc.low != first.roc_auc.low


def test_degenerate_rows_give_none_with_a_reason_never_nan():
    flat = estimate_performance(np.full(500, 0.3), calibrated=np.full(500, 0.3), threshold=THRESHOLD)
    assert flat.roc_auc.value is None and "same score" in (flat.roc_auc.reason or "")
    assert flat.precision.value is None and "at or above 0.5" in (flat.precision.reason or "")
    assert flat.recall.value == pytest.approx(0.0)
    assert_no_nan(flat)

    one = estimate_performance(np.array([0.9]), calibrated=np.array([0.8]), threshold=THRESHOLD)
    assert one.metrics() == dict.fromkeys(one.metrics())
    assert "1 row(s)" in (one.roc_auc.reason or "")
    assert_no_nan(one)

    scores = np.random.default_rng(10).random(500)
    never = estimate_performance(scores, calibrated=np.zeros(500), threshold=THRESHOLD)
    assert never.roc_auc.value is None and "0.0 expected positives" in (never.roc_auc.reason or "")
    assert never.recall.value is None and never.precision.value == 0.0 and never.positive_rate.value == 0.0
    assert_no_nan(never)

    empty = estimate_performance(np.array([]), calibrated=np.array([]), threshold=THRESHOLD)
    assert empty.rows == 0 and empty.roc_auc.value is None
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        estimate_performance(scores, calibrated=np.full(500, np.nan), threshold=THRESHOLD)


def test_by_group_estimates_each_value_and_reports_small_ones_as_insufficient(calibrator):
    rng = np.random.default_rng(11)
    scores, _ = draw_day(rng, 5000, 0.2)
    region = np.array(["north"] * 3000 + ["south"] * 1950 + ["east"] * 50, dtype=object)
    region[::10] = None
    frame = pd.DataFrame({"region": region})
    calibrated = calibrator.apply(scores)
    groups = estimate_by_group(frame, scores, calibrated, THRESHOLD, ["region"], min_rows=200)
    by_value = {g.value: g for g in groups["region"]}
    assert [g.value for g in groups["region"]] == sorted(by_value) == ["(missing)", "east", "north", "south"]
    assert by_value["east"].estimate is None and by_value["east"].reason == "45 row(s): fewer than 200"
    north = (frame["region"] == "north").to_numpy()
    assert by_value["north"].rows == north.sum()
    assert by_value["north"].estimate == estimate_performance(
        scores[north], calibrated=calibrated[north], threshold=THRESHOLD
    )
    assert by_value["(missing)"].estimate is not None and by_value["(missing)"].rows == 500
    with pytest.raises(KeyError, match="channel"):
        estimate_by_group(frame, scores, calibrated, THRESHOLD, ["channel"], min_rows=200)


def test_a_large_day_is_estimated_quickly(calibrator):
    """100k rows with 200 draws: the estimate must fit a daily monitoring asset without thought."""
    import time

    scores, _ = draw_day(np.random.default_rng(12), 100_000, 0.0)
    calibrated = calibrator.apply(scores)
    started = time.perf_counter()
    estimate = estimate_performance(scores, calibrated=calibrated, threshold=THRESHOLD, draws=200)
    assert time.perf_counter() - started < 5.0  # about 0.4 s on one idle core
    assert estimate.roc_auc.value is not None
