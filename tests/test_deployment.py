"""Several data sets in one deployment (KENNEL_DATASETS, a folder of specs): each data set's assets, checks,
jobs, schedules and sensors are kept apart by name, and nothing of one reaches another's partitions."""

import dagster as dg
import pytest
import yaml

from assets.graph import DatasetGraph
from definitions import build_definitions, defs
from jobs import BACKUP_JOB, RESTORE_JOB
from kennel.deployment import SPECS_DIR_ENV_VAR, load_deployment, load_spec_folder
from kennel.spec import DEFAULT_SPEC_PATH, SpecError
from sensors.ingestion import LANDED_FINGERPRINTS, ingested_history

DATASETS = ("credit_demo", "fleet")
# One lake, one model store, one instance: backed up and restored whole, not per data set.
DEPLOYMENT_JOBS = {BACKUP_JOB, RESTORE_JOB}


def _write_specs(folder, names=DATASETS):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
        raw["name"] = name
        raw["source"]["uri"] = str(folder.parent / "landing" / name)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def several(tmp_path_factory) -> dg.Definitions:
    folder = _write_specs(tmp_path_factory.mktemp("deployment") / "specs")
    return build_definitions(specs=load_spec_folder(folder))


def _dataset_of(key: dg.AssetKey) -> str:
    assert len(key.path) == 2 and key.path[0] in DATASETS, f"{key.to_user_string()} is not under a data set's name"
    return key.path[0]


def test_each_data_set_has_the_whole_graph_under_its_own_name(several):
    single = {key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys()}
    graph = several.resolve_asset_graph()
    by_dataset: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        by_dataset.setdefault(_dataset_of(key), set()).add(key.path[-1])
        node = graph.get(key)
        assert node.group_name.startswith(f"{key.path[0]}__"), key
        assert node.tags.get("dataset") == key.path[0]
        # Lineage never crosses from one data set to another.
        assert {_dataset_of(parent) for parent in node.parent_keys} <= {key.path[0]}
        assert {_dataset_of(check.asset_key) for check in node.check_keys} <= {key.path[0]}
    assert by_dataset == {name: single for name in DATASETS}


def test_jobs_schedules_and_sensors_touch_only_their_data_set(several):
    repo = several.get_repository_def()
    jobs = [
        job for job in repo.get_all_jobs() if not job.name.startswith("__ASSET_JOB") and job.name not in DEPLOYMENT_JOBS
    ]
    single_jobs = {job.name for job in defs.get_repository_def().get_all_jobs() if not job.name.startswith("__")}
    assert DEPLOYMENT_JOBS <= single_jobs and DEPLOYMENT_JOBS <= {job.name for job in repo.get_all_jobs()}
    dataset_jobs = single_jobs - DEPLOYMENT_JOBS
    assert {job.name for job in jobs} == {f"{name}__{job}" for name in DATASETS for job in dataset_jobs}
    for job in jobs:
        owner = job.name.split("__")[0]
        assert {_dataset_of(key) for key in job.asset_layer.selected_asset_keys} == {owner}, job.name
    for schedule in repo.schedule_defs:
        assert schedule.name.split("__")[0] == schedule.job_name.split("__")[0]
    for sensor in repo.sensor_defs:
        owner = sensor.name.split("__")[0]
        assert owner in DATASETS, sensor.name
        assert {t.job_name.split("__")[0] for t in sensor.targets} <= {owner}, sensor.name
    failure_sensors = [s for s in repo.sensor_defs if s.name.endswith("alert_on_run_failure")]
    assert len(failure_sensors) == len(DATASETS)
    for sensor in failure_sensors:
        # Dagster keeps the monitored jobs privately; a rename there fails this test loudly, never passes it.
        monitored = {job.name.split("__")[0] for job in sensor._monitored_jobs}
        assert monitored == {sensor.name.split("__")[0]}, "a failure would be alerted by every data set"


def test_the_rollback_job_configures_its_own_champion_op(several):
    job = several.resolve_job_def("fleet__rollback_champion")
    assert "fleet__champion" in job.graph.node_dict


def test_the_deployment_reads_a_folder_of_specs(tmp_path, monkeypatch):
    folder = _write_specs(tmp_path / "specs")
    monkeypatch.setenv(SPECS_DIR_ENV_VAR, str(folder))
    specs, several = load_deployment()
    assert several and [s.name for s in specs] == sorted(DATASETS)
    monkeypatch.delenv(SPECS_DIR_ENV_VAR)
    specs, several = load_deployment()
    assert not several and len(specs) == 1


def test_a_folder_of_specs_is_refused_clearly(tmp_path):
    with pytest.raises(SpecError, match="no such folder"):
        load_spec_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="holds no data-set spec"):
        load_spec_folder(tmp_path / "empty")
    folder = _write_specs(tmp_path / "twice", names=("fleet",))
    (folder / "copy.yml").write_text((folder / "fleet.yaml").read_text())
    with pytest.raises(SpecError, match="'fleet' is named by copy.yml, fleet.yaml"):
        load_spec_folder(folder)


def test_ingestion_history_of_a_single_data_set_deployment_carries_over():
    """Moving from one spec to a folder of specs prefixes the keys; the new-data sensor still finds the days
    raw_records ingested under the bare key, so nothing is ingested twice."""
    day = "2026-01-03"
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=DatasetGraph("fleet").raw,
                partition=day,
                metadata={LANDED_FINGERPRINTS: dg.MetadataValue.json({day: "abc"})},
            )
        )
        assert ingested_history(instance, DatasetGraph("fleet", prefixed=True), [day, "2026-01-04"]) == {day: "abc"}
        assert ingested_history(instance, DatasetGraph("fleet"), [day]) == {day: "abc"}
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=DatasetGraph("fleet", prefixed=True).raw,
                partition=day,
                metadata={LANDED_FINGERPRINTS: dg.MetadataValue.json({day: "def"})},
            )
        )
        # Once ingested under the new key, that record is the one that counts.
        assert ingested_history(instance, DatasetGraph("fleet", prefixed=True), [day]) == {day: "def"}
