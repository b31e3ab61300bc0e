"""The deployment: which data sets it holds and the names their jobs take, for the code location
(definitions.py) and the `kennel` command alike.

A deployment of one data set (KENNEL_DATASET_SPEC, or the demo's spec) uses bare names: `clean_records`,
`ingest_daily`, as it always has. A deployment of several (KENNEL_DATASETS, a folder of specs) keeps each
data set apart under its name: asset keys `<data set>/<asset>`, and groups, jobs, sensors and schedules
`<data set>__<name>`.
"""

from __future__ import annotations

import os
from pathlib import Path

from kennel.spec import DatasetSpec, SpecError, load_spec

SPECS_DIR_ENV_VAR = "KENNEL_DATASETS"

INGEST_JOB = "ingest_daily"
TRAIN_JOB = "train_and_package"
MONITOR_JOB = "monitor_daily"
ROLLBACK_JOB = "rollback_champion"
PACKAGE_JOB = "package_champion"
BATCH_SCORE_JOB = "score_batch"
SHADOW_JOB = "evaluate_shadow"
CARD_JOB = "refresh_model_card"


def scoped_name(dataset: str, base: str, several: bool) -> str:
    """A group, job, sensor or schedule name of `dataset` in a deployment of one or of several data sets."""
    return f"{dataset}__{base}" if several else base


def load_spec_folder(folder: str | os.PathLike[str]) -> list[DatasetSpec]:
    """Every spec in `folder` (*.yaml and *.yml, not in subfolders), sorted by data-set name; names must
    be distinct, since each data set's lake, assets and Bento are named after it."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise SpecError(f"{SPECS_DIR_ENV_VAR}={folder}: no such folder of data-set specs")
    files = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
    if not files:
        raise SpecError(f"{root} holds no data-set spec (*.yaml)")
    specs = [load_spec(path) for path in files]
    by_name: dict[str, list[str]] = {}
    for spec in specs:
        by_name.setdefault(spec.name, []).append(Path(spec.spec_path).name)
    twice = {name: files for name, files in by_name.items() if len(files) > 1}
    if twice:
        raise SpecError(
            f"{root}: data-set names must be distinct; "
            + "; ".join(f"{name!r} is named by {', '.join(files)}" for name, files in twice.items())
        )
    return sorted(specs, key=lambda spec: spec.name)


def load_deployment() -> tuple[list[DatasetSpec], bool]:
    """The data sets of this deployment and whether it is one of several: the folder in KENNEL_DATASETS
    (several, even when it holds one spec, so adding a second renames nothing), else the one spec of
    KENNEL_DATASET_SPEC or the demo's."""
    folder = os.environ.get(SPECS_DIR_ENV_VAR)
    if folder:
        return load_spec_folder(folder), True
    return [load_spec()], False
