"""Drift decisions measured, not assumed: the false-alarm rate on same-distribution demo days, the detection
rate on the demo's drift scenario, the multiple-testing correction, drift per slice, and determinism."""

import json
from dataclasses import asdict
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency, false_discovery_control

from kennel.demo.generator import generate_frame
from kennel.monitoring.drift import (
    DriftThresholds,
    ReferenceProfile,
    benjamini_hochberg,
    build_profile,
    chi_square_pvalue,
    compare,
    compare_slices,
)
from kennel.spec import FeatureType, load_spec

SPEC = load_spec("datasets/credit_demo.yaml")
NUMERIC = [f.name for f in SPEC.features if f.type is FeatureType.numeric]
CATEGORICAL = [f.name for f in SPEC.features if f.type is not FeatureType.numeric]
INPUTS = [f.name for f in SPEC.model_features]  # gender is sensitive: profiled, not read by the model
DAY = date(2026, 1, 1)
PAIRS = 100
# What _credit_features shifts in the drift scenario: income (log −0.15), inquiries (log-rate +0.3),
# utilisation (+0.6 on the logit) and the channel mix (online +1.0 on the logit).
SHIFTED = {"annual_income", "num_inquiries_6m", "credit_utilization", "channel"}
# The loan amount follows income (0.75 × log income: −0.11), a real shift just past the Wasserstein floor.
FOLLOWS = "loan_amount"


def _frame(rows: int, seed: int, drifted: bool = False) -> pd.DataFrame:
    return generate_frame(SPEC, DAY, rows, np.random.default_rng(seed), drifted=drifted)


def _profile(frame: pd.DataFrame, slices: tuple[str, ...] = ()) -> ReferenceProfile:
    return build_profile(frame, NUMERIC, CATEGORICAL, slices=slices)


@pytest.fixture(scope="module")
def references() -> list[ReferenceProfile]:
    """One reference day of 2,000 rows per pair, profiled once and reused by the null and drifted pairs."""
    return [_profile(_frame(2_000, 2 * i)) for i in range(PAIRS)]


def _false_alarm_rate(profiles: list[ReferenceProfile], rows: int, seed: int) -> float:
    alarms = [bool(compare(p, _frame(rows, seed + i), inputs=INPUTS).drifted) for i, p in enumerate(profiles)]
    return sum(alarms) / len(alarms)


def test_same_distribution_days_rarely_flag_any_input_feature(references):
    # Share of day pairs where ANY input feature is flagged: the probability of a false alarm per day.
    assert _false_alarm_rate(references, 2_000, seed=1_000) <= 0.05
    # Small days, where the effect sizes alone are pure noise: PSI passes its floor on most pairs here,
    # and the chi-square test with the Benjamini–Hochberg correction is what keeps the alarms rare.
    small = [_profile(_frame(300, 2 * i + 1)) for i in range(PAIRS)]
    assert _false_alarm_rate(small, 300, seed=2_000) <= 0.05
    effect_only = compare(small[0], _frame(300, 2_000), DriftThresholds(alpha=1.0), inputs=INPUTS)
    assert effect_only.drifted, "the effect floors alone should false-alarm on 300 rows (else this test is moot)"


def test_the_drift_scenario_is_found_on_the_features_it_shifts(references):
    found: dict[str, int] = {}
    for i, profile in enumerate(references):
        report = compare(profile, _frame(2_000, 5_000 + i, drifted=True), inputs=INPUTS)
        for f in report.drifted:
            found[f.feature] = found.get(f.feature, 0) + 1
    assert {name: found.get(name, 0) for name in SHIFTED} == dict.fromkeys(SHIFTED, PAIRS)
    assert found.get(FOLLOWS, 0) >= 0.85 * PAIRS
    # Features the scenario leaves alone (or moves by a fraction of the floors) stay quiet.
    assert all(n <= 0.05 * PAIRS for name, n in found.items() if name not in SHIFTED | {FOLLOWS}), found


def test_only_model_inputs_count_towards_the_drifted_share():
    profile = _profile(_frame(2_000, 7))
    current = _frame(2_000, 8)
    current["gender"] = "nonbinary"  # a sensitive column the model does not read moves completely
    report = compare(profile, current, inputs=INPUTS)
    assert [f.feature for f in report.other_drifted] == ["gender"] and report.drifted == []
    assert report.drifted_share == 0 and not report.dataset_drift
    assert {row["feature"]: row["model_input"] for row in report.table()}["gender"] is False
    # Without `inputs` every profiled feature is one, as before.
    assert [f.feature for f in compare(profile, current).drifted] == ["gender"]


def test_chi_square_matches_scipy_and_pools_sparse_cells():
    reference, current = np.array([120, 300, 80, 500]), np.array([30, 70, 40, 60])
    expected = chi2_contingency(np.vstack([reference, current]), correction=False).pvalue
    assert chi_square_pvalue(reference, current) == pytest.approx(expected, rel=1e-12)
    # Two cells expecting fewer than 5 current counts are pooled; a cell empty in both rows is dropped.
    pooled = chi2_contingency(np.array([[400, 500, 55], [40, 60, 5]]), correction=False).pvalue
    assert chi_square_pvalue(np.array([400, 500, 30, 25, 0]), np.array([40, 60, 2, 3, 0])) == pytest.approx(
        pooled, rel=1e-12
    )
    # A pool still expecting fewer than 5 joins the smallest other cell.
    folded = chi2_contingency(np.array([[410, 500], [44, 60]]), correction=False).pvalue
    assert chi_square_pvalue(np.array([400, 500, 6, 4]), np.array([40, 60, 3, 1])) == pytest.approx(folded, rel=1e-12)
    assert chi_square_pvalue(np.array([100, 0]), np.array([50, 0])) == 1.0


