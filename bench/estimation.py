"""Benchmark: Kennel's label-free performance estimate (kennel/monitoring/estimation.py) against
NannyML's CBPE on the same scores, the same reference and the same days.

The demo spec's model is trained like the `model` asset trains it (train_model on demo days); its
validation window, scores and labels, is the reference both sides calibrate on. The analysis days are
demo days scored by that model: the first third as trained on, the rest from the drifted scenario
(covariate and concept drift at once, so the realized AUC drops where neither estimate can see it).
Kennel fits its isotonic calibrator on the reference and estimates each day (200 Monte-Carlo draws for
the intervals); NannyML's CBPE (roc_auc, precision, recall) is fitted on the same reference and
chunks the analysis rows by day. NannyML calibrates only when cross-validation on the reference says
calibration lowers the calibration error, so it runs twice: as it decides (compared with Kennel on the
raw scores when it skips calibration) and with calibration forced (compared with Kennel's calibrator).

Timed like for like: Kennel's calibrator fit + every day's estimate with its intervals against NannyML's
fit + estimate (with its sampling errors), each the best of `--repeats` runs in a warm process, so
neither side pays its imports (NannyML is imported before its clock starts; scikit-learn's isotonic
module, which the calibrator imports on first use, is warm after the first repeat).

NannyML is a bench-time extra in its own virtualenv, not a Kennel dependency:

    # its plotting imports statsmodels, which nannyml 0.13.1 does not declare
    python -m venv .kennel/bench-nannyml && .kennel/bench-nannyml/bin/pip install nannyml==0.13.1 statsmodels
    .venv/bin/python bench/estimation.py [--nannyml-python .kennel/bench-nannyml/bin/python] [--days 30]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kennel.demo.generator import generate_frame  # noqa: E402
from kennel.model import ModelCard  # noqa: E402
from kennel.monitoring.estimation import estimate_performance, fit_calibrator  # noqa: E402
from kennel.spec import load_spec  # noqa: E402
from kennel.training.config import TrainConfig  # noqa: E402
from kennel.training.evaluation import classification_metrics  # noqa: E402
from kennel.training.trainer import train_model  # noqa: E402

METRICS = ("roc_auc", "precision", "recall")
START = date(2026, 1, 1)

NANNYML_SCRIPT = """
import json, sys, time
import pandas as pd
import nannyml as nml
from nannyml.performance_estimation.confidence_based import cbpe as cbpe_module

reference, analysis, mode = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2]), sys.argv[3]
if mode == "forced":
    cbpe_module.needs_calibration = lambda *args, **kwargs: True
seconds = float("inf")
for _ in range(int(sys.argv[4])):
    started = time.perf_counter()
    estimator = nml.CBPE(
        y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true", timestamp_column_name="timestamp",
        problem_type="classification_binary", metrics=["roc_auc", "precision", "recall"], chunk_period="D",
    )
    estimator.fit(reference)
    result = estimator.estimate(analysis)
    seconds = min(seconds, time.perf_counter() - started)
frame = result.filter(period="analysis").to_df()
days = [
    {
        "day": str(pd.Timestamp(row[("chunk", "start_date")]).date()),
        **{m: float(row[(m, "value")]) for m in ["roc_auc", "precision", "recall"]},
    }
    for _, row in frame.iterrows()
]
print(json.dumps({"seconds": seconds, "calibrated": bool(estimator.needs_calibration), "days": days}))
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
) -> tuple[float, float, list[dict]]:
    """Fit (or skip) the calibrator on the reference and estimate every day, `repeats` times: the best
    seconds in all, the best seconds of the fit alone, and the per-day metrics (the same every time)."""
    best, best_fit = float("inf"), float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        calibrator = fit_calibrator(reference["y_pred_proba"], reference["y_true"]) if calibrate else None
        fitted = time.perf_counter()
        days = []
        for day, scores in analysis_days:
            calibrated = calibrator.apply(scores) if calibrator else scores
            estimate = estimate_performance(scores, calibrated=calibrated, threshold=threshold)
            days.append({"day": day, **{m: estimate.metrics()[m] for m in METRICS}})
        best, best_fit = min(best, time.perf_counter() - started), min(best_fit, fitted - started)
    return best, best_fit, days


