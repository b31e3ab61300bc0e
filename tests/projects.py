"""Test helpers: a data set's definitions, lake and Dagster instance, built from a spec copy of the test's own."""

from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from definitions import build_definitions
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from resources.lake import LakeResource


def spec_file(tmp: Path, landing: Path, base: Path = DEFAULT_SPEC_PATH, **changes) -> Path:
    """A copy of a spec whose source points at a landing folder of the test's own."""
    raw = yaml.safe_load(base.read_text())
    raw["source"]["uri"] = str(landing)
    raw.update(changes)
    path = tmp / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def days(spec, n: int, first: int = 0) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(spec.start_date, periods=n + first)][first:]


class Project:
    """One data set's definitions, lake and Dagster instance, with helpers to run its jobs."""

    def __init__(self, tmp: Path, spec_path: Path, instance: dg.DagsterInstance):
        self.spec = load_spec(spec_path)
        self.lake = LakeResource(root=str(tmp / "lake"))
        self.defs = build_definitions(str(spec_path), resources={"lake": self.lake})
        self.instance = instance

    def run(
        self, job: str, days: list[str] | None = None, run_config: dict | None = None, tags: dict | None = None
    ) -> dg.ExecuteInProcessResult:
        tags = dict(tags or {})
        if days:
            tags |= {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, tags=tags, run_config=run_config, raise_on_error=False
        )

    def metadata(self, key: str) -> dict:
        event = self.instance.get_latest_materialization_event(dg.AssetKey(key))
        assert event is not None, f"{key} was never materialized"
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def small_model_params(seed: int) -> dict:
    """Booster parameters of a small, quick model (depth 4, one thread) for tests that train through the seam."""
    from kennel.model import booster_params

    return booster_params(
        learning_rate=0.3,
        max_depth=4,
        min_child_weight=1.0,
        subsample=1.0,
        colsample_bytree=1.0,
        reg_lambda=1.0,
        seed=seed,
        nthread=1,
        device="cpu",
    )
