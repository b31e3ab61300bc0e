"""Benchmark: Kennel's label-free performance estimate (kennel/monitoring/estimation.py) against
NannyML's CBPE on the same scores, the same reference and the same days.

    .venv/bin/python bench/estimation.py --quick     # 6 days × 500 rows, a small model: a look, asserts nothing
    .venv/bin/python bench/estimation.py             # 30 days × 1,000 and × 5,000 rows (~1 minute with NannyML)
    .venv/bin/python bench/estimation.py --write     # ... and rewrite its BENCHMARKS.md section

The demo spec's model is trained like the `model` asset trains it (train_model on demo days); its
validation window, scores and labels, is the reference both sides calibrate on. The analysis days are
demo days scored by that model: the first third as trained on, the rest from the drifted scenario
(covariate and concept drift at once, so the realized AUC drops where neither estimate can see it).
Kennel fits its isotonic calibrator on the reference and estimates each day (Monte-Carlo draws for
the intervals: kennel.monitoring.estimation.DRAWS); NannyML's CBPE (roc_auc, precision, recall) is
fitted on the same reference and chunks the analysis rows by day. NannyML calibrates only when
cross-validation on the reference says calibration lowers the calibration error, so it runs twice: as
it decides (compared with Kennel on the raw scores when it skips calibration) and with calibration
forced (compared with Kennel's calibrator).

Timed like for like: Kennel's calibrator fit + every day's estimate with its intervals against NannyML's
fit + estimate (with its sampling errors), `--repeats` runs each in a warm process, so neither side
pays its imports (NannyML is imported before its clock starts; scikit-learn's isotonic module, which
the calibrator imports on first use, is warmed by an untimed run first).

NannyML is a bench-time extra in its own virtualenv, not a Kennel dependency (`make bench` builds it;
where it is missing the comparison is skipped, and the output says so):

    # its plotting imports statsmodels, which nannyml 0.13.1 does not declare
    python -m venv .kennel/bench-nannyml && .kennel/bench-nannyml/bin/pip install nannyml==0.13.1 statsmodels
    .venv/bin/python bench/estimation.py --nannyml-python .kennel/bench-nannyml/bin/python
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Goal,
    Results,
    SeriesPoint,
    conditions_line,
    goals_table,
    median,
    save_results,
    spread,
    write_section,
)
from kennel.demo.generator import generate_frame  # noqa: E402
from kennel.model import ModelCard  # noqa: E402
from kennel.monitoring.estimation import DRAWS, estimate_performance, fit_calibrator  # noqa: E402
from kennel.spec import load_spec  # noqa: E402
from kennel.training.config import TrainConfig  # noqa: E402
from kennel.training.evaluation import classification_metrics  # noqa: E402
from kennel.training.trainer import train_model  # noqa: E402

METRICS = ("roc_auc", "precision", "recall")
START = date(2026, 1, 1)
AUC_GAP_GOAL = 0.01
NANNYML_VENV = ".kennel/bench-nannyml/bin/python"

NANNYML_SCRIPT = """
import json, sys, time
from importlib.metadata import version
import pandas as pd
import nannyml as nml
from nannyml.performance_estimation.confidence_based import cbpe as cbpe_module

reference, analysis, mode = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2]), sys.argv[3]
if mode == "forced":
    cbpe_module.needs_calibration = lambda *args, **kwargs: True
seconds = []
for _ in range(int(sys.argv[4])):
    started = time.perf_counter()
    estimator = nml.CBPE(
        y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true", timestamp_column_name="timestamp",
        problem_type="classification_binary", metrics=["roc_auc", "precision", "recall"], chunk_period="D",
    )
    estimator.fit(reference)
    result = estimator.estimate(analysis)
    seconds.append(time.perf_counter() - started)
