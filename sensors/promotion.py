"""Promotion jobs and the sensor that keeps the served Bento on the current champion."""

import dagster as dg

from assets.serving import BENTO, CHAMPION
from kennel.spec import DatasetSpec
from resources.lake import LakeResource

ROLLBACK_JOB = "rollback_champion"
PACKAGE_JOB = "package_champion"


def build_promotion_jobs(spec: DatasetSpec) -> list:
    rollback = dg.define_asset_job(
        ROLLBACK_JOB,
        selection=dg.AssetSelection.assets(CHAMPION, BENTO),
        config={"ops": {"champion": {"config": {"action": "rollback", "reason": ""}}}},
        description="Return to the previous champion (recorded in its history) and serve its Bento. The same "
                    "from a shell: python -m kennel.champion rollback.",
    )
    package = dg.define_asset_job(
        PACKAGE_JOB,
        selection=dg.AssetSelection.assets(BENTO),
        description="Bring the bento asset in line with the current champion (reuses its Bento when it exists).",
    )
    return [rollback, package]


def build_promotion_sensors(spec: DatasetSpec, jobs: list) -> list[dg.SensorDefinition]:
    package = next(j for j in jobs if j.name == PACKAGE_JOB)

    @dg.sensor(
        name="bento_follows_champion", job=package, minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When the champion pointer changes outside a Dagster run (python -m kennel.champion "
                    "rollback), materializes the bento asset for the new champion.",
    )
    def bento_follows_champion(context: dg.SensorEvaluationContext, lake: LakeResource):
        from kennel.champion import ChampionRegistry

        pointer = ChampionRegistry(lake.path(), spec.name).pointer()  # one small JSON read
        if pointer.current is None:
            return dg.SkipReason(f"{spec.name} has no champion yet")
        if context.cursor == str(pointer.version):
            return dg.SkipReason(f"champion pointer unchanged (version {pointer.version})")
        context.update_cursor(str(pointer.version))
        event = context.instance.get_latest_materialization_event(BENTO)
        served = event.asset_materialization.metadata.get("model_tag") if event and event.asset_materialization else None
        if served is not None and served.value == pointer.current.model_tag:
            return dg.SkipReason(f"the bento asset already serves champion {pointer.current.run_id}")
        return dg.RunRequest(run_key=f"champion-v{pointer.version}",
                             tags={"kennel/champion": pointer.current.run_id})

    return [bento_follows_champion]
