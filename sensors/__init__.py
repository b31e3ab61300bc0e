"""Jobs and schedules (sensors arrive with the monitoring loop)."""

from __future__ import annotations

import dagster as dg

from assets.ingestion import CLEAN, QUARANTINE, RAW, daily_partitions
from kennel.spec import DatasetSpec


def build_jobs_and_schedules(spec: DatasetSpec) -> tuple[list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]]:
    ingest = dg.define_asset_job(
        "ingest_daily",
        selection=dg.AssetSelection.assets(RAW, CLEAN, QUARANTINE),
        partitions_def=daily_partitions(spec),
        description="Copy the day's landed files into the lake, clean and validate them.",
    )
    train = dg.define_asset_job(
        "train_and_package",
        selection=dg.AssetSelection.assets(CLEAN).downstream(include_self=False),
        description="dbt features → training set → model → evaluation → Bento, on all validated days.",
    )
    # Land-then-ingest: runs shortly after midnight UTC for the day that just ended.
    schedule = dg.build_schedule_from_partitioned_job(ingest, hour_of_day=0, minute_of_hour=30)
    return [ingest, train], [schedule]
