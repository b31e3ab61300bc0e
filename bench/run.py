"""`make bench`: every benchmark script in sequence, then the goals summary and the plots.

    .venv/bin/python bench/run.py [--quick] [--only NAME ...] [--skip NAME ...] [--timeout SECONDS]

Each script runs as its own process with `--write` (and `--quick` in quick mode), its output in
.kennel/bench/logs/NAME.log. A script that is missing, exits non-zero, runs past the timeout or saves
no results in this run is a failure: the runner goes on with the next one, lists every failure at the
end and exits 1, so that CI notices a script that rots. Before the scripts it installs or builds what
they need: wrk (apt-get, when missing and running as root), and in full mode the virtualenvs of the
third-party comparisons (Evidently for drift.py, NannyML for estimation.py). gpu_training.py runs only
where `nvidia-smi` lists a GPU.

Then it reads every script's `.kennel/bench/NAME-latest.json` (bench.common.save_results) written in
this run, draws time and peak memory per stage against rows for each (bench/plots/, or
.kennel/bench/plots/ in quick mode so that a quick run never replaces the committed plots of a full
run), and writes the `summary` section at the top of BENCHMARKS.md: machine, load average before and
after the whole run, every script's outcome and every goal's verdict. Results from earlier runs are not
counted: a script that ran but saved nothing new shows "stale, from <date>" and fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

BENCH_DIR = ROOT / "bench"
COMMITTED_PLOTS = BENCH_DIR / "plots"
STARTED_FORMAT = "%Y-%m-%d %H:%M:%S UTC"  # bench.common.Results.started


@dataclass(frozen=True)
class ThirdPartyVenv:
    """A comparison library kept out of Kennel's dependencies, in its own virtualenv (the pins are the
    ones the script's docstring gives)."""

    library: str
    path: Path
    packages: tuple[str, ...]
    flag: str  # the script's option naming the interpreter

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


EVIDENTLY = ThirdPartyVenv(
    # evidently 0.7.23 breaks on pandas 3 (infer_dtype_from_object is gone)
    "Evidently",
    ROOT / ".kennel" / "bench-evidently",
    ("evidently==0.7.23", "pandas<3"),
    "--evidently-python",
)
NANNYML = ThirdPartyVenv(
    # nannyml 0.13.1 imports statsmodels without declaring it
    "NannyML",
    ROOT / ".kennel" / "bench-nannyml",
    ("nannyml==0.13.1", "statsmodels"),
    "--nannyml-python",
)


@dataclass(frozen=True)
class Benchmark:
    name: str  # what --only/--skip take; its log is logs/NAME.log
    script: str  # under bench/
    full_args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()  # after --quick, which sets each script's own small sizes
    needs_wrk: bool = False
    needs_gpu: bool = False
    venv: ThirdPartyVenv | None = None  # full mode only

    def command(self, quick: bool) -> list[str]:
        if quick:
            args: tuple[str, ...] = ("--quick", *self.quick_args)
        else:
            venv_args = (self.venv.flag, str(self.venv.python.relative_to(ROOT))) if self.venv else ()
            args = (*venv_args, *self.full_args)
        # Relative to the checkout (the scripts run in it), so that each records the command a reader types.
        script = BENCH_DIR / self.script
        shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
        return [sys.executable, str(shown), "--write", *args]


# In this order: the long CPU-bound ones first, so a reader of a partial run has the main goals. The
# model_evaluation comparison is part of training.py; results a script saves under other names (e.g.
# "evaluation") are found by the time they were written and shown under that script.
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("training", "training.py"),
    Benchmark("cleaning", "cleaning.py"),
    Benchmark("serving", "serving.py", needs_wrk=True),
    Benchmark("serving_guard", "serving_guard.py", needs_wrk=True),
    Benchmark("backfill", "backfill.py"),
    Benchmark("scaling", "scaling.py"),
    Benchmark("sensor_tick", "sensor_tick.py"),
    Benchmark("drift", "drift.py", venv=EVIDENTLY),
    Benchmark("estimation", "estimation.py", venv=NANNYML),
    Benchmark("batch_scoring", "batch_scoring.py"),
    Benchmark("gpu_training", "gpu_training.py", needs_gpu=True),
)


