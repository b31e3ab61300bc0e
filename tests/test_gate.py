"""The promotion gate on real XGBoost models: bootstrap arithmetic, a worse challenger, an unfair one, sanity."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.lake import Lake
from kennel.lake.champion import ChampionRegistry, PromotionRefused
from kennel.lake.records import GateDecision
from kennel.model import MODEL_FILE, SPEC_FILE, Model, ModelCard
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from kennel.training.config import GateConfig, TrainConfig
from kennel.training.gate import Candidate, decide, paired_bootstrap, weighted_metric
from kennel.training.trainer import train_model
from tests.training_data import training_frame

SENSITIVE = ["gender"]


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEFAULT_SPEC_PATH)


@pytest.fixture(scope="module")
def data(spec):
    return (
        training_frame(spec, "2026-01-01", 3000, 1),
        training_frame(spec, "2026-01-02", 1000, 2),
        training_frame(spec, "2026-01-03", 2000, 3),
    )


def _model(spec, folder: Path, run_id: str, train: pd.DataFrame, validation: pd.DataFrame) -> Candidate:
    """Train and write a model folder as the model asset does; its tag is a stand-in (no model store here)."""
    model, result = train_model(ModelCard.for_spec(spec), train, validation, TrainConfig(device="cpu", nthread=1))
    folder.mkdir(parents=True)
    Model(model.booster, ModelCard.for_spec(spec, threshold=result.threshold, run_id=run_id)).save(
        folder, spec.resolved_yaml()
    )
    assert (folder / MODEL_FILE).is_file() and (folder / SPEC_FILE).is_file()
    return Candidate(run_id, folder, f"kennel-credit-demo:{run_id}")


@pytest.fixture(scope="module")
def champion(spec, data, tmp_path_factory):
    train, validation, _ = data
    return _model(spec, tmp_path_factory.mktemp("models") / "champion", "champion", train, validation)


def test_weighted_metrics_equal_scikit_learn_and_resampling():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) * 0.5 + 0.3 * y, 2)  # rounded: many ties
    ones = np.ones((1, 500))
    assert weighted_metric("roc_auc", y, scores, ones)[0] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert weighted_metric("pr_auc", y, scores, ones)[0] == pytest.approx(average_precision_score(y, scores), abs=1e-12)
    # Bootstrap counts as weights give the metric of the resampled rows.
    idx = rng.integers(0, 500, 500)
    counts = np.bincount(idx, minlength=500)[None, :]
    assert weighted_metric("roc_auc", y, scores, counts)[0] == pytest.approx(
        roc_auc_score(y[idx], scores[idx]), abs=1e-12
    )
    assert weighted_metric("pr_auc", y, scores, counts)[0] == pytest.approx(
        average_precision_score(y[idx], scores[idx]), abs=1e-12
    )


def test_paired_bootstrap_of_a_model_against_itself_is_exactly_zero_and_detects_a_real_gain():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    good, noisy = y + rng.normal(0, 0.8, 2000), y + rng.normal(0, 2.0, 2000)
    same = paired_bootstrap("roc_auc", y, good, good, samples=200, confidence=0.95, seed=0)
    assert same["lower_bound"] == same["upper_bound"] == same["difference"] == 0.0
    gain = paired_bootstrap("roc_auc", y, good, noisy, samples=200, confidence=0.95, seed=0)
    assert gain["lower_bound"] > 0.05 and gain["share_not_better"] == 0.0


def test_first_model_passes_the_floors_and_a_shuffled_label_challenger_is_rejected(spec, data, champion, tmp_path):
    train, validation, test = data
    registry = ChampionRegistry(Lake(tmp_path / "lake").dataset(spec.name))
    first = decide(champion, None, test, SENSITIVE, GateConfig())
    assert isinstance(first, GateDecision)
    assert first.passed, first.reasons
    assert first.champion is None and first.challenger.run_id == "champion"
    assert {c.name for c in first.checks} >= {
        "floor_roc_auc",
        "no_nan_scores",
        "scores_not_collapsed",
        "latency_p95_ms",
    }
    registry.record_decision(first)
    assert registry.promote(champion.model_dir).run_id == "champion"

    shuffled = train.assign(label=np.random.default_rng(7).permutation(train["label"].to_numpy()))
    worse = _model(spec, tmp_path / "shuffled", "shuffled", shuffled, validation)
    decision = decide(
        worse, Candidate("champion", champion.model_dir, champion.model_tag), test, SENSITIVE, GateConfig()
    )
    registry.record_decision(decision)

    assert not decision.passed
    beat = next(c for c in decision.checks if c.name == "beats_champion_roc_auc")
    assert not beat.passed and beat.value < 0  # the lower bound of the AUC difference
    assert any("roc_auc" in reason and "vs champion" in reason for reason in decision.reasons)
    assert decision.bootstrap["difference"] < -0.2 and decision.champion.run_id == "champion"
    with pytest.raises(PromotionRefused, match="failed its gate"):
        registry.promote(worse.model_dir)
    assert registry.current().run_id == "champion"
    recorded = registry.decisions()
    assert [d.passed for d in recorded] == [True, False] and recorded[-1].reasons == decision.reasons
    assert [d.challenger.run_id for d in recorded] == ["champion", "shuffled"]


def test_a_challenger_that_improves_auc_but_widens_a_fairness_gap_is_rejected(spec, data, tmp_path):
    train, validation, test = data
    # The fair champion never saw interest_rate (which carries the demo's gender markup) and little data;
    # the challenger sees everything: better AUC, and selection rates that differ by gender.
    without_rate = {"interest_rate": np.nan}
    fair = _model(
        spec, tmp_path / "fair", "fair", train.head(500).assign(**without_rate), validation.assign(**without_rate)
    )
    challenger = _model(spec, tmp_path / "full", "full", train, validation)

    decision = decide(challenger, fair, test, SENSITIVE, GateConfig(fairness_tolerance=0.02))
    checks = {c.name: c for c in decision.checks}
    assert checks["beats_champion_roc_auc"].passed, checks["beats_champion_roc_auc"].detail
    assert decision.bootstrap["lower_bound"] > 0
    dp = checks["fairness_gender_demographic_parity_difference"]
    assert not dp.passed and dp.value > dp.threshold > 0
    assert not decision.passed
    assert all(reason.startswith("gender:") for reason in decision.reasons)
    assert decision.config["fairness_tolerance"] == 0.02

    # The same challenger with a tolerance wide enough for its gap passes: the gap alone rejected it.
    assert decide(challenger, fair, test, SENSITIVE, GateConfig(fairness_tolerance=0.5)).passed


class _Scores(Candidate):
    """A real model whose scores are replaced, to reach sanity checks a healthy booster never fails."""

    def __init__(self, base: Candidate, transform):
        super().__init__(base.run_id, base.model_dir, base.model_tag)
        self.transform = transform

    def scores(self, frame):
        return self.transform(super().scores(frame))


def _with_nan(s):
    s = s.copy()
    s[:5] = np.nan
    return s


@pytest.mark.parametrize(
    "transform, config, failing",
    [
        (_with_nan, GateConfig(), {"no_nan_scores", "floor_roc_auc"}),
        (lambda s: np.full_like(s, 0.2), GateConfig(), {"scores_not_collapsed", "floor_roc_auc"}),
        (lambda s: s, GateConfig(max_latency_ms=1e-6), {"latency_p95_ms"}),
        (lambda s: s, GateConfig(floor_primary_metric=0.99), {"floor_roc_auc"}),
        (
            lambda s: s,
            GateConfig(max_fairness_gap=0.0),
            {"fairness_gender_demographic_parity_difference", "fairness_gender_equalized_odds_difference"},
        ),
    ],
)
def test_sanity_checks_and_floors_reject_with_their_numbers(champion, data, transform, config, failing):
    _, _, test = data
    decision = decide(_Scores(champion, transform), None, test, SENSITIVE, config)
    failed = {c.name for c in decision.checks if not c.passed}
    assert failed == failing
    assert not decision.passed and len(decision.reasons) == len(failing)
    assert sorted(decision.reasons) == sorted(c.detail for c in decision.checks if not c.passed)
    for check in decision.checks:  # every check says what it measured against which threshold
        assert check.threshold is not None and check.detail
