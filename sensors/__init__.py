"""Sensors of a data set: new landed data (ingestion.py), the Bento following the champion (promotion.py),
retraining and alerts (retraining.py)."""

from __future__ import annotations

import dagster as dg

from assets.graph import DatasetGraph
from jobs import INGEST_JOB, PACKAGE_JOB, TRAIN_JOB
from kennel.spec import DatasetSpec
from sensors.ingestion import build_new_data_sensor
from sensors.promotion import build_bento_sensor
from sensors.retraining import build_alert_sensor, build_retraining_sensor


def build_sensors(
    spec: DatasetSpec, graph: DatasetGraph, jobs: list[dg.UnresolvedAssetJobDefinition]
) -> list[dg.SensorDefinition]:
    by_name = {job.name: job for job in jobs}
    return [
        build_new_data_sensor(spec, graph, by_name[graph.name(INGEST_JOB)]),
        build_bento_sensor(spec, graph, by_name[graph.name(PACKAGE_JOB)]),
        build_retraining_sensor(spec, graph, graph.name(TRAIN_JOB)),
        build_alert_sensor(spec, graph, jobs),
    ]
