"""Benchmark: the `model` asset against a bare xgboost.train script, and xgboost.spark on a local
standalone cluster against single-node training, on the same data and parameters.

    .venv/bin/python bench/training.py [--rows 400000] [--repeats 3] [--skip-cluster]

Data: generated credit_demo rows (kennel.demo), written as train/validation/test Parquet the way the
training_set asset writes them (validation and test are a quarter of --rows each).

1. Asset vs bare script (goal ≤ 1.1x). The asset is materialized alone with dg.materialize in an
   ephemeral Dagster instance (its upstream training_set reported as a runless materialization) and
   timed around the whole call: run start, Parquet reads, model frame, QuantileDMatrix, training with
   early stopping, best-iteration slice, threshold, files, metadata, run end. The bare script is what
   one writes by hand: read Parquet, pandas categoricals from the spec, QuantileDMatrix, xgboost.train
   with the same params (kennel.training.trainer.model_params) and early stopping, save_model. Heavy
   imports are done before either timer starts. The two alternate; medians of --repeats are compared,
   in wall time and in CPU time of this process (all threads; steadier than wall time on a shared
   machine).
2. xgboost.spark vs native (goal ≤ 2x). A standalone master + 2 workers (1 core, 2 GB each) on
   127.0.0.1; `python -m kennel.training.distributed` trains with num_workers=2 in its own driver process.
   Compared: the fit time (SparkXGBClassifier.fit, reading Parquet and shuffling into 2 partitions
   included) with the native train_seconds (model frame excluded, QuantileDMatrix and training
   included), and the driver's whole wall time (JVM and session start included). Both early-stop on
   the same validation rows; the rounds they reach are printed, and seconds per round too.

Results are printed as markdown and saved as JSON under .kennel/bench/training-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DAGSTER_TELEMETRY_ENABLED", "False")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kennel.demo import generate_frame  # noqa: E402
from kennel.lake import Lake  # noqa: E402
from kennel.spec import DEFAULT_SPEC_PATH, FeatureType, load_spec  # noqa: E402
from kennel.training.config import TrainConfig  # noqa: E402


def write_training_set(spec, folder: Path, rows: int) -> None:
    """train / validation / test Parquet in the features model's shape (label 0/1, event_date)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": rows, "validation": rows // 4, "test": rows // 4}
    for i, (split, n) in enumerate(sizes.items()):
        day = date(2026, 1, 1) + timedelta(days=i)
        frame = generate_frame(spec, day, n, np.random.default_rng(100 + i))
        frame["label"] = (frame[spec.label.column].astype(str) == str(spec.label.positive)).astype(int)
        frame["event_date"] = day
        frame.to_parquet(folder / f"{split}.parquet", index=False)


def bare_script(spec, folder: Path, out: Path, config: TrainConfig) -> tuple[float, float]:
    """The hand-written baseline; returns its (wall, CPU) seconds."""
    import xgboost as xgb

    from kennel.training.trainer import model_params

    started, cpu = time.perf_counter(), time.process_time()

    def matrix(frame: pd.DataFrame) -> pd.DataFrame:
        x = pd.DataFrame(index=frame.index)
        for f in spec.model_features:
            if f.type is FeatureType.categorical:
                x[f.name] = pd.Categorical(frame[f.name], categories=list(f.categories))
            else:
                x[f.name] = frame[f.name].astype("float32")
        return x

    train, valid = pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "validation.parquet")
    y = train["label"].to_numpy(dtype=np.float32)
    dtrain = xgb.QuantileDMatrix(matrix(train), label=y, enable_categorical=True)
    dvalid = xgb.QuantileDMatrix(
        matrix(valid), label=valid["label"].to_numpy(dtype=np.float32), enable_categorical=True, ref=dtrain
    )
    booster = xgb.train(
        model_params(config, "cpu", float(y.sum()), len(y)),
        dtrain,
        num_boost_round=config.n_estimators,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=config.early_stopping_rounds,
        verbose_eval=False,
    )
    booster.save_model(str(out / "bare.ubj"))
    return time.perf_counter() - started, time.process_time() - cpu


def asset_run(spec, lake_root: Path, config: TrainConfig) -> tuple[float, float, dict]:
    """Materialize the model asset alone (in this process); returns (wall, CPU) seconds of the
    dg.materialize call and the asset's metadata."""
    import dagster as dg
    from dagster_pyspark import LazyPySparkResource

    from assets.graph import DatasetGraph
    from assets.training import build_training_assets
    from kennel.spark import spark_conf
    from resources.lake import LakeResource

    graph = DatasetGraph(spec.name)
    model_asset = next(a for a in build_training_assets(spec, graph) if graph.model in a.keys)
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=graph.training_set, metadata={"data_partitions": dg.MetadataValue.json(["2026-01-01"])}
            )
        )
        started, cpu = time.perf_counter(), time.process_time()
        result = dg.materialize(
            [model_asset],
            instance=instance,
            resources={
                "lake": LakeResource(root=str(lake_root)),
                "pyspark": LazyPySparkResource(spark_config=spark_conf("local[2]")),
            },
            run_config={
                "ops": {"model": {"config": config.model_dump()}},
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            },
        )
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        assert result.success
        event = instance.get_latest_materialization_event(graph.model)
        meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    return seconds, cpu_seconds, meta


def native_train(spec, folder: Path, config: TrainConfig) -> dict:
    from kennel.model import ModelCard
    from kennel.training.trainer import train_model

    train, valid = pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "validation.parquet")
    _, result = train_model(ModelCard.for_spec(spec), train, valid, config)
    return {
        "train_seconds": result.train_seconds,
        "best_iteration": result.best_iteration,
        "validation_auc": result.validation_auc,
    }


