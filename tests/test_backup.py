"""Backup and restore (kennel/backup.py): a small real environment (a champion promoted through its gate
record, its model in the BentoML store, quality records, a retraining-sensor tick on a SQLite Dagster
instance) backed up to S3 (moto server) and restored into an empty lake, model store and instance: the same
champion, identical predictions, the sensor's cursor and no repeated decision. And the refusals: a damaged
file, a missing manifest, a target that holds state. Also through `kennel backup/restore` and the Dagster job."""

import os
import shutil
from pathlib import Path

import boto3
import dagster as dg
import numpy as np
import pytest
from test_champion import _gate_decision
from test_sensors import DAY1, DAY2, _record_day
from test_serving_unit import DEMO_SPEC, synthetic_records, train_model_folder

from definitions import build_definitions
from jobs import BACKUP_JOB, build_backup_jobs
from kennel.backup import MANIFEST, BackupError, Environment, backup, read_manifest, restore
from kennel.cli import INSTANCE_SETTINGS, main
from kennel.lake import Lake
from kennel.lake.champion import ChampionRegistry, bento_name
from kennel.model import Model
from kennel.spec import load_spec
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from scripts.demo import DaemonSensorState, sensor_tick
from sensors.retraining import SENSOR_NAME as RETRAIN_SENSOR

RUN_ID = "run-backup"


def _empty_environment(root: Path, bentoml_home: Path | None = None) -> Environment:
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(INSTANCE_SETTINGS, home / "dagster.yaml")
    return Environment(lake_root=root / "lake", bentoml_home=bentoml_home or root / "bentoml", dagster_home=home)


def _champion_environment(root: Path) -> tuple[Environment, list[dict]]:
    """A lake whose champion passed its gate, with the model in the session's BentoML store; the rows to score."""
    from kennel.serving.model_store import save_model

    spec = load_spec(DEMO_SPEC)
    rng = np.random.default_rng(11)
    records = synthetic_records(spec, 200, rng)
    env = _empty_environment(root, Path(os.environ["BENTOML_HOME"]))
    data = Lake(env.lake_root).dataset(spec.name)
    model_dir = data.model_dir(RUN_ID)
    train_model_folder(model_dir, spec, records, rng)
    tag = save_model(model_dir, name=bento_name(spec.name), labels={"dataset": spec.name}, metadata={"run_id": RUN_ID})
    registry = ChampionRegistry(data)
    registry.record_decision(_gate_decision(RUN_ID, model_dir, tag))
    registry.promote(model_dir)
    _record_day(data, DAY1)  # validated, no drift: skipped
    _record_day(data, DAY2, passed=False)  # failed validation: an alert
    (env.lake_root / "_staging" / "half-written").mkdir(parents=True)  # transient: left out
    (env.lake_root / "_staging" / "half-written" / "part.parquet").write_bytes(b"partial")
    return env, records


def _store_model_dir(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "models" / name / version


def test_restore_into_an_empty_environment_serves_the_same_champion_and_resumes_the_sensor(
    tmp_path, s3_endpoint, monkeypatch
):
    monkeypatch.setenv("KENNEL_S3_ENDPOINT_URL", s3_endpoint)
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="backups")
    old, records = _champion_environment(tmp_path / "old")
    spec = load_spec(DEMO_SPEC)
    champion = ChampionRegistry(Lake(old.lake_root).dataset(spec.name)).current()
    assert champion is not None
    scores = Model.load(champion.model_dir).score(records)

    defs = build_definitions(resources={"lake": LakeResource(root=str(old.lake_root))})
    with dg.DagsterInstance.from_config(str(old.dagster_home)) as instance:
        assert sensor_tick(defs, instance, RETRAIN_SENSOR) == []  # an alert and a skip: no run
        cursor = DaemonSensorState(instance, defs.resolve_sensor_def(RETRAIN_SENSOR)).cursor()
        decisions = Lake(old.lake_root).dataset(spec.name).decisions()
        assert cursor and {d.action for d in decisions} >= {"alert"}
        # The instance is open (as under a running daemon) while its databases are copied.
        manifest = backup("s3://backups/nightly", old)

    paths = {f.path for f in manifest.files}
    assert manifest.champions == {spec.name: champion.model_tag}
    assert manifest.instance_storage == "sqlite" and manifest.lake_root == str(old.lake_root)
    assert "lake/registry/credit_demo/champion.json" in paths and "lake/monitoring/credit_demo/decisions.jsonl" in paths
    assert not any(p.startswith("lake/_staging") or p.endswith(".lock") for p in paths)
    assert any(p.startswith("dagster_home/") and p.endswith(".db") for p in paths)
    assert any(p.startswith(f"bentoml/models/{bento_name(spec.name)}/") for p in paths)
    assert read_manifest("s3://backups/nightly") == manifest
    with pytest.raises(BackupError, match=f"has no {MANIFEST}"):
        read_manifest("s3://backups/cut-short")

    shutil.rmtree(old.lake_root)  # the old environment is gone: nothing may still read from it
    new = _empty_environment(tmp_path / "new")
    restore("s3://backups/nightly", new)

    restored = ChampionRegistry(Lake(new.lake_root).dataset(spec.name)).current()
    assert restored is not None
    assert (restored.model_tag, restored.run_id, restored.since) == (champion.model_tag, RUN_ID, champion.since)
    assert restored.model_dir == str(Lake(new.lake_root).dataset(spec.name).model_dir(RUN_ID))
    assert np.array_equal(Model.load(restored.model_dir).score(records), scores)
    store_model = _store_model_dir(new.bentoml_home, champion.model_tag)
    assert np.array_equal(Model.load(store_model).score(records), scores)
    assert (new.lake_root / "registry" / spec.name / "champion.json").is_file()
    assert not (new.lake_root / "_staging").exists()

    defs = build_definitions(resources={"lake": LakeResource(root=str(new.lake_root))})
    with dg.DagsterInstance.from_config(str(new.dagster_home)) as instance:
        state = DaemonSensorState(instance, defs.resolve_sensor_def(RETRAIN_SENSOR))
        assert state.cursor() == cursor
        assert instance.get_latest_materialization_event(dg.AssetKey("retraining_decisions")) is not None
        assert sensor_tick(defs, instance, RETRAIN_SENSOR) == []
        assert state.cursor() == cursor  # nothing new to decide
    assert Lake(new.lake_root).dataset(spec.name).decisions() == decisions


