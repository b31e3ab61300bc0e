"""The one Definitions object of the Kennel code location, built for the spec in KENNEL_DATASET_SPEC."""

from __future__ import annotations

import os
import warnings

import dagster as dg

from assets import build_dataset_assets
from jobs import build_jobs, build_schedules
from kennel.spec import load_spec
from resources import build_resources
from sensors import build_sensors

os.environ.setdefault("DAGSTER_TELEMETRY_ENABLED", "False")  # nothing leaves the machine
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# Single-run backfills (one Spark session for a date range) are marked beta; we rely on them knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def build_definitions(spec_path: str | None = None, resources: dict | None = None) -> dg.Definitions:
    """Definitions for one data-set spec; `resources` replaces individual resources (tests use it)."""
    spec = load_spec(spec_path)
    jobs = build_jobs(spec)
    return dg.Definitions(
        assets=build_dataset_assets(spec),
        jobs=jobs,
        schedules=build_schedules(spec, jobs),
        sensors=build_sensors(spec, jobs),
        resources={**build_resources(), **(resources or {})},
        # Steps share one process: Spark and the heavy imports start once per run, not once per step,
        # which on two cores is the difference between seconds and minutes.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
