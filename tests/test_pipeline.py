"""The whole asset graph on real components (Spark, GX, dbt, XGBoost, BentoML) in a real Dagster instance."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from kennel.demo import generate
from kennel.model import ModelCard
from tests.projects import Project, days, spec_file

pytestmark = pytest.mark.slow

DAYS = 8  # the demo split needs 3 test + 3 validation + at least 1 train day
ROWS_PER_DAY = 400


def _days(spec, n: int = DAYS) -> list[str]:
    return days(spec, n)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    spec_path = spec_file(tmp, tmp / "landing")
    with dg.instance_for_test() as instance:
        project = Project(tmp, spec_path, instance)
        report = generate(project.spec, tmp / "landing", days=DAYS, rows_per_day=ROWS_PER_DAY)
        ingest = project.run("ingest_daily", _days(project.spec))
        train = project.run("train_and_package")
        yield project, report, ingest, train


def test_every_asset_is_materialized_and_every_check_passes(demo):
    project, _, ingest, train = demo
    assert ingest.success and train.success
    # The lifecycle's own jobs: the last day scored in batch by the new champion, and no shadow to evaluate.
    last_day = _days(project.spec)[-1:]
    assert project.run("score_batch", last_day).success and project.run("evaluate_shadow").success
    assert project.metadata("batch_scores")["rows_scored"] == ROWS_PER_DAY
    assert project.metadata("shadow_evaluation")["outcome"] == "no shadow"
    graph = project.defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if graph.get(key).group_name == "monitoring":
            continue  # monitoring needs a champion first and traffic: tests/test_closed_loop.py covers it
        assert project.instance.get_latest_materialization_event(key) is not None, key.to_user_string()
    evaluations = ingest.get_asset_check_evaluations() + train.get_asset_check_evaluations()
    names = {e.check_name for e in evaluations}
    assert {
        "rows_reconcile",
        "quarantine_rate",
        "gx_not_null",
        "gx_ranges",
        "gx_categories",
        "gx_unique_id",
        "gx_row_count",
    } <= names
    assert any(n.startswith("unique_features") for n in names), "dbt tests run as asset checks"
    assert [e.check_name for e in evaluations if not e.passed] == []


def test_row_counts_add_up_from_landing_to_training_set(demo):
    project, report, _, _ = demo
    raw, clean, quarantine = (
        project.metadata("raw_records"),
        project.metadata("clean_records"),
        project.metadata("quarantined_records"),
    )
    assert raw["rows"] == report.total_rows == DAYS * ROWS_PER_DAY
    assert clean["rows_in"] == raw["rows"] == clean["rows_out"] + quarantine["rows"]
    assert quarantine["rows"] == 0  # baseline data is clean
    training = project.metadata("training_set")
    assert training["dagster/row_count"] == clean["rows_out"]
    assert training["data_partitions"] == _days(project.spec)


def test_model_evaluation_and_bento(demo):
    project, _, _, _ = demo
    model, evaluation, bento = (
        project.metadata("model"),
        project.metadata("model_evaluation"),
        project.metadata("bento"),
    )
    assert model["device"] == "cpu" and model["best_iteration"] >= 0
    assert 0.7 < evaluation["roc_auc"] <= 1.0
    assert 0 < evaluation["log_loss"] < 0.69  # better than a coin
    assert "fairness_gender" in evaluation and "gender_demographic_parity_difference" in evaluation

    import bentoml

    stored = bentoml.bentos.get(bento["bento_tag"])
    assert [str(m.tag) for m in stored.info.all_models] == [bento["model_tag"]]
    stored_model = bentoml.models.get(bento["model_tag"])
    labels = stored_model.info.labels
    assert labels["spec_hash"] == project.spec.fingerprint()
    assert labels["data_first_day"] == _days(project.spec)[0]
    assert labels["run_id"] == Path(model["model_dir"]).name and labels["code_version"] == model["code_version"]
    assert stored_model.info.metadata["metrics"]["roc_auc"] == evaluation["roc_auc"]
    assert stored_model.info.metadata["params"]["seed"] == 42
    assert {"shap_summary", "confusion_matrix", "calibration", "expected_calibration_error"} <= set(evaluation)


def _gate(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == "promotion_gate")


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_the_gate_decides_promotion_and_rollback_restores_the_previous_bento(demo):
    from kennel.lake.champion import ChampionRegistry

    project, _, _, first = demo
    registry = ChampionRegistry(project.lake.dataset(project.spec.name))
    champion = registry.current()
    assert champion.run_id == first.run_id and champion.event == "promoted"
    assert _gate(first).passed and "floors" in _gate(first).metadata["decision"].value
    first_bento = project.metadata("bento")
    assert first_bento["bento_tag"] == champion.bento_tag

    # The same data and config give the same model: not better than the champion, so not promoted.
    # The blocking check fails its step (and so the run) and skips everything after it.
    same = project.run("train_and_package")
    assert not same.success
    assert [e.step_key for e in same.get_step_failure_events()] == ["model_evaluation"]
    assert "promotion_gate" in same.failure_data_for_node("model_evaluation").error.message
    gate = _gate(same)
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert "rejected against champion" in gate.metadata["decision"].value
    assert gate.metadata["bootstrap_difference"].value == 0.0
    assert {"model", "model_evaluation"} <= _materialized(same) and not {"champion", "bento"} & _materialized(same)
    assert registry.current().run_id == first.run_id and project.metadata("bento") == first_bento
    refused = registry.decisions()[-1]
    assert refused.challenger.run_id == same.run_id and not refused.passed

    # Accepting a challenger that is not worse (non-inferiority margin) promotes it and builds its Bento.
    second = project.run(
        "train_and_package", run_config={"ops": {"model_evaluation": {"config": {"min_improvement": -0.01}}}}
    )
    assert second.success and _gate(second).passed and {"champion", "bento"} <= _materialized(second)
    assert registry.current().run_id == second.run_id
    second_bento = project.metadata("bento")
    assert second_bento["built"] and second_bento["bento_tag"] != first_bento["bento_tag"]

    # The rollback job returns to the first champion and serves its Bento again (reused, not rebuilt).
    rollback = project.run("rollback_champion")
    assert rollback.success
    restored = registry.current()
    assert (restored.run_id, restored.event) == (first.run_id, "rolled_back")
    bento = project.metadata("bento")
    assert (bento["bento_tag"], bento["model_tag"], bento["built"]) == (
        first_bento["bento_tag"],
        first_bento["model_tag"],
        False,
    )
    assert [e.event for e in registry.history()] == ["promoted", "bento", "promoted", "bento", "rolled_back"]
    assert project.metadata("champion")["run_id"] == first.run_id

    # Serving already follows the champion: the sensor has nothing to do.
    with dg.build_sensor_context(
        instance=project.instance, definitions=project.defs, resources=project.defs.resources
    ) as context:
        tick = project.defs.resolve_sensor_def("bento_follows_champion")(context)
    assert isinstance(tick, dg.SkipReason) and "already serves" in tick.skip_message


def test_failed_validation_blocks_downstream_and_is_never_trained_on(tmp_path):
    spec_path = spec_file(tmp_path, tmp_path / "landing")
    with dg.instance_for_test() as instance:
        project = Project(tmp_path, spec_path, instance)
        days = _days(project.spec, DAYS + 1)
        generate(project.spec, tmp_path / "landing", days=DAYS + 1, rows_per_day=200)
        assert project.run("ingest_daily", days[:-1]).success

        # The last day arrives without its label column: every row is quarantined, clean is empty.
        bad = tmp_path / "landing" / days[-1] / "part-00000.csv"
        pd.read_csv(bad, dtype=str).drop(columns=[project.spec.label.column]).to_csv(bad, index=False)
        everything = dg.define_asset_job(
            "everything", selection="*", partitions_def=project.defs.resolve_job_def("ingest_daily").partitions_def
        ).resolve(asset_graph=project.defs.resolve_asset_graph())
        result = everything.execute_in_process(
            instance=instance, partition_key=days[-1], raise_on_error=False, resources=project.defs.resources
        )
        failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
        assert {"gx_row_count", "quarantine_rate"} <= failed
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert "model" not in materialized and "features" not in materialized and "bento" not in materialized
        quarantine = pd.read_parquet(project.lake.dataset(project.spec.name).published(days[-1], "quarantine"))
        assert set(quarantine["reason"]) == {"missing_column"} and len(quarantine) == 200

        # A later training run skips the failed day and says so.
        assert project.run("train_and_package").success
        training = project.metadata("training_set")
        assert training["excluded_failed_days"] == [days[-1]]
        assert days[-1] not in training["data_partitions"]


SECOND_SPEC = {
    "name": "sensor_failures",
    "source": {"uri": "unused", "format": "csv", "options": {"delimiter": ";"}},
    "start_date": "2026-03-01",
    "timestamp_column": "reading_time",
    "id_column": "reading_id",
    "label": {"column": "failed", "positive": "yes", "negative": "no"},
    "sensitive_columns": ["site"],
    "split": {"train_days": 4, "validation_days": 2, "test_days": 2},
    "features": [
        {"name": "temperature", "type": "numeric", "min": -40, "max": 150, "nullable": False},
        {"name": "vibration", "type": "numeric", "min": 0, "max": 50},
        {"name": "pressure", "type": "numeric", "min": 0, "max": 400},
        {"name": "machine_type", "type": "categorical", "categories": ["press", "lathe", "mill"]},
        {"name": "site", "type": "categorical", "categories": ["north", "south"], "nullable": False},
        {"name": "under_warranty", "type": "boolean"},
    ],
}


def test_a_second_spec_with_other_columns_runs_unchanged(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(SECOND_SPEC))
    spec_path = spec_file(tmp_path, tmp_path / "landing", base=base)
    with dg.instance_for_test() as instance:
        project = Project(tmp_path, spec_path, instance)
        generate(project.spec, tmp_path / "landing", days=8, rows_per_day=300)
        assert project.run("ingest_daily", _days(project.spec, 8)).success
        assert project.run("train_and_package").success
        card = ModelCard.load(Path(project.metadata("model")["model_dir"]))
        assert card.feature_names == ["temperature", "vibration", "pressure", "machine_type", "under_warranty"]
        evaluation = project.metadata("model_evaluation")
        assert evaluation["roc_auc"] > 0.6
        assert "fairness_site" in evaluation
        assert project.metadata("bento")["bento_tag"].startswith("kennel-sensor-failures:")