frame = result.filter(period="analysis").to_df()
days = [
    {
        "day": str(pd.Timestamp(row[("chunk", "start_date")]).date()),
        **{m: float(row[(m, "value")]) for m in ["roc_auc", "precision", "recall"]},
    }
    for _, row in frame.iterrows()
]
print(json.dumps({
    "version": version("nannyml"), "seconds": seconds, "calibrated": bool(estimator.needs_calibration), "days": days,
}))
"""


def labelled(frame: pd.DataFrame, spec) -> pd.DataFrame:
    return frame.assign(label=(frame[spec.label.column].astype(str) == str(spec.label.positive)).astype(int))


def demo_days(spec, first: int, count: int, rows: int, drifted: bool, seed: int) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    return [
        labelled(generate_frame(spec, START + timedelta(days=first + i), rows, rng, drifted=drifted), spec)
        for i in range(count)
    ]


def run_nannyml(python: Path, reference: pd.DataFrame, analysis: pd.DataFrame, mode: str, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        reference.to_parquet(f"{tmp}/reference.parquet")
        analysis.to_parquet(f"{tmp}/analysis.parquet")
        started = time.perf_counter()
        out = subprocess.run(
            [
                str(python),
                "-c",
                NANNYML_SCRIPT,
                f"{tmp}/reference.parquet",
                f"{tmp}/analysis.parquet",
                mode,
                str(repeats),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"},
        )
    # The whole process too: starting it and importing NannyML cost more than the estimate itself.
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_seconds": time.perf_counter() - started}


def kennel_estimates(
    reference, analysis_days, threshold, calibrate: bool, repeats: int
) -> tuple[list[float], list[float], list[dict]]:
    """Fit (or skip) the calibrator on the reference and estimate every day, `repeats` times: each run's
    seconds in all, each run's seconds of the fit alone, and the per-day metrics (the same every time)."""
    total, fits = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        calibrator = fit_calibrator(reference["y_pred_proba"], reference["y_true"]) if calibrate else None
        fitted = time.perf_counter()
        days = []
        for day, scores in analysis_days:
            calibrated = calibrator.apply(scores) if calibrator else scores
            estimate = estimate_performance(scores, calibrated=calibrated, threshold=threshold)
            days.append({"day": day, **{m: estimate.metrics()[m] for m in METRICS}})
        total.append(time.perf_counter() - started)
        fits.append(fitted - started)
    return total, fits, days


def largest_gap(kennel: list[dict], nannyml: list[dict]) -> dict[str, float]:
    theirs = {d["day"]: d for d in nannyml}
    assert sorted(theirs) == [d["day"] for d in kennel], "the two sides chunked different days"
    return {m: max(abs(d[m] - theirs[d["day"]][m]) for d in kennel) for m in METRICS}


@dataclass
class SizeRun:
    """One analysis size: every repetition's seconds per side, and the per-day figures."""

    days: int
    rows: int  # per analysis day
    plain: int  # days as trained; the rest drifted
    kennel: list[float]
    kennel_fit: list[float]
    kennel_raw: list[float]
    kennel_days: list[dict]
    kennel_raw_days: list[dict]
    realized: list[dict]
    nannyml_forced: dict = field(default_factory=dict)
    nannyml_default: dict = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return self.days * self.rows

    def like_for_like(self) -> tuple[list[float], list[dict]]:
        """Kennel calibrated the way NannyML's default mode decided."""
        if self.nannyml_default.get("calibrated", True):
            return self.kennel, self.kennel_days
        return self.kennel_raw, self.kennel_raw_days


def measure(spec, model, reference, threshold, days: int, rows: int, repeats: int, nannyml: Path | None) -> SizeRun:
    plain = days // 3
    frames = demo_days(spec, 13, plain, rows, False, 3) + demo_days(spec, 13 + plain, days - plain, rows, True, 4)
    analysis_days, realized, chunks = [], [], []
    for frame in frames:
        scores = model.score(frame)
        day = str(pd.Timestamp(frame[spec.timestamp_column].iloc[0]).date())
        analysis_days.append((day, scores))
        realized.append({"day": day, **classification_metrics(frame["label"].to_numpy(), scores, threshold)})
        chunks.append(
            pd.DataFrame({"timestamp": frame[spec.timestamp_column], "y_pred_proba": scores}).assign(
                y_pred=(scores >= threshold).astype(int)
            )
        )
    # Untimed: the calibrator imports scikit-learn's isotonic module on first use.
    kennel_estimates(reference, analysis_days[:1], threshold, True, 1)
    kennel, kennel_fit, kennel_days = kennel_estimates(reference, analysis_days, threshold, True, repeats)
    kennel_raw, _, kennel_raw_days = kennel_estimates(reference, analysis_days, threshold, False, repeats)
    run = SizeRun(days, rows, plain, kennel, kennel_fit, kennel_raw, kennel_days, kennel_raw_days, realized)
    if nannyml is not None:
        analysis = pd.concat(chunks, ignore_index=True)
        run.nannyml_forced = run_nannyml(nannyml, reference, analysis, "forced", repeats)
        run.nannyml_default = run_nannyml(nannyml, reference, analysis, "default", repeats)
    return run


def describe(run: SizeRun) -> str:
    return f"{run.days} days × {run.rows:,} rows"


