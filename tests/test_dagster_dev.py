"""End to end through a running `dagster dev` (webserver + daemon): switch the retraining sensor on over
GraphQL and watch the daemon launch the retrain it asks for, and the run succeed."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import requests
from test_serving import stop_server

from kennel.demo import generate
from kennel.lake import Lake
from kennel.lake.champion import ChampionRegistry
from sensors.retraining import SENSOR_NAME
from tests.projects import Project, days, spec_file

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ROWS = 1500
DEADLINE_S = 420


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gql(url: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(url, json={"query": query, "variables": variables or {}}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_sensor_in_a_running_dagster_dev_launches_the_retrain(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    spec_path = spec_file(
        tmp_path,
        tmp_path / "landing",
        split={"train_days": 2, "validation_days": 1, "test_days": 1},
        sensitive_columns=[],
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        project = Project(tmp_path, spec_path, instance)
        d = days(project.spec, 8)
        generate(project.spec, tmp_path / "landing", days=8, rows_per_day=ROWS, scenario="drift", drift_start_day=4)
        assert project.run("ingest_daily", d[:4]).success
        assert project.run("train_and_package").success
        first = ChampionRegistry(project.lake.dataset(project.spec.name)).current()
        assert project.run("ingest_daily", d[4:]).success  # drifted days, monitored against the champion

    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "KENNEL_DATASET_SPEC": str(spec_path),
        "KENNEL_LAKE_ROOT": str(tmp_path / "lake"),
        "KENNEL_RETRAIN_MIN_ROWS": "500",
    }
    log = (tmp_path / "dagster_dev.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "dagster_dev.log").read_text()[
                -3000:
            ]
            try:
                if _gql(url, "{ version }")["version"]:
                    break
            except (requests.RequestException, AssertionError, KeyError):
                time.sleep(1)
        started = _gql(
            url,
            """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
                __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
            {"s": {"repositoryLocationName": "kennel", "repositoryName": "__repository__", "sensorName": SENSOR_NAME}},
        )
        assert started["startSensor"]["sensorState"]["status"] == "RUNNING", started

        runs_query = (
            '{ runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: "' + SENSOR_NAME + '"}]}) {\n'
            "            ... on Runs { results { runId status jobName } } } }"
        )
        while True:
            assert time.monotonic() < deadline, (tmp_path / "dagster_dev.log").read_text()[-3000:]
            runs = _gql(url, runs_query)["runsOrError"]["results"]
            if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(3)
        assert [(r["jobName"], r["status"]) for r in runs] == [("train_and_package", "SUCCESS")]
        # What the daemon's run wrote to the lake named by KENNEL_LAKE_ROOT above.
        second = ChampionRegistry(Lake(tmp_path / "lake").dataset("credit_demo")).current()
        assert second.run_id == runs[0]["runId"] != first.run_id
    finally:
        stop_server(proc)
        log.close()
