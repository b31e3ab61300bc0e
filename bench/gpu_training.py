"""GPU check: the same model trained with device="cuda" and on the CPU, at 1M and 10M rows.

    .venv/bin/python bench/gpu_training.py [--sizes 1000000 10000000] [--rounds 200] [--out DIR]

Prepared for a machine with an NVIDIA GPU (one run, well under 10 minutes on an H200 host with 16
cores). For each size it generates credit_demo rows (kennel.demo, seeded), builds the model frame
(kennel.model.to_model_frame, native categoricals) and trains kennel's parameters
(kennel.training.trainer.model_params, default TrainConfig) for a fixed number of rounds, no early
stopping, so both devices do the same work: first on CUDA, then on the CPU with every core
(nthread = os.cpu_count()). Each timer covers QuantileDMatrix construction and xgboost.train,
separately reported. AUC is measured on 200k held-out rows.

Goal (issue 4): at 1M rows at least 10x faster per iteration on the GPU, AUC within 0.002.

Writes gpu_training.json (and prints a markdown table) to --out (default $OUT, else .kennel/bench).
Refuses to run without a GPU unless --allow-cpu-only (a smoke test of the script itself). Needs only
numpy, pandas, pydantic, PyYAML and a CUDA build of xgboost (no scikit-learn, Spark or Dagster), so it
runs with whatever Python the GPU host has those in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kennel.demo import generate_frame  # noqa: E402
from kennel.model import ModelCard, cuda_available, to_model_frame  # noqa: E402
from kennel.spec import DEFAULT_SPEC_PATH, load_spec  # noqa: E402
from kennel.training.config import TrainConfig  # noqa: E402
from kennel.training.gate import weighted_metric  # noqa: E402
from kennel.training.trainer import model_params  # noqa: E402

CHUNK = 1_000_000


def rows(spec, n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """n generated rows as (model frame, labels), built in chunks of a million."""
    card = ModelCard.for_spec(spec)
    frames, labels = [], []
    for i, start in enumerate(range(0, n, CHUNK)):
        raw = generate_frame(
            spec, pd.Timestamp("2026-01-01").date(), min(CHUNK, n - start), np.random.default_rng(seed * 1000 + i)
        )
        labels.append((raw[spec.label.column].astype(str) == str(spec.label.positive)).to_numpy(dtype=np.float32))
        frames.append(to_model_frame(raw, card))
    return pd.concat(frames, ignore_index=True), np.concatenate(labels)


def train_once(
    x: pd.DataFrame, y: np.ndarray, x_test: pd.DataFrame, y_test: np.ndarray, device: str, rounds: int
) -> dict:
    import xgboost as xgb

    config = TrainConfig(device=device, nthread=os.cpu_count() or 1)
    params = model_params(config, device, float(y.sum()), len(y))
    params["eval_metric"] = ["logloss"]
    started = time.perf_counter()
    dtrain = xgb.QuantileDMatrix(x, label=y, enable_categorical=True)
    built = time.perf_counter()
    booster = xgb.train(params, dtrain, num_boost_round=rounds, verbose_eval=False)
    trained = time.perf_counter()
    booster.set_param({"device": "cpu"})  # score on the CPU for both: the comparison is about training
    scores = np.asarray(booster.inplace_predict(x_test), dtype=np.float64)
    auc = float(weighted_metric("roc_auc", y_test, scores, np.ones((1, len(y_test))))[0])
    return {
        "device": device,
        "dmatrix_seconds": built - started,
        "train_seconds": trained - built,
        "seconds_per_iteration": (trained - built) / rounds,
        "auc": auc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / ".kennel" / "bench"))
    parser.add_argument("--allow-cpu-only", action="store_true", help="run without a GPU (smoke test)")
    args = parser.parse_args()

    has_gpu = cuda_available()  # first: it imports xgboost the way Kennel does (OpenMP settings first)
    import xgboost as xgb

    if not has_gpu and not args.allow_cpu_only:
        sys.exit("no CUDA device visible to XGBoost: this benchmark needs a GPU (or --allow-cpu-only)")
    spec = load_spec(DEFAULT_SPEC_PATH)
    x_test, y_test = rows(spec, 200_000, seed=999)
    results = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "xgboost": xgb.__version__,
        "gpu": has_gpu,
        "rounds": args.rounds,
        "sizes": [],
    }
    for n in args.sizes:
        started = time.perf_counter()
        x, y = rows(spec, n, seed=n % 997)
        print(f"{n:,} rows generated in {time.perf_counter() - started:.0f}s", flush=True)
        runs = [
            train_once(x, y, x_test, y_test, "cuda" if has_gpu else "cpu", args.rounds),
            train_once(x, y, x_test, y_test, "cpu", args.rounds),
        ]
        gpu, cpu = runs
        entry = {
            "rows": n,
            "gpu": gpu,
            "cpu": cpu,
            "per_iteration_speedup": cpu["seconds_per_iteration"] / gpu["seconds_per_iteration"],
            "auc_difference": gpu["auc"] - cpu["auc"],
        }
        results["sizes"].append(entry)
        print(json.dumps(entry), flush=True)
        del x, y

    print(
        "\n| rows | GPU s/iter | CPU s/iter | speedup | GPU AUC | CPU AUC | AUC diff |\n|---|---|---|---|---|---|---|"
    )
    for e in results["sizes"]:
        print(
            f"| {e['rows']:,} | {e['gpu']['seconds_per_iteration']:.4f} | {e['cpu']['seconds_per_iteration']:.4f} | "
            f"{e['per_iteration_speedup']:.1f}x | {e['gpu']['auc']:.4f} | {e['cpu']['auc']:.4f} | "
            f"{e['auc_difference']:+.4f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_training.json").write_text(json.dumps(results, indent=2))
    print(f"saved {args.out / 'gpu_training.json'}")


if __name__ == "__main__":
    main()
