"""How many threads the model library may use, decided once for training, prediction and explanations.

Two facts measured on the 2-core machines Kennel runs on (../STACK-NOTES): OpenMP's default
spin-waiting collapses when the cores are shared (training 28k rows: 39 s with 2 spinning threads on a
loaded box, 1.1 s with OMP_WAIT_POLICY=PASSIVE), and predicting a handful of rows is ~10x slower with
more than one thread, whose start-up costs more than it saves.
"""

from __future__ import annotations

import os

PREDICTION_THREADS = 1  # serving, monitoring and the gate score small batches: threads cost more than they give


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def training_threads(requested: int = 0) -> int:
    """`requested` threads, or (0) one per usable core."""
    return requested if requested > 0 else usable_cores()


def configure_openmp() -> None:
    """Make OpenMP threads sleep rather than spin while they wait; libgomp reads the setting once,
    when the library loads, so this runs before the model library's first import. A value the user
    set is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