def _small_environment(root: Path) -> Environment:
    env = _empty_environment(root)
    (env.lake_root / "quality" / "d").mkdir(parents=True)
    (env.lake_root / "quality" / "d" / "2026-01-01.json").write_text('{"day": "2026-01-01"}')
    (env.lake_root / "raw" / "d" / "2026-01-01").mkdir(parents=True)
    (env.lake_root / "raw" / "d" / "2026-01-01" / "part-0.csv").write_text("a,b\n1,2\n")
    (env.lake_root / "serving" / "d").mkdir(parents=True)
    (env.lake_root / "serving" / "d" / "request_id.key").write_bytes(b"secret")
    (env.lake_root / "serving" / "d" / "request_id.key").chmod(0o600)
    (env.bentoml_home / "models" / "m" / "v1").mkdir(parents=True)
    (env.bentoml_home / "models" / "m" / "v1" / "model.ubj").write_bytes(b"booster")
    return env


def test_restore_refuses_a_damaged_or_incomplete_backup_and_a_target_with_state(tmp_path):
    source = _small_environment(tmp_path / "source")
    manifest = backup(str(tmp_path / "backup"), source, include_raw=False)
    assert not any(f.path.startswith("lake/raw/") for f in manifest.files)
    with pytest.raises(BackupError, match="not an empty folder"):
        backup(str(tmp_path / "backup"), source)

    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "backup", damaged)
    (damaged / "lake" / "quality" / "d" / "2026-01-01.json").write_text('{"day": "2026-01-02"}')
    target = _empty_environment(tmp_path / "target")
    with pytest.raises(BackupError, match=r"lake/quality/d/2026-01-01\.json .*the backup is damaged"):
        restore(str(damaged), target)
    assert not target.lake_root.exists() and not (target.bentoml_home / "models").exists()  # nothing written

    (damaged / MANIFEST).unlink()
    with pytest.raises(BackupError, match=f"has no {MANIFEST}"):
        restore(str(damaged), target)

    restore(str(tmp_path / "backup"), target)
    key = target.lake_root / "serving" / "d" / "request_id.key"
    assert key.read_bytes() == b"secret" and key.stat().st_mode & 0o777 == 0o600
    assert (target.bentoml_home / "models" / "m" / "v1" / "model.ubj").read_bytes() == b"booster"
    with pytest.raises(BackupError, match="refusing to restore over existing state.*the lake"):
        restore(str(tmp_path / "backup"), target)
    key.write_bytes(b"changed")
    restore(str(tmp_path / "backup"), target, force=True)
    assert key.read_bytes() == b"secret"


def test_kennel_backup_and_restore_commands(tmp_path, monkeypatch, capsys):
    source = _small_environment(tmp_path / "source")
    monkeypatch.setenv("KENNEL_LAKE_ROOT", str(source.lake_root))
    monkeypatch.setenv("BENTOML_HOME", str(source.bentoml_home))
    monkeypatch.setenv("DAGSTER_HOME", str(source.dagster_home))
    assert main(["backup", str(tmp_path / "backup")]) == 0
    assert "backed up" in capsys.readouterr().out

    target = _empty_environment(tmp_path / "target")
    monkeypatch.setenv("KENNEL_LAKE_ROOT", str(target.lake_root))
    monkeypatch.setenv("BENTOML_HOME", str(target.bentoml_home))
    monkeypatch.setenv("DAGSTER_HOME", str(target.dagster_home))
    assert main(["restore", str(tmp_path / "backup")]) == 0
    assert (target.lake_root / "raw" / "d" / "2026-01-01" / "part-0.csv").read_text() == "a,b\n1,2\n"
    assert main(["restore", str(tmp_path / "backup")]) == 2
    assert "use --force" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "nowhere")]) == 2
    assert f"has no {MANIFEST}" in capsys.readouterr().err


def test_backup_and_restore_jobs(tmp_path):
    source = _small_environment(tmp_path / "source")
    resources = {
        "lake": LakeResource(root=str(source.lake_root)),
        "model_store": ModelStoreResource(home=str(source.bentoml_home)),
    }
    backup_job, restore_job = build_backup_jobs()
    assert backup_job.name == BACKUP_JOB
    destination = str(tmp_path / "backup")
    with dg.instance_for_test() as instance:
        result = backup_job.execute_in_process(
            instance=instance,
            resources=resources,
            run_config={"ops": {"back_up": {"config": {"destination": destination}}}},
        )
        assert result.success
        assert read_manifest(destination).dagster_home == instance.root_directory

        target = tmp_path / "target"
        resources = {
            "lake": LakeResource(root=str(target / "lake")),
            "model_store": ModelStoreResource(home=str(target / "bentoml")),
        }
        result = restore_job.execute_in_process(
            instance=instance,
            resources=resources,
            run_config={"ops": {"restore_from_backup": {"config": {"source": destination}}}},
        )
        assert result.success
    assert (target / "lake" / "quality" / "d" / "2026-01-01.json").is_file()
    assert (target / "bentoml" / "models" / "m" / "v1" / "model.ubj").read_bytes() == b"booster"
