"""Explanation drift (kennel.monitoring.attribution) on a small real model trained on the demo's credit data:
no alarm on same-distribution days, drift where attributions really move, a planted change found, the same
answer for the same rows in any order, and no verdict on too few rows."""

from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import pandas as pd
import pytest

from kennel.model import Model, ModelCard, booster_params, fit
from kennel.monitoring import profile as reference_profile
from kennel.monitoring.attribution import (
    ATTRIBUTION_FILE,
    TOP_FEATURES,
    AttributionProfile,
    AttributionThresholds,
    build_attribution_profile,
    canonical_sample,
    compare_attributions,
    load_attribution_profile,
    save_attribution_profile,
)
from kennel.spec import DatasetSpec, load_spec
from tests.training_data import training_frame

SERVED_DAY = date(2026, 2, 1)
BATCHES = 20  # same-distribution days per false-alarm check
# Only the reference band decides: every change, however small, passes the effect floor.
BAND_ONLY = AttributionThresholds(relative_change=1e-12, share_change=1e-12)


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_spec("datasets/credit_demo.yaml")


def labelled_rows(spec: DatasetSpec, day: date, rows: int, seed: int, *, drifted: bool = False) -> pd.DataFrame:
    return training_frame(spec, day.isoformat(), rows, seed, drifted=drifted)


@pytest.fixture(scope="module")
def train(spec: DatasetSpec) -> pd.DataFrame:
    return labelled_rows(spec, date(2026, 1, 1), 4000, 1)


@pytest.fixture(scope="module")
def model(spec: DatasetSpec, train: pd.DataFrame) -> Model:
    params = booster_params(
        learning_rate=0.1,
        max_depth=4,
        min_child_weight=1.0,
        subsample=0.9,
        colsample_bytree=0.9,
        reg_lambda=1.0,
        seed=0,
        nthread=2,
        device="cpu",
    )
    validation = labelled_rows(spec, date(2026, 1, 2), 1000, 2)
    card = ModelCard.for_spec(spec, training=train)
    return fit(card, train, validation, params, rounds=150, early_stopping_rounds=20).model


@pytest.fixture(scope="module")
def profile(model: Model, train: pd.DataFrame) -> AttributionProfile:
    return build_attribution_profile(model, train)


def test_the_profile_holds_the_sampling_distribution_of_a_batch_mean(model, train, profile):
    assert profile.rows == len(train) and list(profile.features) == model.card.feature_names
    assert sum(f.share for f in profile.features.values()) == pytest.approx(1.0)
    per_row = model.explain(train).drop(columns="bias").abs()
    for name, feature in profile.features.items():
        assert feature.mean_abs_shap == pytest.approx(per_row[name].mean())
        assert feature.batch_quantiles == sorted(feature.batch_quantiles)
        # A bootstrap batch mean of n rows spreads like one row's |SHAP| divided by sqrt(n) ...
        expected_std = per_row[name].std() / np.sqrt(profile.batch_rows)
        assert feature.batch_std == pytest.approx(expected_std, rel=0.3)
        # ... around the mean of all rows.
        assert abs(feature.batch_mean - feature.mean_abs_shap) < 4 * feature.batch_std / np.sqrt(profile.batches)
    capped = build_attribution_profile(model, train, max_rows=1000, batch_rows=100, batches=50)
    assert (capped.rows, capped.batch_rows, capped.batches) == (1000, 100, 50)


def test_the_profile_is_the_same_for_the_same_rows_in_any_order(model, train, profile):
    shuffled = train.sample(frac=1.0, random_state=7).set_index(np.arange(len(train)) * 3)
    assert build_attribution_profile(model, shuffled) == profile
    assert build_attribution_profile(model, train, seed=1) != profile


def test_a_long_training_window_is_profiled_from_a_sample_that_ignores_row_order(
    spec, model, train, tmp_path, monkeypatch
):
    monkeypatch.setattr(reference_profile, "REFERENCE_MAX_ROWS", 1500)
    validation = labelled_rows(spec, date(2026, 1, 2), 1000, 2)
    # Every row twice, the copy with another gender: rows the model cannot tell apart, which the sample
    # must still choose by their values, not by where they sit.
    rotated = {"female": "male", "male": "nonbinary", "nonbinary": "female"}
    flipped = train.assign(gender=train["gender"].map(rotated).fillna(train["gender"]))
    window = pd.concat([train, flipped], ignore_index=True)
    shuffled = window.sample(frac=1.0, random_state=3).set_index(np.arange(len(window)) * 7)
    profiles = []
    for name, rows in (("in order", window), ("shuffled", shuffled)):
        (tmp_path / name).mkdir()
        reference_profile.save_monitoring_reference(spec, model, rows, validation, tmp_path / name)
        profiles.append(reference_profile.load_reference(tmp_path / name))
        assert load_attribution_profile(tmp_path / name) == load_attribution_profile(tmp_path / "in order")
    assert profiles[0] == profiles[1]
    assert profiles[0].rows == 1500
    # A sample, not the first rows: both genders' shares are those of the whole window, within sampling error.
    for value, share in profiles[0].categorical["gender"].shares.items():
        assert share == pytest.approx((window["gender"].astype(str) == value).mean(), abs=0.05)


def test_the_profile_round_trips_through_json(profile, tmp_path):
    path = save_attribution_profile(profile, tmp_path)
    assert path == tmp_path / ATTRIBUTION_FILE
    assert load_attribution_profile(tmp_path) == profile
    assert AttributionProfile.from_json(profile.to_json()) == profile


