"""bench/run.py (`make bench`): which scripts it runs and how, what counts as a failure, the goals
summary it writes into BENCHMARKS.md and the plots, on fake scripts and fake results (no benchmark runs)."""

import os
import signal
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import common
from bench import run as bench_run

ROOT = Path(__file__).resolve().parent.parent
INTRO = "Measured figures; goals stated next to them."
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def bench_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Results, BENCHMARKS.md and plots under tmp_path (bench.common and the runner read them at call time)."""
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(common, "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(bench_run, "COMMITTED_PLOTS", tmp_path / "plots")
    (tmp_path / "BENCHMARKS.md").write_text(
        f"# Benchmarks\n\n{INTRO}\n\n<!-- serving:begin -->\n## Serving\nold figures\n<!-- serving:end -->\n"
    )
    return tmp_path


def save(name: str, **fields) -> None:
    common.save_results(common.Results(name=name, quick=False, **fields))


def save_fake_results() -> list[bench_run.ScriptRun]:
    """Results as a run would leave them, and the runs that wrote them."""
    save(
        "training",
        goals=[
            common.Goal("training: asset / best bare at 1M rows, quiet", "<= 1.1x", "1.04x (5.2 s / 5.0 s)", True),
            common.Goal("training: under load / quiet", "<= 2.5x", "3.1x (16 s / 5.2 s)", False, "OpenMP spin | 40%"),
        ],
        series=[
            common.SeriesPoint("model asset", 200_000, 1.4, 900.0),
            common.SeriesPoint("model asset", 1_000_000, 5.2, 2100.0),
            common.SeriesPoint("model asset", 1_000_000, 5.6, 2150.0),
            common.SeriesPoint("bare train", 200_000, 1.1, 700.0),
            common.SeriesPoint("bare train", 1_000_000, 5.0, 1800.0),
        ],
    )
    # Saved by the same script under another name; no memory figures, so no memory plot.
    save(
        "evaluation",
        goals=[common.Goal("model_evaluation / bare metrics", "<= 1.1x", "1.3x", False, "SHAP sample")],
        series=[
            common.SeriesPoint("model_evaluation", 200_000, 2.0),
            common.SeriesPoint("model_evaluation", 20_000, 0.3),
        ],
    )
    # Written by an earlier run: neither counted nor drawn.
    save("cleaning", started="2026-01-01 00:00:00 UTC", series=[common.SeriesPoint("spark cleaning", 1000, 1.0, 10.0)])
    run = bench_run.ScriptRun
    return [
        run("training", "ran", "python bench/training.py --write", "", 12.0, 0, ("evaluation", "training")),
        run("cleaning", "ran", "python bench/cleaning.py --write", "", 3.0, 0, ("cleaning",)),
        run("drift", "failed", "python bench/drift.py --write", "exit 2: boom (log: x.log)", 1.0, 2),
        run("gpu_training", "skipped", "python bench/gpu_training.py --write", "no GPU on this machine"),
        run("scaling", "skipped", detail="left out of this run (--only/--skip)"),
    ]


def test_summary_counts_only_this_runs_results(bench_dirs: Path) -> None:
    run_start = datetime.now(UTC)
    runs = save_fake_results()

    failed = bench_run.failures(runs, run_start)
    assert [line.split(":")[0] for line in failed] == ["cleaning", "drift"]
    assert "stale, from 2026-01-01 00:00:00 UTC" in failed[0]

    plots = {"training": [bench_dirs / "plots" / "training-time.png", bench_dirs / "plots" / "training-memory.png"]}
    info = bench_run.RunInfo(
        quick=False,
        started=run_start,
        finished=datetime.now(UTC),
        load_before=[1.0, 0.5, 0.25],
        load_after=[2.0, 1.0, 0.5],
        command="bench/run.py",
        prerequisites=("wrk: wrk 4.1.0", "GPU: none on this machine"),
    )
    bench_run.write_summary(info, runs, plots)
    bench_run.write_summary(info, runs, plots)  # a second run replaces the section in place
    text = (bench_dirs / "BENCHMARKS.md").read_text()
    assert text.count("<!-- summary:begin -->") == 1
    assert text.index(INTRO) < text.index("<!-- summary:begin -->") < text.index("<!-- serving:begin -->")
    section = text.split("<!-- summary:begin -->")[1].split("<!-- summary:end -->")[0]
    assert "load average 1.0 0.5 0.25 before the whole run, 2.0 1.0 0.5 after" in section
    assert "`make bench`" in section and "`make bench-quick`" in section
    assert "- wrk: wrk 4.1.0\n" in section
    assert (
        "| training | training: asset / best bare at 1M rows, quiet | <= 1.1x | 1.04x (5.2 s / 5.0 s) | met | – |"
        in section
    )
    assert "| not met | OpenMP spin \\| 40% |" in section  # a pipe in a cell does not break the table
    assert "| training (evaluation) | model_evaluation / bare metrics |" in section
    assert "| cleaning | – | – | – | failed | stale, from 2026-01-01 00:00:00 UTC" in section
    assert "| drift | – | – | – | failed | exit 2: boom (log: x.log) |" in section
    assert "| gpu_training | – | – | – | not run | no GPU on this machine |" in section
    assert "Goals: 1 met, 2 not met. Scripts failed: 2" in section
    assert "[time](plots/training-time.png)" in section and "[memory](plots/training-memory.png)" in section


def test_plots_of_this_runs_series_only(bench_dirs: Path) -> None:
    pytest.importorskip("matplotlib", reason="the `bench` extra (make bench installs it)")
    run_start = datetime.now(UTC)
    runs = save_fake_results()
    quick = bench_run.draw_all(runs, run_start, bench_run.plots_dir(quick=True))
    assert not (bench_dirs / "plots").exists(), "a quick run must leave the committed plots alone"
    plots = bench_run.draw_all(runs, run_start, bench_run.plots_dir(quick=False))
    assert sorted(p.name for paths in plots.values() for p in paths) == [
        "evaluation-time.png",
        "training-memory.png",
        "training-time.png",
    ]
    for paths in plots.values():
        for path in paths:
            assert path.parent == bench_dirs / "plots" and path.read_bytes().startswith(PNG_MAGIC)
    assert {p.parent for paths in quick.values() for p in paths} == {common.RESULTS_DIR / "plots"}


def test_log_scales_only_where_sizes_span_more_than_tenfold() -> None:
    assert bench_run.log_scales([20_000, 1_000_000], [0.5, 20.0]) == (True, True)
    assert bench_run.log_scales([100_000, 1_000_000], [0.5, 20.0]) == (False, False)
    assert bench_run.log_scales([20_000, 1_000_000], [0.0, 20.0]) == (True, False)


def test_commands_pass_write_and_the_mode() -> None:
    drift = next(b for b in bench_run.BENCHMARKS if b.name == "drift")
    assert drift.command(quick=True)[1:] == ["bench/drift.py", "--write", "--quick"]
    assert drift.command(quick=False)[2:] == ["--write", "--evidently-python", ".kennel/bench-evidently/bin/python"]
    with pytest.raises(SystemExit):
        bench_run.parse(["--only", "no_such_benchmark"])
    with pytest.raises(SystemExit):
        bench_run.parse(["--timeout", "0"])
    assert bench_run.parse(["--quick"]).timeout == 900.0 and bench_run.parse([]).timeout is None


FAKE_SCRIPTS = {
    # Saves its results (and a second results file) as every benchmark does, recording its arguments.
    "good.py": """
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {root!r})
        from bench import common
        common.RESULTS_DIR = Path(os.environ["FAKE_RESULTS_DIR"])
        quick = "--quick" in sys.argv
        for name in ("good", "good-extra"):
            common.save_results(common.Results(
                name=name, quick=quick, raw={{"argv": sys.argv[1:]}},
                goals=[common.Goal(name + ": speed", "<= 2x", "1.5x", None if quick else True)],
                series=[common.SeriesPoint("stage", 1000, 0.1)],
            ))
        # Something else writing into the results folder meanwhile: not this script's results.
        common.save_results(common.Results(name="intruder", quick=quick, command="python bench/other.py"))
    """,
    "crash.py": """
        import sys
        print("working on it")
        sys.exit("broke: the fake benchmark failed")
    """,
    "silent.py": """
        print("measured, but saved nothing")
    """,
    # Starts a child and hangs: the timeout must stop both.
    "hang.py": """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(os.environ["FAKE_CHILD_PID"] + ".tmp", "w") as f:
            f.write(str(child.pid))
        os.replace(os.environ["FAKE_CHILD_PID"] + ".tmp", os.environ["FAKE_CHILD_PID"])
        time.sleep(600)
    """,
}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent (gone too) would reap it.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[-1].startswith("Z"))


def test_runner_goes_on_past_failures_and_reports_each(
    bench_dirs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name, body in FAKE_SCRIPTS.items():
        (scripts / name).write_text(textwrap.dedent(body.format(root=str(ROOT))))
    monkeypatch.setattr(bench_run, "BENCH_DIR", scripts)
    monkeypatch.setenv("FAKE_RESULTS_DIR", str(common.RESULTS_DIR))
    monkeypatch.setenv("FAKE_CHILD_PID", str(tmp_path / "child.pid"))
    save("silent", started="2026-01-01 00:00:00 UTC")  # from an earlier run
    benchmarks = [
        bench_run.Benchmark("good", "good.py", quick_args=("--rows", "10")),
        bench_run.Benchmark("crash", "crash.py"),
        bench_run.Benchmark("silent", "silent.py"),
        bench_run.Benchmark("missing", "missing.py"),
        bench_run.Benchmark("web", "good.py", needs_wrk=True),
        bench_run.Benchmark("gpu", "good.py", needs_gpu=True),
        bench_run.Benchmark("hang", "hang.py"),
        bench_run.Benchmark("left_out", "good.py"),
    ]
    selected = {b.name for b in benchmarks} - {"left_out"}
    run_start = datetime.now(UTC)
    # The timeout must outlast a Python start on a loaded CI machine (hang.py records its child first).
    snapshots: list[list[bench_run.ScriptRun]] = []
    runs = bench_run.run_benchmarks(
        benchmarks,
        True,
        selected,
        15.0,
        has_gpu=False,
        wrk_present=False,
        wrk_problem="wrk is missing",
        after_each=snapshots.append,
    )
    by_name = {run.name: run for run in runs}
    # After each script: what ran so far, and every selected script still to run as pending.
    first = {run.name: run.status for run in snapshots[0]}
    pending = {name: "pending" for name in ("crash", "silent", "missing", "web", "hang")}
    assert first == pending | {"good": "ran", "gpu": "skipped"}  # no GPU: it will not run, and says so
    assert snapshots[-1][-1].name == "hang" and "pending" not in {run.status for run in snapshots[-1]}
    partial = bench_run.RunInfo(
        True, run_start, datetime.now(UTC), [1.0], [1.0], "bench/run.py --quick", (), complete=False
    )
    partial_section = bench_run.summary_section(partial, snapshots[0], {})
    assert "**in progress**" in partial_section
    assert "| hang | – | – | – | pending | still to run |" in partial_section

    good = by_name["good"]
    assert (good.status, good.exit_code, good.results) == ("ran", 0, ("good", "good-extra"))
    assert common.load_results("good")["raw"]["argv"] == ["--write", "--quick", "--rows", "10"]
    assert by_name["crash"].status == "failed" and by_name["crash"].exit_code == 1
    assert "broke: the fake benchmark failed" in by_name["crash"].detail
    assert "working on it" in (common.RESULTS_DIR / "logs" / "crash.log").read_text()
    assert by_name["silent"].status == "ran" and by_name["silent"].results == ("silent",)
    assert by_name["missing"].status == "failed" and "missing.py does not exist" in by_name["missing"].detail
    assert (by_name["web"].status, by_name["web"].detail) == ("failed", "wrk is missing")
    assert (by_name["gpu"].status, by_name["gpu"].detail) == ("skipped", "no GPU on this machine")
    assert by_name["left_out"].status == "skipped"
    hang = by_name["hang"]
    assert hang.status == "failed" and "15 s timeout" in hang.detail
    child = int((tmp_path / "child.pid").read_text())
    try:
        deadline = time.monotonic() + 30
        while pid_alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(child), "the hung script's child outlived the timeout"
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)

    failed = bench_run.failures(runs, run_start)
    assert [line.split(":")[0] for line in failed] == ["crash", "silent", "missing", "web", "hang"]
    assert "stale, from 2026-01-01 00:00:00 UTC" in failed[1]
    info = bench_run.RunInfo(True, run_start, datetime.now(UTC), [1.0], [1.0], "bench/run.py --quick", ())
    section = bench_run.summary_section(info, runs, {})
    assert "| good | good: speed | <= 2x | 1.5x | not decided |" in section
    assert "| good (good-extra) | good-extra: speed |" in section
    assert "quick mode" in section and "Scripts failed: 5" in section

    # --resume keeps what ran and saved results in this run, and runs the failed and stale ones again.
    bench_run.save_state(True, run_start, [1.0], runs)
    started, load_before, done = bench_run.load_state(True)
    assert (started, load_before, sorted(done)) == (run_start, [1.0], ["good"])
    assert done["good"] == good
    resumed = bench_run.run_benchmarks(
        benchmarks[:3], True, {"good", "crash", "silent"}, 15.0, False, True, "", earlier=done
    )
    assert resumed[0] is done["good"]
    assert [run.status for run in resumed[1:]] == ["failed", "ran"]
    # What an earlier part ran stays in the run when a later part runs only some scripts.
    some = bench_run.run_benchmarks(benchmarks[:3], True, {"crash"}, 15.0, False, True, "", earlier=done)
    assert [run.status for run in some] == ["ran", "failed", "skipped"] and some[0] is done["good"]
    assert bench_run.load_state(False) is None  # no full run recorded