@dataclass(frozen=True)
class ScriptRun:
    """What happened to one benchmark in this run. `status`: "ran" (exit 0), "failed" (missing, a
    missing prerequisite, non-zero exit, timeout), "skipped" (left out on purpose: --only/--skip, no
    GPU), which is not a failure, or "pending" (still to run when the summary was written)."""

    name: str
    status: str
    command: str = ""
    detail: str = ""  # why it failed or was skipped
    seconds: float | None = None
    exit_code: int | None = None
    results: tuple[str, ...] = ()  # results names it wrote in this run, else the ones it wrote last
    log: Path | None = None


@dataclass(frozen=True)
class RunInfo:
    quick: bool
    started: datetime
    finished: datetime
    load_before: list[float]
    load_after: list[float]
    command: str
    prerequisites: tuple[str, ...]  # one line each: what was found, installed, built or skipped
    complete: bool = True  # False while scripts are still to run: the summary is rewritten after each
    resumed: bool = False  # run in parts (--resume): `command` is the last part's


# --- prerequisites ------------------------------------------------------------------------------


def matplotlib_missing() -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return (
            "bench/run.py draws its plots with matplotlib, which is not installed: `make bench` and "
            "`make bench-quick` install the `bench` extra (or: .venv/bin/uv pip install --python "
            ".venv/bin/python -r pyproject.toml --extra bench)"
        )
    return None


def wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    # `wrk --version` prints its version and usage; the version is the line's start, before the copyright.
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()[:1]
    return first[0].split(" Copyright")[0].strip() if first else "wrk (version unknown)"


def ensure_wrk() -> tuple[bool, str]:
    """wrk, the HTTP load generator the serving benchmarks drive: found, or installed with apt-get when
    this process may (root, Debian/Ubuntu). Returns (present, line for the summary)."""
    found = wrk_version()
    if found:
        return True, f"wrk: {found}"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("==> wrk is missing: apt-get install -y wrk", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=False)
        found = wrk_version()
        if found:
            return True, f"wrk: {found} (installed with apt-get)"
    return False, (
        "wrk (the HTTP load generator of serving.py and serving_guard.py) is missing and this process "
        "cannot install it (it needs root and apt-get): install it (`apt-get install wrk`, `brew install wrk`)"
    )


