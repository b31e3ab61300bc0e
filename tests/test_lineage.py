"""Lineage on a real lake: two gated models promoted in turn and one rollback, requests logged through the
real PredictionLog (and one through the ShadowLog) with each champion's tag at its time; lineage names the
answering model, its data days with their quality records and the decision that promoted it, and
champion_at replays the history. Also through `kennel lineage`."""

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from kennel import cli
from kennel.deployment import SPECS_DIR_ENV_VAR
from kennel.lake import Lake, read_record
from kennel.lake.records import QualityRecord, ShadowEvaluationRecord
from kennel.lineage import champion_at, lineage
from kennel.model import ModelCard, fit
from kennel.serving.prediction_log import PredictionLog, ShadowLog, logged_fields
from kennel.serving.request_ids import RequestIds
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from kennel.training.config import GateConfig
from kennel.training.gate import Candidate, decide
from tests.projects import small_model_params
from tests.training_data import training_frame

FIXTURES = Path(__file__).parent / "data" / "lake_records"
SENSITIVE = ["gender"]
DAYS_A = ("2026-01-01", "2026-01-02")
DAYS_B = ("2026-01-03", "2026-01-04")
PROMOTED_A = "2026-01-05T12:00:00+00:00"
SHADOW_B = "2026-01-06T00:00:00+00:00"
SHADOW_EVALUATED = "2026-01-07T11:00:00+00:00"
PROMOTED_B = "2026-01-07T12:00:00+00:00"
BENTO_B = "2026-01-07T12:05:00+00:00"
ROLLED_BACK = "2026-01-09T12:00:00+00:00"


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _quality(spec, day: str, rows: int, quarantined: int) -> QualityRecord:
    """A passed day's quality record, as ingestion writes it (an earlier release's record, re-dated)."""
    base = read_record(FIXTURES / "quality.json", QualityRecord)
    assert base is not None
    return base.model_copy(
        update={
            "dataset": spec.name,
            "day": day,
            "passed": True,
            "run_id": f"ingest-{day}",
            "rows_in": rows + quarantined,
            "rows_clean": rows,
            "rows_quarantined": quarantined,
            "quarantine_rate": quarantined / (rows + quarantined),
        }
    )


def _model(spec, data, run_id: str, days: tuple[str, ...], train, validation, seed: int) -> Candidate:
    """A small model trained through kennel's seam and saved in the lake's model folder, as the model asset does
    (its tag is a stand-in: no model store here)."""
    card = ModelCard.for_spec(spec, run_id=run_id, data_partitions=days)
    result = fit(card, train, validation, small_model_params(seed), rounds=30, early_stopping_rounds=10)
    result.model.save(data.model_dir(run_id), spec.resolved_yaml())
    return Candidate(run_id, data.model_dir(run_id), f"kennel-credit-demo:{run_id}")


def _shadow_evaluation(champion: Candidate, challenger: Candidate, decided_at: str) -> ShadowEvaluationRecord:
    """A passed shadow evaluation of `challenger` beside `champion`, as kennel.training.shadow records one."""
    return ShadowEvaluationRecord(
        evaluated_at=SHADOW_EVALUATED,
        outcome="passed",
        summary="passed in shadow: agreement 0.95 on 800 requests",
        challenger_run_id=challenger.run_id,
        challenger_model_tag=challenger.model_tag,
        model_dir=str(challenger.model_dir),
        champion_run_id=champion.run_id,
        champion_model_tag=champion.model_tag,
        shadow_since=SHADOW_B,
        decided_at=decided_at,
        requests=800,
        labelled=300,
        agreement=0.95,
        score_psi=0.04,
        thresholds={"min_agreement": 0.8, "max_score_psi": 0.25},
    )


