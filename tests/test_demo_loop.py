"""`make demo`'s closed loop, as a newcomer runs it: scripts/demo.py in its own process, on a fresh instance,
lake, model store and landing folder, with fewer days than the default. Still about three minutes on two
cores (two ingest runs, two training runs), so it runs with `make test-full` only; the loop's mechanics are
tested faster in tests/test_closed_loop.py."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from jobs import TRAIN_JOB
from kennel.lake import Lake
from kennel.lake.champion import ChampionRegistry
from kennel.monitoring.retraining import RetrainPolicy
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from sensors.retraining import SENSOR_NAME

pytestmark = [pytest.mark.slow, pytest.mark.full]

PROJECT = Path(__file__).resolve().parent.parent
# 7 days are the fewest the demo spec's split (3 test + 3 validation + 1 train) can train on; 4 drifted days
# are past the sensor's 1,000 new validated rows. Rows per day as in the demo: drift is measured the same.
ARGS = ["--days", "7", "--drift-days", "4", "--rows-per-day", "2000"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp / "dagster_home"),
        "KENNEL_LAKE_ROOT": str(tmp / "lake"),
        "BENTOML_HOME": str(tmp / "bentoml"),
        "KENNEL_LANDING_ROOT": str(tmp / "landing"),
        # dbt is found on PATH, as `make` finds it in the virtualenv.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("KENNEL_DATASET_SPEC", None)
    (tmp / "dagster_home").mkdir()
    result = subprocess.run(
        [sys.executable, "scripts/demo.py", *ARGS], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    with dg.DagsterInstance.from_config(str(tmp / "dagster_home")) as instance:
        yield result.stdout, instance, Lake(str(tmp / "lake")).dataset(load_spec(DEFAULT_SPEC_PATH).name)


def test_the_drifted_days_are_measured_against_the_first_champion(demo_run):
    out, _, data = demo_run
    drift = data.monitoring_records("data_drift")
    drifted_days = ["2026-01-08", "2026-01-09", "2026-01-10", "2026-01-11"]
    assert sorted(drift) == drifted_days  # the baseline days came before any champion
    threshold = RetrainPolicy().drifted_share
    assert all((drift[day].drifted_share or 0) >= threshold for day in drifted_days)
    assert "Drift and performance per day" in out and all(day in out for day in drifted_days)
    # The label-free estimate of each drifted day, and the concept drift its gap to the realized AUC shows.
    estimated = data.monitoring_records("estimated_performance")
    assert all(estimated[day].estimated_roc_auc is not None for day in drifted_days)
    assert all(estimated[day].concept_drift_suspected for day in drifted_days)
    assert out.count("concept drift: below the estimate") == len(drifted_days)


def test_the_sensor_decides_through_its_daemon_state_and_its_retrain_runs_once(demo_run):
    out, instance, data = demo_run
    retrains = [d for d in data.decisions() if d.action == "retrain"]
    assert len(retrains) == 1
    runs = instance.get_runs(dg.RunsFilter(tags={SENSOR_NAME_TAG: SENSOR_NAME}))
    assert [(r.job_name, r.tags[RUN_KEY_TAG]) for r in runs] == [(TRAIN_JOB, retrains[0].run_key)]
    # The cursor is kept where the daemon reads it: a daemon started later resumes from it.
    sensor_states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    (state,) = [s for s in sensor_states if s.name == SENSOR_NAME]
    assert state.instigator_data.cursor and retrains[0].decision_id in state.instigator_data.cursor
    # Each decision is in the UI as a materialization of the decisions asset, as the daemon stores them.
    (decisions_key,) = [k for k in instance.get_asset_keys() if k.path[-1] == "retraining_decisions"]
    logged = instance.fetch_materializations(decisions_key, limit=1000).records
    assert sorted(r.asset_materialization.metadata["decision_id"].value for r in logged) == sorted(
        d.decision_id for d in data.decisions()
    )
    assert f"retrain {retrains[0].days[0]}" in " ".join(out.split())


def test_the_summary_names_both_gate_verdicts_and_the_champion(demo_run):
    out, _, data = demo_run
    verdicts = ChampionRegistry(data).decisions()
    assert len(verdicts) == 2 and verdicts[0].passed
    champion = ChampionRegistry(data).current()
    assert champion is not None and champion.model_tag in out
    assert ("new champion" in out) == verdicts[1].passed
    assert out.count("promoted kennel-credit-demo:") + out.count("rejected kennel-credit-demo:") == 2
