"""The sensors on a real Dagster instance, evaluated as the daemon and `dagster sensor preview` do.

New data: runs for exactly the affected days, run keys that never launch the same work twice (across
ticks, a restart and a lost cursor), no request for a day already ingested from the same files by
whoever launched it, and on S3 files that land in the same second as the previous tick.
Retraining: a preview and a tick, or two ticks from one cursor, log and alert each decision once.
"""

import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from dagster_aws.s3 import S3Resource

import sensors.retraining
from assets.graph import DatasetGraph
from definitions import build_definitions
from kennel.demo import generate
from kennel.lake import DatasetLake, read_record
from kennel.lake.records import MonitoringRecord, QualityRecord
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from resources.lake import LakeResource
from sensors.ingestion import SENSOR_NAME

DAY1, DAY2, DAY3 = "2026-01-01", "2026-01-02", "2026-01-03"
LAKE_RECORDS = Path(__file__).parent / "data" / "lake_records"  # records a real closed-loop run wrote


def _spec_file(tmp: Path, uri: str) -> Path:
    raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    raw["source"]["uri"] = uri
    path = tmp / "credit_demo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, sensor: str, cursor: str | None) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    ) as context:
        return defs.resolve_sensor_def(sensor)(context)


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> tuple[list[dg.RunRequest], str]:
    result = _evaluate(defs, instance, SENSOR_NAME, cursor)
    return list(result.run_requests), result.cursor


def _launch(defs: dg.Definitions, instance: dg.DagsterInstance, requests: list[dg.RunRequest]) -> list[str]:
    """What the sensor daemon does with run requests: skip a run key it already launched, run the rest."""
    launched = []
    for request in requests:
        tags = {"dagster/sensor_name": SENSOR_NAME, "dagster/run_key": request.run_key}
        if instance.get_runs(filters=dg.RunsFilter(tags=tags)):
            continue
        result = defs.resolve_job_def("ingest_daily").execute_in_process(
            instance=instance, partition_key=request.partition_key, tags={**request.tags, **tags}
        )
        assert result.success
        launched.append(request.partition_key)
    return launched


def test_local_folder_runs_each_changed_day_once(tmp_path):
    landing = tmp_path / "landing"
    spec_path = _spec_file(tmp_path, str(landing))
    spec = load_spec(spec_path)
    lake = LakeResource(root=str(tmp_path / "lake"))
    with dg.instance_for_test() as instance:
        defs = build_definitions(str(spec_path), resources={"lake": lake})
        generate(spec, landing, days=2, rows_per_day=60)

        requests, cursor = _tick(defs, instance, None)
        assert [r.partition_key for r in requests] == [DAY1, DAY2]
        assert _launch(defs, instance, requests) == [DAY1, DAY2]

        requests, cursor = _tick(defs, instance, cursor)
        assert requests == [], "nothing new landed"

        generate(spec, landing, days=1, rows_per_day=60, start=pd.Timestamp(DAY3).date())
        (landing / DAY3 / "_part-00001.csv").write_text("half a fi")  # in flight: ignored until renamed
        requests, cursor = _tick(defs, instance, cursor)
        assert [r.partition_key for r in requests] == [DAY3]
        assert _launch(defs, instance, requests) == [DAY3]

        # A restart: a new code location and sensor context, with the cursor the instance kept.
        defs = build_definitions(str(spec_path), resources={"lake": lake})
        requests, cursor = _tick(defs, instance, cursor)
        assert requests == []

        # Day 2 is re-delivered with different content: only day 2 runs again.
        rewritten = landing / DAY2 / "part-00000.csv"
        frame = pd.read_csv(rewritten, dtype=str)
        frame.iloc[:-5].to_csv(rewritten, index=False)
        requests, cursor = _tick(defs, instance, cursor)
        assert [r.partition_key for r in requests] == [DAY2]
        assert _launch(defs, instance, requests) == [DAY2]
        record = lake.dataset(spec.name).quality(DAY2)
        assert record is not None and record.rows_in == 55

        # With the cursor lost, what raw_records recorded stops the same files from being requested again.
        requests, _ = _tick(defs, instance, None)
        assert requests == []
        assert len(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME}))) == 4


def test_a_day_ingested_outside_the_sensor_is_not_requested_again(tmp_path):
    landing = tmp_path / "landing"
    spec_path = _spec_file(tmp_path, str(landing))
    spec = load_spec(spec_path)
    with dg.instance_for_test() as instance:
        defs = build_definitions(str(spec_path), resources={"lake": LakeResource(root=str(tmp_path / "lake"))})
        generate(spec, landing, days=2, rows_per_day=30)
        # raw_records of day 1 materialized by hand (the UI, the CLI, a backfill): no sensor, no run key.
        result = defs.resolve_job_def("ingest_daily").execute_in_process(
            instance=instance, partition_key=DAY1, asset_selection=[DatasetGraph("credit_demo").raw]
        )
        assert result.success

        requests, cursor = _tick(defs, instance, None)
        assert [r.partition_key for r in requests] == [DAY2]

        rewritten = landing / DAY1 / "part-00000.csv"
        rewritten.write_text(rewritten.read_text() + rewritten.read_text().splitlines()[1] + "\n")
        requests, _ = _tick(defs, instance, None)
        assert [r.partition_key for r in requests] == [DAY1, DAY2], "day 1's files changed since"
        requests, _ = _tick(defs, instance, cursor)
        assert [r.partition_key for r in requests] == [DAY1]


