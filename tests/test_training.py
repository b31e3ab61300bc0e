"""Training and evaluation in kennel/: time split, determinism, threshold, fairness arithmetic."""

import numpy as np
import pandas as pd
import pytest

from kennel.model import ModelCard
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from kennel.training.config import TrainConfig
from kennel.training.evaluation import (
    classification_metrics,
    evaluate,
    fairness_gaps,
    group_metrics,
    shap_summary,
)
from kennel.training.trainer import (
    NotEnoughData,
    best_f1_threshold,
    search_hyperparameters,
    split_windows,
    train_model,
    window_shortfall,
)
from tests.training_data import training_frame


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEFAULT_SPEC_PATH)


def test_split_windows_are_time_ordered_and_respect_the_spec(spec):
    days = [f"2026-01-{d:02d}" for d in range(1, 26)]
    w = split_windows(days, spec)
    assert w.test == days[-3:] and w.validation == days[-6:-3]
    assert w.train == days[-20:-6] and len(w.train) == spec.split.train_days
    assert split_windows(days[:7], spec).train == days[:1]
    with pytest.raises(NotEnoughData, match="needs at least 7"):
        split_windows(days[:6], spec)


def test_a_train_window_shrunk_by_failed_days_says_so_and_names_them(spec):
    days = [f"2026-01-{d:02d}" for d in range(1, 21)]  # exactly train + validation + test (14 + 3 + 3)
    assert window_shortfall(split_windows(days, spec), spec, []) is None
    failed = ["2026-01-04", "2026-01-09", "2026-01-19"]  # two train days and one test day fail
    windows = split_windows([d for d in days if d not in failed], spec)
    assert len(windows.train) == spec.split.train_days - 3  # the test day's loss pushes the windows back
    said = window_shortfall(windows, spec, failed)
    assert said is not None
    assert f"holds {len(windows.train)} of the {spec.split.train_days} days" in said
    assert "2026-01-04" in said and "2026-01-09" in said and "2026-01-19" not in said
    short = split_windows(days[:10], spec)  # no failures, just too few days
    assert "only 4 validated day(s)" in (window_shortfall(short, spec, []) or "")


def test_same_data_and_config_give_the_same_model(spec):
    card = ModelCard.for_spec(spec)
    train, valid = training_frame(spec, "2026-01-01", 3000, 1), training_frame(spec, "2026-01-02", 1000, 2)
    config = TrainConfig(device="cpu", n_estimators=60)
    first, r1 = train_model(card, train, valid, config)
    second, r2 = train_model(card, train, valid, config)
    assert bytes(first.booster.save_raw("ubj")) == bytes(second.booster.save_raw("ubj"))
    assert r1.best_iteration == r2.best_iteration and r1.threshold == r2.threshold
    assert r1.device == "cpu" and first.booster.num_boosted_rounds() == r1.best_iteration + 1
    test = training_frame(spec, "2026-01-03", 2000, 3)
    scores = first.score(test)
    assert classification_metrics(test["label"].to_numpy(), scores, r1.threshold)["roc_auc"] > 0.75
    assert set(r1.feature_importance) <= set(card.feature_names) and "gender" not in r1.feature_importance


def test_single_class_training_window_is_refused(spec):
    train = training_frame(spec, "2026-01-01", 200, 1).assign(label=0)
    with pytest.raises(ValueError, match="only one label value"):
        train_model(
            ModelCard.for_spec(spec), train, training_frame(spec, "2026-01-02", 100, 2), TrainConfig(device="cpu")
        )


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
    assert report.metrics["tp"] == 3 and report.metrics["fp"] == 1
    assert report.calibration["rows"].sum() == len(frame)


def test_budgeted_search_records_every_trial_and_keeps_the_best_on_validation(spec):
    card = ModelCard.for_spec(spec)
    train, valid = training_frame(spec, "2026-01-01", 1500, 1), training_frame(spec, "2026-01-02", 600, 2)
    config = TrainConfig(device="cpu", n_estimators=40, nthread=1, search_trials=4)

    def train_once(cfg):
        return train_model(card, train, valid, cfg)

    model, result, trials = search_hyperparameters(train_once, config)
    assert [t.trial for t in trials] == [0, 1, 2, 3]
    assert trials[0].params["max_depth"] == config.max_depth  # trial 0 is the configured model
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    best = min(trials, key=lambda t: t.validation_logloss)
    assert result.validation_logloss == best.validation_logloss
    assert model.booster.num_boosted_rounds() == best.best_iteration + 1
    _, _, again = search_hyperparameters(train_once, config)
    assert [t.params for t in again] == [t.params for t in trials]  # seeded draws

    # The time budget stops the search after the trial that spent it.
    _, _, cut = search_hyperparameters(train_once, config.model_copy(update={"search_time_budget_s": 1e-9}))
    assert len(cut) == 1
    _, off, single = search_hyperparameters(train_once, config.model_copy(update={"search_trials": 0}))
    assert len(single) == 1 and off.validation_logloss == trials[0].validation_logloss


def test_shap_summary_adds_up_to_the_model_margin(spec):
    import xgboost as xgb

    from kennel.model import to_model_frame

    card = ModelCard.for_spec(spec)
    model, _ = train_model(
        card,
        training_frame(spec, "2026-01-01", 1500, 1),
        training_frame(spec, "2026-01-02", 600, 2),
        TrainConfig(device="cpu", n_estimators=30, nthread=1),
    )
    test = training_frame(spec, "2026-01-03", 400, 3)
    summary = shap_summary(model, test, max_rows=200)
    assert list(summary["feature"]) != card.feature_names and set(summary["feature"]) == set(card.feature_names)
    assert summary["mean_abs_shap"].is_monotonic_decreasing and summary["share"].sum() == pytest.approx(1.0)
    # Model.explain's contributions plus its bias add up to the library's own margin for every row.
    margin = model.booster.predict(xgb.DMatrix(to_model_frame(test, card), enable_categorical=True), output_margin=True)
    np.testing.assert_allclose(model.explain(test).sum(axis=1), margin, rtol=1e-4, atol=1e-4)
    assert "gender" not in set(summary["feature"])


def test_fairness_gaps_leave_out_rates_resting_on_too_few_rows():
    table = pd.DataFrame(
        {
            "group": ["a", "b", "tiny"],
            "count": [400, 400, 10],
            "positives": [100, 100, 2],
            "negatives": [300, 300, 8],
            "selection_rate": [0.30, 0.20, 0.9],
            "tpr": [0.8, 0.7, 0.0],
            "fpr": [0.1, 0.05, 0.5],
        }
    )
    assert fairness_gaps(table, min_count=50) == pytest.approx(
        {"demographic_parity_difference": 0.10, "equalized_odds_difference": 0.10}
    )
    assert fairness_gaps(table)["demographic_parity_difference"] == pytest.approx(0.7)
    # TPR rests on positives: with 150 required only the FPR gap (300 negatives each) remains measurable.
    assert fairness_gaps(table, min_count=150)["equalized_odds_difference"] == pytest.approx(0.05)


def test_thread_policy_follows_the_cores_the_process_may_use(monkeypatch):
    from kennel.model import threads

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 3, 5})
    assert threads.usable_cores() == 3
    assert threads.training_threads(0) == 3 and threads.training_threads(1) == 1
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.configure_openmp()
    assert threads.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # a user's choice is kept
    monkeypatch.delenv("OMP_WAIT_POLICY")
    threads.configure_openmp()
    assert threads.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
