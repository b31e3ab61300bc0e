"""Crash points: the instants inside the lake's commit code where a crash must leave the previous
published state or the new one, never a mix.

Each point is registered where the commit code defines it (`crash_point(...)` at module level), so
the fault-injection test (tests/test_crash_points.py) finds every one without a hand-kept list, kills
a real process at each (SIGKILL, as a power cut or the OOM killer would) and checks what is left.
In normal operation a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

CRASH_AT_ENV = "KENNEL_CRASH_AT"  # the name of the point at which this process kills itself
CRASH_LOG_ENV = "KENNEL_CRASH_LOG"  # a file each point passed is appended to, so a test knows it was hit

REGISTERED: dict[str, str] = {}  # point name → what is on disk when a crash happens there


def crash_point(name: str, state: str) -> Callable[[], None]:
    """Register the point `name` (`state` says what is on disk there) and return the call that marks
    passing it: logged to $KENNEL_CRASH_LOG, and a SIGKILL of this process when $KENNEL_CRASH_AT names it."""
    if name in REGISTERED:
        raise ValueError(f"crash point {name!r} is registered twice")
    REGISTERED[name] = state

    def passed() -> None:
        log = os.environ.get(CRASH_LOG_ENV)
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(name + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        if os.environ.get(CRASH_AT_ENV) == name:
            os.kill(os.getpid(), signal.SIGKILL)

    return passed
