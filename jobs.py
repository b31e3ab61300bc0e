"""Jobs and schedules of a data set's graph."""

from __future__ import annotations

import dagster as dg

from assets.graph import (
    BENTO,
    CHAMPION,
    CLEAN,
    DATA_DRIFT,
    PERFORMANCE,
    QUARANTINE,
    RAW,
    SERVING_DRIFT,
    daily_partitions,
    landing_key,
)
from kennel.spec import DatasetSpec
from resources import stream_transports

INGEST_JOB = "ingest_daily"
TRAIN_JOB = "train_and_package"
MONITOR_JOB = "monitor_daily"
ROLLBACK_JOB = "rollback_champion"
PACKAGE_JOB = "package_champion"


def build_jobs(spec: DatasetSpec) -> list[dg.UnresolvedAssetJobDefinition]:
    jobs = [
        dg.define_asset_job(
            INGEST_JOB,
            selection=dg.AssetSelection.assets(RAW, CLEAN, QUARANTINE, DATA_DRIFT, PERFORMANCE),
            partitions_def=daily_partitions(spec),
            description="Copy the day's landed files into the lake, clean and validate them, then monitor the "
            "champion on them (drift, realized performance).",
        ),
        dg.define_asset_job(
            TRAIN_JOB,
            selection=dg.AssetSelection.assets(CLEAN).downstream(include_self=False)
            - dg.AssetSelection.groups("monitoring"),
            description="dbt features → training set → model → evaluation + promotion gate → champion → Bento, "
            "on all validated days.",
        ),
        dg.define_asset_job(
            MONITOR_JOB,
            selection=dg.AssetSelection.assets(DATA_DRIFT, PERFORMANCE, SERVING_DRIFT),
            partitions_def=daily_partitions(spec),
            description="Drift of validated data and of served traffic, and realized performance, for the champion.",
        ),
        dg.define_asset_job(
            ROLLBACK_JOB,
            selection=dg.AssetSelection.assets(CHAMPION, BENTO),
            config={"ops": {"champion": {"config": {"action": "rollback", "reason": ""}}}},
            description="Return to the previous champion (recorded in its history) and serve its Bento. The same "
            "from a shell: python -m kennel.serving.champion rollback.",
        ),
        dg.define_asset_job(
            PACKAGE_JOB,
            selection=dg.AssetSelection.assets(BENTO),
            description="Bring the bento asset in line with the current champion (reuses its Bento when it exists).",
        ),
    ]
    for transport in stream_transports(spec):
        jobs.append(
            dg.define_asset_job(
                landing_job(transport),
                selection=dg.AssetSelection.assets(landing_key(transport)),
                description=f"Land new messages of the {transport} stream as daily files.",
            )
        )
    return jobs


def landing_job(transport: str) -> str:
    return f"land_{transport}"


def build_schedules(spec: DatasetSpec, jobs: list[dg.UnresolvedAssetJobDefinition]) -> list[dg.ScheduleDefinition]:
    by_name = {job.name: job for job in jobs}
    schedules = [
        # Land-then-ingest: runs shortly after midnight UTC for the day that just ended.
        dg.build_schedule_from_partitioned_job(by_name[INGEST_JOB], hour_of_day=0, minute_of_hour=30),
        dg.build_schedule_from_partitioned_job(by_name[MONITOR_JOB], hour_of_day=1, minute_of_hour=0),
    ]
    for transport in stream_transports(spec):
        job = landing_job(transport)
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{job}_every_5_minutes",
                job=by_name[job],
                cron_schedule="*/5 * * * *",
                default_status=dg.DefaultScheduleStatus.STOPPED,
            )
        )
    return schedules
