"""The one Definitions object of the Kennel code location: every data set of the deployment (the folder of
specs in KENNEL_DATASETS, else the one spec in KENNEL_DATASET_SPEC or the demo's), each with its own
assets, checks, jobs, schedules, sensors and Bento (assets/graph.py says how they are kept apart)."""

from __future__ import annotations

import gc
import os
import warnings

import dagster as dg

from assets import build_dataset_assets
from assets.graph import DatasetGraph
from jobs import build_backup_jobs, build_jobs, build_schedules
from kennel.deployment import load_deployment
from kennel.spec import DatasetSpec, load_spec
from resources import build_resources
from resources.executor import build_executor
from sensors import build_sensors

os.environ.setdefault("DAGSTER_TELEMETRY_ENABLED", "False")  # nothing leaves the machine
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# Single-run backfills (one Spark session for a date range) are marked beta; we rely on them knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def build_definitions(
    spec_path: str | None = None, resources: dict | None = None, specs: list[DatasetSpec] | None = None
) -> dg.Definitions:
    """Definitions for one spec file (`spec_path`), for several data sets (`specs`, kept apart by name), or
    for the deployment's configuration; `resources` replaces individual resources (tests use it)."""
    if specs is not None:
        datasets, several = specs, True
    elif spec_path is not None:
        datasets, several = [load_spec(spec_path)], False
    else:
        datasets, several = load_deployment()
    assets, jobs, schedules, sensors = [], [], [], []
    for spec in datasets:
        graph = DatasetGraph(spec.name, prefixed=several)
        dataset_jobs = build_jobs(spec, graph)
        assets += build_dataset_assets(spec, graph)
        jobs += dataset_jobs
        schedules += build_schedules(spec, graph, dataset_jobs)
        sensors += build_sensors(spec, graph, dataset_jobs)
    return dg.Definitions(
        assets=assets,
        jobs=jobs + build_backup_jobs(),
        schedules=schedules,
        sensors=sensors,
        resources={**build_resources(), **(resources or {})},
        # KENNEL_EXECUTOR: in_process by default (Spark and the heavy imports start once per run, not once
        # per step, which on two cores is the difference between seconds and minutes); k8s in a cluster.
        executor=build_executor(),
    )


defs = build_definitions()

# A code server holds these definitions (with Dagster, its integrations and the specs) for as long as the
# deployment runs: some 340,000 objects that every full garbage collection would scan again. A sensor
# tick that allocated enough to start one paid ~0.25 s for it (bench/sensor_tick.py); frozen, they are
# left out of every collection. A run's process imports this module too, with the same effect.
gc.freeze()