def largest_gap(kennel: list[dict], nannyml: list[dict]) -> dict[str, float]:
    theirs = {d["day"]: d for d in nannyml}
    assert sorted(theirs) == [d["day"] for d in kennel], "the two sides chunked different days"
    return {m: float(f"{max(abs(d[m] - theirs[d['day']][m]) for d in kennel):.1e}") for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nannyml-python", default=".kennel/bench-nannyml/bin/python")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=5000, help="rows per analysis day")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side; the best is reported")
    args = parser.parse_args()
    load_before = os.getloadavg()
    spec = load_spec("datasets/credit_demo.yaml")

    train = pd.concat(demo_days(spec, 0, 10, 3000, False, 1), ignore_index=True)
    validation = pd.concat(demo_days(spec, 10, 3, 4000, False, 2), ignore_index=True)
    model, trained = train_model(ModelCard.for_spec(spec), train, validation, TrainConfig(device="cpu"))
    threshold = trained.threshold
    reference = pd.DataFrame(
        {
            "timestamp": validation[spec.timestamp_column],
            "y_pred_proba": model.score(validation),
            "y_true": validation["label"],
        }
    ).assign(y_pred=lambda f: (f["y_pred_proba"] >= threshold).astype(int))

    plain = args.days // 3
    frames = demo_days(spec, 13, plain, args.rows, False, 3) + demo_days(
        spec, 13 + plain, args.days - plain, args.rows, True, 4
    )
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
    analysis = pd.concat(chunks, ignore_index=True)

    kennel_s, kennel_fit_s, kennel = kennel_estimates(reference, analysis_days, threshold, True, args.repeats)
    kennel_raw_s, _, kennel_raw = kennel_estimates(reference, analysis_days, threshold, False, args.repeats)
    result: dict = {
        "data": f"demo spec, model trained on 10×3,000 rows, reference = validation 3×4,000 rows; "
        f"{args.days} analysis days × {args.rows:,} rows ({plain} as trained, {args.days - plain} drifted)",
        "threshold": round(threshold, 4),
        f"kennel_s (calibrate + every day, 200 draws; best of {args.repeats})": round(kennel_s, 3),
        "kennel_calibration_fit_s": round(kennel_fit_s, 4),
        "kennel_per_day_ms (estimate with intervals)": round((kennel_s - kennel_fit_s) / args.days * 1e3, 2),
        "estimated_vs_realized_auc_mae (kennel, days as trained)": round(
            float(np.mean([abs(k["roc_auc"] - r["roc_auc"]) for k, r in zip(kennel[:plain], realized[:plain])])), 4
        ),
        "estimated_minus_realized_auc (kennel, drifted days, mean)": round(
            float(np.mean([k["roc_auc"] - r["roc_auc"] for k, r in zip(kennel[plain:], realized[plain:])])), 4
        ),
    }
    python = Path(args.nannyml_python)
    if python.exists():
        forced = run_nannyml(python, reference, analysis, "forced", args.repeats)
        default = run_nannyml(python, reference, analysis, "default", args.repeats)
        result[f"nannyml_forced_calibration_s (fit + estimate; best of {args.repeats})"] = round(forced["seconds"], 3)
        result["nannyml_forced / kennel (time)"] = round(forced["seconds"] / kennel_s, 2)
        result["nannyml_forced_process_s (interpreter start, imports, Parquet)"] = round(forced["process_seconds"], 1)
        result["max_abs_gap vs nannyml, both calibrated"] = largest_gap(kennel, forced["days"])
        result["nannyml_default_calibrated"] = default["calibrated"]
        result["nannyml_default_s"] = round(default["seconds"], 3)
        # Like for like: NannyML's default against Kennel calibrated the way NannyML decided.
        same_s = kennel_s if default["calibrated"] else kennel_raw_s
        result["nannyml_default / kennel (time, kennel calibrated alike)"] = round(default["seconds"] / same_s, 2)
        same_side = kennel if default["calibrated"] else kennel_raw
        result["max_abs_gap vs nannyml default (kennel calibrated alike)"] = largest_gap(same_side, default["days"])
        result["per_day_auc (day realized kennel nannyml_forced)"] = [
            f"{k['day']} {r['roc_auc']:.4f} {k['roc_auc']:.4f} {n['roc_auc']:.4f}"
            for k, r, n in zip(kennel, realized, forced["days"])
        ]
    else:
        result["nannyml"] = f"not run: {python} missing (see this file's docstring)"
    result["kennel_raw_scores_s"] = round(kennel_raw_s, 3)
    result["load average before / after"] = [round(v, 2) for v in (*load_before[:1], os.getloadavg()[0])]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
