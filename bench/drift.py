"""Benchmark: Kennel's drift report vs a plain numpy/scipy loop vs Evidently's DataDriftPreset, and the
drift decisions on the demo data.

    .venv/bin/python bench/drift.py --quick      # 5,000 rows, few pairs: a look, asserts nothing
    .venv/bin/python bench/drift.py              # 20,000 and 100,000 rows, 100 pairs per size (~3 min)
    .venv/bin/python bench/drift.py --write      # ... and rewrite its BENCHMARKS.md section

Reference and current frames of N rows × 50 features (40 numeric, 10 categorical; a quarter shifted).
Kennel's profile of the reference is built once at training time, so it is timed separately; the
drift check itself is `compare(profile, current)`, against a loop computing the same statistics
from both samples, quiet and under two CPU-busy processes the benchmark starts itself. Evidently runs
from its own virtualenv (a bench-time extra, not a Kennel dependency; `make bench` builds it):

    # evidently 0.7.23 breaks on pandas 3 (infer_dtype_from_object is gone), hence the pin
    python -m venv .kennel/bench-evidently && .kennel/bench-evidently/bin/pip install evidently==0.7.23 "pandas<3"
    .venv/bin/python bench/drift.py --evidently-python .kennel/bench-evidently/bin/python

Where that interpreter is missing the comparison is skipped, and the output says so.

The decisions on the demo data (kennel.demo, credit_demo spec): the false-alarm rate (share of
same-distribution day pairs where any model input is flagged drifted) and the detection rate per feature
on the drift scenario, at the given row counts and at the demo's shape (a large reference, small days),
with and without the significance gate (alpha = 1 leaves the effect-size floors alone).
"""

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Goal,
    Results,
    SeriesPoint,
    background_load,
    conditions_line,
    goals_table,
    median,
    save_results,
    spread,
    write_section,
)
from kennel.demo.generator import generate_frame  # noqa: E402
from kennel.monitoring.drift import DriftThresholds, build_profile, compare  # noqa: E402
from kennel.spec import FeatureType, load_spec  # noqa: E402

NUMERIC, CATEGORICAL = 40, 10
GOAL_ROWS = 100_000
LOOP_GOAL, EVIDENTLY_GOAL, FALSE_ALARM_GOAL = 3.0, 20.0, 0.05
# The inputs kennel/demo/generator.py's drift scenario moves itself (income, inquiries, utilization,
# channel); others (loan_amount, debt_to_income) follow from them, so they may or may not be flagged.
SCENARIO_SHIFTED = ("annual_income", "num_inquiries_6m", "credit_utilization", "channel")
EVIDENTLY_VENV = ".kennel/bench-evidently/bin/python"


def shifted(column: str) -> bool:
    """Whether make_data shifts `column` in the current frame: every fourth numeric and categorical one."""
    return int(column[1:]) % 4 == 0


