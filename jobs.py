"""Jobs and schedules of a data set's graph."""

from __future__ import annotations

import dagster as dg

from assets.graph import DatasetGraph, daily_partitions

# The names live with the deployment (kennel/deployment.py), which the Dagster-free `kennel` command reads too.
from kennel.deployment import INGEST_JOB, MONITOR_JOB, PACKAGE_JOB, ROLLBACK_JOB, TRAIN_JOB
from kennel.spec import DatasetSpec
from resources import stream_transports


def build_jobs(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.UnresolvedAssetJobDefinition]:
    jobs = [
        dg.define_asset_job(
            graph.name(INGEST_JOB),
            selection=dg.AssetSelection.assets(
                graph.raw,
                graph.clean,
                graph.quarantine,
                *([graph.late_labels] if spec.label.late else []),
                graph.data_drift,
                graph.performance,
                graph.estimated_performance,
            ),
            partitions_def=daily_partitions(spec),
            description="Copy the day's landed files into the lake, clean and validate them, then monitor the "
            "champion on them (drift, realized and estimated performance).",
        ),
        dg.define_asset_job(
            graph.name(TRAIN_JOB),
            selection=dg.AssetSelection.assets(graph.clean).downstream(include_self=False)
            - dg.AssetSelection.groups(graph.name("monitoring")),
            description="dbt features → training set → model → evaluation + promotion gate → champion → Bento, "
            "on all validated days.",
        ),
        dg.define_asset_job(
            graph.name(MONITOR_JOB),
            selection=dg.AssetSelection.assets(
                graph.data_drift,
                graph.performance,
                graph.estimated_performance,
                graph.serving_drift,
                graph.attribution_drift,
            ),
            partitions_def=daily_partitions(spec),
            description="Drift of validated data, of served traffic and of the champion's explanations on it; "
            "realized and estimated performance.",
        ),
        dg.define_asset_job(
            graph.name(ROLLBACK_JOB),
            selection=dg.AssetSelection.assets(graph.champion, graph.bento),
            config={"ops": {graph.champion.to_python_identifier(): {"config": {"action": "rollback", "reason": ""}}}},
            description="Return to the previous champion (recorded in its history) and serve its Bento. The same "
            "from a shell: python -m kennel.serving.champion rollback.",
        ),
        dg.define_asset_job(
            graph.name(PACKAGE_JOB),
            selection=dg.AssetSelection.assets(graph.bento),
            description="Bring the bento asset in line with the current champion (reuses its Bento when it exists).",
        ),
    ]
    for transport in stream_transports(spec):
        jobs.append(
            dg.define_asset_job(
                graph.name(landing_job(transport)),
                selection=dg.AssetSelection.assets(graph.landing(transport)),
                description=f"Land new messages of the {transport} stream as daily files.",
            )
        )
    return jobs


def landing_job(transport: str) -> str:
    return f"land_{transport}"


def build_schedules(
    spec: DatasetSpec, graph: DatasetGraph, jobs: list[dg.UnresolvedAssetJobDefinition]
) -> list[dg.ScheduleDefinition]:
    by_name = {job.name: job for job in jobs}
    schedules = [
        # Land-then-ingest: runs shortly after midnight UTC for the day that just ended.
        dg.build_schedule_from_partitioned_job(by_name[graph.name(INGEST_JOB)], hour_of_day=0, minute_of_hour=30),
        dg.build_schedule_from_partitioned_job(by_name[graph.name(MONITOR_JOB)], hour_of_day=1, minute_of_hour=0),
    ]
    for transport in stream_transports(spec):
        job = graph.name(landing_job(transport))
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{job}_every_5_minutes",
                job=by_name[job],
                cron_schedule="*/5 * * * *",
                default_status=dg.DefaultScheduleStatus.STOPPED,
            )
        )
    return schedules