def gpu_names() -> list[str]:
    """The GPUs `nvidia-smi` lists; none where it is missing or finds no device."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def ensure_venv(venv: ThirdPartyVenv) -> str:
    """Build the comparison's virtualenv where it is missing; a failure leaves no half-built one (the
    script then reports the comparison as not run). Returns a line for the summary."""
    if venv.python.exists():
        return f"{venv.library}: {venv.path.relative_to(ROOT)} present"
    print(f"==> Building {venv.path.relative_to(ROOT)} ({' '.join(venv.packages)})", flush=True)
    uv = Path(sys.executable).parent / "uv"
    install = (
        [str(uv), "pip", "install", "--python", str(venv.python), *venv.packages]
        if uv.exists()
        else [str(venv.python), "-m", "pip", "install", "--quiet", *venv.packages]
    )
    for step in ([sys.executable, "-m", "venv", str(venv.path)], install):
        if subprocess.run(step, cwd=ROOT, check=False).returncode != 0:
            shutil.rmtree(venv.path, ignore_errors=True)
            return (
                f"{venv.library}: building {venv.path.relative_to(ROOT)} failed (`{shlex.join(step)}`), "
                "so its comparison is not run"
            )
    return f"{venv.library}: {venv.path.relative_to(ROOT)} built ({' '.join(venv.packages)})"


# --- running the scripts ------------------------------------------------------------------------


def display(command: Sequence[str]) -> str:
    """The command as a reader would type it in the checkout: paths relative to it."""
    shown = []
    for part in command:
        path = Path(part)
        shown.append(str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else part)
    return shlex.join(shown)


def latest_files() -> dict[str, int]:
    return {p.name[: -len("-latest.json")]: p.stat().st_mtime_ns for p in common.RESULTS_DIR.glob("*-latest.json")}


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """The script and every process it started (Spark's JVM, servers, load): TERM, then KILL."""
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_script(benchmark: Benchmark, quick: bool, timeout: float | None) -> ScriptRun:
    command = benchmark.command(quick)
    shown = display(command)
    script = ROOT / command[1]
    if not script.exists():
        return ScriptRun(benchmark.name, "failed", shown, f"{display([str(script)])} does not exist")
    logs = common.RESULTS_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{benchmark.name}.log"
    before = latest_files()
    started = time.monotonic()
    with log.open("wb") as out:
        out.write(f"$ {shown}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group, so that a timeout stops its children too
        )
        timed_out = False
        try:
            exit_code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_group(process)
            exit_code = process.returncode
        except BaseException:
            stop_group(process)
            raise
    seconds = time.monotonic() - started
    after = latest_files()
    written = tuple(sorted(name for name, mtime in after.items() if before.get(name) != mtime and wrote(script, name)))
    # Where it wrote nothing, the results it wrote last (if any) are shown as stale.
    results = written or tuple(name for name in result_names(benchmark.name) if name in after)
    log_name = display([str(log)])
    if timed_out:
        detail = f"stopped after the {timeout:.0f} s timeout (log: {log_name})"
        return ScriptRun(benchmark.name, "failed", shown, detail, seconds, exit_code, results, log)
    if exit_code != 0:
        detail = f"exit {exit_code}: {last_line(log)} (log: {log_name})"
        return ScriptRun(benchmark.name, "failed", shown, detail, seconds, exit_code, results, log)
    return ScriptRun(benchmark.name, "ran", shown, "", seconds, exit_code, results, log)


def wrote(script: Path, name: str) -> bool:
    """Whether these results came from this script (the command they record runs it), not from something
    else writing into .kennel/bench/ meanwhile."""
    payload = read_results(name)
    try:
        words = shlex.split(str(payload.get("command", ""))) if payload else []
    except ValueError:
        return False
    return any(Path(word).name == script.name for word in words[1:2])


def read_results(name: str) -> dict[str, Any] | None:
    """A results file, or None where it is missing or unreadable (a script killed while writing it)."""
    try:
        return common.load_results(name)
    except (OSError, ValueError):
        return None


def result_names(name: str) -> tuple[str, ...]:
    """The names a script's results may be saved under: its own, or its BENCHMARKS.md section's."""
    return tuple(dict.fromkeys((name, name.replace("_", "-"))))


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if len(lines) > 1 else "no output"


def run_benchmarks(
    benchmarks: Sequence[Benchmark],
    quick: bool,
    selected: set[str],
    timeout: float | None,
    has_gpu: bool,
    wrk_present: bool,
    wrk_problem: str,
    after_each: Callable[[list[ScriptRun]], None] | None = None,
    earlier: Mapping[str, ScriptRun] | None = None,
) -> list[ScriptRun]:
    """`after_each` gets the runs so far, the scripts still to run as "pending", after every script: an
    hours-long run stopped midway still leaves a summary of what it measured. `earlier`: the scripts a
    resumed run already ran (kept, not run again)."""
    runs: list[ScriptRun] = []
    earlier = earlier or {}

    def without_gpu(benchmark: Benchmark) -> ScriptRun:
        return ScriptRun(benchmark.name, "skipped", display(benchmark.command(quick)), "no GPU on this machine")

    def upcoming(later: Benchmark) -> ScriptRun:
        """A script after the current one, as the summary shows it meanwhile."""
        if later.name in earlier:
            return earlier[later.name]
        if later.needs_gpu and not has_gpu:
            return without_gpu(later)
        return ScriptRun(later.name, "pending", display(later.command(quick)), "still to run")

    chosen = [b for b in benchmarks if b.name in selected]
    for index, benchmark in enumerate(benchmarks):
        if benchmark.name in earlier:
            runs.append(earlier[benchmark.name])
            print(f"==> {benchmark.name}: ran earlier in this run (resumed), not run again", flush=True)
            continue
        if benchmark.name not in selected:
            runs.append(ScriptRun(benchmark.name, "skipped", detail="left out of this run (--only/--skip)"))
            continue
        if benchmark.needs_gpu and not has_gpu:
            runs.append(without_gpu(benchmark))
            print(f"==> {benchmark.name}: not run: no GPU on this machine", flush=True)
            continue
        if benchmark.needs_wrk and not wrk_present:
            runs.append(ScriptRun(benchmark.name, "failed", display(benchmark.command(quick)), wrk_problem))
            print(f"==> {benchmark.name}: not run: {wrk_problem}", flush=True)
            continue
        position = f"[{chosen.index(benchmark) + 1}/{len(chosen)}]"
        print(f"==> {position} {benchmark.name}: {display(benchmark.command(quick))}", flush=True)
        run = run_script(benchmark, quick, timeout)
        runs.append(run)
        took = f" in {run.seconds:.0f} s" if run.seconds is not None else ""
        print(f"    {run.status}{took}{': ' + run.detail if run.detail else ''}", flush=True)
        if run.status == "failed" and run.log is not None:
            tail = run.log.read_text(errors="replace").splitlines()[-20:]
            print("\n".join(f"    | {line}" for line in tail), flush=True)
        if after_each is not None:
            after_each(
                [
                    *runs,
                    *(upcoming(later) for later in benchmarks[index + 1 :] if later.name in selected | set(earlier)),
                ]
            )
    return runs


# --- a run in parts -----------------------------------------------------------------------------


def state_path(quick: bool) -> Path:
    return common.RESULTS_DIR / ("run-state-quick.json" if quick else "run-state.json")


def save_state(quick: bool, started: datetime, load_before: Sequence[float], runs: Sequence[ScriptRun]) -> None:
    """What `--resume` continues from: when the run started and what each script did so far."""
    state = {
        "started": started.isoformat(),
        "load_before": list(load_before),
        "runs": [{**vars(run), "log": str(run.log) if run.log else None} for run in runs],
    }
    path = state_path(quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))


