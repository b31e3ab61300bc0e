"""The sensor that keeps the served Bento on the current champion."""

from __future__ import annotations

import dagster as dg

from assets.graph import DatasetGraph
from kennel.lake.champion import ChampionRegistry
from kennel.spec import DatasetSpec
from resources.lake import LakeResource

SENSOR_NAME = "bento_follows_champion"


def build_bento_sensor(
    spec: DatasetSpec, graph: DatasetGraph, package_job: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    @dg.sensor(
        name=graph.name(SENSOR_NAME),
        job=package_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When the champion pointer changes outside a Dagster run (python -m kennel.serving.champion "
        "rollback), or a shadow starts or ends, materializes the bento asset for the new champion (and shadow).",
    )
    def bento_follows_champion(context: dg.SensorEvaluationContext, lake: LakeResource):
        pointer = ChampionRegistry(lake.dataset(spec.name)).pointer()  # one small JSON read
        if pointer.current is None:
            return dg.SkipReason(f"{spec.name} has no champion yet")
        if context.cursor == str(pointer.version):
            return dg.SkipReason(f"champion pointer unchanged (version {pointer.version})")
        context.update_cursor(str(pointer.version))
        event = context.instance.get_latest_materialization_event(graph.bento)
        served = event.asset_materialization.metadata if event and event.asset_materialization else {}
        served_shadow = served["shadow_model_tag"].value if "shadow_model_tag" in served else None
        shadow = pointer.shadow.model_tag if pointer.shadow else None
        if "model_tag" in served and served["model_tag"].value == pointer.current.model_tag and served_shadow == shadow:
            beside = f" with shadow {pointer.shadow.run_id}" if pointer.shadow else ""
            return dg.SkipReason(f"the bento asset already serves champion {pointer.current.run_id}{beside}")
        return dg.RunRequest(run_key=f"champion-v{pointer.version}", tags={"kennel/champion": pointer.current.run_id})

    return bento_follows_champion
