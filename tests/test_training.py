"""Training and evaluation in kennel/: time split, determinism, threshold, fairness arithmetic."""

import numpy as np
import pandas as pd
import pytest

from kennel.demo import generate_frame
from kennel.evaluation import classification_metrics, evaluate, fairness_gaps, group_metrics
from kennel.features import ModelCard
from kennel.hyperparameters import TrainConfig
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from kennel.training import NotEnoughData, best_f1_threshold, predict_scores, split_windows, train_model


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEFAULT_SPEC_PATH)


def _frame(spec, day: str, rows: int, seed: int) -> pd.DataFrame:
    """Demo records in the shape of the dbt `features` model (label as 0/1)."""
    frame = generate_frame(spec, pd.Timestamp(day).date(), rows, np.random.default_rng(seed))
    frame["label"] = (frame[spec.label.column].astype(str) == str(spec.label.positive)).astype(int)
    return frame


def test_split_windows_are_time_ordered_and_respect_the_spec(spec):
    days = [f"2026-01-{d:02d}" for d in range(1, 26)]
    w = split_windows(days, spec)
    assert w.test == days[-3:] and w.validation == days[-6:-3]
    assert w.train == days[-20:-6] and len(w.train) == spec.split.train_days
    assert split_windows(days[:7], spec).train == days[:1]
    with pytest.raises(NotEnoughData, match="needs at least 7"):
        split_windows(days[:6], spec)


def test_same_data_and_config_give_the_same_model(spec):
    card = ModelCard.for_spec(spec)
    train, valid = _frame(spec, "2026-01-01", 3000, 1), _frame(spec, "2026-01-02", 1000, 2)
    config = TrainConfig(device="cpu", n_estimators=60)
    first, r1 = train_model(card, train, valid, config)
    second, r2 = train_model(card, train, valid, config)
    assert bytes(first.save_raw("ubj")) == bytes(second.save_raw("ubj"))
    assert r1.best_iteration == r2.best_iteration and r1.threshold == r2.threshold
    assert r1.device == "cpu" and first.num_boosted_rounds() == r1.best_iteration + 1
    test = _frame(spec, "2026-01-03", 2000, 3)
    scores = predict_scores(first, card, test)
    assert classification_metrics(test["label"].to_numpy(), scores, r1.threshold)["roc_auc"] > 0.75
    assert set(r1.feature_importance) <= set(card.feature_names) and "gender" not in r1.feature_importance


def test_single_class_training_window_is_refused(spec):
    train = _frame(spec, "2026-01-01", 200, 1).assign(label=0)
    with pytest.raises(ValueError, match="only one label value"):
        train_model(ModelCard.for_spec(spec), train, _frame(spec, "2026-01-02", 100, 2), TrainConfig(device="cpu"))


def test_best_f1_threshold_separates_perfectly_separable_scores():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert best_f1_threshold(y, s) == pytest.approx(0.8)


def test_group_metrics_and_fairness_gaps_by_hand():
    frame = pd.DataFrame({"g": ["a", "a", "a", "a", "b", "b", "b", "b"], "label": [1, 1, 0, 0, 1, 1, 0, 0]})
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.9, 0.2, 0.1, 0.1])
    table = group_metrics(frame, scores, "g", threshold=0.5)
    a, b = table.set_index("group").loc["a"], table.set_index("group").loc["b"]
    assert (a.selection_rate, a.tpr, a.fpr) == (0.75, 1.0, 0.5)
    assert (b.selection_rate, b.tpr, b.fpr) == (0.25, 0.5, 0.0)
    gaps = fairness_gaps(table)
    assert gaps["demographic_parity_difference"] == pytest.approx(0.5)
    assert gaps["equalized_odds_difference"] == pytest.approx(0.5)
    report = evaluate(frame, scores, 0.5, ["g"])
    assert report["metrics"]["tp"] == 3 and report["metrics"]["fp"] == 1
    assert report["calibration"]["rows"].sum() == len(frame)