def cluster_train(spec_path: Path, folder: Path, work: Path, config: TrainConfig) -> dict:
    from kennel.spark import local_standalone_cluster

    with local_standalone_cluster(work / "cluster", workers=2, cores=1, memory="2g") as master:
        started = time.perf_counter()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "kennel.training.distributed",
                "--master",
                master,
                "--training-dir",
                str(folder),
                "--out",
                str(work / "cluster-model"),
                "--spec",
                str(spec_path),
                "--config",
                config.model_dump_json(),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=3600,
        )
        wall = time.perf_counter() - started
    if run.returncode:
        causes = [line for line in run.stderr.splitlines() if "Error" in line or "Exception" in line]
        raise RuntimeError("\n".join(causes[:20]) or run.stderr[-3000:])
    result = json.loads((work / "cluster-model" / "train_result.json").read_text())
    return {
        "fit_seconds": result["train_seconds"],
        "driver_wall_seconds": round(wall, 2),
        "best_iteration": result["best_iteration"],
        "validation_auc": result["validation_auc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000, help="training rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()

    import dagster  # noqa: F401  (imports before the timers: a running code location has them loaded)
    import sklearn  # noqa: F401
    import xgboost  # noqa: F401

    spec = load_spec(DEFAULT_SPEC_PATH)
    config = TrainConfig(device="cpu")
    results: dict = {
        "rows": args.rows,
        "config": config.model_dump(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="kennel-bench-") as tmp:
        work = Path(tmp)
        lake = work / "lake"
        folder = Lake(lake).dataset(spec.name).training_dir()
        started = time.perf_counter()
        write_training_set(spec, folder, args.rows)
        print(
            f"data: {args.rows:,} train rows (+{args.rows // 4:,} validation, test) in "
            f"{time.perf_counter() - started:.0f}s",
            flush=True,
        )

        asset_times, bare_times, asset_cpu, bare_cpu, meta = [], [], [], [], {}
        for i in range(args.repeats):
            seconds, cpu, meta = asset_run(spec, lake, config)
            asset_times.append(seconds)
            asset_cpu.append(cpu)
            seconds, cpu = bare_script(spec, folder, work, config)
            bare_times.append(seconds)
            bare_cpu.append(cpu)
            print(
                f"  repeat {i + 1}: asset {asset_times[-1]:.2f}s ({asset_cpu[-1]:.2f}s CPU), "
                f"bare {bare_times[-1]:.2f}s ({bare_cpu[-1]:.2f}s CPU)",
                flush=True,
            )
        results["asset_vs_bare"] = {
            "asset_seconds": asset_times,
            "bare_seconds": bare_times,
            "asset_cpu_seconds": asset_cpu,
            "bare_cpu_seconds": bare_cpu,
            "asset_median": statistics.median(asset_times),
            "bare_median": statistics.median(bare_times),
            "ratio": statistics.median(asset_times) / statistics.median(bare_times),
            "cpu_ratio": statistics.median(asset_cpu) / statistics.median(bare_cpu),
            "best_iteration": meta.get("best_iteration"),
            "asset_train_seconds": meta.get("train_seconds"),
        }
        if not args.skip_cluster:
            native = native_train(spec, folder, config)
            print(f"  native: {native}", flush=True)
            cluster = cluster_train(DEFAULT_SPEC_PATH, folder, work, config)
            print(f"  cluster: {cluster}", flush=True)
            results["spark_vs_native"] = {
                "native": native,
                "cluster": cluster,
                "fit_ratio": cluster["fit_seconds"] / native["train_seconds"],
                "per_round_ratio": (
                    cluster["fit_seconds"] / (cluster["best_iteration"] + 1 + config.early_stopping_rounds)
                )
                / (native["train_seconds"] / (native["best_iteration"] + 1 + config.early_stopping_rounds)),
            }
    results["load_average_at_end"] = os.getloadavg()

    a = results["asset_vs_bare"]
    print("\n| measurement | value |\n|---|---|")
    print(f"| model asset (dg.materialize, median of {args.repeats}) | {a['asset_median']:.2f} s |")
    print(f"| bare xgboost.train script (median of {args.repeats}) | {a['bare_median']:.2f} s |")
    print(f"| ratio asset / bare, wall (goal ≤ 1.1) | {a['ratio']:.2f} |")
    print(
        f"| CPU seconds asset / bare (medians) | {statistics.median(a['asset_cpu_seconds']):.2f} / "
        f"{statistics.median(a['bare_cpu_seconds']):.2f} = {a['cpu_ratio']:.2f} |"
    )
    if "spark_vs_native" in results:
        s = results["spark_vs_native"]
        native, cluster = s["native"], s["cluster"]
        print(f"| native train_seconds (best iteration {native['best_iteration']}) | {native['train_seconds']:.2f} s |")
        print(
            f"| xgboost.spark fit, 2 workers (best iteration {cluster['best_iteration']}) "
            f"| {cluster['fit_seconds']:.2f} s |"
        )
        print(f"| xgboost.spark driver wall (JVM + session + fit) | {s['cluster']['driver_wall_seconds']:.2f} s |")
        print(f"| ratio spark fit / native (goal ≤ 2) | {s['fit_ratio']:.2f} (per round {s['per_round_ratio']:.2f}) |")
        print(f"| validation AUC native / spark | {native['validation_auc']:.4f} / {cluster['validation_auc']:.4f} |")
    print(f"\nload average start {results['load_average_at_start']}, end {results['load_average_at_end']}")
    out = ROOT / ".kennel" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"training-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
