"""The thread policy (kennel.model.threads): thread counts from the process's CPU affinity, the OpenMP wait
policy as libgomp actually reads it, and scoring/explaining threads by batch size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from kennel.model import ModelCard, booster_params, fit, threads
from kennel.model.frame import FeatureEncoder
from kennel.spec import DEFAULT_SPEC_PATH, load_spec

ROOT = Path(__file__).resolve().parent.parent
MULTICORE = pytest.mark.skipif(threads.usable_cores() < 2, reason="needs a process that may use 2 cores")


def run_python(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (its own affinity, its own libgomp), from the repository root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )


def nthread_of(booster) -> int:
    return int(json.loads(booster.save_config())["learner"]["generic_param"]["nthread"])


@pytest.fixture(scope="module")
def model():
    """A small model of the demo spec, trained on 3,000 generated rows."""
    from kennel.demo import generate_frame

    spec = load_spec(DEFAULT_SPEC_PATH)
    frames = []
    for i, day in enumerate((date(2026, 1, 1), date(2026, 1, 2))):
        frame = generate_frame(spec, day, 3000 if i == 0 else 1000, np.random.default_rng(i))
        frame["label"] = (frame[spec.label.column].astype(str) == str(spec.label.positive)).astype(int)
        frames.append(frame)
    params = booster_params(
        learning_rate=0.3,
        max_depth=4,
        min_child_weight=1.0,
        subsample=1.0,
        colsample_bytree=1.0,
        reg_lambda=1.0,
        seed=0,
        nthread=0,
        device="cpu",
    )
    card = ModelCard.for_spec(spec, training=frames[0])
    return fit(card, frames[0], frames[1], params, rounds=20, early_stopping_rounds=5).model, frames[1]


def test_threads_follow_a_narrowed_affinity():
    """A process pinned to one core trains, scores and explains on one thread, whatever the batch size;
    the count reaches the library (the trained booster's own setting)."""
    out = run_python(
        """
        import json, os
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        import numpy as np
        from kennel.model import booster_params, threads
        import xgboost as xgb
        params = booster_params(learning_rate=0.3, max_depth=3, min_child_weight=1.0, subsample=1.0,
                                colsample_bytree=1.0, reg_lambda=1.0, seed=0, nthread=0, device="cpu")
        x = np.random.default_rng(0).random((200, 3))
        booster = xgb.train(params, xgb.DMatrix(x, label=x[:, 0] > 0.5), 2)
        print(json.dumps({
            "usable": threads.usable_cores(),
            "training": threads.training_threads(0),
            "requested": threads.training_threads(3),
            "scoring": threads.prediction_threads(10**7),
            "explaining": threads.prediction_threads(10**7, explaining=True),
            "booster": json.loads(booster.save_config())["learner"]["generic_param"]["nthread"],
        }))
        """
    )
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts == {
        "usable": 1,
        "training": 1,
        "requested": 3,  # an explicit count is the user's choice
        "scoring": 1,
        "explaining": 1,
        "booster": "1",
    }


@MULTICORE
def test_threads_use_every_usable_core():
    cores = len(os.sched_getaffinity(0))
    assert threads.usable_cores() == cores
    assert threads.training_threads(0) == cores
    assert threads.prediction_threads(threads.PARALLEL_SCORING_ROWS) == cores
    assert threads.prediction_threads(threads.PARALLEL_EXPLAINING_ROWS, explaining=True) == cores


def _spin_count(stderr: str) -> str:
    """GOMP_SPINCOUNT as libgomp reports it at load (OMP_DISPLAY_ENV=VERBOSE): 0 when threads sleep
    while they wait (PASSIVE), 300000 when unset, 30000000000 when ACTIVE."""
    line = next(line for line in stderr.splitlines() if "GOMP_SPINCOUNT" in line)
    return line.split("=")[1].strip().strip("'")


LOAD_LIBGOMP = """
    import kennel.model  # the code location imports kennel.model long before any model is trained
    import sklearn.metrics  # loads libgomp (the same one XGBoost links) before the model library
    from kennel.model import import_for_serving
    import_for_serving()
"""


def test_openmp_waits_passively_by_default_even_when_another_library_loads_it_first():
    out = run_python(LOAD_LIBGOMP, {"OMP_DISPLAY_ENV": "VERBOSE"})
    assert _spin_count(out.stderr) == "0"


def test_a_wait_policy_the_user_set_is_kept():
    out = run_python(LOAD_LIBGOMP, {"OMP_DISPLAY_ENV": "VERBOSE", "OMP_WAIT_POLICY": "ACTIVE"})
    assert _spin_count(out.stderr) == "30000000000"


def test_small_batches_score_on_one_thread(model):
    """Serving's single records and small batches use the shared booster, on one thread."""
    model, frame = model
    for rows in (1, 1000, threads.PARALLEL_SCORING_ROWS - 1):
        booster, nthread = model._booster_for(rows)
        assert booster is model.booster and nthread == 1
    assert nthread_of(model.booster) == 1
    booster, nthread = model._booster_for(threads.PARALLEL_EXPLAINING_ROWS - 1, explaining=True)
    assert booster is model.booster and nthread == 1


@MULTICORE
def test_large_batches_score_on_every_core_with_the_same_results(model, monkeypatch):
    model, frame = model
    cores = threads.usable_cores()
    booster, nthread = model._booster_for(threads.PARALLEL_SCORING_ROWS)
    assert booster is not model.booster and nthread == cores and nthread_of(booster) == cores
    assert nthread_of(model.booster) == 1  # the shared booster keeps serving's single thread

    matrix = FeatureEncoder(model.card).encode_frame(frame)
    big = np.repeat(matrix, -(-threads.PARALLEL_SCORING_ROWS // len(matrix)), axis=0)
    parallel = model.score_matrix(big)
    sample = frame.iloc[: threads.PARALLEL_EXPLAINING_ROWS]
    explained_parallel = model.explain(sample)
    monkeypatch.setattr(threads, "PARALLEL_SCORING_ROWS", 10**12)
    monkeypatch.setattr(threads, "PARALLEL_EXPLAINING_ROWS", 10**12)
    np.testing.assert_array_equal(parallel, model.score_matrix(big))
    np.testing.assert_allclose(explained_parallel.to_numpy(), model.explain(sample).to_numpy(), atol=1e-5)


def test_inside_a_spark_task_scoring_stays_on_one_thread(monkeypatch):
    """Spark already runs one task per core: a Python worker scoring a large batch keeps one thread."""
    import pyspark

    monkeypatch.setattr(pyspark.TaskContext, "get", classmethod(lambda cls: object()))
    assert threads.prediction_threads(10**7) == 1
    assert threads.prediction_threads(10**7, explaining=True) == 1
