"""Backup and restore (kennel/backup.py): a small real environment (a champion promoted through its gate
record, its model in the BentoML store, quality records, a retraining-sensor tick on a SQLite Dagster
instance) backed up to S3 (moto server) and restored into an empty lake, model store and instance: the same
champion, identical predictions, the sensor's cursor and no repeated decision. And the refusals: a damaged
file, a missing manifest, a target that holds state. Also through `kennel backup/restore` and the Dagster job; an
instance on a real PostgreSQL server (pg_dump, psql into a fresh database); and the restored champion's Bento under a
real `bentoml serve`."""

import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import boto3
import dagster as dg
import numpy as np
import pandas as pd
import pytest
import requests
from dagster._core.remote_origin import RemoteJobOrigin
from dagster._core.scheduler.instigation import InstigatorState, TickData, TickStatus
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster._serdes import deserialize_value
from dagster_aws.s3 import S3Resource
from postgres_server import postgres_server
from test_champion import _gate_decision
from test_lake_publish import DATASET, _write_version
from test_lake_publish import DAY as PUBLISHED_DAY
from test_postgres_instance import _point_at, _postgres_home
from test_sensors import DAY1, DAY2, _record_day
from test_serving import start_server, stop_server
from test_serving_unit import DEMO_SPEC, synthetic_records, train_model_folder

from definitions import build_definitions
from jobs import BACKUP_JOB, build_backup_jobs
from kennel.backup import (
    MANIFEST,
    PG_BIN_ENV,
    BackupError,
    Environment,
    backup,
    lake_files,
    read_manifest,
    restore,
)
from kennel.cli import INSTANCE_SETTINGS, main
from kennel.lake import Lake, sha256_of
from kennel.lake.champion import ChampionRegistry, bento_name
from kennel.lake.s3 import MANIFEST as PUBLISHED_MANIFEST
from kennel.lake.s3 import list_objects
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