def load_state(quick: bool) -> tuple[datetime, list[float], dict[str, ScriptRun]] | None:
    """The run to resume: its start, load before it, and the scripts that ran in it and saved results
    then (a failed, pending or stale one runs again). None where no run was recorded."""
    try:
        state = json.loads(state_path(quick).read_text())
        started = datetime.fromisoformat(state["started"])
    except (OSError, ValueError, KeyError):
        return None
    runs = [
        ScriptRun(**{**raw, "results": tuple(raw["results"]), "log": Path(raw["log"]) if raw["log"] else None})
        for raw in state.get("runs", [])
    ]
    fresh = fresh_results(runs, started)
    done = {run.name: run for run in runs if run.status == "ran" and any(name in fresh for name in run.results)}
    return started, list(state.get("load_before", [])), done


# --- results, summary and plots -----------------------------------------------------------------


def started_at(payload: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.strptime(str(payload.get("started", "")), STARTED_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def is_fresh(payload: Mapping[str, Any], since: datetime) -> bool:
    """Saved in this run: `started` (second resolution) not before the run's start second."""
    started = started_at(payload)
    return started is not None and started >= since.replace(microsecond=0)


def fresh_results(runs: Sequence[ScriptRun], since: datetime) -> dict[str, dict[str, Any]]:
    """Results name → payload, for every results file a script wrote in this run."""
    found = {}
    for run in runs:
        for name in run.results:
            payload = read_results(name)
            if payload is not None and is_fresh(payload, since):
                found[name] = payload
    return found


def failures(runs: Sequence[ScriptRun], since: datetime) -> list[str]:
    """One line per script that failed, including one that exited 0 without saving results in this run."""
    fresh = fresh_results(runs, since)
    lines = []
    for run in runs:
        if run.status == "failed":
            lines.append(f"{run.name}: {run.detail}")
        elif run.status == "ran" and not any(name in fresh for name in run.results):
            lines.append(f"{run.name}: {no_fresh_results(run)}")
    return lines


def no_fresh_results(run: ScriptRun) -> str:
    for name in run.results:
        payload = read_results(name)
        if payload is not None:
            return f"stale, from {payload.get('started', 'an unknown date')}: it saved no results in this run"
    return "it exited 0 but saved no results (bench.common.save_results)"


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip() or "–"


def series_points(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p for p in payload.get("series") or [] if p.get("rows") and p.get("seconds") is not None]


def log_scales(rows: Sequence[int], values: Sequence[float]) -> tuple[bool, bool]:
    """Log-log where the sizes span more than 10x (a straight line then reads as a power law: slope 1
    is linear growth); the value axis stays linear where a value is not positive."""
    log = min(rows) > 0 and max(rows) > 10 * min(rows)
    return log, log and min(values) > 0


def rows_label(rows: float) -> str:
    """20k, 1.5M: a data size as a tick label."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if rows >= scale:
            return f"{rows / scale:g}{unit}"
    return f"{rows:g}"


def value_label(value: float) -> str:
    """1,000 and 0.04 rather than 1e+03 and 4e-02: an axis label as a reader writes the number."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def draw_plots(name: str, payload: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Seconds and peak RSS per stage against rows, one PNG each (none for a measure without data):
    every repetition as a dot, the median per size joined by a line; log-log where sizes span > 10x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    points = series_points(payload)
    mode = " (quick mode)" if payload.get("quick") else ""
    written = []
    for field, label, suffix in (("seconds", "seconds", "time"), ("peak_rss_mib", "peak RSS, MiB", "memory")):
        by_stage: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for point in points:
            if point.get(field) is not None:
                by_stage[str(point["stage"])][int(point["rows"])].append(float(point[field]))
        if not by_stage:
            continue
        figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
        for stage, by_rows in sorted(by_stage.items()):
            sizes = sorted(by_rows)
            dots = [(rows, value) for rows in sizes for value in by_rows[rows]]
            line = axes.plot(sizes, [statistics.median(by_rows[rows]) for rows in sizes], marker="o", label=stage)
            axes.scatter(*zip(*dots), s=10, alpha=0.4, color=line[0].get_color())
        log_x, log_y = log_scales(
            [rows for by_rows in by_stage.values() for rows in by_rows],
            [value for by_rows in by_stage.values() for values in by_rows.values() for value in values],
        )
        if log_x:
            axes.set_xscale("log")
        if log_y:
            axes.set_yscale("log")
        # Ticks at the sizes measured, and plain numbers (0.3 s) rather than powers of ten.
        sizes = sorted({rows for by_rows in by_stage.values() for rows in by_rows})
        axes.xaxis.set_major_locator(FixedLocator(sizes))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: rows_label(value)))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: value_label(value)))
        # Minor ticks are labelled only where the values span less than a decade (few major ticks);
        # beyond, their labels would overlap.
        values = [value for by_rows in by_stage.values() for values in by_rows.values() for value in values]
        narrow = log_y and max(values) < 10 * min(values)
        axes.yaxis.set_minor_formatter(
            FuncFormatter(lambda value, _: value_label(value)) if narrow else NullFormatter()
        )
        axes.set_xlabel("rows")
        axes.set_ylabel(label)
        axes.set_title(f"{name}: {label} per stage against rows{mode}")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}-{suffix}.png"
        figure.savefig(path, metadata={"Software": None})
        plt.close(figure)
        written.append(path)
    return written