def goals(run: SizeRun, quick: bool, missing: str) -> list[Goal]:
    size = describe(run)
    names = (
        f"estimation: largest per-day gap in estimated ROC-AUC, Kennel vs NannyML CBPE (both calibrated), {size}",
        f"estimation: NannyML CBPE / Kennel time, calibration forced on both, {size}",
        f"estimation: NannyML CBPE default mode / Kennel calibrated alike, time, {size}",
    )
    targets = (f"≤ {AUC_GAP_GOAL:g}", "> 1x (Kennel faster)", "> 1x (Kennel faster)")
    if not run.nannyml_forced:
        return [Goal(name, target, "–", None, missing) for name, target in zip(names, targets)]
    note = "quick mode" if quick else ""
    gap = largest_gap(run.kennel_days, run.nannyml_forced["days"])["roc_auc"]
    forced, kennel = median(run.nannyml_forced["seconds"]), median(run.kennel)
    default, alike = median(run.nannyml_default["seconds"]), median(run.like_for_like()[0])
    return [
        Goal(names[0], targets[0], f"{gap:.1e}", None if quick else gap <= AUC_GAP_GOAL, note),
        Goal(
            names[1],
            targets[1],
            f"{forced / kennel:.2f}x ({forced:.3f} s / {kennel:.3f} s)",
            None if quick else forced > kennel,
            note,
        ),
        Goal(
            names[2],
            targets[2],
            f"{default / alike:.2f}x ({default:.3f} s / {alike:.3f} s)",
            None if quick else default > alike,
            note,
        ),
    ]


def detail_table(runs: list[SizeRun], repeats: int, missing: str) -> str:
    lines = [
        "| analysis | measurement | Kennel | NannyML | NannyML / Kennel |",
        "|---|---|---:|---:|---:|",
    ]
    for run in runs:
        size = describe(run)
        fit_ms = median(run.kennel_fit) * 1e3
        per_day_ms = (median(run.kennel) - median(run.kennel_fit)) / run.days * 1e3
        kennel = f"{spread(run.kennel, 3)} (fit {fit_ms:.1f} ms, {per_day_ms:.1f} ms a day)"
        timing = (
            f"calibration fit + {run.days} days with {DRAWS} Monte-Carlo draws a day for the 95% intervals, s "
            f"({repeats} runs in a warm process)"
        )
        if not run.nannyml_forced:
            lines.append(f"| {size} | {timing} | {kennel} | {missing} | – |")
            lines.append(
                f"| {size} | the same on the raw scores (no calibrator) | {spread(run.kennel_raw, 3)} | – | – |"
            )
            continue
        forced, default = run.nannyml_forced, run.nannyml_default
        alike, alike_days = run.like_for_like()
        chose = "chose to calibrate" if default["calibrated"] else "chose not to calibrate: Kennel on the raw scores"
        forced_gap = largest_gap(run.kennel_days, forced["days"])
        default_gap = largest_gap(alike_days, default["days"])
        lines += [
            f"| {size} | {timing} | {kennel} | {spread(forced['seconds'], 3)} (calibration forced: fit + estimate) "
            f"| {median(forced['seconds']) / median(run.kennel):.2f}x |",
            f"| {size} | the same against NannyML's default mode (its cross-validated check {chose}) "
            f"| {spread(alike, 3)} | {spread(default['seconds'], 3)} "
            f"| {median(default['seconds']) / median(alike):.2f}x |",
            f"| {size} | NannyML's whole process (interpreter start, imports, Parquet), calibration forced, s | – "
            f"| {forced['process_seconds']:.1f} | – |",
            f"| {size} | largest per-day gap, estimated ROC-AUC (forced / default) | | "
            f"| {forced_gap['roc_auc']:.1e} / {default_gap['roc_auc']:.1e} |",
            f"| {size} | largest per-day gap, precision / recall (forced) | | "
            f"| {forced_gap['precision']:.1e} / {forced_gap['recall']:.1e} |",
        ]
    return "\n".join(lines)