@pytest.mark.parametrize("rows", [300, 2000])
def test_same_distribution_days_raise_no_alarm_and_their_distances_are_standard(spec, model, profile, rows):
    days = [labelled_rows(spec, SERVED_DAY, rows, 100 + i) for i in range(BATCHES)]
    band_only = [compare_attributions(profile, model, day, thresholds=BAND_ONLY) for day in days]
    # Even with no effect floor the band (Bonferroni over 20 features at 1%) holds: 0.2 alarms expected.
    assert sum(r.status == "drifted" for r in band_only) <= 1
    # The distances are standard normal when the band is scaled right to the sample size: too wide a band
    # would shrink their spread, too narrow one widen it.
    z = np.array([f.z for r in band_only for f in r.features])
    assert abs(z.mean()) < 0.5 and 0.7 < z.std() < 1.35
    # With the default effect floor on top, not one feature of one day.
    assert all(compare_attributions(profile, model, day).status == "ok" for day in days)


def test_drift_is_found_where_attributions_really_move(spec, model, profile):
    served = labelled_rows(spec, SERVED_DAY, 2000, 7, drifted=True)
    result = compare_attributions(profile, model, served)
    assert result.status == "drifted" and result.rows_explained == 2000
    # The drifted days move the business online (channel): the model's channel attribution falls by a third.
    assert "channel" in result.drifted_features
    assert [f.severity for f in result.features] == sorted((f.severity for f in result.features), reverse=True)
    assert result.features[0].status == "drifted"
    # What really moved: the same comparison on many more drifted rows (another draw).
    truth = {
        f.feature: f
        for f in compare_attributions(
            profile, model, labelled_rows(spec, SERVED_DAY, 5000, 8, drifted=True), max_rows=5000
        ).features
    }
    t = result.thresholds
    for feature in result.drifted:
        moved = truth[feature.feature]
        assert abs(moved.relative_change or 0.0) > t.relative_change / 2 or abs(moved.share_change or 0.0) > (
            t.share_change / 2
        ), feature
    steady = [name for name, f in truth.items() if abs(f.relative_change or 0.0) < 0.05]
    assert steady and not set(steady) & set(result.drifted_features)


def test_the_effect_floor_holds_back_real_but_small_changes(spec, model, profile):
    served = labelled_rows(spec, SERVED_DAY, 2000, 7, drifted=True)
    floored = compare_attributions(profile, model, served)
    band_only = compare_attributions(profile, model, served, thresholds=BAND_ONLY)
    small = [f for f in floored.features if f.status == "ok" and abs(f.z or 0.0) >= floored.z_critical]
    assert small, "some attribution moves beyond the band by less than the floor on the drifted days"
    assert {f.feature for f in small} <= set(band_only.drifted_features)
    assert set(floored.drifted_features) < set(band_only.drifted_features)


def test_a_feature_planted_constant_is_flagged(spec, model, profile):
    served = labelled_rows(spec, SERVED_DAY, 2000, 5)
    assert compare_attributions(profile, model, served).status == "ok"
    planted = served.assign(credit_score=served["credit_score"].median())
    result = compare_attributions(profile, model, planted)
    credit_score = next(f for f in result.features if f.feature == "credit_score")
    assert credit_score.status == "drifted" and (credit_score.relative_change or 0.0) < -0.25
    assert credit_score.reference_rank == 1 and credit_score.current_rank != 1
    assert any(change.feature == "credit_score" for change in result.top_rank_changes)
    assert all(change.reference_rank <= TOP_FEATURES for change in result.top_rank_changes)


@pytest.mark.parametrize("max_rows", [1000, 5000])
def test_the_same_rows_in_any_order_give_the_same_answer(spec, model, profile, max_rows):
    served = labelled_rows(spec, SERVED_DAY, 3000, 11, drifted=True).drop(columns="label")
    shuffled = served.sample(frac=1.0, random_state=3).set_index(np.arange(len(served))[::-1] + 10)
    first = compare_attributions(profile, model, served, max_rows=max_rows)
    assert compare_attributions(profile, model, shuffled, max_rows=max_rows).to_dict() == first.to_dict()
    assert first.rows_explained == min(max_rows, len(served))
    if max_rows < len(served):  # another seed draws another sample
        assert compare_attributions(profile, model, served, max_rows=max_rows, seed=1).to_dict() != first.to_dict()


def test_the_canonical_sample_ignores_columns_the_model_does_not_read(spec, model):
    served = labelled_rows(spec, SERVED_DAY, 500, 12)
    relabelled = served.assign(application_id=[f"x-{i}" for i in range(len(served))][::-1], label=0)
    assert (
        canonical_sample(model, served, 100, 0)
        .drop(columns=["application_id", "label"])
        .equals(canonical_sample(model, relabelled, 100, 0).drop(columns=["application_id", "label"]))
    )


def test_too_few_rows_are_insufficient_data_never_drifted(spec, model, profile):
    t = AttributionThresholds()
    few = labelled_rows(spec, SERVED_DAY, t.min_rows - 1, 13, drifted=True)
    planted = few.assign(credit_score=few["credit_score"].median())
    result = compare_attributions(profile, model, planted)
    assert result.status == "insufficient_data" and result.rows_explained == 0 and not result.drifted
    assert {f.status for f in result.features} == {"insufficient_data"}
    enough = labelled_rows(spec, SERVED_DAY, t.min_rows, 13, drifted=True)
    planted = enough.assign(credit_score=enough["credit_score"].median())
    assert compare_attributions(profile, model, planted).status == "drifted"


def test_a_profile_of_another_model_is_refused(spec, model, profile):
    other = dataclasses.replace(profile, features=dict(list(profile.features.items())[1:]))
    with pytest.raises(ValueError, match="another model"):
        compare_attributions(other, model, labelled_rows(spec, SERVED_DAY, 300, 14))
