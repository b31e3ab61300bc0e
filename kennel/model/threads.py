"""How many threads the model library may use, and how its idle threads wait: decided in one place, from
the cores this process may run on, for training, scoring and explanations alike.

- Thread count: training uses one thread per usable core (the process's CPU affinity, which taskset,
  cpusets and containers narrow). Scoring and explaining use one thread for small batches, where
  waking a second thread costs more than it saves, and every usable core above a row threshold
  (PARALLEL_SCORING_ROWS, PARALLEL_EXPLAINING_ROWS; bench/training.py measures the crossover). Inside a
  Spark task they stay on one thread: Spark already runs one task per core.
- Wait policy: OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE) unless the user chose a
  policy. Spinning only pays when every thread owns its core for the whole run, which no process can
  know from its affinity (the cores it may use are shared with whatever else runs there); when they are
  shared, spinning threads steal the time of the thread they wait for (training 28k rows on a busy
  2-core machine: 39 s spinning, 1.1 s passive). With a single usable core there is one thread and
  nothing to wait for. libgomp reads the policy once, when it loads, so it is set when this module is
  imported (before any OpenMP library loads: XGBoost's and scikit-learn's share one libgomp).
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "PASSIVE"
# Rows from which a batch is scored on every usable core. Below it one thread is as fast or faster
# (bench/training.py, "prediction threads": 1 vs all cores over batch sizes, on a quiet machine), and
# serving's single records and 1,000-row batches stay on one thread.
PARALLEL_SCORING_ROWS = 10_000
# The same for exact TreeSHAP contributions, which cost ~100x more per row than a score.
PARALLEL_EXPLAINING_ROWS = 256


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def training_threads(requested: int = 0) -> int:
    """`requested` threads, or (0) one per usable core."""
    return requested if requested > 0 else usable_cores()


def _inside_spark_task() -> bool:
    """True in a Spark Python worker while it runs a task (where pyspark is already imported)."""
    if "pyspark" not in sys.modules:
        return False
    from pyspark import TaskContext

    return TaskContext.get() is not None


def prediction_threads(rows: int, *, explaining: bool = False) -> int:
    """Threads for scoring (or, `explaining`, computing contributions of) a batch of `rows` rows."""
    threshold = PARALLEL_EXPLAINING_ROWS if explaining else PARALLEL_SCORING_ROWS
    if rows < threshold or _inside_spark_task():
        return 1
    return usable_cores()


def wait_policy() -> str:
    """The OpenMP wait policy in force for libraries loaded from now on: the user's, else WAIT_POLICY."""
    return os.environ.get("OMP_WAIT_POLICY") or WAIT_POLICY


def configure_openmp() -> None:
    """Set the wait policy for OpenMP libraries not loaded yet (libgomp reads it once, at load); a value
    the user set is kept."""
    os.environ["OMP_WAIT_POLICY"] = wait_policy()


configure_openmp()
