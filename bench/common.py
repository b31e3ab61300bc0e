"""What every benchmark shares: machine facts, load averages, a background load the benchmark creates
itself, the peak memory of a process tree over time and a Dagster run's step times, goals with their
verdicts, the results file `make bench` collects, and BENCHMARKS.md sections.

A benchmark script:
- takes `--quick` (small sizes, seconds to a few minutes, asserting nothing about speed: CI runs it so
  the scripts do not rot) and `--write` (rewrite its own section of BENCHMARKS.md);
- measures ratios side by side in one run, reporting both absolute figures and their spread;
- ends with `save_results(Results(...))`, which `bench/run.py` reads back for the goals summary and
  the plots.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import platform
import re
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    import dagster as dg

ROOT = Path(__file__).resolve().parent.parent
# Where sections are written: BENCHMARKS.md, or (quick mode, `bench/run.py --quick`) a copy under
# .kennel/bench/, so that a quick run never replaces measured figures with small-size ones.
REPORT_ENV = "KENNEL_BENCH_REPORT"
BENCHMARKS_MD = Path(os.environ.get(REPORT_ENV) or ROOT / "BENCHMARKS.md")
RESULTS_DIR = ROOT / ".kennel" / "bench"


# --- machine and load ---------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def code_commit() -> str:
    """The checkout's commit, "+changes" where files differ from it: which code a figure measured (a
    `make bench` resumed in a later session may mix commits)."""
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short=10", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    # What `make bench` itself rewrites is no change to the code measured.
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md", ":!bench/plots")
    return commit + ("+changes" if changed else "")


def machine_facts() -> dict[str, Any]:
    """What a reader needs to compare a figure with theirs."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("xgboost", "pyspark", "dagster", "bentoml", "great-expectations", "duckdb", "pyarrow"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    return {
        "cpu": cpu_model(),
        "usable_cores": usable_cores(),
        "memory_gib": memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _spin(stop: Any) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


@contextlib.contextmanager
def background_load(processes: int = 2) -> Iterator[None]:
    """`processes` CPU-busy processes for the duration of the block: the "under load" condition a
    benchmark creates itself, so that it does not depend on what else happens to run on the machine."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    workers = [context.Process(target=_spin, args=(stop,), daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
                worker.join()


# --- measuring a run -----------------------------------------------------------------------------


class RssTimeline:
    """Resident memory of this process and its children (Spark's JVM, dbt's subprocesses), summed, sampled
    every `interval` seconds by a thread while the block runs. The child list is refreshed once a second:
    listing children scans /proc, too dear for every sample. At least one sample is taken, however short
    the block."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (time.time(), MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        tree, listed = [me], 0.0
        while True:
            if time.monotonic() - listed > 1.0:
                with contextlib.suppress(psutil.Error):
                    tree, listed = [me, *me.children(recursive=True)], time.monotonic()
            total = 0
            for proc in tree:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.samples.append((time.time(), total / 2**20))
            if self._stop.wait(self.interval):
                return

    def peak(self, start: float = float("-inf"), end: float = float("inf")) -> float | None:
        """The highest sample taken between `start` and `end` (time.time() values; default: all of them),
        in MiB; None where no sample fell inside."""
        inside = [mib for t, mib in self.samples if start <= t <= end]
        return max(inside) if inside else None

    def __enter__(self) -> RssTimeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def step_intervals(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """Each step's (start, end) times (time.time() values) from its STEP_START and STEP_SUCCESS or
    STEP_FAILURE events in the run's event log."""
    import dagster as dg

    started: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            intervals[event.step_key] = (started[event.step_key], record.timestamp)
    return intervals


# --- figures ------------------------------------------------------------------------------------


def profile_stages(profiler: Any, stages: dict[tuple[str, str], str]) -> dict[str, float]:
    """Cumulative seconds per stage of a cProfile.Profile: each stage is a function, named by its file's
    path suffix and its name (the largest entry where several match, 0 where none ran)."""
    import pstats

    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    seconds = {}
    for (suffix, function), stage in stages.items():
        matching = [v[3] for (path, _, name), v in entries.items() if name == function and path.endswith(suffix)]
        seconds[stage] = max(matching, default=0.0)
    return seconds


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float], digits: int = 2, unit: str = "") -> str:
    """'median (min–max, n=K)': how far one figure can be trusted."""
    if not values:
        return "–"
    fmt = f"{{:,.{digits}f}}{unit}"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))}, n={len(values)})"


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