def test_s3_files_landing_in_the_same_second_are_not_missed(tmp_path, s3_endpoint):
    s3 = S3Resource(endpoint_url=s3_endpoint)
    client = s3.get_client()
    client.create_bucket(Bucket="sensor-landing")
    spec_path = _spec_file(tmp_path, "s3://sensor-landing/credit_demo")
    spec = load_spec(spec_path)
    report = generate(spec, tmp_path / "generated", days=2, rows_per_day=30)
    first, second = report.files

    def put(path: Path, key: str, body: bytes | None = None):
        client.put_object(Bucket="sensor-landing", Key=f"credit_demo/{key}", Body=body or path.read_bytes())
        return client.head_object(Bucket="sensor-landing", Key=f"credit_demo/{key}")["LastModified"]

    defs = build_definitions(str(spec_path), resources={"s3": s3, "lake": LakeResource(root=str(tmp_path / "lake"))})
    with dg.instance_for_test() as instance:
        for _ in range(5):
            # Start just after a second boundary so the next uploads share the first one's second.
            time.sleep(1 - time.time() % 1 + 0.02)
            t0 = put(first, f"{DAY1}/part-00000.csv")
            requests, cursor = _tick(defs, instance, None)
            t1 = put(second, f"{DAY2}/part-00000.csv")
            t2 = put(first, f"{DAY1}/part-00001.csv", body=first.read_bytes() + b"\n")
            if t0 == t1 == t2:
                break
            client.delete_object(Bucket="sensor-landing", Key=f"credit_demo/{DAY2}/part-00000.csv")
            client.delete_object(Bucket="sensor-landing", Key=f"credit_demo/{DAY1}/part-00001.csv")
        else:
            pytest.fail("could not land three objects within one second")
        assert [r.partition_key for r in requests] == [DAY1]
        requests, cursor = _tick(defs, instance, cursor)
        # Same LastModified second as the cursor's newest file, yet both days are requested.
        assert [r.partition_key for r in requests] == [DAY1, DAY2]
        requests, cursor = _tick(defs, instance, cursor)
        assert requests == []
        # An object rewritten in place (same key, new content) is a change too.
        put(first, f"{DAY1}/part-00001.csv", body=first.read_bytes())
        requests, _ = _tick(defs, instance, cursor)
        assert [r.partition_key for r in requests] == [DAY1]


def _record_day(data: DatasetLake, day: str, passed: bool = True, drifted_share: float = 0.0) -> None:
    """What ingestion and monitoring write for a day: its quality record and, when it passed, its drift."""
    quality = read_record(LAKE_RECORDS / ("quality.json" if passed else "quality_failed.json"), QualityRecord)
    assert quality is not None
    data.write_quality(quality.model_copy(update={"day": day}))
    if passed:
        drift = read_record(LAKE_RECORDS / "data_drift.json", MonitoringRecord)
        assert drift is not None
        data.write_monitoring(
            drift.model_copy(update={"day": day, "kind": "data_drift", "drifted_share": drifted_share})
        )


def test_retraining_decisions_are_logged_and_alerted_once_per_evaluation_of_the_same_evidence(tmp_path, monkeypatch):
    alerted = []
    monkeypatch.setattr(sensors.retraining, "send_alert", lambda text, details, log: alerted.append(details))
    lake = LakeResource(root=str(tmp_path / "lake"))
    data = lake.dataset(load_spec().name)
    _record_day(data, DAY1, drifted_share=0.5)  # drift: a retrain
    _record_day(data, DAY2, passed=False)  # failed validation: an alert
    defs = build_definitions(resources={"lake": lake})
    retrain_sensor = sensors.retraining.SENSOR_NAME
    with dg.instance_for_test() as instance:
        preview = _evaluate(defs, instance, retrain_sensor, None)  # `dagster sensor preview`: its result is dropped
        logged = data.decisions()
        assert {d.action for d in logged} == {"skip", "retrain", "alert"}
        assert len({d.decision_id for d in logged}) == len(logged)
        assert [a["decision_id"] for a in alerted] == [d.decision_id for d in logged if d.action == "alert"]

        tick = _evaluate(defs, instance, retrain_sensor, None)  # the daemon's tick, from the same cursor
        again = _evaluate(defs, instance, retrain_sensor, None)  # and once more, its cursor not saved
        assert data.decisions() == logged
        assert len(alerted) == 1
        for result in (tick, again):
            # What the daemon keeps of a tick still reports every decision and requests the retrain.
            assert [e.metadata["decision_id"].value for e in result.asset_events] == [d.decision_id for d in logged]
            assert [r.run_key for r in result.run_requests] == [r.run_key for r in preview.run_requests]
        assert len(preview.run_requests) == 1

        # A genuinely new decision later is logged: a third day drifts within the cooldown.
        _record_day(data, DAY3, drifted_share=0.6)
        later = _evaluate(defs, instance, retrain_sensor, tick.cursor)
        new = data.decisions()[len(logged) :]
        assert new and {d.decision_id for d in new}.isdisjoint(d.decision_id for d in logged)
        assert any("cooldown" in d.reason for d in new) and later.run_requests == []
        assert data.decisions()[len(logged) :] == new
        assert _evaluate(defs, instance, retrain_sensor, tick.cursor).asset_events == later.asset_events
        assert data.decisions()[len(logged) :] == new
