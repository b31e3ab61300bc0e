"""Records written by earlier versions of Kennel stay readable: tests/data/lake_records/ holds files an
earlier release wrote (a closed-loop run), and every one must load into today's typed records."""

import shutil
from pathlib import Path

import pytest

from kennel.lake import Lake, read_lines, read_model_record, read_record
from kennel.lake.champion import ChampionRegistry
from kennel.lake.records import (
    ChampionEvent,
    ChampionPointer,
    EvaluationRecord,
    GateDecision,
    MonitoringRecord,
    QualityRecord,
    RetrainDecisionRecord,
    TrainingRecord,
)
from kennel.model import ModelCard

FIXTURES = Path(__file__).parent / "data" / "lake_records"


@pytest.mark.parametrize("name", ["quality.json", "quality_failed.json"])
def test_quality_records_load(name):
    record = read_record(FIXTURES / name, QualityRecord)
    assert record is not None and record.version == 2
    assert record.rows_in == record.rows_clean + record.rows_quarantined
    assert record.outputs["clean"].sha256 and record.row_count.clean == record.rows_clean
    assert record.passed == all(record.checks[c] for c in record.checks if c not in record.warnings)
    if not record.passed:
        assert record.failed_checks


@pytest.mark.parametrize("name", ["data_drift.json", "serving_drift.json", "realized_performance.json"])
def test_monitoring_records_load(name):
    record = read_record(FIXTURES / name, MonitoringRecord)
    assert record is not None and record.kind is None and record.schema_version == 1  # version 1: kind in the file name
    if name == "data_drift.json":
        assert record.features and record.drifted_share is not None
    if name == "realized_performance.json":
        assert record.status == "ok" and record.roc_auc is not None


def test_logs_and_champion_files_load():
    decisions = read_lines(FIXTURES / "retraining_decisions.jsonl", RetrainDecisionRecord)
    assert len(decisions) == 17 and {d.action for d in decisions} >= {"skip", "retrain", "alert"}
    gates = read_lines(FIXTURES / "gate_decisions.jsonl", GateDecision)
    assert len(gates) == 2 and all(g.checks for g in gates)
    events = read_lines(FIXTURES / "history.jsonl", ChampionEvent)
    assert [e.version for e in events] == sorted(e.version for e in events)
    pointer = read_record(FIXTURES / "champion.json", ChampionPointer)
    assert pointer is not None and pointer.current is not None and pointer.version == events[-1].version


def test_model_folder_records_load():
    assert ModelCard.load(FIXTURES).feature_names
    assert read_model_record(FIXTURES, TrainingRecord).device == "cpu"
    evaluation = read_model_record(FIXTURES, EvaluationRecord)
    assert evaluation.metrics["roc_auc"] > 0.5 and evaluation.shap_mean_abs
    decision = read_model_record(FIXTURES, GateDecision)
    assert decision.passed in (True, False) and decision.challenger.run_id


def test_an_older_registry_folder_works_with_todays_registry(tmp_path):
    """A registry written by the earlier release is read and extended by today's code."""
    data = Lake(tmp_path / "lake").dataset("credit_demo")
    data.registry_dir().mkdir(parents=True)
    for name in ("champion.json", "history.jsonl"):
        shutil.copy(FIXTURES / name, data.registry_dir() / name)
    registry = ChampionRegistry(data)
    before = registry.pointer()
    registry.record_bento(before.current.run_id, "kennel-credit-demo:rebuilt")
    after = registry.pointer()
    assert after.version == before.version + 1 and after.current.bento_tag == "kennel-credit-demo:rebuilt"
    assert registry.history()[-1].event == "bento"


def test_records_round_trip_through_the_lake(tmp_path):
    data = Lake(tmp_path / "lake").dataset("credit_demo")
    quality = read_record(FIXTURES / "quality.json", QualityRecord)
    data.write_quality(quality)
    assert data.quality(quality.day) == quality and data.passed_validation(quality.day) == quality.passed
    drift = read_record(FIXTURES / "data_drift.json", MonitoringRecord).model_copy(update={"kind": "data_drift"})
    data.write_monitoring(drift)
    assert data.monitoring_records("data_drift") == {drift.day: drift}
    decisions = read_lines(FIXTURES / "retraining_decisions.jsonl", RetrainDecisionRecord)
    data.append_decisions(decisions[:3])
    data.append_decisions(decisions[3:])
    assert data.decisions() == decisions


def test_a_new_drift_statistic_is_kept_without_a_record_change(tmp_path):
    """Adding a statistic to kennel/monitoring/drift.py must not need this module: feature rows keep it."""
    data = Lake(tmp_path / "lake").dataset("credit_demo")
    drift = read_record(FIXTURES / "data_drift.json", MonitoringRecord)
    row = {**drift.features[0].model_dump(), "energy_distance": 0.12}
    data.write_monitoring(
        MonitoringRecord.model_validate({**drift.model_dump(), "kind": "data_drift", "features": [row]})
    )
    stored = data.monitoring_records("data_drift")[drift.day].features[0]
    assert stored.model_dump()["energy_distance"] == 0.12
