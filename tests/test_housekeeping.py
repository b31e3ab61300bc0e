"""Killed runs end FAILED and leave nothing behind: the instance `make setup` writes turns on the daemon's
run monitoring, and without a daemon the next sensor tick fails a run whose worker was SIGKILLed (or
never started) and removes its staging, while a run that is alive keeps running."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest

from definitions import build_definitions
from kennel.lake import Lake
from resources.lake import LakeResource
from sensors.housekeeping import compact_served_logs, sweep_abandoned_runs, worker_alive
from sensors.ingestion import SENSOR_NAME as NEW_DATA_SENSOR
from sensors.retraining import SENSOR_NAME as RETRAINING_SENSOR

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# A run that writes into its staging folder, says so, and holds until released (or killed).
RUN_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    import dagster as dg

    @dg.op
    def write_then_hold(context):
        staging = Path(os.environ["LAKE"]) / "_staging" / context.run_id
        staging.mkdir(parents=True)
        (staging / "part-00000.parquet").write_bytes(b"half a file")
        Path(os.environ["READY"]).write_text(context.run_id)
        while not Path(os.environ["RELEASE"]).exists():
            time.sleep(0.05)

    @dg.job
    def hold():
        write_then_hold()

    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        hold.execute_in_process(instance=instance)
    """
)


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    """A Dagster home whose dagster.yaml is the one `make setup` writes."""
    home = tmp_path / "dagster_home"
    subprocess.run(
        ["make", "--no-print-directory", "-s", f"DAGSTER_HOME={home}", f"{home}/dagster.yaml"],
        cwd=PROJECT_ROOT,
        check=True,
    )
    return home


def test_the_instance_make_writes_monitors_runs(dagster_home):
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds > 0
        assert instance.run_monitoring_max_resume_run_attempts == 0  # a killed run fails, never half-resumes


def _start_run(tmp_path: Path, name: str, home: Path, lake: Path) -> tuple[subprocess.Popen, str, Path]:
    ready, release = tmp_path / f"{name}.ready", tmp_path / f"{name}.release"
    env = {**os.environ, "DAGSTER_HOME": str(home), "LAKE": str(lake), "READY": str(ready), "RELEASE": str(release)}
    worker = subprocess.Popen([sys.executable, "-c", RUN_WORKER], env=env)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert worker.poll() is None, f"the run worker {name} exited early"
        assert time.monotonic() < deadline, f"the run worker {name} did not start"
        time.sleep(0.1)
    return worker, ready.read_text(), release


def test_a_tick_fails_a_killed_run_and_removes_its_staging(tmp_path, dagster_home):
    lake = LakeResource(root=str(tmp_path / "lake"))
    staging = lake.local.staging()
    defs = build_definitions(resources={"lake": lake})
    killed, killed_run, _ = _start_run(tmp_path, "killed", dagster_home, lake.local.root)
    alive, alive_run, release = _start_run(tmp_path, "alive", dagster_home, lake.local.root)
    try:
        os.kill(killed.pid, signal.SIGKILL)  # as the OOM killer would: no handler, no last words
        killed.wait()
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            assert instance.get_run_by_id(killed_run).status == dg.DagsterRunStatus.STARTED
            with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
                defs.resolve_sensor_def(RETRAINING_SENSOR)(context)

            run = instance.get_run_by_id(killed_run)
            assert run.status == dg.DagsterRunStatus.FAILURE
            failure = instance.all_logs(killed_run, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
            assert f"pid {killed.pid}" in failure.dagster_event.message
            assert not list(staging.glob(f"{killed_run}*"))
            # The run that is alive is left alone, its staging too.
            assert instance.get_run_by_id(alive_run).status == dg.DagsterRunStatus.STARTED
            assert (staging / alive_run).is_dir()

            release.touch()
            assert alive.wait(timeout=120) == 0
            assert instance.get_run_by_id(alive_run).status == dg.DagsterRunStatus.SUCCESS
            # Once a run has ended, the next tick (of either sensor) removes what it left in staging.
            with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
                defs.resolve_sensor_def(NEW_DATA_SENSOR)(context)
            assert not staging.exists() or not any(staging.iterdir())
    finally:
        for worker in (killed, alive):
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def test_a_pid_given_to_a_newer_process_is_not_the_run_worker():
    me = psutil.Process()
    assert worker_alive(me.pid, time.time())
    assert not worker_alive(me.pid, me.create_time() - 60), "a process that started after the run is another"


@dg.op
def nothing() -> None:
    pass


@dg.job
def never_started():
    nothing()


@pytest.mark.parametrize(("start_timeout_s", "swept"), [(0, True), (180, False)])
def test_a_run_whose_worker_never_started_is_failed_after_the_start_timeout(tmp_path, start_timeout_s, swept):
    overrides = {"run_monitoring": {"enabled": True, "start_timeout_seconds": start_timeout_s}}
    with dg.instance_for_test(overrides=overrides) as instance:
        run = instance.create_run_for_job(never_started, status=dg.DagsterRunStatus.STARTING)
        assert sweep_abandoned_runs(instance, Lake(tmp_path / "lake"), logging.getLogger(__name__)) == (
            [run.run_id] if swept else []
        )
        status = instance.get_run_by_id(run.run_id).status
        assert status == (dg.DagsterRunStatus.FAILURE if swept else dg.DagsterRunStatus.STARTING)


def test_served_logs_are_compacted_up_to_the_day_before_yesterday(tmp_path: Path) -> None:
    import numpy as np

    from kennel.serving.prediction_log import FeedbackLog, PredictionLog, read_feedback, read_predictions
    from kennel.spec import DEFAULT_SPEC_PATH, load_spec

    spec = load_spec(DEFAULT_SPEC_PATH)
    data = Lake(tmp_path / "lake").dataset(spec.name)
    predictions = PredictionLog(data, spec, model_tag="m:1", threshold=0.5)
    feedback = FeedbackLog(data, verifier=None)
    now = time.time()
    for days_ago in (3, 3, 3, 1, 0):  # three flushes three days ago, one yesterday, one today
        at = now - days_ago * 86_400
        rid = os.urandom(16).hex()
        predictions.append("/predict", [rid], np.array([0.5]), {"region": ["west"]}, at=at)
        predictions.flush()
        feedback.append([rid], [1], at=at)
        feedback.flush()
    compact_served_logs(data)
    for folder in (data.predictions_dir(), data.feedback_dir()):
        files = sorted(len(list(day.glob("*.parquet"))) for day in folder.glob("date=*"))
        assert files == [1, 1, 1]  # three days' files in one, yesterday and today untouched
    assert len(read_predictions(data)) == 5 and len(read_feedback(data)) == 5
