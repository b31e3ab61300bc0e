"""Label-free performance estimation on the demo world, with the real model: trained and calibrated as the
`model` asset does (kennel.monitoring.profile.save_monitoring_reference), then scored on days whose labels
are withheld from the estimate.

- covariate shift only (the generator's covariate_shift scenario: the inputs move, P(label | inputs)
  does not): the estimated AUC tracks the realized AUC, day by day;
- concept drift (the drift scenario: the same inputs, the label model changes): the realized AUC falls
  below what the estimate promised, and the day is flagged as concept drift once labels arrive.
"""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from kennel.demo import generate_frame
from kennel.model import ModelCard
from kennel.monitoring.estimation import load_calibrator
from kennel.monitoring.performance import SliceRules, estimate_day
from kennel.monitoring.profile import save_monitoring_reference
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from kennel.training.config import TrainConfig
from kennel.training.evaluation import roc_auc
from kennel.training.trainer import train_model

ROWS = 2_000  # per day, as in `make demo`
SHIFTED_DAYS = 8
START = date(2026, 3, 1)


def _days(spec, first: int, n: int, *, drifted: bool, concept: bool) -> list[pd.DataFrame]:
    frames = []
    for i in range(first, first + n):
        frame = generate_frame(
            spec,
            START + timedelta(days=i),
            ROWS,
            np.random.default_rng([11, i]),
            drifted=drifted,
            concept_drift=concept,
        )
        frame["label"] = (frame[spec.label.column].astype(str) == str(spec.label.positive)).astype(int)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A champion trained on the demo split (14 train days, 3 validation days), with its references."""
    spec = load_spec(DEFAULT_SPEC_PATH)
    train = pd.concat(_days(spec, 0, spec.split.train_days, drifted=False, concept=False), ignore_index=True)
    validation = pd.concat(
        _days(spec, spec.split.train_days, spec.split.validation_days, drifted=False, concept=False), ignore_index=True
    )
    model, result = train_model(
        ModelCard.for_spec(spec, training=train), train, validation, TrainConfig(device="cpu", n_estimators=200)
    )
    folder = tmp_path_factory.mktemp("champion")
    save_monitoring_reference(spec, model, train, validation, folder)
    test_day = _days(spec, 17, 1, drifted=False, concept=False)[0]
    return spec, model, load_calibrator(folder), roc_auc(test_day["label"].to_numpy(), model.score(test_day))


def _estimated(champion, frame, *, labelled: bool):
    spec, model, calibrator, champion_auc = champion
    shown = frame if labelled else frame.assign(label=np.nan)  # withheld: the estimate never sees them
    return estimate_day(
        shown,
        model.score(frame),
        calibrator,
        threshold=model.card.threshold,
        champion_auc=champion_auc,
        slice_columns=spec.slice_columns,
    )


def test_estimated_auc_tracks_realized_auc_under_covariate_shift(champion):
    spec, model, _, _ = champion
    errors = []
    for frame in _days(spec, 20, SHIFTED_DAYS, drifted=True, concept=False):
        estimated = _estimated(champion, frame, labelled=False)
        assert estimated.labelled_rows == 0 and estimated.estimation_error == {}
        realized = roc_auc(frame["label"].to_numpy(), model.score(frame))
        errors.append(abs(estimated.estimates["roc_auc"].value - realized))
    # The goal on days of at least 1,000 rows.
    assert np.mean(errors) <= 0.03, errors


def test_once_labels_arrive_the_estimation_error_is_recorded(champion):
    spec, model, _, _ = champion
    frame = _days(spec, 20, 1, drifted=True, concept=False)[0]
    estimated = _estimated(champion, frame, labelled=True)
    realized = roc_auc(frame["label"].to_numpy(), model.score(frame))
    assert estimated.labelled_rows == ROWS and estimated.realized_roc_auc == pytest.approx(realized)
    assert estimated.estimation_error["roc_auc"] == pytest.approx(estimated.estimates["roc_auc"].value - realized)
    assert set(estimated.estimation_error) >= {"roc_auc", "precision", "recall", "positive_rate"}
    assert estimated.concept_drift_suspected is False


def test_concept_drift_shows_as_a_gap_between_estimate_and_realized(champion):
    spec, _, _, _ = champion
    covariate = [_estimated(champion, f, labelled=True) for f in _days(spec, 20, 4, drifted=True, concept=False)]
    concept = [_estimated(champion, f, labelled=True) for f in _days(spec, 20, 4, drifted=True, concept=True)]
    assert not any(e.concept_drift_suspected for e in covariate)
    assert all(e.concept_drift_suspected for e in concept)
    assert min(e.estimation_error["roc_auc"] for e in concept) > max(
        abs(e.estimation_error["roc_auc"]) for e in covariate
    )


def test_slices_are_estimated_per_value_and_small_ones_are_not_judged(champion):
    spec, _, _, _ = champion
    frame = _days(spec, 20, 1, drifted=True, concept=False)[0]
    estimated = _estimated(champion, frame, labelled=False)
    columns = {s.column for s in estimated.slices}
    assert columns == set(spec.slice_columns)
    region_values = {s.value for s in estimated.slices if s.column == "region"}
    assert region_values == set(frame["region"].dropna().astype(str))
    small = [s for s in estimated.slices if s.rows < SliceRules().min_rows]
    assert small and all(s.status == "insufficient_data" for s in small)
    judged = [s for s in estimated.slices if s.status != "insufficient_data"]
    assert [s.severity for s in judged] == sorted((s.severity for s in judged), reverse=True)
    assert estimated.slices[: len(judged)] == judged  # judged slices first, worst first