@dataclass(frozen=True)
class Goal:
    """One goal of the performance issue and what this run measured against it. `met` is None where
    the run could not decide (quick mode, a device that was not lent)."""

    name: str  # e.g. "training: model asset / best bare script at 1M rows, quiet"
    target: str  # e.g. "<= 1.1x"
    measured: str  # e.g. "1.04x (5.2 s / 5.0 s)"
    met: bool | None
    note: str = ""  # what bounds it where not met (from a profile), or why it was not decided

    @property
    def verdict(self) -> str:
        return {True: "met", False: "not met", None: "not decided"}[self.met]


@dataclass(frozen=True)
class SeriesPoint:
    """One stage at one data size: what the plots draw (time and peak memory against size)."""

    stage: str
    rows: int
    seconds: float
    peak_rss_mib: float | None = None


@dataclass
class Results:
    name: str  # the script's name, e.g. "training"; also its BENCHMARKS.md section
    quick: bool
    goals: list[Goal] = field(default_factory=list)
    series: list[SeriesPoint] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=machine_facts)
    load_before: list[float] = field(default_factory=load_average)
    load_after: list[float] = field(default_factory=list)
    command: str = field(default_factory=lambda: shlex.join([".venv/bin/python", *sys.argv]))
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    commit: str = field(default_factory=code_commit)


def save_results(results: Results) -> Path:
    """Write the run's JSON under .kennel/bench/ (timestamped, and as `<name>-latest.json`, which
    `bench/run.py` reads)."""
    if not results.load_after:
        results.load_after = load_average()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = asdict(results)
    payload["goals"] = [{**asdict(g), "verdict": g.verdict} for g in results.goals]
    text = json.dumps(payload, indent=2, default=str)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{results.name}-{stamp}.json"
    path.write_text(text)
    (RESULTS_DIR / f"{results.name}-latest.json").write_text(text)
    return path


def results_from_json(payload: dict[str, Any]) -> Results:
    """A saved run (save_results' JSON) as Results again, e.g. to report it with goals added since."""
    fields_ = {k: v for k, v in payload.items() if k not in ("goals", "series")}
    return Results(
        **fields_,
        goals=[Goal(**{k: v for k, v in g.items() if k != "verdict"}) for g in payload["goals"]],
        series=[SeriesPoint(**point) for point in payload["series"]],
    )


def load_results(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}-latest.json"
    return json.loads(path.read_text()) if path.exists() else None


def conditions_line(results: Results) -> str:
    """The line under a section's heading: when, where, under what load, and how to reproduce."""
    m = results.machine
    return (
        f"Run {results.started} at commit {results.commit} on {m['cpu']} ({m['usable_cores']} usable cores, "
        f"{m['memory_gib']} GiB), "
        f"Python {m['python']}; load average {' '.join(map(str, results.load_before))} before, "
        f"{' '.join(map(str, results.load_after or load_average()))} after"
        f"{' (quick mode: sizes too small for the goals)' if results.quick else ''}. "
        f"Reproduce: `{results.command}`."
    )


def goals_table(goals: Sequence[Goal]) -> str:
    lines = ["| goal | target | measured | verdict |", "|---|---|---|---|"]
    for g in goals:
        verdict = g.verdict + (f": {g.note}" if g.note else "")
        lines.append(f"| {g.name} | {g.target} | {g.measured} | {verdict} |")
    return "\n".join(lines)


# --- BENCHMARKS.md ------------------------------------------------------------------------------


def write_section(name: str, text: str, after: str | None = None) -> None:
    """Put `text` between `<!-- name:begin -->` and `<!-- name:end -->` in BENCHMARKS.md: in place of
    what they held, or new after the marker `after` (or at the end). Several benchmarks may write at
    once, so the read-modify-write holds a lock."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    lock_path = RESULTS_DIR / "BENCHMARKS.md.lock"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = (
            BENCHMARKS_MD.read_text()
            if BENCHMARKS_MD.exists()
            else "# Benchmarks\n\nMeasured figures; goals stated next to them.\n"
        )
        block = f"{begin}\n{text.strip()}\n{end}"
        if begin in current:
            current = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, current, flags=re.S)
        elif after is not None and after in current:
            current = current.replace(after, f"{after}\n\n{block}", 1)
        else:
            current = current.rstrip("\n") + "\n\n" + block + "\n"
        BENCHMARKS_MD.write_text(current)
