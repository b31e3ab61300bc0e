"""The code location: loads fast, and its asset graph, jobs, schedules and sensors match the reviewed snapshots.

After an intended change to the graph or its automation, regenerate with `KENNEL_UPDATE_SNAPSHOTS=1 make test`
and review the diff of tests/snapshots/asset_graph.json and tests/snapshots/automation.json like any other
code change.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from definitions import build_definitions, defs
from kennel.spec import DEFAULT_SPEC_PATH, load_spec

SNAPSHOTS = Path(__file__).parent / "snapshots"
SNAPSHOT = SNAPSHOTS / "asset_graph.json"
AUTOMATION_SNAPSHOT = SNAPSHOTS / "automation.json"
KIND_TAG_PREFIX = "dagster/kind/"


def _graph_summary(definitions: dg.Definitions) -> dict:
    graph = definitions.resolve_asset_graph()
    summary = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        spec = node.to_asset_spec() if hasattr(node, "to_asset_spec") else None
        summary[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(spec.kinds) if spec else [],
            "owners": list(node.owners),
            # kinds are listed above; these are the tags a policy or an asset sets itself
            "tags": {k: v for k, v in sorted(node.tags.items()) if not k.startswith(KIND_TAG_PREFIX)},
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "checks": sorted(c.name for c in node.check_keys),
            "blocking_checks": sorted(c.name for c in node.check_keys if graph.get(c).blocking),
            "has_description": bool(node.description),
        }
    return summary


def _automation_summary(definitions: dg.Definitions) -> dict:
    """Jobs (what they select, partitioned or not), schedules and sensors (what they start, and how often)."""
    repo = definitions.get_repository_def()
    jobs = {}
    for job in sorted(repo.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__ASSET_JOB"):  # Dagster's implicit job for the whole graph
            continue
        jobs[job.name] = {
            "assets": sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys),
            "checks": sorted(c.to_user_string() for c in job.asset_layer.asset_graph.asset_check_keys),
            "partitioned": job.partitions_def is not None,
        }
    schedules = {
        s.name: {
            "cron": s.cron_schedule,
            "job": s.job_name,
            "timezone": s.execution_timezone,
            "default_status": s.default_status.value,
        }
        for s in sorted(repo.schedule_defs, key=lambda s: s.name)
    }
    sensors = {
        s.name: {
            "type": s.sensor_type.value,
            "jobs": sorted(t.job_name for t in s.targets),
            "default_status": s.default_status.value,
            "minimum_interval_seconds": s.minimum_interval_seconds,
        }
        for s in sorted(repo.sensor_defs, key=lambda s: s.name)
    }
    return {"jobs": jobs, "schedules": schedules, "sensors": sensors}


@pytest.fixture(scope="module")
def kafka_defs(tmp_path_factory) -> dg.Definitions:
    """The same data set fed from a Kafka topic: adds the landing asset, its job and its schedule."""
    tmp = tmp_path_factory.mktemp("kafka-spec")
    raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    raw["source"] = {
        "uri": str(tmp / "landing"),
        "format": "jsonl",
        "kafka": {"bootstrap_servers": "127.0.0.1:9", "topic": "applications"},
    }
    path = tmp / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return build_definitions(str(path))


def _summaries(kafka_defs: dg.Definitions) -> tuple[dict, dict]:
    assets = _graph_summary(defs)
    with_kafka = _graph_summary(kafka_defs)
    assert set(assets) <= set(with_kafka), "a Kafka source only adds to the graph"
    automation = _automation_summary(defs)
    automation["with_kafka_source"] = {
        # only the assets a Kafka source adds or changes (the landing asset, and raw_records now after it)
        "assets": {k: v for k, v in with_kafka.items() if assets.get(k) != v},
        **_automation_summary(kafka_defs),
    }
    return assets, automation


def _compare(path: Path, summary: dict) -> None:
    if os.environ.get("KENNEL_UPDATE_SNAPSHOTS"):
        path.write_text(json.dumps(summary, indent=2) + "\n")
    assert summary == json.loads(path.read_text()), f"{path.name} differs: regenerate and review (see module docstring)"


def test_asset_graph_matches_snapshot(kafka_defs):
    assets, _ = _summaries(kafka_defs)
    _compare(SNAPSHOT, assets)


def test_jobs_schedules_and_sensors_match_snapshot(kafka_defs):
    _, automation = _summaries(kafka_defs)
    _compare(AUTOMATION_SNAPSHOT, automation)


def test_every_asset_is_described_grouped_and_owned():
    for key, node in _graph_summary(defs).items():
        assert node["has_description"], key
        assert node["group"] in {"ingestion", "features", "training", "serving", "monitoring"}, key
        assert node["kinds"], key
        assert node["owners"], key


def test_the_owner_and_dataset_policy_is_applied_exactly_once(kafka_defs):
    """Every asset (dbt's included) gets exactly the spec's owner and the data-set tag, from the one policy."""
    spec = load_spec(DEFAULT_SPEC_PATH)
    assert spec.owner and spec.owner != "team:ml", "the demo spec names an owner of its own"
    for definitions in (defs, kafka_defs):
        for key, node in _graph_summary(definitions).items():
            assert node["owners"] == [spec.owner], key
            assert node["tags"] == {"dataset": spec.name}, key


def test_loading_the_code_location_does_not_import_heavy_libraries():
    # pyspark itself is cheap to import (0.4 s, and dagster-pyspark imports it); these cost seconds each.
    code = (
        "import sys, definitions; heavy = [m for m in ('xgboost', 'bentoml', 'pandas', "
        "'great_expectations', 'sklearn') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent
    )
    assert out.stdout.strip() == ""