def summary_section(info: RunInfo, runs: Sequence[ScriptRun], plots: Mapping[str, Sequence[Path]]) -> str:
    fresh = fresh_results(runs, info.started)
    failed = failures(runs, info.started)
    machine = common.machine_facts()
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    took = (info.finished - info.started).total_seconds() / 60
    state = "" if info.complete else ", **in progress** (this section is rewritten after every script)"
    # A resumed run spans sessions: the scripts' own walls say what it cost.
    scripts = sum(run.seconds or 0.0 for run in runs) / 60
    state = f", scripts {scripts:.0f} min{state}"
    lines = [
        "## Summary (`make bench`)",
        "",
        f"Run {info.started:%Y-%m-%d %H:%M}–{info.finished:%H:%M} UTC ({took:.0f} min{state}) on {machine['cpu']} "
        f"({machine['usable_cores']} usable cores, {machine['memory_gib']} GiB), {machine['platform']}, "
        f"Python {machine['python']}, {packages}; load average {' '.join(map(str, info.load_before))} before "
        f"the whole run, {' '.join(map(str, info.load_after))} after"
        f"{' (quick mode: sizes too small for the goals, nothing decided)' if info.quick else ''}.",
        "",
        "Reproduce: `make bench` (every benchmark at full size, then this section and bench/plots/) or "
        "`make bench-quick` (small sizes, asserting nothing about speed: what CI runs; its plots go to "
        f".kennel/bench/plots/). {'This run, in parts; its last' if info.resumed else 'This run'}: "
        f"`{info.command}`. Each script's own section below holds its "
        "detail tables; its log is .kennel/bench/logs/NAME.log.",
        "",
        *(f"- {line}" for line in info.prerequisites),
        "",
        "| script | outcome | wall | command |",
        "|---|---|---:|---|",
    ]
    for run in runs:
        outcome = {"ran": "ran", "failed": "failed", "skipped": "not run", "pending": "pending"}[run.status]
        if run.status == "ran" and not any(name in fresh for name in run.results):
            outcome = "failed: " + no_fresh_results(run)
        elif run.detail:
            outcome += f": {run.detail}"
        wall = f"{run.seconds:,.0f} s" if run.seconds is not None else "–"
        command = f"`{run.command}`" if run.command else "–"
        lines.append(f"| {run.name} | {cell(outcome)} | {wall} | {cell(command)} |")

    verdicts: dict[str, int] = defaultdict(int)
    lines += ["", "| script | goal | target | measured | verdict | note |", "|---|---|---|---|---|---|"]
    for run in runs:
        names = [name for name in run.results if name in fresh]
        if run.status in ("skipped", "pending"):
            verdict = "not run" if run.status == "skipped" else "pending"
            lines.append(f"| {run.name} | – | – | – | {verdict} | {cell(run.detail)} |")
        elif run.status == "failed":
            lines.append(f"| {run.name} | – | – | – | failed | {cell(run.detail)} |")
        elif not names:
            lines.append(f"| {run.name} | – | – | – | failed | {cell(no_fresh_results(run))} |")
        for name in names:
            shown = run.name if name in result_names(run.name) else f"{run.name} ({name})"
            goals = fresh[name].get("goals") or []
            if not goals:
                lines.append(f"| {shown} | – | – | – | no goals | the script states no goal |")
            for goal in goals:
                verdicts[goal["verdict"]] += 1
                lines.append(
                    f"| {shown} | {cell(goal['name'])} | {cell(goal['target'])} | {cell(goal['measured'])} "
                    f"| {goal['verdict']} | {cell(goal.get('note', ''))} |"
                )
    counts = ", ".join(f"{verdicts[v]} {v}" for v in ("met", "not met", "not decided") if verdicts[v]) or "no goals"
    failed_names = ", ".join(line.split(":", 1)[0] for line in failed)
    lines += ["", f"Goals: {counts}. Scripts failed: {len(failed)}" + (f" ({failed_names})." if failed else ".")]

    links = []
    for name, paths in plots.items():
        shown = ", ".join(
            f"[{path.stem.removeprefix(name + '-')}]({os.path.relpath(path, common.BENCHMARKS_MD.parent)})"
            for path in paths
        )
        links.append(f"- {name}: {shown}")
    lines += ["", "Plots (time and peak memory per stage against rows):", "", *(links or ["- none in this run"])]
    return "\n".join(lines)


