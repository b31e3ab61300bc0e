"""Automation for ingestion: a sensor that turns newly landed files into runs of exactly the affected days."""

from __future__ import annotations

import json

import dagster as dg
from dagster_aws.s3 import S3Resource

from assets.graph import daily_partitions
from kennel.ingestion.landing import LandedFile, day_fingerprint, list_landed
from kennel.spec import DatasetSpec

SENSOR_NAME = "new_landed_files"


def new_data_run_requests(
    landed: dict[str, list[LandedFile]], cursor: str | None, valid_days: set[str]
) -> tuple[list[dg.RunRequest], str, list[str]]:
    """Run requests for the days whose landed files changed since the cursor, the new cursor, and the
    days that were skipped (outside the partitions that exist yet).

    The cursor maps each day to the fingerprint of its files (names, sizes, S3 ETags or local
    modification times): a file added in the same second as the previous tick still changes its day's
    fingerprint, which a LastModified high-water mark would miss at S3's one-second resolution. The run
    key is the day and its fingerprint, so the same files never launch the same work twice, even if
    the cursor were lost. (Many days landed at once are better ingested as one backfill: one run.)
    """
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    current = {day: day_fingerprint(files) for day, files in landed.items()}
    changed = sorted(day for day, fp in current.items() if seen.get(day) != fp)
    ready = [d for d in changed if d in valid_days]
    skipped = [d for d in changed if d not in valid_days]
    # One run per day: its key depends on nothing but that day's files, so it stays the same however
    # ticks fall (a range key would change when a neighbouring day lands a tick later).
    requests = [dg.RunRequest(run_key=f"{day}@{current[day]}", partition_key=day) for day in ready]
    # Skipped days stay out of the cursor so they are requested once their partition exists; days
    # whose files are gone are dropped, so the cursor only holds what is landed.
    new_cursor = {day: fp for day, fp in current.items() if day not in skipped}
    return requests, json.dumps(new_cursor, sort_keys=True), skipped


def build_new_data_sensor(spec: DatasetSpec, ingest_job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    source = spec.source_location()
    partitions = daily_partitions(spec)

    @dg.sensor(
        name=SENSOR_NAME,
        job=ingest_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Watches {source} and runs {ingest_job.name} for exactly the days whose files are new or changed.",
    )
    def new_landed_files(context: dg.SensorEvaluationContext, s3: S3Resource) -> dg.SensorResult:
        client = s3.get_client() if source.startswith("s3://") else None
        landed = list_landed(source, spec.source.format, client)
        valid = set(partitions.get_partition_keys(dynamic_partitions_store=context.instance))
        requests, cursor, skipped = new_data_run_requests(landed, context.cursor, valid)
        if skipped:
            context.log.info(f"files for days without a partition (yet), not requested: {', '.join(skipped)}")
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return new_landed_files