def make_data(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def frame(drifted: bool) -> pd.DataFrame:
        cols = {}
        for i in range(NUMERIC):
            shift = 0.5 if drifted and shifted(f"n{i}") else 0.0
            cols[f"n{i}"] = rng.normal(shift, 1.0 + i / NUMERIC, rows)
        for i in range(CATEGORICAL):
            p = np.array([0.5, 0.3, 0.15, 0.05])
            if drifted and shifted(f"c{i}"):
                p = p[::-1]
            cols[f"c{i}"] = rng.choice(["a", "b", "c", "d"], size=rows, p=p)
        return pd.DataFrame(cols)

    return frame(False), frame(True)


def numpy_scipy_loop(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, float]:
    """The same statistics computed directly from both samples, feature by feature."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    out = {}
    for col in ref.columns:
        r, c = ref[col].to_numpy(), cur[col].to_numpy()
        if col.startswith("n"):
            edges = np.unique(np.quantile(r, np.linspace(0, 1, 11)[1:-1]))
            e = np.bincount(np.searchsorted(edges, r), minlength=len(edges) + 1) / len(r)
            a = np.bincount(np.searchsorted(edges, c), minlength=len(edges) + 1) / len(c)
            e, a = np.maximum(e, 1e-4), np.maximum(a, 1e-4)
            out[col] = max(float(np.sum((a - e) * np.log(a / e))), wasserstein_distance(r, c) / r.std())
        else:
            keys = sorted(set(r) | set(c))
            rc, cc = pd.Series(r).value_counts(normalize=True), pd.Series(c).value_counts(normalize=True)
            out[col] = float(jensenshannon([rc.get(k, 0) for k in keys], [cc.get(k, 0) for k in keys], base=2))
    return out


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


EVIDENTLY_SCRIPT = """
import json, sys, time, pandas as pd
from importlib.metadata import version
from evidently import Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    times.append(time.perf_counter() - t)
print(json.dumps({"version": version("evidently"), "seconds": times}))
"""


def run_evidently(python: Path, ref: pd.DataFrame, cur: pd.DataFrame, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ref.to_parquet(f"{tmp}/ref.parquet")
        cur.to_parquet(f"{tmp}/cur.parquet")
        out = subprocess.run(
            [str(python), "-c", EVIDENTLY_SCRIPT, f"{tmp}/ref.parquet", f"{tmp}/cur.parquet", str(repeat)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


@dataclass
class SpeedRun:
    """One data size under one condition: every repetition's seconds per step."""

    rows: int
    loaded: bool
    profile: list[float]
    compare: list[float]
    loop: list[float]
    evidently: list[float] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)


def measure_speed(rows: int, repeat: int, loaded: bool, evidently: Path | None) -> tuple[SpeedRun, str]:
    """Profile, compare and the loop (and Evidently where given) on `rows` × 50; Evidently's version."""
    ref, cur = make_data(rows)
    numeric = [c for c in ref.columns if c.startswith("n")]
    categorical = [c for c in ref.columns if c.startswith("c")]
    with background_load(2) if loaded else contextlib.nullcontext():
        profile_s = timed(lambda: build_profile(ref, numeric, categorical), repeat)
        profile = build_profile(ref, numeric, categorical)
        compare_s = timed(lambda: compare(profile, cur), repeat)
        loop_s = timed(lambda: numpy_scipy_loop(ref, cur), repeat)
    run = SpeedRun(rows, loaded, profile_s, compare_s, loop_s)
    run.flagged = sorted(f.feature for f in compare(profile, cur).drifted)
    version = ""
    if evidently is not None:
        out = run_evidently(evidently, ref, cur, repeat)
        run.evidently, version = out["seconds"], out["version"]
    return run, version


@dataclass
class Decisions:
    reference_rows: int
    rows: int
    pairs: int
    false_alarm_rate: float
    false_alarm_rate_effect_floors_only: float
    detection_rate: dict[str, float]  # input → share of drifted days where it was flagged


def demo_decisions(pairs: int, rows: int, reference_rows: int) -> Decisions:
    """False alarms on `pairs` same-distribution demo day pairs and detection on as many drifted days,
    `rows` rows each; the reference is another day's profile of `reference_rows` rows."""
    spec = load_spec(ROOT / "datasets" / "credit_demo.yaml")
    numeric = [f.name for f in spec.features if f.type is FeatureType.numeric]
    categorical = [f.name for f in spec.features if f.type is not FeatureType.numeric]
    inputs = [f.name for f in spec.model_features]
    day = date(2026, 1, 1)
    gated, effect_only, found = 0, 0, dict.fromkeys(inputs, 0)
    for i in range(pairs):
        reference = generate_frame(spec, day, reference_rows, np.random.default_rng(3 * i))
        profile = build_profile(reference, numeric, categorical)
        same = generate_frame(spec, day, rows, np.random.default_rng(3 * i + 1))
        gated += bool(compare(profile, same, inputs=inputs).drifted)
        effect_only += bool(compare(profile, same, DriftThresholds(alpha=1.0), inputs=inputs).drifted)
        drifted = generate_frame(spec, day, rows, np.random.default_rng(3 * i + 2), drifted=True)
        for f in compare(profile, drifted, inputs=inputs).drifted:
            found[f.feature] += 1
    return Decisions(
        reference_rows=reference_rows,
        rows=rows,
        pairs=pairs,
        false_alarm_rate=gated / pairs,
        false_alarm_rate_effect_floors_only=effect_only / pairs,
        detection_rate={name: n / pairs for name, n in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))},
    )


def pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def detection_text(d: Decisions) -> str:
    """The inputs flagged on at least 3% of drifted days, most often first; the rest summed up."""
    shown = [f"{name} {pct(rate)}" for name, rate in d.detection_rate.items() if rate >= 0.03]
    rest = [rate for rate in d.detection_rate.values() if rate < 0.03]
    if rest:
        shown.append(f"others ≤ {pct(max(rest))}" if max(rest) else "others 0%")
    return ", ".join(shown) or "none"


def shape(d: Decisions) -> str:
    return f"{d.rows:,}" if d.reference_rows == d.rows else f"{d.reference_rows:,} / {d.rows:,}"


def speed_goals(largest: SpeedRun, loaded: SpeedRun, decide: bool, evidently_missing: str) -> list[Goal]:
    size = f"{largest.rows:,} × {NUMERIC + CATEGORICAL}"
    note = "" if decide else f"sizes below the goal's {GOAL_ROWS:,} rows"
    goals = []
    for run, condition in ((largest, "no added load"), (loaded, "2 busy processes")):
        k, loop = median(run.compare), median(run.loop)
        goals.append(
            Goal(
                name=f"drift: Kennel `compare` / numpy-scipy loop at {size}, {condition}",
                target=f"≤ {LOOP_GOAL:g}x",
                measured=f"{k / loop:.2f}x ({k:.3f} s / {loop:.3f} s)",
                met=(k / loop <= LOOP_GOAL) if decide else None,
                note=note,
            )
        )
    if largest.evidently:
        k, ev = median(largest.compare), median(largest.evidently)
        goals.append(
            Goal(
                name=f"drift: Evidently DataDriftPreset / Kennel `compare` at {size}, no added load",
                target=f"≥ {EVIDENTLY_GOAL:g}x",
                measured=f"{ev / k:.1f}x ({ev:.2f} s / {k:.3f} s)",
                met=(ev / k >= EVIDENTLY_GOAL) if decide else None,
                note=note,
            )
        )
    else:
        goals.append(
            Goal(
                name=f"drift: Evidently DataDriftPreset / Kennel `compare` at {size}, no added load",
                target=f"≥ {EVIDENTLY_GOAL:g}x",
                measured="–",
                met=None,
                note=evidently_missing,
            )
        )
    return goals


def decision_goals(decisions: list[Decisions], quick: bool) -> list[Goal]:
    alpha = DriftThresholds().alpha
    goals = []
    for d in decisions:
        rate = d.false_alarm_rate
        met = None if quick else rate <= FALSE_ALARM_GOAL
        note = "quick mode" if quick else ""
        if met is False and d.false_alarm_rate_effect_floors_only >= 0.5:
            note = (
                f"the effect floors alone flag {pct(d.false_alarm_rate_effect_floors_only)} of same-distribution "
                f"pairs at {d.rows:,} rows, so the significance test decides alone and its level "
                f"(alpha {alpha:g}) bounds the rate"
            )
        goals.append(
            Goal(
                name=f"drift decisions: false alarms, {shape(d)} rows (reference / current), {d.pairs} pairs",
                target=f"≤ {pct(FALSE_ALARM_GOAL)}",
                measured=pct(rate),
                met=met,
                note=note,
            )
        )
    equal = [d for d in decisions if d.reference_rows == d.rows]
    if equal:
        d = max(equal, key=lambda d: d.rows)
        rates = {name: d.detection_rate.get(name, 0.0) for name in SCENARIO_SHIFTED}
        goals.append(
            Goal(
                name=f"drift decisions: detection of the drift scenario's shifted inputs, {d.rows:,} rows, "
                f"{d.pairs} pairs",
                target="each in 100% of drifted days",
                measured=", ".join(f"{name} {pct(rate)}" for name, rate in rates.items()),
                met=None if quick else all(rate == 1.0 for rate in rates.values()),
                note="quick mode" if quick else "",
            )
        )
    return goals


