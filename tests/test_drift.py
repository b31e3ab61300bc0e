"""Drift statistics: known answers by hand, no false alarms on same-distribution data, real demo drift found."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from kennel.demo import generate_frame
from kennel.model import ModelCard
from kennel.monitoring.drift import (
    DriftThresholds,
    ReferenceProfile,
    build_profile,
    compare,
    js_distance,
    psi,
)
from kennel.spec import DEFAULT_SPEC_PATH, FeatureType, load_spec


def test_psi_and_js_known_values():
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0
    assert psi(np.array([0.5, 0.5]), np.array([0.9, 0.1])) == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2))
    assert js_distance({"a": 1.0}, {"a": 1.0}) == 0
    assert js_distance({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)


def _frame(rng, n, shift=0.0, p_online=0.4):
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, n),
            "y": np.where(rng.random(n) < 0.05, np.nan, rng.exponential(2.0, n)),
            "c": np.where(rng.random(n) < p_online, "online", "branch"),
        }
    )


def test_same_distribution_is_not_drift_and_shift_is():
    rng = np.random.default_rng(0)
    profile = build_profile(_frame(rng, 20_000), numeric=["x", "y"], categorical=["c"])
    same = compare(profile, _frame(rng, 20_000))
    assert [f.status for f in same.features] == ["ok", "ok", "ok"] and not same.dataset_drift
    shifted = compare(profile, _frame(rng, 20_000, shift=1.0, p_online=0.8))
    status = {f.feature: f.status for f in shifted.features}
    assert status == {"x": "drifted", "y": "ok", "c": "drifted"}
    x = next(f for f in shifted.features if f.feature == "x")
    assert x.wasserstein == pytest.approx(1.0, abs=0.05)  # a one-std mean shift
    assert shifted.table()[0]["feature"] in {"x", "c"} and shifted.table()[-1]["feature"] == "y"
    assert shifted.dataset_drift and shifted.drifted_share == pytest.approx(2 / 3)


def test_small_samples_are_insufficient_not_drifted():
    rng = np.random.default_rng(1)
    profile = build_profile(_frame(rng, 5_000), numeric=["x"], categorical=["c"])
    report = compare(profile, _frame(rng, 50, shift=3.0), DriftThresholds(min_rows=200))
    assert {f.status for f in report.features} == {"insufficient_data"} and not report.dataset_drift
    ks = compare(profile, _frame(rng, 500, shift=1.0)).features[0]
    assert ks.ks_statistic is not None and ks.ks_pvalue < 1e-6


def test_profile_round_trips_through_json():
    rng = np.random.default_rng(2)
    profile = build_profile(_frame(rng, 1_000), numeric=["x", "y"], categorical=["c"])
    again = ReferenceProfile.from_json(profile.to_json())
    frame = _frame(rng, 1_000, shift=0.5)
    assert compare(again, frame).table() == compare(profile, frame).table()


def test_demo_drift_scenario_is_detected_on_the_shifted_features():
    spec = load_spec(DEFAULT_SPEC_PATH)
    numeric = [f.name for f in spec.features if f.type is FeatureType.numeric]
    categorical = [f.name for f in spec.features if f.type is not FeatureType.numeric]
    reference = generate_frame(spec, date(2026, 1, 1), 5_000, np.random.default_rng(1))
    profile = build_profile(reference, numeric, categorical)
    baseline = compare(profile, generate_frame(spec, date(2026, 1, 2), 5_000, np.random.default_rng(2)))
    drifted = compare(profile, generate_frame(spec, date(2026, 1, 2), 5_000, np.random.default_rng(2), drifted=True))
    assert not baseline.dataset_drift and baseline.drifted == []
    found = {f.feature for f in drifted.drifted}
    assert {"annual_income", "channel"} <= found


def test_monitoring_summary_separates_feature_and_prediction_drift():
    from kennel.monitoring.profile import (
        build_reference,
        drift_summary,
        realized_performance,
    )

    spec = load_spec(DEFAULT_SPEC_PATH)
    rng = np.random.default_rng(3)
    train = generate_frame(spec, date(2026, 1, 1), 4_000, rng)
    profile = build_reference(spec, train, rng.beta(2, 8, len(train)), card=ModelCard.for_spec(spec))
    current = generate_frame(spec, date(2026, 1, 2), 4_000, rng)
    steady = drift_summary(profile, current, rng.beta(2, 8, len(current)))
    assert steady.prediction_psi < 0.05 and not steady.dataset_drift
    moved = drift_summary(profile, current, rng.beta(5, 5, len(current)))
    assert moved.prediction_psi > 0.5 and moved.drifted_features == []

    labelled = current.assign(label=(current[spec.label.column].astype(str) == "1").astype(float))
    labelled.loc[labelled.index[:1000], "label"] = np.nan  # labels not yet known for some rows
    perf = realized_performance(labelled, rng.random(len(labelled)), 0.5, ["gender"])
    assert perf.labelled_rows == 3_000 and perf.metrics is not None and 0.4 < perf.metrics["roc_auc"] < 0.6
    assert set(perf.groups["gender"]["group"]) >= {"female", "male"}


def test_a_drifted_sensitive_column_is_reported_apart_from_the_model_inputs():
    from kennel.monitoring.profile import build_reference, drift_summary

    spec = load_spec(DEFAULT_SPEC_PATH)
    rng = np.random.default_rng(4)
    train = generate_frame(spec, date(2026, 1, 1), 4_000, rng)
    card = ModelCard.for_spec(spec)
    profile = build_reference(spec, train, rng.beta(2, 8, len(train)), card=card)
    current = generate_frame(spec, date(2026, 1, 2), 4_000, rng)
    current["gender"] = "female"  # the applicants change; the model never reads gender
    summary = drift_summary(profile, current, rng.beta(2, 8, len(current)), inputs=card.feature_names)
    assert summary.drifted_non_inputs == ["gender"]
    assert "gender" not in summary.drifted_features and summary.drifted_share == 0.0
    assert not summary.dataset_drift