def write_summary(info: RunInfo, runs: Sequence[ScriptRun], plots: Mapping[str, Sequence[Path]]) -> None:
    """The section goes right under the file's title and introduction, above every script's section."""
    intro = None
    if common.BENCHMARKS_MD.exists():
        for line in common.BENCHMARKS_MD.read_text().splitlines():
            if line.strip() and not line.startswith(("#", "<!--")):
                intro = line
                break
    common.write_section("summary", summary_section(info, runs, plots), after=intro)


def plots_dir(quick: bool) -> Path:
    return common.RESULTS_DIR / "plots" if quick else COMMITTED_PLOTS


def draw_all(runs: Sequence[ScriptRun], since: datetime, out_dir: Path) -> dict[str, list[Path]]:
    plots = {}
    for name, payload in fresh_results(runs, since).items():
        paths = draw_plots(name, payload, out_dir)
        if paths:
            plots[name] = paths
    return plots


# --- main ---------------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every script's quick mode (what CI runs)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=names, help=f"run only these: {names}")
    parser.add_argument("--skip", nargs="+", metavar="NAME", choices=names, default=[], help="leave these out")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds per script before it is stopped and counted as failed (default: 900 quick, none full)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the last run (stopped midway, or split over sessions): keep the scripts it ran, run "
        "the rest, and write one summary from its start; with --only, run those again too",
    )
    args = parser.parse_args(argv)
    if args.timeout is None and args.quick:
        args.timeout = 900.0
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    problem = matplotlib_missing()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    selected = set(args.only or [b.name for b in BENCHMARKS]) - set(args.skip)
    chosen = [b for b in BENCHMARKS if b.name in selected]
    started, load_before = datetime.now(UTC), common.load_average()
    earlier: dict[str, ScriptRun] = {}
    if args.resume:
        resumed = load_state(args.quick)
        if resumed is None:
            print(f"--resume: no earlier run recorded ({display([str(state_path(args.quick))])})", file=sys.stderr)
            return 2
        started, load_before, earlier = resumed
        earlier = {name: run for name, run in earlier.items() if name not in (args.only or ())}
        print(
            f"==> Resuming the run started {started:%Y-%m-%d %H:%M} UTC: {sorted(earlier) or 'nothing'} ran", flush=True
        )
    if args.quick:
        # Quick figures go to a copy of BENCHMARKS.md (the scripts read REPORT_ENV), never into it.
        quick_report = common.RESULTS_DIR / "BENCHMARKS-quick.md"
        quick_report.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "BENCHMARKS.md", quick_report)
        os.environ[common.REPORT_ENV] = str(quick_report)
        common.BENCHMARKS_MD = quick_report

    prerequisites = []
    wrk_present, wrk_line = True, ""
    if any(b.needs_wrk for b in chosen):
        wrk_present, wrk_line = ensure_wrk()
        prerequisites.append(wrk_line)
    for benchmark in chosen:
        if benchmark.venv is None:
            continue
        if args.quick and benchmark.venv.python.exists():
            line = f"{benchmark.venv.library}: {benchmark.venv.path.relative_to(ROOT)} present, the comparison runs"
        elif args.quick:
            line = (
                f"{benchmark.venv.library}: the comparison's virtualenv ({benchmark.venv.path.relative_to(ROOT)}) "
                "is not built in quick mode; `make bench` builds it"
            )
        else:
            line = ensure_venv(benchmark.venv)
        print(f"==> {line}", flush=True)
        prerequisites.append(line)
    gpus = gpu_names()
    prerequisites.append(f"GPU: {', '.join(gpus)}" if gpus else "GPU: none on this machine (nvidia-smi lists none)")

    command = display([sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)])

    def summarize(runs: Sequence[ScriptRun], *, complete: bool) -> dict[str, list[Path]]:
        save_state(args.quick, started, load_before, runs)
        plots = draw_all(runs, started, plots_dir(args.quick))
        info = RunInfo(
            quick=args.quick,
            started=started,
            finished=datetime.now(UTC),
            load_before=load_before,
            load_after=common.load_average(),
            command=command,
            prerequisites=tuple(prerequisites),
            complete=complete,
            resumed=args.resume,
        )
        write_summary(info, runs, plots)
        return plots

    runs = run_benchmarks(
        BENCHMARKS,
        args.quick,
        selected,
        args.timeout,
        bool(gpus),
        wrk_present,
        wrk_line,
        after_each=lambda so_far: summarize(so_far, complete=False),
        earlier=earlier,
    )
    plots = summarize(runs, complete=True)
    failed = failures(runs, started)
    print(f"==> Summary written to {display([str(common.BENCHMARKS_MD)])} (section `summary`)", flush=True)
    for path_list in plots.values():
        for path in path_list:
            print(f"    plot: {display([str(path)])}", flush=True)
    if failed:
        print(f"==> {len(failed)} benchmark(s) failed:", flush=True)
        for line in failed:
            print(f"    {line}", flush=True)
        return 1
    print("==> Every benchmark ran.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