def speed_table(runs: list[SpeedRun]) -> str:
    lines = [
        "| rows (reference = current) | load | step | time, s | against Kennel's `compare` |",
        "|---:|---|---|---:|---|",
    ]
    for run in runs:
        k = median(run.compare)
        load = "2 busy processes" if run.loaded else "none added"
        steps = [
            ("Kennel reference profile (once, when a model is trained; not part of a check)", run.profile, ""),
            ("Kennel drift report `compare(profile, current)`", run.compare, "1x"),
            (
                "numpy/scipy loop computing the same statistics from both samples",
                run.loop,
                f"Kennel {k / median(run.loop):.2f}x of it",
            ),
        ]
        if run.evidently:
            steps.append(
                (
                    "Evidently `DataDriftPreset` on the same frames",
                    run.evidently,
                    f"{median(run.evidently) / k:.1f}x slower than Kennel",
                )
            )
        for step, seconds, against in steps:
            lines.append(f"| {run.rows:,} | {load} | {step} | {spread(seconds, 3)} | {against or '–'} |")
    return "\n".join(lines)


def decisions_table(decisions: list[Decisions]) -> str:
    lines = [
        "| rows per day (reference / current) | pairs | false alarms | with effect floors only "
        "| detection of the drift scenario's inputs (share of drifted days flagged) |",
        "|---:|---:|---:|---:|---|",
    ]
    for d in decisions:
        lines.append(
            f"| {shape(d)} | {d.pairs} | {pct(d.false_alarm_rate)} | {pct(d.false_alarm_rate_effect_floors_only)} "
            f"| {detection_text(d)} |"
        )
    return "\n".join(lines)


