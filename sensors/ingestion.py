"""Automation for ingestion: a sensor that turns newly landed files into runs of exactly the affected days."""

from __future__ import annotations

import json
from collections.abc import Callable

import dagster as dg
from dagster_aws.s3 import S3Resource

from assets.graph import DatasetGraph, daily_partitions
from kennel.ingestion.landing import LandedFile, day_fingerprint, list_landed
from kennel.spec import DatasetSpec
from resources.lake import LakeResource
from sensors.housekeeping import sweep_abandoned_runs

SENSOR_NAME = "new_landed_files"
# raw_records' metadata entry naming the files each of its days was copied from: {day: day_fingerprint}.
LANDED_FINGERPRINTS = "landed_fingerprints"


def ingested_fingerprints(instance: dg.DagsterInstance, raw: dg.AssetKey, days: list[str]) -> dict[str, str]:
    """Day → fingerprint of the files the latest raw_records materialization of the day was made from,
    whoever launched it (this sensor, the UI, a backfill, the CLI). Two queries for any number of days:
    the latest materialization's storage id per day, then those events. Days whose latest materialization
    does not say (made before raw_records recorded it) are left out."""
    if not days:
        return {}
    latest = instance.get_latest_storage_id_by_partition(raw, dg.DagsterEventType.ASSET_MATERIALIZATION, set(days))
    if not latest:
        return {}
    events = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=raw, storage_ids=list(latest.values())), limit=len(latest)
    )
    recorded = {}
    for event in events.records:
        materialization = event.asset_materialization
        if materialization is None or materialization.partition is None:
            continue
        entry = materialization.metadata.get(LANDED_FINGERPRINTS)
        fingerprint = entry.value.get(materialization.partition) if entry is not None else None
        if fingerprint:
            recorded[materialization.partition] = fingerprint
    return recorded


def ingested_history(instance: dg.DagsterInstance, graph: DatasetGraph, days: list[str]) -> dict[str, str]:
    """`ingested_fingerprints` of the data set's raw_records; in a deployment of several data sets, a day
    not ingested under its prefixed key is looked up under the bare key too, where a deployment of this
    one data set recorded it before (so moving to several data sets re-ingests nothing). Another data
    set's history there cannot match: a fingerprint names the files' paths, sizes and times."""
    recorded = ingested_fingerprints(instance, graph.raw, days)
    if graph.prefixed:
        earlier = DatasetGraph(graph.dataset).raw
        recorded = ingested_fingerprints(instance, earlier, [d for d in days if d not in recorded]) | recorded
    return recorded


def new_data_run_requests(
    landed: dict[str, list[LandedFile]],
    cursor: str | None,
    valid_days: set[str],
    ingested: Callable[[list[str]], dict[str, str]],
) -> tuple[list[dg.RunRequest], str, list[str], list[str]]:
    """Run requests for the days whose landed files changed since the cursor, the new cursor, the days
    that were skipped (outside the partitions that exist yet) and those already ingested from these files.

    The cursor maps each day to the fingerprint of its files (names, sizes, S3 ETags or local
    modification times): a file added in the same second as the previous tick still changes its day's
    fingerprint, which a LastModified high-water mark would miss at S3's one-second resolution.
    `ingested` gives, for the changed days, the fingerprint raw_records recorded when it last copied
    them: a day already ingested from the same files (by a run the sensor did not launch, or before the
    cursor was lost) is not requested. The run key is the day and its fingerprint, so the same files never
    launch the same work twice. (Many days landed at once are better ingested as one backfill: one run.)
    """
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    current = {day: day_fingerprint(files) for day, files in landed.items()}
    changed = sorted(day for day, fp in current.items() if seen.get(day) != fp)
    skipped = [d for d in changed if d not in valid_days]
    recorded = ingested([d for d in changed if d in valid_days])
    already = [d for d in changed if d in valid_days and recorded.get(d) == current[d]]
    ready = [d for d in changed if d in valid_days and d not in already]
    # One run per day: its key depends on nothing but that day's files, so it stays the same however
    # ticks fall (a range key would change when a neighbouring day lands a tick later).
    requests = [dg.RunRequest(run_key=f"{day}@{current[day]}", partition_key=day) for day in ready]
    # Skipped days stay out of the cursor so they are requested once their partition exists; days
    # whose files are gone are dropped, so the cursor only holds what is landed.
    new_cursor = {day: fp for day, fp in current.items() if day not in skipped}
    return requests, json.dumps(new_cursor, sort_keys=True), skipped, already


def build_new_data_sensor(
    spec: DatasetSpec, graph: DatasetGraph, ingest_job: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    source = spec.source_location()
    partitions = daily_partitions(spec)

    @dg.sensor(
        name=graph.name(SENSOR_NAME),
        job=ingest_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Watches {source} and runs {ingest_job.name} for exactly the days whose files are new or changed.",
    )
    def new_landed_files(context: dg.SensorEvaluationContext, s3: S3Resource, lake: LakeResource) -> dg.SensorResult:
        sweep_abandoned_runs(context.instance, lake.local, context.log)
        client = s3.get_client() if source.startswith("s3://") else None
        landed = list_landed(source, spec.source.format, client)
        valid = set(partitions.get_partition_keys(dynamic_partitions_store=context.instance))
        requests, cursor, skipped, already = new_data_run_requests(
            landed, context.cursor, valid, lambda days: ingested_history(context.instance, graph, days)
        )
        if skipped:
            context.log.info(f"files for days without a partition (yet), not requested: {', '.join(skipped)}")
        if already:
            context.log.info(f"already ingested from the same files, not requested: {', '.join(already)}")
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return new_landed_files
