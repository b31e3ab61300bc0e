"""The Dagster instance on PostgreSQL: deploy/dagster/postgres.yaml, as shipped, pointed at a real server through
its environment variables; the ingestion and training jobs and a tick of the retraining sensor keep their runs,
events, cursor and tick there (read back with psycopg2, not only through Dagster). SQLite stays the default."""

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.scheduler.instigation import (
    InstigatorState,
    SensorInstigatorData,
    TickData,
    TickStatus,
)
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster._serdes import deserialize_value
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from postgres_server import PostgresServer, postgres_server

from kennel.cli import INSTANCE_SETTINGS, project_environment
from kennel.demo import generate
from scripts.demo import DaemonSensorState, sensor_tick
from sensors.retraining import SENSOR_NAME as RETRAIN_SENSOR
from tests.projects import Project, days, spec_file

pytestmark = pytest.mark.postgres

POSTGRES_INSTANCE = Path(__file__).parent.parent / "deploy" / "dagster" / "postgres.yaml"
SETTINGS = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
DAYS = 8  # the demo split needs 3 test + 3 validation + at least 1 train day
ROWS_PER_DAY = 200


def _postgres_home(tmp: Path) -> Path:
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(POSTGRES_INSTANCE.read_text())
    return home


def _point_at(server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    values = (server.host, str(server.port), server.user, server.password, server.database)
    for name, value in zip(SETTINGS, values, strict=True):
        monkeypatch.setenv(name, value)


def test_sqlite_stays_the_default(tmp_path, monkeypatch):
    """The instance `kennel` (and `make setup`, with the same file) writes into a DAGSTER_HOME without one."""
    for name in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK", "GX_ANALYTICS_ENABLED", "DAGSTER_TELEMETRY_ENABLED"):
        monkeypatch.setenv(name, "unused")  # project_environment sets what is unset: undone after the test
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    project_environment()
    written = yaml.safe_load((tmp_path / "home" / "dagster.yaml").read_text())
    assert not {"storage", "run_storage", "event_log_storage", "schedule_storage"} & written.keys()
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert isinstance(instance.run_storage, SqliteRunStorage)
        assert isinstance(instance.event_log_storage, SqliteEventLogStorage)
        assert isinstance(instance.schedule_storage, SqliteScheduleStorage)


def test_postgres_instance_keeps_the_default_instance_settings():
    """Run monitoring and telemetry of the shipped PostgreSQL instance are the default instance's, word for word."""
    shipped = yaml.safe_load(POSTGRES_INSTANCE.read_text())
    storage = shipped.pop("storage")
    assert shipped == yaml.safe_load(INSTANCE_SETTINGS.read_text())
    assert storage["postgres"]["postgres_db"] == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
        "scheme": "postgresql+psycopg2",
    }


def test_a_missing_setting_is_named(tmp_path, monkeypatch):
    for name in SETTINGS:
        monkeypatch.setenv(name, "5432" if name == "DAGSTER_PG_PORT" else "set")
    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    with pytest.raises(dg.DagsterInvalidConfigError, match="DAGSTER_PG_PASSWORD"):
        dg.DagsterInstance.from_config(str(_postgres_home(tmp_path)))


def _rows(server: PostgresServer, query: str, *params) -> list[tuple]:
    connection = server.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()
    finally:
        connection.close()


@pytest.mark.slow
def test_jobs_and_a_sensor_tick_are_stored_in_postgres(tmp_path, monkeypatch):
    with postgres_server() as server:
        _jobs_and_a_sensor_tick(server, tmp_path, monkeypatch)


def _jobs_and_a_sensor_tick(server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _point_at(server, monkeypatch)
    spec_path = spec_file(tmp_path, tmp_path / "landing")
    with dg.DagsterInstance.from_config(str(_postgres_home(tmp_path))) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        project = Project(tmp_path, spec_path, instance)
        generate(project.spec, tmp_path / "landing", days=DAYS, rows_per_day=ROWS_PER_DAY)
        ingest = project.run("ingest_daily", days(project.spec, DAYS))
        train = project.run("train_and_package")
        assert ingest.success and train.success

        # A tick of the retraining sensor as the daemon runs one: recorded as started, evaluated from the cursor
        # the instance keeps for it, its cursor saved back, the tick ended with that cursor.
        sensor = project.defs.resolve_sensor_def(RETRAIN_SENSOR)
        state = DaemonSensorState(instance, sensor)
        origin = state.key
        tick = state.start_tick()
        launched = sensor_tick(project.defs, instance, RETRAIN_SENSOR)
        assert launched == [], "a champion trained on every day there is: nothing to retrain"
        cursor = state.cursor()
        assert cursor
        instance.update_tick(tick.with_status(TickStatus.SKIPPED, cursor=cursor))

    # What the server itself holds, read with psycopg2.
    runs = dict(_rows(server, "SELECT run_id, status FROM runs"))
    assert runs == {ingest.run_id: "SUCCESS", train.run_id: "SUCCESS"}
    for result, asset in ((ingest, "clean_records"), (train, "model")):
        events = {
            (kind, key)
            for kind, key in _rows(
                server, "SELECT dagster_event_type, asset_key FROM event_logs WHERE run_id = %s", result.run_id
            )
        }
        assert (dg.DagsterEventType.RUN_SUCCESS.value, None) in events  # the value is still "PIPELINE_SUCCESS"
        assert (dg.DagsterEventType.ASSET_MATERIALIZATION.value, dg.AssetKey(asset).to_string()) in events
    ((body,),) = _rows(server, "SELECT instigator_body FROM instigators WHERE selector_id = %s", origin.selector_id)
    stored = deserialize_value(body, InstigatorState)
    assert isinstance(stored.instigator_data, SensorInstigatorData) and stored.instigator_data.cursor == cursor
    assert _rows(server, "SELECT job_type FROM jobs WHERE job_origin_id = %s", origin.instigator_origin_id) == [
        ("SENSOR",)
    ]
    ((status, tick_body),) = _rows(
        server, "SELECT status, tick_body FROM job_ticks WHERE selector_id = %s", origin.selector_id
    )
    assert status == "SKIPPED" and deserialize_value(tick_body, TickData).cursor == cursor
