"""Benchmark: Kennel's drift report vs a plain numpy/scipy loop vs Evidently's DataDriftPreset.

100k reference + 100k current rows × 50 features (40 numeric, 10 categorical; a quarter shifted).
Kennel's profile of the reference is built once at training time, so it is timed separately; the
drift check itself is `compare(profile, current)`. Evidently runs from its own virtualenv (it is a
bench-time extra, not a Kennel dependency):

    # evidently 0.7.23 breaks on pandas 3 (infer_dtype_from_object is gone), hence the pin
    python -m venv .kennel/bench-evidently && .kennel/bench-evidently/bin/pip install evidently==0.7.23 "pandas<3"
    .venv/bin/python bench/drift.py [--evidently-python .kennel/bench-evidently/bin/python]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kennel.monitoring.drift import build_profile, compare  # noqa: E402

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
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
