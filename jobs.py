"""Jobs and schedules of a data set's graph, and the deployment's backup and restore jobs."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets.graph import DatasetGraph, daily_partitions
from kennel.backup import PG_BIN_ENV

# The names live with the deployment (kennel/deployment.py), which the Dagster-free `kennel` command reads too.
from kennel.deployment import (
    BATCH_SCORE_JOB,
    CARD_JOB,
    INGEST_JOB,
    MONITOR_JOB,
    PACKAGE_JOB,
    ROLLBACK_JOB,
    SHADOW_JOB,
    TRAIN_JOB,
)
from kennel.spec import DatasetSpec
from resources import stream_transports
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource

BACKUP_JOB, RESTORE_JOB = "backup", "restore"


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
            - dg.AssetSelection.groups(graph.name("monitoring"))
            - dg.AssetSelection.assets(graph.batch_scores, graph.shadow_evaluation),
            description="dbt features → training set → model → evaluation + promotion gate → champion (or a "
            "shadow challenger, under the gate's `shadow: true`) → model card → Bento, on all validated days.",
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
            selection=dg.AssetSelection.assets(graph.champion, graph.model_card, graph.bento),
            config={"ops": {graph.champion.to_python_identifier(): {"config": {"action": "rollback", "reason": ""}}}},
            description="Return to the previous champion (recorded in its history) and serve its Bento. The same "
            "from a shell: python -m kennel.serving.champion rollback.",
        ),
        dg.define_asset_job(
            graph.name(PACKAGE_JOB),
            # The card first: a champion promoted outside the train job (by shadow_evaluation, or a rollback from a
            # shell) gets its card as of promotion before its Bento is built around it.
            selection=dg.AssetSelection.assets(graph.model_card, graph.bento),
            description="Bring the bento asset in line with the current champion and its shadow (reuses its Bento "
            "when it exists), with the champion's model card.",
        ),
        dg.define_asset_job(
            graph.name(BATCH_SCORE_JOB),
            selection=dg.AssetSelection.assets(graph.batch_scores),
            partitions_def=daily_partitions(spec),
            description="Score validated days (or a table of your own) with the champion on Spark, through the "
            "service's checks and encoding; the scores join the prediction log for monitoring.",
        ),
        dg.define_asset_job(
            graph.name(SHADOW_JOB),
            selection=dg.AssetSelection.assets(graph.shadow_evaluation),
            description="Compare the shadow challenger with the champion on live traffic; promote, reject or "
            "expire it when the evidence says so.",
        ),
        dg.define_asset_job(
            graph.name(CARD_JOB),
            selection=dg.AssetSelection.assets(graph.model_card),
            description="Refresh the champion's HTML model card with its monitoring since promotion.",
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
        dg.build_schedule_from_partitioned_job(by_name[graph.name(BATCH_SCORE_JOB)], hour_of_day=1, minute_of_hour=15),
        # After monitoring, so the card and the shadow verdict see the day that just ended.
        dg.ScheduleDefinition(
            name=graph.name(f"{SHADOW_JOB}_daily"),
            job=by_name[graph.name(SHADOW_JOB)],
            cron_schedule="30 1 * * *",
            execution_timezone="UTC",
        ),
        dg.ScheduleDefinition(
            name=graph.name(f"{CARD_JOB}_daily"),
            job=by_name[graph.name(CARD_JOB)],
            cron_schedule="45 1 * * *",
            execution_timezone="UTC",
        ),
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


# --- backup and restore (kennel/backup.py): ops, not assets — they copy state, they make no data -------------
# The ops' `context` is unannotated: under this module's postponed annotations Dagster cannot read the type.


def _environment(lake: LakeResource, model_store: ModelStoreResource, dagster_home: str | None):
    from kennel.backup import Environment

    return Environment(
        lake_root=lake.local.root,  # an s3:// lake's mirror
        lake_s3_root=lake.root if lake.is_remote else None,
        bentoml_home=Path(model_store.home).resolve(),
        dagster_home=Path(dagster_home) if dagster_home else None,
        pg_bin_dir=Path(os.environ[PG_BIN_ENV]) if os.environ.get(PG_BIN_ENV) else None,
    )


@dg.op(
    description="Back up the lake, the model store and this instance's state (kennel/backup.py).",
    config_schema={
        "destination": dg.Field(str, description="A new or empty local folder, or s3://bucket/prefix"),
        "include_raw": dg.Field(bool, default_value=True, description="Include raw/ (the landed files)"),
    },
    required_resource_keys={"lake", "model_store"},
)
def back_up(context):
    from kennel.backup import backup

    config, lake = context.op_config, context.resources.lake
    env = _environment(lake, context.resources.model_store, context.instance.root_directory)
    manifest = backup(config["destination"], env, include_raw=config["include_raw"], s3_client=_s3_client(lake))
    return dg.Output(
        None,
        metadata={
            "destination": config["destination"],
            "files": len(manifest.files),
            "bytes": sum(f.bytes for f in manifest.files),
            "champions": dg.MetadataValue.json(manifest.champions),
            "instance_storage": manifest.instance_storage,
        },
    )


@dg.op(
    description="Restore a backup's lake and model store. The Dagster instance this run lives in is not "
    "replaced: restore it with `kennel restore` while the daemon is stopped.",
    config_schema={
        "source": dg.Field(str, description="The backup's local folder or s3://bucket/prefix"),
        "force": dg.Field(bool, default_value=False, description="Replace a lake or model store that holds state"),
    },
    required_resource_keys={"lake", "model_store"},
)
def restore_from_backup(context):
    from kennel.backup import restore

    config, lake = context.op_config, context.resources.lake
    env = _environment(lake, context.resources.model_store, None)
    source = config["source"]
    manifest = restore(source, env, force=config["force"], restore_instance=False, s3_client=_s3_client(lake))
    return dg.Output(
        None,
        metadata={
            "source": source,
            "backed_up_at": manifest.created_at,
            "files": len(manifest.files),
            "champions": dg.MetadataValue.json(manifest.champions),
        },
    )


def _s3_client(lake: LakeResource):
    """The code location's bounded S3 client (the lake's `s3` resource), for an s3:// backup."""
    return lake.s3.get_client() if lake.s3 is not None else None


@dg.job(name=BACKUP_JOB, description="Back up the lake, the model store and the instance's state.")
def backup_job() -> None:
    back_up()


@dg.job(name=RESTORE_JOB, description="Restore a backup's lake and model store (not the live instance).")
def restore_job() -> None:
    restore_from_backup()


def build_backup_jobs() -> list[dg.JobDefinition]:
    """Deployment-wide jobs (one lake, one model store, one instance): not per data set."""
    return [backup_job, restore_job]