def reality(run: SizeRun) -> str:
    plain = run.plain
    estimated, realized = run.kennel_days, run.realized
    mae = float(np.mean([abs(k["roc_auc"] - r["roc_auc"]) for k, r in zip(estimated[:plain], realized[:plain])]))
    drift_est = float(np.mean([k["roc_auc"] for k in estimated[plain:]]))
    drift_real = float(np.mean([r["roc_auc"] for r in realized[plain:]]))
    return (
        f"Against reality ({describe(run)}): on the {plain} days as trained, Kennel's estimate is within "
        f"{mae:.4f} AUC of realized on average; on the {run.days - plain} concept-drifted days it averages "
        f"{drift_est:.3f} while realized averages {drift_real:.3f}: the gap is what flags concept drift, which no "
        "label-free estimate can see. The covariate-shift scenario's accuracy goal is checked by a test, "
        "tests/test_estimated_performance.py."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 days × 500 rows, a small model; asserts nothing")
    parser.add_argument("--write", action="store_true", help="rewrite the estimation section of BENCHMARKS.md")
    parser.add_argument("--nannyml-python", default=NANNYML_VENV, help="NannyML's virtualenv interpreter")
    parser.add_argument("--days", type=int, help="analysis days (default 30; quick 6)")
    parser.add_argument("--rows", type=int, nargs="*", help="rows per analysis day (default 1000 5000; quick 500)")
    parser.add_argument("--repeats", type=int, help="timed runs per side (default 3; quick 2)")
    args = parser.parse_args()
    days = max(3, args.days or (6 if args.quick else 30))
    sizes = sorted(args.rows or ([500] if args.quick else [1_000, 5_000]))
    repeats = max(1, args.repeats or (2 if args.quick else 3))
    train_days, train_rows, validation_days, validation_rows = (
        (4, 1_500, 2, 2_000) if args.quick else (10, 3_000, 3, 4_000)
    )
    results = Results(name="estimation", quick=args.quick)
    spec = load_spec(ROOT / "datasets" / "credit_demo.yaml")

    train = pd.concat(demo_days(spec, 0, train_days, train_rows, False, 1), ignore_index=True)
    validation = pd.concat(demo_days(spec, train_days, validation_days, validation_rows, False, 2), ignore_index=True)
    model, trained = train_model(ModelCard.for_spec(spec), train, validation, TrainConfig(device="cpu"))
    threshold = trained.threshold
    reference = pd.DataFrame(
        {
            "timestamp": validation[spec.timestamp_column],
            "y_pred_proba": model.score(validation),
            "y_true": validation["label"],
        }
    ).assign(y_pred=lambda f: (f["y_pred_proba"] >= threshold).astype(int))

    nannyml = Path(args.nannyml_python)
    missing = f"not run: {args.nannyml_python} missing; `make bench` creates it"
    if not nannyml.exists():
        print(f"NannyML comparison {missing}", flush=True)
    runs = []
    for rows in sizes:
        run = measure(spec, model, reference, threshold, days, rows, repeats, nannyml if nannyml.exists() else None)
        runs.append(run)
        print(
            f"{describe(run)}: Kennel {spread(run.kennel, 3)} s (raw scores {spread(run.kennel_raw, 3)} s)"
            + (
                f", NannyML forced {spread(run.nannyml_forced['seconds'], 3)} s, default "
                f"{spread(run.nannyml_default['seconds'], 3)} s"
                if run.nannyml_forced
                else ""
            ),
            flush=True,
        )
        stages = [("Kennel: calibrate + estimate every day", run.kennel), ("Kennel: raw scores", run.kennel_raw)]
        if run.nannyml_forced:
            stages += [
                ("NannyML CBPE: calibration forced", run.nannyml_forced["seconds"]),
                ("NannyML CBPE: default mode", run.nannyml_default["seconds"]),
            ]
        for stage, seconds in stages:
            results.series.extend(SeriesPoint(stage, run.total_rows, s) for s in seconds)

    largest = runs[-1]
    results.goals = goals(largest, args.quick, missing)
    version = largest.nannyml_forced.get("version", "")
    results.raw = {
        "threshold": threshold,
        "training": {"days": train_days, "rows_per_day": train_rows},
        "reference": {"days": validation_days, "rows_per_day": validation_rows},
        "repeats": repeats,
        "nannyml": version or missing,
        "sizes": [run.__dict__ for run in runs],
    }
    save_results(results)

    against = (
        f"NannyML {version}'s CBPE, run from its own virtualenv ({args.nannyml_python})"
        if version
        else f"NannyML's CBPE ({missing})"
    )
    text = "\n\n".join(
        [
            "## Performance estimation without labels (bench/estimation.py)",
            conditions_line(results),
            goals_table(results.goals),
            f"Kennel's CBPE (`kennel/monitoring/estimation.py`) against {against}, on the same demo model (trained "
            f"with `train_model` on {train_days} days × {train_rows:,} rows), the same reference (the validation "
            f"window, {validation_days} days × {validation_rows:,} rows, threshold {threshold:.4f}) and {days} "
            f"analysis days ({days // 3} as trained, {days - days // 3} from the drift scenario), chunked by day; "
            f"{repeats} timed runs per side: median (min–max).",
            detail_table(runs, repeats, missing),
            "Why Kennel's estimate is cheap: the rows are sorted by score once, so the threshold and the calibration "
            "bins are contiguous stretches; each Monte-Carlo draw compares 32-bit random integers against p·2³² and "
            "needs one `reduceat` per stretch and one rank sum (`einsum`, no BLAS, whose threads restart on a busy "
            "machine): exact integer sums, so the result does not depend on the order of addition. The AUC gap to "
            "NannyML comes from NannyML rounding its cumulative sums to 5 decimals.",
            reality(largest),
        ]
    )
    print(text)
    if args.write:
        write_section("estimation", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