def _log(data, spec, candidate: Candidate, request_id: str, record, at: str) -> float:
    """Log one answer of `candidate` through the real prediction log; returns its probability."""
    log = PredictionLog(data, spec, model_tag=candidate.model_tag, threshold=candidate.card.threshold)
    probability = candidate.scores(record)
    columns = {name: record[name].tolist() for name, _ in logged_fields(spec) if name in record.columns}
    log.append("predict", [request_id], probability, columns, at=_moment(at).timestamp())
    assert log.flush() == 1
    return float(probability[0])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The lake, its models and the logged requests (ids by name, with the probabilities answered)."""
    spec = load_spec(DEFAULT_SPEC_PATH)
    lake_root = tmp_path_factory.mktemp("lineage") / "lake"
    data = Lake(lake_root).dataset(spec.name)
    for i, day in enumerate((*DAYS_A, *DAYS_B)):
        data.write_quality(_quality(spec, day, 1000 + i, 10 * (i + 1)))
    train, validation, test = (
        training_frame(spec, day, rows, seed)
        for day, rows, seed in (("2026-01-01", 3000, 1), ("2026-01-02", 1000, 2), ("2026-01-03", 2000, 3))
    )
    without_rate = {"interest_rate": np.nan}  # the weak first champion never saw interest_rate
    a = _model(spec, data, "a", DAYS_A, train.head(500).assign(**without_rate), validation, 1)
    b = _model(spec, data, "b", DAYS_B, train, validation, 2)

    from kennel.lake.champion import ChampionRegistry

    registry = ChampionRegistry(data)
    config = GateConfig(fairness_tolerance=0.5, bootstrap_samples=200, shadow=True)
    with pytest.MonkeyPatch.context() as mp:
        # The registry stamps changes with the clock: these are the moments the requests are placed around.
        stamps = iter([PROMOTED_A, SHADOW_B, PROMOTED_B, BENTO_B, ROLLED_BACK])
        mp.setattr("kennel.lake.champion._now", lambda: next(stamps))
        first = decide(a, None, test, SENSITIVE, config)
        registry.record_decision(first)
        registry.promote(a.model_dir)
        second = decide(b, a, test, SENSITIVE, config)
        assert second.passed, second.reasons
        registry.record_decision(second)
        registry.start_shadow(b.model_dir)  # the gate config asks for a shadow before promotion
        registry.record_shadow_evaluation(_shadow_evaluation(a, b, second.decided_at))
        registry.promote(b.model_dir)
        registry.record_bento("b", "kennel-credit-demo:bento-b")
        registry.rollback("b misbehaved")

    ids = dict(zip(("a_before", "b_after", "a_rolled_back", "never"), RequestIds.for_dataset(data).issue(4)))
    answered = {
        "a_before": _log(data, spec, a, ids["a_before"], test.iloc[[0]], "2026-01-06T10:00:00+00:00"),
        "b_after": _log(data, spec, b, ids["b_after"], test.iloc[[1]], "2026-01-08T10:00:00+00:00"),
        "a_rolled_back": _log(data, spec, a, ids["a_rolled_back"], test.iloc[[2]], "2026-01-10T10:00:00+00:00"),
    }
    # While a was champion, b was scored beside it in shadow.
    shadow = ShadowLog(
        data,
        score=b.model.score_columns,
        fields=[name for name, _ in logged_fields(spec)],
        model_tag=b.model_tag,
        champion_model_tag=a.model_tag,
        threshold=b.card.threshold,
    )
    record = test.iloc[[0]]
    columns = {c: record[c].tolist() for c in record.columns}
    assert shadow.append("predict", [ids["a_before"]], columns, at=_moment("2026-01-06T10:00:00+00:00").timestamp())
    assert shadow.flush() == 1
    answered["shadow_of_a_before"] = float(b.scores(record)[0])
    return {"data": data, "root": lake_root, "a": a, "b": b, "ids": ids, "answered": answered}


def test_a_request_before_a_promotion_names_the_first_champion_its_days_and_decision(served):
    data, a, b = served["data"], served["a"], served["b"]
    found = lineage(data, served["ids"]["a_before"])
    assert found.prediction.model_tag == a.model_tag
    assert found.prediction.predicted_at == _moment("2026-01-06T10:00:00+00:00")
    assert found.prediction.probability == pytest.approx(served["answered"]["a_before"])
    assert found.prediction.endpoint == "predict"
    assert (found.model.run_id, found.model.model_dir) == ("a", data.model_dir("a"))
    assert [d.day for d in found.model.data_days] == list(DAYS_A)
    assert [d.quality.run_id for d in found.model.data_days] == [f"ingest-{day}" for day in DAYS_A]
    assert [d.quality.rows_clean for d in found.model.data_days] == [1000, 1001]
    assert found.promotion is not None and found.promotion.at == PROMOTED_A
    assert found.decision is not None and found.decision.challenger.run_id == "a" and found.decision.champion is None
    assert found.champion_then.event is not None and found.champion_then.event.run_id == "a"
    assert [(h.event.version, h.in_force) for h in found.history] == [(v, v == 1) for v in range(1, 6)]
    assert found.history[1].event.event == "shadow_started" and found.shadow_evaluation is None
    # b scored the same request in shadow: its own score, from the shadow log.
    assert found.shadow is not None and found.shadow.model_tag == b.model_tag
    assert found.shadow.probability == pytest.approx(served["answered"]["shadow_of_a_before"])
    assert found.shadow.probability != pytest.approx(found.prediction.probability)


def test_a_request_after_the_promotion_names_the_challenger_and_the_decision_against_the_champion(served):
    data, b = served["data"], served["b"]
    found = lineage(data, served["ids"]["b_after"])
    assert (found.model.run_id, found.model.model_tag) == ("b", b.model_tag)
    assert [d.day for d in found.model.data_days] == list(DAYS_B)
    assert [round(d.quality.quarantine_rate, 4) for d in found.model.data_days] == [
        round(30 / 1032, 4),
        round(40 / 1043, 4),
    ]
    assert found.promotion is not None and found.promotion.at == PROMOTED_B
    decision = found.decision
    assert decision is not None and decision.passed and decision.champion.run_id == "a"
    assert decision.decided_at == found.promotion.decided_at
    beat = next(c for c in decision.checks if c.name == "beats_champion_roc_auc")
    assert beat.passed and beat.value > beat.threshold
    assert [(h.event.event, h.in_force) for h in found.history] == [
        ("shadow_ended", False),
        ("promoted", True),
        ("bento", False),
        ("rolled_back", False),
    ]
    evaluation = found.shadow_evaluation  # the promotion waited for b's shadow evaluation, and names it
    assert evaluation is not None and (evaluation.evaluated_at, evaluation.outcome) == (SHADOW_EVALUATED, "passed")
    assert found.promotion.shadow_evaluated_at == SHADOW_EVALUATED
    assert found.shadow is None and found.shadow_note == "not scored in shadow"


def test_a_request_after_a_rollback_names_the_restored_model_and_its_original_promotion(served):
    found = lineage(served["data"], served["ids"]["a_rolled_back"])
    assert found.model.run_id == "a" and found.promotion.at == PROMOTED_A
    assert found.decision.challenger.run_id == "a"
    then = found.champion_then.event
    assert then is not None and (then.event, then.run_id, then.replaced) == ("rolled_back", "a", "b")
    assert [h.event.version for h in found.history if h.in_force] == [6]
    assert found.shadow_evaluation is None  # a was promoted without a shadow (there was no champion)


@pytest.mark.parametrize(
    ("at", "run_id", "event"),
    [
        (datetime(2026, 1, 5, 11, 59, 59, tzinfo=UTC), None, None),
        (datetime(2026, 1, 5, 12, 0, 0), "a", "promoted"),  # naive: UTC; the promotion's own second counts
        (datetime(2026, 1, 6, 5, 0, 0, tzinfo=UTC), "a", "promoted"),  # b in shadow: a still answers
        (datetime(2026, 1, 7, 13, 0, 0, tzinfo=UTC), "b", "promoted"),  # the Bento event changes no champion
        (datetime.fromisoformat("2026-01-09T12:59:59+01:00"), "b", "promoted"),  # a second before the rollback
        (datetime(2026, 1, 20, tzinfo=UTC), "a", "rolled_back"),
    ],
)
def test_champion_at_replays_the_history(served, at, run_id, event):
    found = champion_at(served["data"], at)
    if run_id is None:
        assert found.event is None and found.decision is None
        assert "no champion" in found.render()
        return
    assert (found.event.run_id, found.event.event) == (run_id, event)
    assert found.decision is not None and found.decision.challenger.run_id == run_id
    assert found.decision.passed
    assert (found.shadow_evaluation is not None) == (found.event.event == "promoted" and run_id == "b")


def test_bad_and_unknown_request_ids(served):
    data = served["data"]
    with pytest.raises(ValueError, match="32 hexadecimal digits"):
        lineage(data, "not-an-id")
    with pytest.raises(LookupError, match=str(data.predictions_dir())):
        lineage(data, served["ids"]["never"])


@pytest.fixture
def command_env(tmp_path, monkeypatch):
    """`kennel` as run from a shell in a fresh project: the demo spec's deployment, state in tmp_path."""
    for name in ("KENNEL_LAKE_ROOT", "KENNEL_DATASET_SPEC", SPECS_DIR_ENV_VAR):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))


