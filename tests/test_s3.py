"""S3 end to end through a real S3 HTTP endpoint (moto server on 127.0.0.1): an s3:// source and an
s3:// lake, a range of days ingested in one run, and a fresh machine re-cleaning a day from S3 alone."""

import hashlib
import json
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_aws.s3 import S3Resource

from assets.graph import DatasetGraph
from assets.ingestion import build_ingestion_assets
from definitions import build_definitions
from kennel.demo import generate
from kennel.lake.records import QualityRecord
from kennel.lake.s3 import MANIFEST, list_objects
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from resources.lake import LakeResource

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]


@pytest.fixture
def buckets(s3_endpoint):
    resource = S3Resource(endpoint_url=s3_endpoint)
    client = resource.get_client()
    for bucket in ("landing", "lake"):
        for obj in (
            list_objects(client, bucket, "") if bucket in {b["Name"] for b in client.list_buckets()["Buckets"]} else ()
        ):
            client.delete_object(Bucket=bucket, Key=obj.key)
        client.create_bucket(Bucket=bucket)
    return resource, client


def _s3_spec(tmp: Path) -> Path:
    raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    raw["source"]["uri"] = "s3://landing/credit_demo"
    path = tmp / "credit_demo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _body(client, key: str) -> bytes:
    return client.get_object(Bucket="lake", Key=key)["Body"].read()


def test_s3_source_and_lake_end_to_end(tmp_path, buckets):
    s3, client = buckets
    spec_path = _s3_spec(tmp_path)
    spec = load_spec(spec_path)
    report = generate(spec, tmp_path / "generated", days=len(DAYS), rows_per_day=200, scenario="corrupt")
    for f in report.files:
        client.upload_file(str(f), "landing", f"credit_demo/{f.parent.name}/{f.name}")

    lake = LakeResource(root="s3://lake/kennel", mirror=str(tmp_path / "mirror"), s3=s3)
    defs = build_definitions(str(spec_path), resources={"lake": lake, "s3": s3})
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("ingest_daily").execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]},
        )
        assert result.success
        assert [e.check_name for e in result.get_asset_check_evaluations() if not e.passed] == []

    keys = {o.key for o in list_objects(client, "lake", "kennel/")}
    for day in DAYS:
        raw = json.loads(_body(client, f"kennel/raw/credit_demo/{day}/{MANIFEST}"))
        assert {f["name"] for f in raw["files"]} == {p.name for p in report.files if p.parent.name == day}
        record = QualityRecord.model_validate_json(_body(client, f"kennel/quality/credit_demo/{day}.json"))
        assert record.day == day and record.passed and record.rows_in == report.rows_per_day[day]
        assert record.reasons == {k: v for k, v in report.expected_reasons_by_day[day].items() if v}
        for table in ("clean", "quarantine"):
            published = record.outputs[table].file
            assert published.startswith(f"{table}/credit_demo/date={day}/v-")  # this run's version of the day
            body = _body(client, f"kennel/{published}")
            # The quality record, written last, names exactly the bytes that are on S3.
            assert hashlib.sha256(body).hexdigest() == record.outputs[table].sha256
            assert body == (tmp_path / "mirror" / published).read_bytes()
    assert not [k for k in keys if "_staging" in k or "/." in k], "no temporary object is left on S3"

    # A fresh machine (empty working folder) re-cleans a day from the S3 lake alone, to the same bytes.
    def published_clean() -> str:
        record = QualityRecord.model_validate_json(_body(client, f"kennel/quality/credit_demo/{DAYS[1]}.json"))
        return record.outputs["clean"].file

    first_version = published_clean()
    before = _body(client, f"kennel/{first_version}")
    fresh = LakeResource(root="s3://lake/kennel", mirror=str(tmp_path / "fresh-mirror"), s3=s3)
    clean_assets = [
        a for a in build_ingestion_assets(spec, DatasetGraph(spec.name)) if dg.AssetKey("clean_records") in a.keys
    ]
    with dg.instance_for_test() as instance:
        again = dg.materialize(
            clean_assets,
            partition_key=DAYS[1],
            instance=instance,
            resources={"lake": fresh, "pyspark": defs.resources["pyspark"]},
        )
        assert again.success
    second_version = published_clean()
    assert second_version != first_version  # the re-run published a version of its own
    assert _body(client, f"kennel/{second_version}") == before
    assert (tmp_path / "fresh-mirror" / second_version).read_bytes() == before


def test_unpublished_raw_day_fails_clearly(tmp_path, buckets):
    s3, _ = buckets
    lake = LakeResource(root="s3://lake/kennel", mirror=str(tmp_path / "mirror"), s3=s3)
    with pytest.raises(FileNotFoundError, match="never published"):
        lake.fetch_dir(lake.dataset("credit_demo").raw_dir("2026-02-01"))
