"""Benchmark: Kennel's drift report vs a plain numpy/scipy loop vs Evidently's DataDriftPreset.

100k reference + 100k current rows × 50 features (40 numeric, 10 categorical; a quarter shifted).
Kennel's profile of the reference is built once at training time, so it is timed separately; the
drift check itself is `compare(profile, current)`. Evidently runs from its own virtualenv (it is a
bench-time extra, not a Kennel dependency):

    # evidently 0.7.23 breaks on pandas 3 (infer_dtype_from_object is gone), hence the pin
    python -m venv .kennel/bench-evidently && .kennel/bench-evidently/bin/pip install evidently==0.7.23 "pandas<3"
    .venv/bin/python bench/drift.py [--evidently-python .kennel/bench-evidently/bin/python]

It also measures the decisions on the demo data (kennel.demo, credit_demo spec): the false-alarm rate (share
of same-distribution day pairs where any model input is flagged drifted) and the detection rate per feature
on the drift scenario, at the given row counts, with and without the significance gate (alpha = 1 leaves
the effect-size floors alone).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kennel.demo.generator import generate_frame  # noqa: E402
from kennel.monitoring.drift import DriftThresholds, build_profile, compare  # noqa: E402
from kennel.spec import FeatureType, load_spec  # noqa: E402

ROWS, NUMERIC, CATEGORICAL = 100_000, 40, 10


def make_data(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def frame(shifted: bool) -> pd.DataFrame:
        cols = {}
        for i in range(NUMERIC):
            shift = 0.5 if shifted and i % 4 == 0 else 0.0
            cols[f"n{i}"] = rng.normal(shift, 1.0 + i / NUMERIC, ROWS)
        for i in range(CATEGORICAL):
            p = np.array([0.5, 0.3, 0.15, 0.05])
            if shifted and i % 4 == 0:
                p = p[::-1]
            cols[f"c{i}"] = rng.choice(["a", "b", "c", "d"], size=ROWS, p=p)
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


def demo_decisions(pairs: int, rows: int) -> dict[str, object]:
    """False alarms on `pairs` same-distribution demo day pairs and detection on as many drifted days,
    `rows` rows each; the reference is another day's profile."""
    spec = load_spec("datasets/credit_demo.yaml")
    numeric = [f.name for f in spec.features if f.type is FeatureType.numeric]
    categorical = [f.name for f in spec.features if f.type is not FeatureType.numeric]
    inputs = [f.name for f in spec.model_features]
    day = date(2026, 1, 1)
    gated, effect_only, found = 0, 0, dict.fromkeys(inputs, 0)
    for i in range(pairs):
        profile = build_profile(generate_frame(spec, day, rows, np.random.default_rng(3 * i)), numeric, categorical)
        same = generate_frame(spec, day, rows, np.random.default_rng(3 * i + 1))
        gated += bool(compare(profile, same, inputs=inputs).drifted)
        effect_only += bool(compare(profile, same, DriftThresholds(alpha=1.0), inputs=inputs).drifted)
        drifted = generate_frame(spec, day, rows, np.random.default_rng(3 * i + 2), drifted=True)
        for f in compare(profile, drifted, inputs=inputs).drifted:
            found[f.feature] += 1
    return {
        "rows (reference = current)": rows,
        "pairs": pairs,
        "false_alarm_rate": gated / pairs,
        "false_alarm_rate_effect_floors_only": effect_only / pairs,
        "detection_rate": {name: n / pairs for name, n in sorted(found.items(), key=lambda kv: -kv[1]) if n},
    }


EVIDENTLY_SCRIPT = """
import sys, time, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    times.append(time.perf_counter() - t)
print(min(times))
"""


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--evidently-python", default=".kennel/bench-evidently/bin/python")
    parser.add_argument("--pairs", type=int, default=100, help="demo day pairs per row count for the decisions")
    parser.add_argument("--decision-rows", type=int, nargs="*", default=[200, 300, 2000])
    args = parser.parse_args()
    ref, cur = make_data()
    numeric = [c for c in ref.columns if c.startswith("n")]
    categorical = [c for c in ref.columns if c.startswith("c")]

    profile_s = best_of(lambda: build_profile(ref, numeric, categorical), args.repeat)
    profile = build_profile(ref, numeric, categorical)
    kennel_s = best_of(lambda: compare(profile, cur), args.repeat)
    loop_s = best_of(lambda: numpy_scipy_loop(ref, cur), args.repeat)
    report = compare(profile, cur)
    result = {
        "rows": f"{ROWS:,} reference + {ROWS:,} current × {NUMERIC + CATEGORICAL} features",
        "kennel_profile_s (once, at training)": round(profile_s, 3),
        "kennel_compare_s": round(kennel_s, 3),
        "numpy_scipy_loop_s": round(loop_s, 3),
        "kennel / loop": round(kennel_s / loop_s, 2),
        "drifted_features_found": sorted(f.feature for f in report.drifted),
    }
    evidently = Path(args.evidently_python)
    if evidently.exists():
        with tempfile.TemporaryDirectory() as tmp:
            ref.to_parquet(f"{tmp}/ref.parquet")
            cur.to_parquet(f"{tmp}/cur.parquet")
            out = subprocess.run(
                [str(evidently), "-c", EVIDENTLY_SCRIPT, f"{tmp}/ref.parquet", f"{tmp}/cur.parquet", str(args.repeat)],
                capture_output=True,
                text=True,
                check=True,
            )
            evidently_s = float(out.stdout.strip().splitlines()[-1])
        result["evidently_data_drift_preset_s"] = round(evidently_s, 3)
        result["evidently / kennel"] = round(evidently_s / kennel_s, 1)
    else:
        result["evidently"] = f"not run: {evidently} missing (see this file's docstring)"
    result["demo_decisions"] = [demo_decisions(args.pairs, rows) for rows in args.decision_rows]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