def test_the_command_prints_lineage_text_json_and_the_champion_at_a_moment(served, command_env, capsys):
    root, b = str(served["root"]), served["b"]
    assert cli.main(["lineage", served["ids"]["b_after"], "--lake", root]) == 0
    text = capsys.readouterr().out
    assert f"model      {b.model_tag}  run b" in text
    assert all(day in text for day in DAYS_B) and "passed" in text
    assert "beats_champion_roc_auc" in text and "ok  " in text
    assert f"promoted   {PROMOTED_B}" in text
    assert "   * v4 " in text and "rolled_back a" in text
    assert f"shadow     passed {SHADOW_EVALUATED} beside a" in text and "min_agreement 0.8" in text

    assert cli.main(["lineage", served["ids"]["a_before"], "--lake", root, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model"]["run_id"] == "a" and [d["day"] for d in shown["model"]["data_days"]] == list(DAYS_A)
    assert shown["decision"]["challenger"]["run_id"] == "a" and shown["shadow"]["model_tag"] == b.model_tag
    assert "expectations" not in shown["model"]["data_days"][0]["quality"]  # their samples are row values

    assert cli.main(["lineage", "--at", "2026-01-08T00:00:00", "--lake", root]) == 0
    assert f"champion at 2026-01-08T00:00:00.000Z: {b.model_tag} (run b)" in capsys.readouterr().out

    assert cli.main(["lineage", served["ids"]["never"], "--lake", root]) == 1
    assert "is in no prediction log" in capsys.readouterr().err
    assert cli.main(["lineage", "0123", "--lake", root]) == 2
    assert "32 hexadecimal digits" in capsys.readouterr().err
    assert cli.main(["lineage", "--at", "yesterday", "--lake", root]) == 2
    assert "not an ISO 8601 timestamp" in capsys.readouterr().err
    assert cli.main(["lineage", served["ids"]["b_after"], "--at", "2026-01-08", "--lake", root]) == 2
    assert "one of them" in capsys.readouterr().err


@pytest.mark.full  # a Spark session and a batch job: about 90 s on two busy cores
def test_a_batch_scored_row_names_the_model_that_scored_it(served, spark):
    """Rows the champion scored in a batch (kennel.serving.batch on Spark) are found by their ids, too."""
    import pyarrow as pa

    from kennel.serving.batch import read_batch_scores, score_day

    data, b = served["data"], served["b"]
    rows = training_frame(load_spec(DEFAULT_SPEC_PATH), "2026-01-08", 20, 9).drop(columns=["label"])
    frame = spark.createDataFrame(pa.Table.from_pandas(rows, preserve_index=False))
    score_day(frame, data, "2026-01-08", model_dir=b.model_dir, model_tag=b.model_tag)
    scored = read_batch_scores(data).iloc[7]
    found = lineage(data, scored["request_id"])
    assert (found.prediction.endpoint, found.prediction.probability) == ("batch", scored["probability"])
    assert found.model.run_id == "b" and [d.day for d in found.model.data_days] == list(DAYS_B)
    assert found.decision is not None and found.decision.champion.run_id == "a"
