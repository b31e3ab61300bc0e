"""GPU check (issue 13, goal 7): the same model trained with device="cuda" and on every usable CPU core.

    .venv/bin/python bench/gpu_training.py [--sizes 1000000 10000000] [--rounds 200] [--write]
    .venv/bin/python bench/gpu_training.py --quick     # 20k rows, 10 rounds: a look (CI)

Prepared for a machine with an NVIDIA GPU (one run, well under 10 minutes on an H200 host with 16
cores). For each size it generates credit_demo rows (kennel.demo, seeded), builds the model frame
(kennel.model.to_model_frame, native categoricals) and trains kennel's parameters
(kennel.training.trainer.model_params, default TrainConfig) for a fixed number of rounds, no early
stopping, so both devices do the same work: first on CUDA, then on the CPU with one thread per usable
core (kennel.model.threads, wait policy PASSIVE unless set). Each timer covers QuantileDMatrix
construction and xgboost.train, separately reported. AUC is measured on 200k held-out rows (20k in
--quick).

Goal: at 1M rows at least 10x faster per round on the GPU, AUC within 0.002. Without a GPU the goal is
"not decided" and the section says the script was not run; --quick then trains on the CPU twice (a
smoke test of the script itself, so it does not rot).

Results: `.kennel/bench/gpu_training-latest.json` (and a copy in $OUT when set, as on a lent device
machine); --write rewrites the gpu_training section of BENCHMARKS.md. Needs numpy, pandas, pydantic,
PyYAML and a CUDA build of xgboost (no scikit-learn, Spark or Dagster).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.common import (  # noqa: E402
    Goal,
    Results,
    SeriesPoint,
    conditions_line,
    goals_table,
    save_results,
    write_section,
)
from kennel.demo import generate_frame  # noqa: E402
from kennel.model import ModelCard, cuda_available, to_model_frame  # noqa: E402
from kennel.model.threads import usable_cores, wait_policy  # noqa: E402
from kennel.spec import DEFAULT_SPEC_PATH, load_spec  # noqa: E402
from kennel.training.config import TrainConfig  # noqa: E402
from kennel.training.gate import weighted_metric  # noqa: E402
from kennel.training.trainer import model_params  # noqa: E402

CHUNK = 1_000_000
GOAL_SPEEDUP, GOAL_AUC = 10.0, 0.002


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

    config = TrainConfig(device=device, nthread=0)  # 0: one thread per usable core
    params = model_params(config, device, float(y.sum()), len(y))
    params["eval_metric"] = ["logloss"]
    started = time.perf_counter()
    dtrain = xgb.QuantileDMatrix(x, label=y, enable_categorical=True, nthread=params["nthread"])
    built = time.perf_counter()
    booster = xgb.train(params, dtrain, num_boost_round=rounds, verbose_eval=False)
    trained = time.perf_counter()
    booster.set_param({"device": "cpu"})  # score on the CPU for both: the comparison is about training
    scores = np.asarray(booster.inplace_predict(x_test), dtype=np.float64)
    auc = float(weighted_metric("roc_auc", y_test, scores, np.ones((1, len(y_test))))[0])
    return {
        "device": device,
        "nthread": params["nthread"],
        "dmatrix_seconds": built - started,
        "train_seconds": trained - built,
        "seconds_per_round": (trained - built) / rounds,
        "auc": auc,
    }


def render(results: Results) -> str:
    raw = results.raw
    lines = ["## GPU training (bench/gpu_training.py)", "", conditions_line(results), ""]
    if not raw["ran"]:
        lines += [
            f"**Not run**: {raw['why']}. The script is ready for one run on a GPU host (`python "
            "bench/gpu_training.py --write`, well under 10 minutes with 16 cores): it trains the default model "
            "for 200 fixed rounds on CUDA and on every usable CPU core at 1M and 10M rows and compares seconds "
            "per round and the AUC on 200,000 held-out rows."
            + (" The table below is the quick mode's CPU-only smoke run of the script." if results.quick else ""),
            "",
        ]
    lines.append(goals_table(results.goals))
    if raw["entries"]:
        devices = "GPU" if raw["gpu"] else "CPU (smoke run: no GPU)"
        lines += [
            "",
            f"| rows | {devices} s/round | CPU s/round ({raw['cpu_threads']} threads, {raw['wait_policy']}) | "
            f"speed-up | {devices} AUC | CPU AUC | AUC difference |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in raw["entries"]:
            lines.append(
                f"| {e['rows']:,} | {e['gpu']['seconds_per_round']:.4f} | {e['cpu']['seconds_per_round']:.4f} | "
                f"{e['per_round_speedup']:.1f}x | {e['gpu']['auc']:.4f} | {e['cpu']['auc']:.4f} | "
                f"{e['auc_difference']:+.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k rows, 10 rounds; on the CPU without a GPU")
    parser.add_argument("--write", action="store_true", help="rewrite the gpu_training section of BENCHMARKS.md")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args()

    sizes = args.sizes or ([20_000] if args.quick else [1_000_000, 10_000_000])
    rounds = args.rounds or (10 if args.quick else 200)
    has_gpu = cuda_available()  # first: it imports xgboost the way Kennel does (thread policy first)
    results = Results(name="gpu_training", quick=args.quick)
    raw: dict = {
        "gpu": has_gpu,
        "ran": has_gpu,
        "why": "" if has_gpu else "no CUDA device visible to XGBoost on this machine",
        "rounds": rounds,
        "cpu_threads": usable_cores(),
        "wait_policy": wait_policy(),
        "entries": [],
    }
    if has_gpu or args.quick:
        spec = load_spec(DEFAULT_SPEC_PATH)
        x_test, y_test = rows(spec, 20_000 if args.quick else 200_000, seed=999)
        for n in sizes:
            started = time.perf_counter()
            x, y = rows(spec, n, seed=n % 997)
            print(f"{n:,} rows generated in {time.perf_counter() - started:.0f}s", flush=True)
            gpu = train_once(x, y, x_test, y_test, "cuda" if has_gpu else "cpu", rounds)
            cpu = train_once(x, y, x_test, y_test, "cpu", rounds)
            entry = {
                "rows": n,
                "gpu": gpu,
                "cpu": cpu,
                "per_round_speedup": cpu["seconds_per_round"] / gpu["seconds_per_round"],
                "auc_difference": gpu["auc"] - cpu["auc"],
            }
            raw["entries"].append(entry)
            print(json.dumps(entry), flush=True)
            for stage, run in (("gpu training" if has_gpu else "cpu training (smoke)", gpu), ("cpu training", cpu)):
                results.series.append(SeriesPoint(stage, n, run["dmatrix_seconds"] + run["train_seconds"]))
            del x, y
    at_1m = next((e for e in raw["entries"] if e["rows"] == 1_000_000), None)
    if has_gpu and at_1m is not None and not args.quick:
        met = at_1m["per_round_speedup"] >= GOAL_SPEEDUP and abs(at_1m["auc_difference"]) <= GOAL_AUC
        measured = f"{at_1m['per_round_speedup']:.1f}x per round, AUC difference {at_1m['auc_difference']:+.4f}"
        note = ""
    else:
        met, measured = None, "not run" if not has_gpu else "1M rows not in this run"
        note = raw["why"] or ("quick mode" if args.quick else "")
    results.goals = [
        Goal(
            name="GPU: CUDA / every CPU core, seconds per round at 1M rows; AUC",
            target=f"≥ {GOAL_SPEEDUP:.0f}x, AUC within {GOAL_AUC}",
            measured=measured,
            met=met,
            note=note,
        )
    ]
    results.raw = raw
    text = render(results)
    print(text)
    path = save_results(results)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "gpu_training.json").write_text(path.read_text())
        (Path(os.environ["OUT"]) / "gpu_training.md").write_text(text)
    print(f"saved {path}")
    if args.write:
        write_section("gpu_training", text, after="<!-- training:end -->")


if __name__ == "__main__":
    main()
