"""Jobs, schedules and sensors (new landed data: sensors/ingestion.py; promotion: sensors/promotion.py;
retraining and alerts: sensors/retraining.py)."""

from __future__ import annotations

import dagster as dg

from assets.ingestion import CLEAN, QUARANTINE, RAW, daily_partitions
from assets.monitoring import DATA_DRIFT, PERFORMANCE, SERVING_DRIFT
from kennel.spec import DatasetSpec
from sensors.ingestion import build_ingestion_sensors, build_kafka_job_and_schedule
from sensors.promotion import build_promotion_jobs, build_promotion_sensors
from sensors.retraining import build_retraining_sensors


def build_jobs_and_schedules(spec: DatasetSpec) -> tuple[list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]]:
    ingest = dg.define_asset_job(
        "ingest_daily",
        selection=dg.AssetSelection.assets(RAW, CLEAN, QUARANTINE, DATA_DRIFT, PERFORMANCE),
        partitions_def=daily_partitions(spec),
        description="Copy the day's landed files into the lake, clean and validate them, then monitor the "
                    "champion on them (drift, realized performance).",
    )
    train = dg.define_asset_job(
        "train_and_package",
        selection=dg.AssetSelection.assets(CLEAN).downstream(include_self=False) - dg.AssetSelection.groups("monitoring"),
        description="dbt features → training set → model → evaluation + promotion gate → champion → Bento, "
                    "on all validated days.",
    )
    monitor = dg.define_asset_job(
        "monitor_daily",
        selection=dg.AssetSelection.assets(DATA_DRIFT, PERFORMANCE, SERVING_DRIFT),
        partitions_def=daily_partitions(spec),
        description="Drift of validated data and of served traffic, and realized performance, for the champion.",
    )
    # Land-then-ingest: runs shortly after midnight UTC for the day that just ended.
    schedule = dg.build_schedule_from_partitioned_job(ingest, hour_of_day=0, minute_of_hour=30)
    monitor_schedule = dg.build_schedule_from_partitioned_job(monitor, hour_of_day=1, minute_of_hour=0)
    kafka_jobs, kafka_schedules = build_kafka_job_and_schedule(spec)
    return [ingest, train, monitor, *kafka_jobs, *build_promotion_jobs(spec)], [schedule, monitor_schedule, *kafka_schedules]


def build_sensors(spec: DatasetSpec, jobs: list[dg.UnresolvedAssetJobDefinition]) -> list[dg.SensorDefinition]:
    ingest = next(j for j in jobs if j.name == "ingest_daily")
    return [*build_ingestion_sensors(spec, ingest, daily_partitions(spec)), *build_promotion_sensors(spec, jobs),
            *build_retraining_sensors(spec, "train_and_package")]