def _use_environment(env: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the settings Environment.from_env reads (as `kennel backup/restore` does) at `env`."""
    monkeypatch.setenv("KENNEL_LAKE_ROOT", str(env.lake_root))
    monkeypatch.setenv("BENTOML_HOME", str(env.bentoml_home))
    monkeypatch.setenv("DAGSTER_HOME", str(env.dagster_home))


@pytest.mark.postgres
def test_a_postgres_instance_is_dumped_and_restored_into_a_fresh_database(tmp_path, monkeypatch, caplog, capfd):
    """pg_dump on backup, psql on restore into a new empty database on the same server: the retraining sensor's
    cursor, its tick and the run it requested come back (through Dagster and in the tables themselves). The
    password reaches pg_dump/psql only through their environment: never an argument, a backed-up file or an
    error message."""
    commands: list[list[str]] = []
    run = subprocess.run

    def recording_run(args, *rest, **kwargs):
        commands.append([str(a) for a in args])
        return run(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    with postgres_server() as server:
        monkeypatch.setenv(PG_BIN_ENV, str(server.bin_dir))
        _point_at(server, monkeypatch)
        old, new = tmp_path / "old", tmp_path / "new"
        old.mkdir()
        new.mkdir()
        source = Environment(old / "lake", old / "bentoml", _postgres_home(old))
        source.lake_root.mkdir()
        _use_environment(source, monkeypatch)
        defs = build_definitions(resources={"lake": LakeResource(root=str(source.lake_root))})
        sensor = defs.resolve_sensor_def(RETRAIN_SENSOR)
        with dg.DagsterInstance.from_config(str(source.dagster_home)) as instance:
            state = DaemonSensorState(instance, sensor)
            state.save_cursor("cursor-at-backup")
            origin = state.key
            tick = state.start_tick()
            requested = instance.create_run_for_job(
                defs.resolve_job_def("train_and_package"),
                status=dg.DagsterRunStatus.QUEUED,
                remote_job_origin=RemoteJobOrigin(state.origin.repository_origin, "train_and_package"),
                tags={SENSOR_NAME_TAG: sensor.name, RUN_KEY_TAG: "retrain-after-drift"},
            )
            tick = tick.with_run_info(requested.run_id, "retrain-after-drift")
            instance.update_tick(tick.with_status(TickStatus.SUCCESS, cursor="cursor-at-backup"))
            manifest = backup(str(tmp_path / "backup"))  # the instance open, as under a running daemon
        assert manifest.instance_storage == "postgres"
        assert "instance/postgres.sql" in {f.path for f in manifest.files}

        # A fresh, empty database on the same server; the restored instance reads DAGSTER_PG_DB.
        admin = server.connect()
        try:
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute('CREATE DATABASE "restored"')
        finally:
            admin.close()
        monkeypatch.setenv("DAGSTER_PG_DB", "restored")
        target = Environment(new / "lake", new / "bentoml", _postgres_home(new))
        _use_environment(target, monkeypatch)
        restore(str(tmp_path / "backup"))

        with dg.DagsterInstance.from_config(str(target.dagster_home)) as instance:
            assert DaemonSensorState(instance, sensor).cursor() == "cursor-at-backup"
            (restored_tick,) = instance.get_ticks(origin.instigator_origin_id, origin.selector_id)
            assert restored_tick.status == TickStatus.SUCCESS and restored_tick.cursor == "cursor-at-backup"
            assert restored_tick.run_ids == [requested.run_id]
            run_record = instance.get_run_by_id(requested.run_id)
            assert run_record is not None and run_record.status == dg.DagsterRunStatus.QUEUED
            assert run_record.tags[RUN_KEY_TAG] == "retrain-after-drift" and run_record.job_name == "train_and_package"
        restored = server.connect("restored")
        try:
            with restored.cursor() as cursor:
                cursor.execute("SELECT run_id, status FROM runs")
                assert cursor.fetchall() == [(requested.run_id, "QUEUED")]
                cursor.execute("SELECT instigator_body FROM instigators WHERE selector_id = %s", (origin.selector_id,))
                ((body,),) = cursor.fetchall()
                assert deserialize_value(body, InstigatorState).instigator_data.cursor == "cursor-at-backup"
                cursor.execute("SELECT status, tick_body FROM job_ticks WHERE selector_id = %s", (origin.selector_id,))
                ((status, tick_body),) = cursor.fetchall()
                assert status == "SUCCESS" and deserialize_value(tick_body, TickData).run_ids == [requested.run_id]
        finally:
            restored.close()

        # The database now holds an instance: refused without force, replaced with it (the dump drops what it
        # recreates); a database that cannot be reached fails naming the tool, before the lake is touched.
        with pytest.raises(BackupError, match="refusing to restore over existing state.*Postgres database"):
            restore(str(tmp_path / "backup"))
        restore(str(tmp_path / "backup"), force=True)
        restored = server.connect("restored")
        try:
            with restored.cursor() as cursor:
                cursor.execute("SELECT run_id FROM runs")
                assert cursor.fetchall() == [(requested.run_id,)]  # the backed-up run, once
        finally:
            restored.close()
        monkeypatch.setenv("DAGSTER_PG_DB", "nowhere")
        shutil.rmtree(target.lake_root)
        with pytest.raises(BackupError, match="psql failed") as refused:
            restore(str(tmp_path / "backup"), force=True)
        assert not target.lake_root.exists()
        monkeypatch.setenv("DAGSTER_PG_DB", "restored")

        assert commands and all(server.password not in " ".join(command) for command in commands)
        assert {Path(command[0]).name for command in commands} >= {"pg_dump", "psql"}
        for path in (tmp_path / "backup").rglob("*"):
            assert not path.is_file() or server.password.encode() not in path.read_bytes(), path
        logged = caplog.text + "".join(capfd.readouterr())
        assert server.password not in logged and server.password not in str(refused.value)


@pytest.mark.serving
def test_the_restored_environment_serves_the_same_champion_through_bentoml(tmp_path, tmp_path_factory, monkeypatch):
    """`bentoml serve` of the restored champion's Bento, from the restored BENTOML_HOME and logging to the restored
    lake, answers exactly what the original champion scores in-process."""
    from kennel.serving.champion import ensure_bento
    from kennel.serving.prediction_log import read_predictions

    old, records = _champion_environment(tmp_path / "old")
    spec = load_spec(DEMO_SPEC)
    registry = ChampionRegistry(Lake(old.lake_root).dataset(spec.name))
    champion, built = ensure_bento(registry, Lake(old.lake_root))
    assert built and champion.bento_tag
    scores = Model.load(champion.model_dir).score(records)
    backup(str(tmp_path / "backup"), old)

    shutil.rmtree(old.lake_root)
    new = _empty_environment(tmp_path / "new")
    restore(str(tmp_path / "backup"), new)
    restored = ChampionRegistry(Lake(new.lake_root).dataset(spec.name)).current()
    assert restored is not None and restored.bento_tag == champion.bento_tag
    name, version = champion.bento_tag.split(":")
    assert (new.bentoml_home / "bentos" / name / version / "bento.yaml").is_file()

    run_dir = tmp_path_factory.mktemp("serve-restored")
    proc, base_url, _, _ = start_server(
        restored.bento_tag,
        run_dir,
        {
            "BENTOML_HOME": str(new.bentoml_home),
            "KENNEL_LAKE_ROOT": str(new.lake_root),
            "KENNEL_PREDICTION_LOG_FLUSH_S": "1",
        },
    )
    try:
        response = requests.post(f"{base_url}/predict_batch", json={"records": records}, timeout=60)
        assert response.status_code == 200, response.text
        answers = response.json()
        request_ids = {a["request_id"] for a in answers}
        deadline = time.monotonic() + 30  # the log is written every second
        while True:
            logged = read_predictions(Lake(new.lake_root).dataset(spec.name))
            logged = logged[logged["request_id"].isin(request_ids)]
            if len(logged) == len(records) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    finally:
        stop_server(proc)
    assert len(logged) == len(records)  # into the restored lake
    assert {a["model_version"] for a in answers} == {champion.model_tag}
    assert [a["probability"] for a in answers] == scores.tolist()


def test_records_are_copied_before_the_files_they_name(tmp_path, monkeypatch):
    """A run publishing during a backup writes its files, then the record naming them: copying every
    record first means a copied record never names a file the backup missed."""
    env = _small_environment(tmp_path)
    (env.lake_root / "clean" / "d" / "date=2026-01-01" / "v-1").mkdir(parents=True)
    (env.lake_root / "clean" / "d" / "date=2026-01-01" / "v-1" / "part-00000.parquet").write_bytes(b"rows")
    copied: list[str] = []
    copy2 = shutil.copy2

    def recording_copy(source, target):
        copied.append(Path(source).name)
        return copy2(source, target)

    monkeypatch.setattr(shutil, "copy2", recording_copy)
    backup(str(tmp_path / "backup"), env)
    records = [i for i, name in enumerate(copied) if name.endswith(".json")]
    data = [i for i, name in enumerate(copied) if name.endswith((".parquet", ".csv", ".ubj"))]
    assert records and data and max(records) < min(data)


def relative_to(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def test_a_lake_on_s3_is_backed_up_with_its_mirror_and_restored_under_a_new_root(tmp_path, s3_endpoint):
    """An s3:// lake: a raw day and a cleaned day published to S3 as ingestion publishes them, a champion and
    monitoring records in the mirror only. Backed up to a local folder, restored under a new S3 prefix and a
    new mirror: the day reads back verified through the lake's readers, the same champion scores the same."""
    s3 = S3Resource(endpoint_url=s3_endpoint)
    client = s3.get_client()
    client.create_bucket(Bucket="s3-lake")
    old, records = _champion_environment(tmp_path / "old")
    old = replace(old, lake_s3_root="s3://s3-lake/old")
    lake = LakeResource(root=old.lake_s3_root, mirror=str(old.lake_root), s3=s3)
    data = lake.dataset(DATASET)
    raw_dir = data.raw_dir(PUBLISHED_DAY)
    raw_dir.mkdir(parents=True)
    (raw_dir / "part-0.csv").write_text("id,amount\n1,2\n")
    lake.publish_dir(raw_dir)
    record = _write_version(lake.local, "ingest-run", 4)
    # As clean_records publishes a day: its data files, then the quality record naming them.
    for table in ("clean", "quarantine"):
        lake.publish_file(lake.local.root / record.outputs[table].file)
    lake.publish_file(data.publish_day(record))
    clean = pd.read_parquet(data.published(PUBLISHED_DAY))
    champion = ChampionRegistry(data).current()
    assert champion is not None
    scores = Model.load(champion.model_dir).score(records)

    mirror = {relative_to(p, old.lake_root): sha256_of(p) for p in lake_files(old.lake_root, include_raw=True)}
    manifest = backup(str(tmp_path / "backup"), old, s3_client=client)

    def relative(path: Path) -> str:
        return relative_to(path, old.lake_root)

    paths = {f.path for f in manifest.files}
    assert manifest.lake_s3_root == "s3://s3-lake/old" and manifest.lake_root == str(old.lake_root)
    quality, clean_file = relative(data.quality_path(PUBLISHED_DAY)), record.outputs["clean"].file
    assert {f"lake_s3/{quality}", f"lake_s3/{clean_file}", f"lake_s3/{relative(raw_dir)}/{PUBLISHED_MANIFEST}"} <= paths
    # The mirror's copies of published files are not backed up twice; what only the mirror holds is.
    assert not {f"lake/{quality}", f"lake/{clean_file}", f"lake/{relative(raw_dir / 'part-0.csv')}"} & paths
    assert f"lake/{relative(data.registry_dir() / 'champion.json')}" in paths
    assert f"lake/{relative(data.quality_path(DAY1))}" in paths  # a record never published: the mirror's
    assert not any(p.startswith(("lake/_staging", "lake_s3/_staging")) for p in paths)

    # The old lake is gone, on S3 and in the mirror: nothing may still read from it.
    for obj in list_objects(client, "s3-lake", "old/"):
        client.delete_object(Bucket="s3-lake", Key=obj.key)
    shutil.rmtree(old.lake_root)

    with pytest.raises(BackupError, match="holds a lake on S3.*target lake root is local"):
        restore(str(tmp_path / "backup"), _empty_environment(tmp_path / "local"))
    client.put_object(Bucket="s3-lake", Key="occupied/x", Body=b"x")
    occupied = replace(_empty_environment(tmp_path / "occupied"), lake_s3_root="s3://s3-lake/occupied")
    with pytest.raises(BackupError, match="refusing to restore over existing state.*S3 root s3://s3-lake/occupied"):
        restore(str(tmp_path / "backup"), occupied, s3_client=client)
    assert not occupied.lake_root.exists()

    new = replace(_empty_environment(tmp_path / "new"), lake_s3_root="s3://s3-lake/restored")
    restore(str(tmp_path / "backup"), new, s3_client=client)
    restored_lake = LakeResource(root=new.lake_s3_root, mirror=str(new.lake_root), s3=s3)
    restored_data = restored_lake.dataset(DATASET)
    assert restored_data.quality(PUBLISHED_DAY) == record
    pd.testing.assert_frame_equal(pd.read_parquet(restored_data.published(PUBLISHED_DAY)), clean)
    assert (restored_data.raw_dir(PUBLISHED_DAY) / "part-0.csv").read_text() == "id,amount\n1,2\n"
    on_s3 = {o.key for o in list_objects(client, "s3-lake", "restored/")}
    assert {f"restored/{quality}", f"restored/{clean_file}"} <= on_s3
    # A fresh machine finds the raw day and the quality record under the new root, S3 alone.
    fresh = LakeResource(root=new.lake_s3_root, mirror=str(tmp_path / "fresh"), s3=s3)
    fresh.fetch_dir(fresh.dataset(DATASET).raw_dir(PUBLISHED_DAY))
    assert (fresh.dataset(DATASET).raw_dir(PUBLISHED_DAY) / "part-0.csv").read_text() == "id,amount\n1,2\n"
    body = client.get_object(Bucket="s3-lake", Key=f"restored/{quality}")["Body"].read()
    assert body == restored_data.quality_path(PUBLISHED_DAY).read_bytes()

    restored = ChampionRegistry(restored_data).current()
    assert restored is not None and (restored.model_tag, restored.since) == (champion.model_tag, champion.since)
    assert restored.model_dir == str(restored_data.model_dir(RUN_ID))
    assert np.array_equal(Model.load(restored.model_dir).score(records), scores)
    # The whole mirror came back: every file, the data byte for byte (records may name the new root).
    restored_files = {relative_to(p, new.lake_root): p for p in lake_files(new.lake_root, include_raw=True)}
    assert set(restored_files) == set(mirror)
    data_files = {r for r in mirror if not r.endswith((".json", ".jsonl"))}
    assert {r: sha256_of(restored_files[r]) for r in data_files} == {r: mirror[r] for r in data_files}
