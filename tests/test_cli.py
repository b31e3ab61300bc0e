"""The `kennel` command's own logic, without running a job: the console script is installed, bad day ranges
and data-set names are refused before Dagster starts, status reads the lake, and the instance is prepared."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from kennel import cli
from kennel.deployment import SPECS_DIR_ENV_VAR
from kennel.spec import DEFAULT_SPEC_PATH


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A deployment of the demo spec with its state in tmp_path; a job launch fails the test."""
    for name in ("DAGSTER_HOME", "BENTOML_HOME", "KENNEL_LAKE_ROOT", "KENNEL_DATASET_SPEC", SPECS_DIR_ENV_VAR):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("KENNEL_LAKE_ROOT", str(tmp_path / "lake"))

    def no_job(job, tags=None):
        raise AssertionError(f"{job} was launched")

    monkeypatch.setattr(cli, "run_dagster_job", no_job)
    return tmp_path


def test_the_console_script_is_installed():
    kennel = Path(sys.executable).parent / "kennel"
    assert kennel.exists(), "make setup installs the project (pip install -e .)"
    shown = subprocess.run([str(kennel), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("init", "check", "ingest", "train", "serve", "status"):
        assert command in shown


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        ("2026-01-05", "2026-01-04", "is after --to"),
        ("2025-12-31", "2026-01-02", "before the data set's start_date 2026-01-01"),
        ("2026-01-01", (datetime.now(UTC).date() + timedelta(days=1)).isoformat(), "the last whole day"),
    ],
)
def test_a_day_range_without_partitions_is_refused_before_any_run(project, capsys, start, end, says):
    assert cli.main(["ingest", "--from", start, "--to", end]) == 2
    assert says in capsys.readouterr().err


def test_a_day_that_is_no_day_is_an_argument_error(project, capsys):
    with pytest.raises(SystemExit):
        cli.main(["ingest", "--from", "2026-02-30"])
    assert "is not a day" in capsys.readouterr().err


def test_several_data_sets_need_a_name(project, monkeypatch, capsys):
    specs = project / "specs"
    specs.mkdir()
    for name in ("alpha", "beta"):
        raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
        raw.update(name=name, source={**raw["source"], "uri": str(project / name)})
        (specs / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv(SPECS_DIR_ENV_VAR, str(specs))
    assert cli.main(["train"]) == 2
    assert "name one with --dataset (alpha, beta)" in capsys.readouterr().err
    assert cli.main(["train", "--dataset", "gamma"]) == 2
    assert "no data set 'gamma'" in capsys.readouterr().err
    assert cli.main(["serve", "--dataset", "beta"]) == 2
    assert "beta has no champion with a Bento yet" in capsys.readouterr().err


def test_status_of_a_fresh_deployment_and_its_instance(project, capsys):
    assert cli.main(["status"]) == 0
    shown = capsys.readouterr().out
    assert "== credit_demo" in shown and "none yet: run `kennel train`" in shown and "0 ingested" in shown
    settings = yaml.safe_load((project / "dagster_home" / "dagster.yaml").read_text())
    assert settings["telemetry"] == {"enabled": False} and settings["run_monitoring"]["enabled"] is True


def test_train_says_when_the_gate_kept_the_champion(project, monkeypatch, capsys):
    """A rejected challenger fails the run (the gate is a blocking check); the command tells it apart."""
    from kennel.lake.records import GateDecision, ModelIdentity

    decision = GateDecision(
        decided_at="2026-01-30T00:00:00+00:00",
        passed=False,
        summary="rejected: ROC-AUC 0.81 does not beat the champion's 0.82",
        challenger=ModelIdentity(run_id="r2", model_tag="m:2", model_dir="/m/2", spec_fingerprint="f", threshold=0.5),
        test_rows=100,
        config={},
        checks=[],
    )

    def gate_rejects(job, tags=None):
        cli.ChampionRegistry(cli._lake().dataset("credit_demo")).record_decision(decision)
        return 1

    monkeypatch.setattr(cli, "run_dagster_job", gate_rejects)
    assert cli.main(["train"]) == cli.GATE_KEPT_CHAMPION
    assert "does not beat the champion" in capsys.readouterr().out