def section(
    results: Results, runs: list[SpeedRun], decisions: list[Decisions], repeat: int, evidently_line: str
) -> str:
    largest = max((r for r in runs if not r.loaded), key=lambda r: r.rows)
    expected = sorted(c for c in make_data(10)[0].columns if shifted(c))
    found = [c for c in largest.flagged if shifted(c)]
    wrong = [c for c in largest.flagged if not shifted(c)]
    return "\n\n".join(
        [
            "## Drift (bench/drift.py)",
            conditions_line(results),
            goals_table(results.goals),
            f"Reference and current frames × {NUMERIC + CATEGORICAL} features ({NUMERIC} numeric, {CATEGORICAL} "
            f"categorical; a quarter of them shifted in the current frame), {repeat} repetitions per step: median "
            f"(min–max). {evidently_line}",
            speed_table(runs),
            f"At {largest.rows:,} rows `compare` flagged {len(found)} of the {len(expected)} shifted features and "
            f"{'unshifted ones too: ' + ', '.join(wrong) if wrong else 'no unshifted one'}. The check is cheap because "
            "the reference side is reduced once, when the model is trained, to quantile bins and a 100-point "
            "quantile sketch, so a check sorts only the current sample.",
            "### False alarms and detection (bench/drift.py, `--pairs`, `--decision-rows`, `--demo-shape`)",
            "Demo data (credit_demo, its model inputs): same-distribution day pairs, the reference profiled from "
            'one day and the current day drawn afresh; a pair "raises a false alarm" when any input is flagged '
            "drifted. Detection: the same reference against a day of the drift scenario, which moves "
            f"{', '.join(SCENARIO_SHIFTED)} (others follow from them). The rule: effect floor AND "
            'Benjamini–Hochberg-adjusted chi-square p < alpha (README, "How drift is decided"); "with effect '
            "floors only\" sets alpha to 1. The last row is the demo's shape: a large reference, small days.",
            decisions_table(decisions),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few pairs; asserts nothing")
    parser.add_argument("--write", action="store_true", help="rewrite the drift section of BENCHMARKS.md")
    parser.add_argument("--rows", type=int, nargs="*", help="rows per frame (default 20000 100000; quick 5000)")
    parser.add_argument("--repeat", type=int, help="repetitions per step (default 3; quick 2)")
    parser.add_argument("--evidently-python", default=EVIDENTLY_VENV, help="Evidently's virtualenv interpreter")
    parser.add_argument("--pairs", type=int, help="demo day pairs per row count (default 100; quick 10)")
    parser.add_argument("--decision-rows", type=int, nargs="*", help="rows per demo day (default 200 300 2000)")
    parser.add_argument(
        "--demo-shape",
        type=int,
        nargs=3,
        metavar=("REFERENCE", "CURRENT", "PAIRS"),
        help="the demo's shape: reference rows, rows per day, pairs (default 20000 2000 30; quick 20000 2000 5)",
    )
    args = parser.parse_args()
    sizes = sorted(args.rows or ([5_000] if args.quick else [20_000, GOAL_ROWS]))
    repeat = max(1, args.repeat or (2 if args.quick else 3))
    pairs = args.pairs or (10 if args.quick else 100)
    decision_rows = args.decision_rows or ([200, 2000] if args.quick else [200, 300, 2000])
    demo_shape = args.demo_shape or ((20_000, 2_000, 5) if args.quick else (20_000, 2_000, 30))
    results = Results(name="drift", quick=args.quick)

    evidently = Path(args.evidently_python)
    evidently_missing = f"not run: {args.evidently_python} missing; `make bench` creates it"
    if not evidently.exists():
        print(f"Evidently comparison {evidently_missing}", flush=True)
    # Once untimed: the first check imports what `compare` and the loop import lazily (scipy.stats).
    measure_speed(1_000, 1, False, None)
    runs, version = [], ""
    for rows in sizes:
        run, found_version = measure_speed(rows, repeat, False, evidently if evidently.exists() else None)
        runs.append(run)
        version = found_version or version
    runs.append(measure_speed(sizes[-1], repeat, True, None)[0])
    for run in runs:
        print(
            f"{run.rows:,} rows{' under load' if run.loaded else ''}: profile {spread(run.profile, 3)} s, compare "
            f"{spread(run.compare, 3)} s, loop {spread(run.loop, 3)} s"
            + (f", Evidently {spread(run.evidently, 2)} s" if run.evidently else ""),
            flush=True,
        )
        if not run.loaded:
            for stage, seconds in (
                ("Kennel profile", run.profile),
                ("Kennel compare", run.compare),
                ("numpy/scipy loop", run.loop),
                ("Evidently DataDriftPreset", run.evidently),
            ):
                results.series.extend(SeriesPoint(stage, run.rows, s) for s in seconds)

    decisions = [demo_decisions(pairs, rows, rows) for rows in decision_rows]
    decisions.append(demo_decisions(demo_shape[2], demo_shape[1], demo_shape[0]))
    for d in decisions:
        print(
            f"decisions at {shape(d)} rows, {d.pairs} pairs: false alarms {pct(d.false_alarm_rate)} (effect floors "
            f"only {pct(d.false_alarm_rate_effect_floors_only)}); detection {detection_text(d)}",
            flush=True,
        )

    largest = runs[-2]
    decide = not args.quick and largest.rows >= GOAL_ROWS
    results.goals = speed_goals(largest, runs[-1], decide, evidently_missing) + decision_goals(decisions, args.quick)
    results.raw = {
        "features": {"numeric": NUMERIC, "categorical": CATEGORICAL},
        "repeat": repeat,
        "evidently": version or evidently_missing,
        "speed": [run.__dict__ for run in runs],
        "decisions": [d.__dict__ for d in decisions],
    }
    save_results(results)
    evidently_line = (
        f"Evidently {version} ran from its own virtualenv ({args.evidently_python}; a bench-time extra)."
        if version
        else f"Evidently: {evidently_missing}."
    )
    text = section(results, runs, decisions, repeat, evidently_line)
    print(text)
    if args.write:
        write_section("drift", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
