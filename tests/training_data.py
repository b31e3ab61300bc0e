"""Training data and distributed training for tests, without loading Dagster (tests/projects.py does)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kennel.demo import generate_frame
from kennel.spec import DEFAULT_SPEC_PATH, PROJECT_ROOT
from kennel.training.config import TrainConfig


def training_frame(spec, day: str, rows: int, seed: int, *, drifted: bool = False) -> pd.DataFrame:
    """Demo records in the shape of the dbt `features` model (label as 0/1)."""
    frame = generate_frame(spec, pd.Timestamp(day).date(), rows, np.random.default_rng(seed), drifted=drifted)
    frame["label"] = (frame[spec.label.column].astype(str) == str(spec.label.positive)).astype(int)
    return frame


def train_on_spark(
    master: str,
    training_dir: Path,
    out: Path,
    config: TrainConfig,
    *,
    timeout: float,
    env: dict[str, str] | None = None,
) -> dict:
    """xgboost.spark training in a driver process of its own (this test session's local Spark context
    cannot point elsewhere); its train_result.json once it succeeded."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "kennel.training.distributed",
            "--master",
            master,
            "--training-dir",
            str(training_dir),
            "--out",
            str(out),
            "--spec",
            str(DEFAULT_SPEC_PATH),
            "--config",
            config.model_dump_json(),
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out / "train_result.json").read_text())