def test_benjamini_hochberg_matches_scipy():
    p = [0.01, 0.04, 0.03, 0.005, 0.5, 0.03]
    assert benjamini_hochberg(p) == pytest.approx(false_discovery_control(p, method="bh").tolist(), rel=1e-12)
    assert benjamini_hochberg([]) == []


@pytest.fixture(scope="module")
def sliced() -> tuple[ReferenceProfile, pd.DataFrame]:
    """A reference of 4,000 rows sliced by region and channel, and a same-distribution day with a shift
    planted inside one region only: half the income there."""
    profile = _profile(_frame(4_000, 11), slices=("region", "channel"))
    current = _frame(4_000, 12)
    east = current["region"] == "east"
    current.loc[east, "annual_income"] *= 0.5
    return profile, current


def test_a_shift_inside_one_slice_is_found_there_and_not_in_its_siblings(sliced):
    profile, current = sliced
    assert set(profile.slices["region"]) == {"north", "south", "east", "west", "central"}
    assert "region" not in profile.slices["region"]["east"].categorical  # the slice column is left out
    slices = compare_slices(profile, current, inputs=INPUTS)
    region = {s.value: s for s in slices if s.column == "region"}
    assert region["east"].status == "drifted" and region["east"].drifted_features == ["annual_income"]
    assert [s.status for v, s in region.items() if v != "east"] == ["ok"] * 4
    assert slices[0].column == "region" and slices[0].value == "east"  # worst first
    assert 400 < region["east"].rows < 1_200 and region["east"].severity > 1


def test_slices_share_one_multiple_testing_correction(sliced):
    profile, current = sliced
    slices = compare_slices(profile, current, inputs=INPUTS)
    tested = [f for s in slices for f in s.features if f.p_value is not None]
    assert len(tested) > 100  # 9 slices × 20 features: many tests, corrected as one family
    assert [f.p_adjusted for f in tested] == benjamini_hochberg([f.p_value for f in tested])


def test_slices_without_reference_or_rows_are_never_drifted(sliced):
    profile, current = sliced
    current = current.copy()
    west = np.flatnonzero(current["region"].to_numpy() == "west")
    current.loc[current.index[west[:400]], "region"] = "atlantis"  # a value training never held
    current = current.drop(current.index[west[400:]])  # few west rows are left
    current.loc[current["region"] == "atlantis", "annual_income"] *= 3
    status = {
        s.value: (s.status, s.rows) for s in compare_slices(profile, current, inputs=INPUTS) if s.column == "region"
    }
    assert status["atlantis"] == ("no_reference", 400)
    assert status["west"][0] == "insufficient_data" and status["west"][1] < 200


def test_a_profile_saved_before_slices_still_loads(sliced):
    profile, current = sliced
    raw = json.loads(profile.to_json())
    del raw["slices"], raw["rows"]
    old = ReferenceProfile.from_json(json.dumps(raw))
    assert old.slices == {} and old.rows is None
    assert compare(old, current).table() == compare(profile, current).table()
    assert compare_slices(old, current) == []
    assert ReferenceProfile.from_json(profile.to_json()) == profile


def test_same_rows_in_any_order_give_the_same_answer_exactly():
    reference, current = _frame(3_000, 21), _frame(1_500, 22, drifted=True)
    # Categories with equal counts, whose order a count-sorted tally takes from the rows' order.
    reference["tied"], current["tied"] = np.resize(["a", "b", "c"], 3_000), np.resize(["a", "b", "c"], 1_500)
    rng = np.random.default_rng(0)

    def orders(frame: pd.DataFrame) -> list[pd.DataFrame]:
        shuffled = frame.sample(frac=1.0, random_state=1)
        parts = np.array_split(rng.permutation(len(frame)), 7)  # as Spark partitions arrive, in any order
        return [
            frame,
            shuffled,
            shuffled.reset_index(drop=True),
            frame.iloc[::-1],
            pd.concat([frame.iloc[p] for p in parts[::-1]], ignore_index=True),
        ]

    def answer(ref: pd.DataFrame, cur: pd.DataFrame) -> str:
        profile = build_profile(ref, NUMERIC, [*CATEGORICAL, "tied"], slices=("region",))
        return json.dumps(
            [profile.to_json(), compare(profile, cur, inputs=INPUTS).table()]
            + [asdict(s) for s in compare_slices(profile, cur, inputs=INPUTS)]
        )

    answers = {answer(ref, cur) for ref, cur in zip(orders(reference), orders(current))}
    assert len(answers) == 1


def test_spark_partitionings_of_one_day_give_the_same_record(spark, tmp_path):
    """The day as Spark writes it under different partitionings (files and row order differ) reads back to
    the same drift answer, statistic for statistic."""
    reference, current = _frame(2_000, 31), _frame(1_500, 32, drifted=True)
    profile = build_profile(reference, NUMERIC, CATEGORICAL, slices=("region",))
    table = spark.createDataFrame(current.astype(object).where(current.notna(), None))
    answers, orders = set(), set()
    for partitions in (1, 3, 7):
        folder = tmp_path / f"p{partitions}"
        table.repartition(partitions).write.parquet(str(folder))
        day = pd.read_parquet(folder)
        day[NUMERIC] = day[NUMERIC].astype(float)
        orders.add(tuple(day[SPEC.id_column]))
        answers.add(
            json.dumps(
                [compare(profile, day, inputs=INPUTS).table()]
                + [asdict(s) for s in compare_slices(profile, day, inputs=INPUTS)]
            )
        )
    assert len(orders) > 1  # the partitionings did reorder the rows
    assert len(answers) == 1
