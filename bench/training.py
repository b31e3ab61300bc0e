"""Benchmark: training and evaluation at the floor. The `model` and `model_evaluation` assets against
the best bare scripts doing the same work, quiet and under a background load; seconds per boosting
round; where scoring on more than one thread starts to pay.

    .venv/bin/python bench/training.py [--rows 200000 1000000] [--repeats 3] [--write]
    .venv/bin/python bench/training.py --quick        # 20k rows, 1 repeat, no load run: a look (CI)
    .venv/bin/python bench/training.py --cluster      # also xgboost.spark on a local standalone cluster

Data: generated credit_demo rows (kennel.demo; 20 model features: 13 numeric, 2 boolean, 5 categorical),
published as the training set the `training_set` asset publishes (validation and test a quarter of the
training rows each). Model: the default TrainConfig (depth 6, learning rate 0.08, 256 bins, up to 400
rounds, early stopping after 30 on validation log loss), on the CPU.

Every measurement runs in its own child process (this script with --child), so each starts with the
OpenMP wait policy it is given (libgomp reads it once, at load) and its peak RSS is its own
(ru_maxrss of os.wait4). Heavy imports (dagster, xgboost, bentoml, pyarrow) happen in the child before
its timer starts: a running code location has them loaded. The timer covers the work only; the CPU
seconds are the child's process time over the same span (all threads).

1. Training. The `model` asset, materialized alone with dg.materialize (its upstream reported as a
   runless materialization), against the best bare script: read Parquet, pandas categoricals,
   QuantileDMatrix, xgboost.train with the same parameters and early stopping, save_model. The bare
   script is swept over threads 1..usable cores x OMP_WAIT_POLICY {PASSIVE, ACTIVE}; the fastest
   configuration is then run alternately with the asset (which chooses its own threads and policy:
   kennel.model.threads). Quiet, then under bench.common.background_load(2), where the sweep is redone.
2. Evaluation. The `model_evaluation` asset (the first model: no champion, so no bootstrap; BentoML
   store save and the gate's sanity checks included) on the model the asset trained, against a bare
   script on the same test rows: read Parquet, score, numpy ROC-AUC, PR-AUC, log loss, Brier, confusion,
   10 calibration bins, per-group selection rate/TPR/FPR/AUC, xgboost pred_contribs on the same 5,000-row
   sample for SHAP, and 200 single-record predictions (the gate's latency check). Swept and alternated
   the same way.
3. Seconds per boosting round at the largest size: 100 rounds without early stopping, depth 6 and 10,
   256 bins, best bare configuration.
4. Prediction threads: inplace_predict and pred_contribs of batches of growing size on one thread and on
   every usable core (PASSIVE), fastest of several calls: where the second thread starts to pay
   (kennel.model.threads.PARALLEL_SCORING_ROWS, PARALLEL_EXPLAINING_ROWS).
5. Where a goal is not met: one cProfile'd asset run per size (top functions by cumulative time) and
   the asset's own training seconds next to its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# What the user set before kennel's thread policy (imported below) fills it in: children get this.
USER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("DAGSTER_TELEMETRY_ENABLED", "False")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

from bench.common import (  # noqa: E402
    Goal,
    Results,
    SeriesPoint,
    background_load,
    conditions_line,
    goals_table,
    load_average,
    median,
    profile_stages,
    ratio,
    save_results,
    spread,
    usable_cores,
    write_section,
)

POLICIES = ("PASSIVE", "ACTIVE")
SHAP_ROWS = 5000  # kennel.training.evaluation.shap_summary's default sample
LATENCY_SAMPLES = 200  # GateConfig.latency_samples
PER_ROUND_ROUNDS = 100
GBM_PERF = (
    "GBM-perf (szilard/GBM-perf): xgboost hist, 1M rows of the airline data, 100 trees of depth 10, "
    "on a 2-core Xeon: ~5.5 s"
)


# --- data -----------------------------------------------------------------------------------------


def publish_training_set(lake_root: Path, rows: int) -> None:
    """train / validation / test Parquet in the features model's shape, published as training_set does."""
    import numpy as np

    from kennel.demo import generate_frame
    from kennel.lake import Lake
    from kennel.spec import DEFAULT_SPEC_PATH, load_spec

    spec = load_spec(DEFAULT_SPEC_PATH)
    data = Lake(lake_root).dataset(spec.name)
    folder = data.training_version_dir("bench")
    folder.mkdir(parents=True, exist_ok=True)
    days = {}
    for i, (split, n) in enumerate({"train": rows, "validation": rows // 4, "test": rows // 4}.items()):
        day = date(2026, 1, 1) + timedelta(days=i)
        frames = []
        for j, start in enumerate(range(0, n, 500_000)):
            frame = generate_frame(spec, day, min(500_000, n - start), np.random.default_rng(100 + 10 * i + j))
            frames.append(frame)
        import pandas as pd

        frame = pd.concat(frames, ignore_index=True)
        frame["label"] = (frame[spec.label.column].astype(str) == str(spec.label.positive)).astype(int)
        frame["event_date"] = day
        frame.to_parquet(folder / f"{split}.parquet", index=False)
        days[split] = [day.isoformat()]
    data.publish_training_set("bench", days)


# --- children: each measurement in its own process --------------------------------------------------


def _spec_and_files(lake_root: Path):
    from kennel.lake import Lake
    from kennel.spec import DEFAULT_SPEC_PATH, load_spec

    spec = load_spec(DEFAULT_SPEC_PATH)
    return spec, Lake(lake_root).dataset(spec.name)


def _bare_matrix(spec, frame):
    """What a hand-written script does: the spec's features, pandas categoricals, float32 numbers."""
    import pandas as pd

    from kennel.spec import FeatureType

    x = pd.DataFrame(index=frame.index)
    for f in spec.model_features:
        if f.type is FeatureType.categorical:
            x[f.name] = pd.Categorical(frame[f.name], categories=list(f.categories))
        else:
            x[f.name] = frame[f.name].astype("float32")
    return x


def child_bare_train(job: dict) -> dict:
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    from kennel.training.config import TrainConfig
    from kennel.training.trainer import model_params

    spec, data = _spec_and_files(Path(job["lake"]))
    config, threads = TrainConfig(device="cpu"), job["threads"]
    started, cpu = time.perf_counter(), time.process_time()
    train, valid = pd.read_parquet(data.training_file("train")), pd.read_parquet(data.training_file("validation"))
    y = train["label"].to_numpy(dtype=np.float32)
    trained = time.perf_counter()
    dtrain = xgb.QuantileDMatrix(_bare_matrix(spec, train), label=y, enable_categorical=True, nthread=threads)
    dvalid = xgb.QuantileDMatrix(
        _bare_matrix(spec, valid),
        label=valid["label"].to_numpy(dtype=np.float32),
        enable_categorical=True,
        ref=dtrain,
        nthread=threads,
    )
    params = {**model_params(config, "cpu", float(y.sum()), len(y)), "nthread": threads}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=config.n_estimators,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=config.early_stopping_rounds,
        verbose_eval=False,
    )
    train_seconds = time.perf_counter() - trained
    booster.save_model(str(Path(job["work"]) / "bare.ubj"))
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "train_seconds": train_seconds,
        "rounds": int(booster.num_boosted_rounds()),
        "best_iteration": int(booster.best_iteration),
    }


# Where an asset's time goes: (file suffix, function) -> stage, read from its cProfile (cumulative seconds).
PROFILE_STAGES = {
    "asset-train": {
        ("dagster/_core/definitions/materialize.py", "materialize"): "whole run (dg.materialize)",
        ("assets/training.py", "train"): "asset body",
        (
            "kennel/training/trainer.py",
            "search_hyperparameters",
        ): "training (QuantileDMatrix, xgboost.train, scoring validation)",
        ("kennel/model/booster.py", "fit"): "of which model frame, QuantileDMatrix, xgboost.train",
        (
            "kennel/monitoring/profile.py",
            "save_monitoring_reference",
        ): "monitoring reference (drift profile, calibrator, SHAP profile)",
        ("kennel/model/card.py", "for_spec"): "model cards",
        ("pandas/io/parquet.py", "read_parquet"): "Parquet reads",
    },
    "asset-eval": {
        ("dagster/_core/definitions/materialize.py", "materialize"): "whole run (dg.materialize)",
        ("assets/training.py", "evaluate_and_gate"): "asset body",
        ("kennel/model/booster.py", "score"): "scoring (all calls)",
        ("kennel/training/evaluation.py", "evaluate"): "metrics, calibration, fairness (all calls)",
        ("kennel/training/evaluation.py", "shap_summary"): "SHAP summary",
        ("kennel/training/gate.py", "decide"): "gate",
        ("kennel/training/gate.py", "single_record_latency_ms"): "of which the latency check",
        ("resources/model_store.py", "save_model"): "BentoML model store",
        ("kennel/model/booster.py", "load"): "model loads (all calls)",
        ("pandas/io/parquet.py", "read_parquet"): "Parquet reads",
    },
}


def _profiled(job: dict, kind: str, call):
    """Run `call()`; with job["profile"], under cProfile, returning the cumulative seconds of
    PROFILE_STAGES[kind] and the top entries too."""
    if not job.get("profile"):
        return call(), None
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    value = profiler.runcall(call)
    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    stages = {stage: round(s, 3) for stage, s in profile_stages(profiler, PROFILE_STAGES[kind]).items()}
    ranked = sorted(entries.items(), key=lambda kv: -kv[1][3])
    top = [
        {"function": f"{Path(path).name}:{line}({name})", "cumulative_s": round(v[3], 3), "own_s": round(v[2], 3)}
        for (path, line, name), v in ranked[:60]
    ]
    return value, {"stages": stages, "top": top}


def child_asset_train(job: dict) -> dict:
    import dagster as dg
    from dagster_pyspark import LazyPySparkResource

    from assets.graph import DatasetGraph
    from assets.training import build_training_assets
    from kennel.model import cuda_available
    from kennel.spark import spark_conf
    from kennel.training.config import TrainConfig
    from resources.lake import LakeResource

    cuda_available()  # imports the model library as kennel does (thread policy first)
    spec, _ = _spec_and_files(Path(job["lake"]))
    graph = DatasetGraph(spec.name)
    model_asset = next(a for a in build_training_assets(spec, graph) if graph.model in a.keys)
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=graph.training_set, metadata={"data_partitions": dg.MetadataValue.json(["2026-01-01"])}
            )
        )

        def materialize():
            return dg.materialize(
                [model_asset],
                instance=instance,
                resources={
                    "lake": LakeResource(root=job["lake"]),
                    "pyspark": LazyPySparkResource(spark_config=spark_conf("local[2]")),
                },
                run_config={
                    "ops": {"model": {"config": TrainConfig(device="cpu").model_dump()}},
                    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                },
            )

        started, cpu = time.perf_counter(), time.process_time()
        result, profile = _profiled(job, "asset-train", materialize)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        assert result.success
        event = instance.get_latest_materialization_event(graph.model)
        meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "train_seconds": meta["train_seconds"],
        "best_iteration": meta["best_iteration"],
        "nthread": meta["params"]["nthread"],
        "model_dir": meta["model_dir"],
        "profile": profile,
    }


def child_asset_eval(job: dict) -> dict:
    import dagster as dg

    from assets.graph import DatasetGraph
    from assets.training import build_training_assets
    from kennel.model import cuda_available
    from resources.lake import LakeResource
    from resources.model_store import ModelStoreResource

    store = ModelStoreResource(home=job["bentoml_home"])
    store.activate()
    import bentoml  # noqa: F401

    import kennel.serving.model_store  # noqa: F401

    cuda_available()
    spec, _ = _spec_and_files(Path(job["lake"]))
    graph = DatasetGraph(spec.name)
    evaluation_asset = next(a for a in build_training_assets(spec, graph) if graph.evaluation in a.keys)
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=graph.model, metadata={"model_dir": dg.MetadataValue.path(job["model_dir"])}
            )
        )

        def materialize():
            return dg.materialize(
                [evaluation_asset],
                instance=instance,
                resources={"lake": LakeResource(root=job["lake"]), "model_store": store},
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )

        started, cpu = time.perf_counter(), time.process_time()
        result, profile = _profiled(job, "asset-eval", materialize)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        assert result.success
        meta = {
            k: v.value
            for k, v in instance.get_latest_materialization_event(
                graph.evaluation
            ).asset_materialization.metadata.items()
        }
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "roc_auc": meta["roc_auc"], "profile": profile}


def _bare_auc(y, s) -> tuple[float, float]:
    """ROC-AUC and average precision from one sort (ties grouped)."""
    import numpy as np

    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    pos = np.add.reduceat(y_sorted, starts)
    neg = np.diff(np.r_[starts, len(s)]) - pos
    total_pos, total_neg = pos.sum(), neg.sum()
    auc = (pos * (total_neg - np.cumsum(neg) + 0.5 * neg)).sum() / (total_pos * total_neg)
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    return float(auc), float((pos * tp / (tp + fp)).sum() / total_pos)


def child_bare_eval(job: dict) -> dict:
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    spec, data = _spec_and_files(Path(job["lake"]))
    threads = job["threads"]
    started, cpu = time.perf_counter(), time.process_time()
    booster = xgb.Booster(model_file=str(Path(job["model_dir"]) / "model.ubj"))
    threshold = json.loads((Path(job["model_dir"]) / "model_card.json").read_text())["threshold"]
    booster.set_param({"nthread": threads})
    test = pd.read_parquet(data.training_file("test"))
    x, y = _bare_matrix(spec, test), test["label"].to_numpy(dtype=np.int64)
    s = np.asarray(booster.inplace_predict(x), dtype=np.float64)
    auc, ap = _bare_auc(y, s)
    p = np.clip(s, 1e-7, 1 - 1e-7)
    metrics = {
        "roc_auc": auc,
        "pr_auc": ap,
        "log_loss": float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean()),
        "brier": float(((s - y) ** 2).mean()),
    }
    pred = s >= threshold
    metrics["confusion"] = np.bincount(2 * y + pred, minlength=4).tolist()
    bins = np.clip((s * 10).astype(int), 0, 9)
    counts = np.bincount(bins, minlength=10)
    with np.errstate(invalid="ignore", divide="ignore"):
        calibration = (
            np.bincount(bins, weights=s, minlength=10) / counts,
            np.bincount(bins, weights=y, minlength=10) / counts,
        )
    for column in spec.sensitive_columns:
        groups = test[column].astype("object").where(test[column].notna(), "(missing)").to_numpy()
        for group in set(groups):
            m = groups == group
            yg, pg = y[m], pred[m]
            metrics[f"{column}={group}"] = (pg.mean(), pg[yg == 1].mean(), pg[yg == 0].mean(), _bare_auc(yg, s[m])[0])
    sample = x.sample(n=min(SHAP_ROWS, len(x)), random_state=0)
    contributions = booster.predict(xgb.DMatrix(sample, enable_categorical=True, nthread=threads), pred_contribs=True)
    mean_abs = np.abs(contributions[:, :-1]).mean(axis=0)
    single = booster.copy()
    single.set_param({"nthread": 1})
    rows = x.iloc[:LATENCY_SAMPLES]
    timings = []
    for i in range(LATENCY_SAMPLES):
        t = time.perf_counter()
        single.inplace_predict(rows.iloc[i : i + 1])
        timings.append(time.perf_counter() - t)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "roc_auc": metrics["roc_auc"],
        "calibration_bins": int(np.isfinite(calibration[0]).sum()),
        "shap_top": float(mean_abs.max()),
        "latency_p95_ms": float(np.percentile(timings, 95) * 1000),
    }


def child_per_round(job: dict) -> dict:
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    spec, data = _spec_and_files(Path(job["lake"]))
    train = pd.read_parquet(data.training_file("train"))
    y = train["label"].to_numpy(dtype=np.float32)
    dtrain = xgb.QuantileDMatrix(
        _bare_matrix(spec, train), label=y, enable_categorical=True, nthread=job["threads"], max_bin=256
    )
    out = {}
    for depth in (6, 10):
        params = {
            "objective": "binary:logistic",
            "tree_method": "hist",
            "max_depth": depth,
            "max_bin": 256,
            "learning_rate": 0.1,
            "nthread": job["threads"],
        }
        started = time.perf_counter()
        xgb.train(params, dtrain, num_boost_round=PER_ROUND_ROUNDS)
        out[f"depth_{depth}"] = (time.perf_counter() - started) / PER_ROUND_ROUNDS
    return {"seconds_per_round": out, "rows": len(train)}


def child_crossover(job: dict) -> dict:
    """Fastest-of-several seconds for batches of growing size, one thread vs every usable core."""
    import pandas as pd
    import xgboost as xgb

    from kennel.model import ModelCard
    from kennel.model.frame import FeatureEncoder

    _, data = _spec_and_files(Path(job["lake"]))
    folder = Path(job["model_dir"])
    card = ModelCard.load(folder)
    matrix = FeatureEncoder(card).encode_frame(pd.read_parquet(data.training_file("test")))
    boosters = {}
    for threads in (1, usable_cores()):
        boosters[threads] = xgb.Booster(model_file=str(folder / "model.ubj"))
        boosters[threads].set_param({"nthread": threads})

    def fastest(call, budget_s: float = 0.3) -> float:
        times, spent = [], 0.0
        while len(times) < 3 or (spent < budget_s and len(times) < 200):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
            spent += times[-1]
        return min(times)

    out: dict[str, list] = {"scoring": [], "explaining": []}
    for rows in [n for n in (100, 1000, 3000, 10_000, 30_000, 100_000) if n <= len(matrix)]:
        batch = matrix[:rows]
        out["scoring"].append(
            [rows, *(fastest(lambda b=b: b.inplace_predict(batch, validate_features=False)) for b in boosters.values())]
        )
    for rows in [n for n in (10, 30, 100, 300, 1000, 3000) if n <= len(matrix)]:
        batch = matrix[:rows]
        out["explaining"].append(
            [
                rows,
                *(
                    fastest(
                        lambda t=t, b=b: b.predict(
                            xgb.DMatrix(batch, feature_types=b.feature_types, enable_categorical=True, nthread=t),
                            pred_contribs=True,
                            validate_features=False,
                        )
                    )
                    for t, b in boosters.items()
                ),
            ]
        )
    return out


CHILDREN = {
    "bare-train": child_bare_train,
    "asset-train": child_asset_train,
    "asset-eval": child_asset_eval,
    "bare-eval": child_bare_eval,
    "per-round": child_per_round,
    "crossover": child_crossover,
}


def run_child(kind: str, job: dict, policy: str | None = None, timeout: float | None = None) -> dict:
    """Run one measurement in a fresh process with OMP_WAIT_POLICY `policy` (None: what the user set, or
    nothing, so kennel chooses); adds the child's peak RSS (MiB) and its CPU seconds from its rusage. A
    child still running after `timeout` seconds is stopped: {"seconds": inf, "stopped_after": timeout}."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy or USER_WAIT_POLICY:
        env["OMP_WAIT_POLICY"] = policy or USER_WAIT_POLICY
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", kind, json.dumps(job)], stdout=out, stderr=err, env=env, cwd=ROOT
        )
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG if deadline else 0)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                return {"seconds": float("inf"), "stopped_after": round(timeout, 1)}
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode:
        raise RuntimeError(f"child {kind} failed ({process.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
    result["child_cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
    return result


# --- measurements ---------------------------------------------------------------------------------


def configurations() -> list[tuple[int, str]]:
    return [(threads, policy) for threads in range(1, usable_cores() + 1) for policy in POLICIES]


def sweep(kind: str, job: dict) -> dict:
    """Each configuration of the bare script once; returns {label: result} and the fastest."""
    runs: dict[str, dict] = {}
    for threads, policy in configurations():
        # A configuration 3x slower than the best so far (OpenMP threads spinning on shared cores can
        # take 10x longer) is stopped there: it cannot be the fastest, and its lower bound is reported.
        fastest = min((r["seconds"] for r in runs.values()), default=float("inf"))
        limit = 3 * fastest + 30 if fastest < float("inf") else None
        result = run_child(kind, {**job, "threads": threads}, policy, limit)
        runs[f"{threads} thread(s), {policy}"] = {**result, "threads": threads, "policy": policy}
        print(f"    {kind} {threads} thread(s) {policy}: {result['seconds']:.2f} s", flush=True)
    best = min(runs, key=lambda label: runs[label]["seconds"])
    return {"runs": runs, "best": best}


def alternate(asset_kind: str, bare_kind: str, job: dict, best: dict, repeats: int) -> dict:
    asset, bare = [], []
    for i in range(repeats):
        asset.append(run_child(asset_kind, job))
        bare.append(run_child(bare_kind, {**job, "threads": best["threads"]}, best["policy"]))
        print(
            f"    repeat {i + 1}: {asset_kind} {asset[-1]['seconds']:.2f} s, {bare_kind} {bare[-1]['seconds']:.2f} s",
            flush=True,
        )
    return {"asset": asset, "bare": bare}


def measure_condition(job: dict, repeats: int, sweep_evaluation: bool) -> dict:
    """Training and evaluation, sweeps and alternations, under whatever load is running. Without
    `sweep_evaluation` the bare evaluation runs with the bare training's best configuration."""
    out: dict[str, Any] = {"load_before": load_average()}
    out["train_sweep"] = sweep("bare-train", job)
    best = out["train_sweep"]["runs"][out["train_sweep"]["best"]]
    out["train"] = alternate("asset-train", "bare-train", job, best, repeats)
    eval_job = {**job, "model_dir": out["train"]["asset"][0]["model_dir"]}
    if sweep_evaluation:
        out["eval_sweep"] = sweep("bare-eval", eval_job)
        best = out["eval_sweep"]["runs"][out["eval_sweep"]["best"]]
    else:
        out["eval_sweep"] = {"runs": {out["train_sweep"]["best"]: best}, "best": out["train_sweep"]["best"]}
    out["eval"] = alternate("asset-eval", "bare-eval", eval_job, best, repeats)
    out["load_after"] = load_average()
    return out


def seconds(runs: list[dict], key: str = "seconds") -> list[float]:
    return [r[key] for r in runs]


# --- the report -----------------------------------------------------------------------------------


def pair_row(label: str, pair: dict, config: str) -> str:
    a, b = seconds(pair["asset"]), seconds(pair["bare"])
    ca, cb = seconds(pair["asset"], "cpu_seconds"), seconds(pair["bare"], "cpu_seconds")
    return (
        f"| {label} | {spread(a)} s | {spread(b)} s ({config}) | {ratio(median(a), median(b)):.2f}x | "
        f"{median(ca):.1f} / {median(cb):.1f} s | {max(seconds(pair['asset'], 'peak_rss_mib')):,.0f} / "
        f"{max(seconds(pair['bare'], 'peak_rss_mib')):,.0f} MiB |"
    )


def sweep_table(sizes: dict) -> str:
    lines = ["| rows | condition | bare script | " + " | ".join(f"{t} thr {p}" for t, p in configurations()) + " |"]
    lines.append("|---|---|---|" + "---|" * len(configurations()))
    for rows, conditions in sizes.items():
        for condition, m in conditions.items():
            for kind in ("train_sweep", "eval_sweep"):
                runs = m[kind]["runs"]
                cells = [
                    f"**{runs[k]['seconds']:.2f} s**"
                    if k == m[kind]["best"]
                    else f"> {runs[k]['stopped_after']:.0f} s (stopped)"
                    if "stopped_after" in runs[k]
                    else f"{runs[k]['seconds']:.2f} s"
                    for k in runs
                ]
                lines.append(f"| {int(rows):,} | {condition} | {kind.split('_')[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def crossover_rows(table: list[list[float]]) -> tuple[str, int | None]:
    """Markdown rows and the smallest batch from which every usable core is ≥10% faster than one thread
    at that size and every larger one."""
    lines, first = [], None
    for rows, one, many in table:
        lines.append(f"| {int(rows):,} | {one * 1000:.2f} ms | {many * 1000:.2f} ms | {many / one:.2f}x |")
    for i, (rows, _, _) in enumerate(table):
        if all(many <= 0.9 * one for _, one, many in table[i:]):
            first = int(rows)
            break
    return "\n".join(lines), first


def render(results: Results) -> str:
    raw, cores = results.raw, usable_cores()
    parts = [
        "## Training and evaluation (bench/training.py; GPU: next section)",
        "",
        conditions_line(results),
        "",
        f"Data: generated credit_demo rows, 20 model features (13 numeric, 2 boolean, 5 categorical, native "
        f"categoricals); validation and test a quarter of the training rows each. Default `TrainConfig` (depth 6, "
        f"learning rate 0.08, 256 bins, up to 400 rounds, early stopping after 30). Every run in its own process; "
        f"heavy imports before the timer. The asset chooses its own threads and wait policy "
        f"(kennel.model.threads: {cores} thread(s), {raw['kennel_wait_policy']}); the bare scripts are swept "
        f"over 1..{cores} threads x PASSIVE/ACTIVE and the fastest is compared. Under load: two CPU-busy "
        f"processes (bench.common.background_load(2)) for the whole condition.",
        "",
        goals_table(results.goals),
        "",
        "| run | asset | best bare script | asset / bare | CPU s asset / bare | peak RSS asset / bare |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for rows, conditions in raw["sizes"].items():
        for condition, m in conditions.items():
            for kind, label in (("train", "`model`"), ("eval", "`model_evaluation`")):
                best = m[f"{kind}_sweep"]["best"]
                parts.append(pair_row(f"{label}, {int(rows):,} rows, {condition}", m[kind], best))
    parts += ["", "Bare-script sweep (seconds, one run each; the fastest in bold):", "", sweep_table(raw["sizes"])]
    if "per_round" in raw:
        pr = raw["per_round"]
        parts += [
            "",
            f"Seconds per boosting round at {pr['rows']:,} rows x 20 features ({PER_ROUND_ROUNDS} rounds, no early "
            f"stopping, 256 bins, {pr['config']}): depth 6 {pr['seconds_per_round']['depth_6']:.4f} s "
            f"({pr['seconds_per_round']['depth_6'] * PER_ROUND_ROUNDS:.1f} s for {PER_ROUND_ROUNDS} rounds), "
            f"depth 10 {pr['seconds_per_round']['depth_10']:.4f} s "
            f"({pr['seconds_per_round']['depth_10'] * PER_ROUND_ROUNDS:.1f} s). Context: {GBM_PERF} (0.055 s a round; "
            f"other data, fewer raw features).",
        ]
    if "crossover" in raw:
        c = raw["crossover"]
        scoring, first_scoring = crossover_rows(c["scoring"])
        explaining, first_explaining = crossover_rows(c["explaining"])
        parts += [
            "",
            f"Prediction threads (quiet, PASSIVE, fastest of several calls; 1 thread vs {cores}): scoring with "
            f"`inplace_predict` pays from {first_scoring or 'no measured size'} rows (kennel: "
            f"PARALLEL_SCORING_ROWS = {raw['thresholds']['scoring']:,}), contributions (`pred_contribs`) from "
            f"{first_explaining or 'no measured size'} rows (PARALLEL_EXPLAINING_ROWS = "
            f"{raw['thresholds']['explaining']:,}).",
            "",
            f"| batch rows | 1 thread | {cores} threads | ratio |",
            "|---:|---:|---:|---:|",
            "| **scoring** | | | |",
            scoring,
            "| **contributions** | | | |",
            explaining,
        ]
    if raw.get("profiles"):
        parts += [
            "",
            "Where the assets' time goes (one cProfile'd run each, quiet; cumulative seconds, nested stages overlap):",
            "",
        ]
        for label, profile in raw["profiles"].items():
            stages = "; ".join(f"{stage} {value:.2f} s" for stage, value in profile["stages"].items())
            parts.append(f"- {label}: {stages}.")
    if "spark_vs_native" in raw:
        s = raw["spark_vs_native"]
        parts += [
            "",
            f"xgboost.spark (standalone master + 2 workers, 1 core each) fit {s['cluster']['fit_seconds']:.1f} s "
            f"against native train_seconds {s['native']['train_seconds']:.1f} s: {s['fit_ratio']:.2f}x "
            f"(validation AUC {s['cluster']['validation_auc']:.4f} / {s['native']['validation_auc']:.4f}).",
        ]
    return "\n".join(parts)


def goals(raw: dict, quick: bool) -> list[Goal]:
    out = []

    def decided(value: bool) -> bool | None:
        return None if quick else value

    for rows, conditions in raw["sizes"].items():
        quiet, loaded = conditions.get("quiet"), conditions.get("under load")
        for kind, label in (("train", "`model` asset"), ("eval", "`model_evaluation` asset")):
            for condition, m in (("quiet", quiet), ("under load", loaded)):
                if m is None:
                    continue
                a, b = median(seconds(m[kind]["asset"])), median(seconds(m[kind]["bare"]))
                out.append(
                    Goal(
                        name=f"{label} / best bare script, {int(rows):,} rows, {condition}",
                        target="≤ 1.1x",
                        measured=f"{a / b:.2f}x ({a:.2f} s / {b:.2f} s)",
                        met=decided(a / b <= 1.1),
                        note=raw.get("notes", {}).get(f"{kind}-{rows}-{condition}", ""),
                    )
                )
            if quiet and loaded:
                q, u = median(seconds(quiet[kind]["asset"])), median(seconds(loaded[kind]["asset"]))
                out.append(
                    Goal(
                        name=f"{label} under load / quiet, {int(rows):,} rows",
                        target="≤ 2.5x (fair share 2x)",
                        measured=f"{u / q:.2f}x ({u:.2f} s / {q:.2f} s)",
                        met=decided(u / q <= 2.5),
                    )
                )
    return out


def explain_shortfalls(raw: dict) -> None:
    """For ratios over 1.1x: what the asset's profile (same size, quiet) says the extra time is."""
    notes = {}
    for rows, conditions in raw["sizes"].items():
        for kind, label in (("train", "`model`"), ("eval", "`model_evaluation`")):
            profile = raw["profiles"].get(f"{label}, {int(rows):,} rows")
            for condition, m in conditions.items():
                a, b = median(seconds(m[kind]["asset"])), median(seconds(m[kind]["bare"]))
                if a / b <= 1.1 or profile is None:
                    continue
                stages = profile["stages"]
                body = "asset body"
                main = [
                    k for k in stages if k not in ("whole run (dg.materialize)", body) and not k.startswith("of which")
                ]
                top = sorted(main, key=lambda k: -stages[k])[:3]
                outside = stages["whole run (dg.materialize)"] - stages[body]
                notes[f"{kind}-{rows}-{condition}"] = (
                    f"quiet profile ({profile['seconds']:.1f} s run): "
                    + ", ".join(f"{k} {stages[k]:.1f} s" for k in top)
                    + f"; run bookkeeping outside the asset body {outside:.1f} s"
                )
    raw["notes"] = notes


# --- main -----------------------------------------------------------------------------------------


def cluster_comparison(lake: Path, work: Path) -> dict:
    """xgboost.spark on a local standalone cluster against native training (behind --cluster: minutes)."""
    import pandas as pd

    from kennel.model import ModelCard
    from kennel.spark import local_standalone_cluster
    from kennel.spec import DEFAULT_SPEC_PATH
    from kennel.training.config import TrainConfig
    from kennel.training.trainer import train_model

    spec, data = _spec_and_files(lake)
    config = TrainConfig(device="cpu")
    train, valid = pd.read_parquet(data.training_file("train")), pd.read_parquet(data.training_file("validation"))
    _, native = train_model(ModelCard.for_spec(spec), train, valid, config)
    folder = data.training_file("train").parent
    with local_standalone_cluster(work / "cluster", workers=2, cores=1, memory="2g") as master:
        command = [sys.executable, "-m", "kennel.training.distributed", "--master", master]
        command += ["--training-dir", str(folder), "--out", str(work / "cluster-model")]
        command += ["--spec", str(DEFAULT_SPEC_PATH), "--config", config.model_dump_json()]
        run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if run.returncode:
        raise RuntimeError(run.stderr[-3000:])
    cluster = json.loads((work / "cluster-model" / "train_result.json").read_text())
    return {
        "native": {"train_seconds": native.train_seconds, "validation_auc": native.validation_auc},
        "cluster": {"fit_seconds": cluster["train_seconds"], "validation_auc": cluster["validation_auc"]},
        "fit_ratio": cluster["train_seconds"] / native.train_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k rows, 1 repeat, no load run (CI)")
    parser.add_argument("--write", action="store_true", help="rewrite the training section of BENCHMARKS.md")
    parser.add_argument("--rows", type=int, nargs="+", help="training row counts (default 200000 1000000)")
    parser.add_argument("--repeats", type=int, help="alternating asset/bare repeats (default 3)")
    parser.add_argument("--no-load", action="store_true", help="skip the under-load condition")
    parser.add_argument("--cluster", action="store_true", help="also xgboost.spark vs native (minutes)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, job = args.child
        print(json.dumps(CHILDREN[kind](json.loads(job)), default=float))
        return

    from kennel.model import threads

    sizes = args.rows or ([20_000] if args.quick else [200_000, 1_000_000])
    repeats = args.repeats or (1 if args.quick else 3)
    results = Results(name="training", quick=args.quick)
    raw: dict[str, Any] = {
        "sizes": {},
        "repeats": repeats,
        "kennel_wait_policy": USER_WAIT_POLICY or threads.WAIT_POLICY,
        "thresholds": {"scoring": threads.PARALLEL_SCORING_ROWS, "explaining": threads.PARALLEL_EXPLAINING_ROWS},
        "profiles": {},
    }
    with tempfile.TemporaryDirectory(prefix="kennel-bench-training-") as tmp:
        for rows in sizes:
            work = Path(tmp) / str(rows)
            lake = work / "lake"
            started = time.perf_counter()
            publish_training_set(lake, rows)
            print(
                f"{rows:,} training rows (+{rows // 4:,} validation, test) in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            job = {"lake": str(lake), "work": str(work), "bentoml_home": str(work / "bentoml")}
            conditions = {}
            print("  quiet", flush=True)
            conditions["quiet"] = measure_condition(job, repeats, not args.quick)
            if not (args.quick or args.no_load):
                print("  under load", flush=True)
                with background_load(2):
                    conditions["under load"] = measure_condition(job, repeats, True)
            raw["sizes"][str(rows)] = conditions
            quiet = conditions["quiet"]
            model_dir = quiet["train"]["asset"][0]["model_dir"]
            for stage, runs in (
                ("model asset", quiet["train"]["asset"]),
                ("bare train", quiet["train"]["bare"]),
                ("model_evaluation", quiet["eval"]["asset"]),
                ("bare evaluation", quiet["eval"]["bare"]),
            ):
                results.series.append(
                    SeriesPoint(stage, rows, median(seconds(runs)), max(seconds(runs, "peak_rss_mib")))
                )
            if not args.quick:
                for kind, label in (("asset-train", "`model`"), ("asset-eval", "`model_evaluation`")):
                    profiled = run_child(kind, {**job, "model_dir": model_dir, "profile": True})
                    raw["profiles"][f"{label}, {rows:,} rows"] = {"seconds": profiled["seconds"], **profiled["profile"]}
            if rows == max(sizes):
                best = quiet["train_sweep"]["runs"][quiet["train_sweep"]["best"]]
                per_round = run_child("per-round", {**job, "threads": best["threads"]}, best["policy"])
                raw["per_round"] = {**per_round, "config": quiet["train_sweep"]["best"]}
                if usable_cores() > 1:
                    raw["crossover"] = run_child("crossover", {**job, "model_dir": model_dir}, "PASSIVE")
            if args.cluster:
                raw["spark_vs_native"] = cluster_comparison(lake, work)
    explain_shortfalls(raw)
    results.raw = raw
    results.goals = goals(raw, args.quick)
    results.load_after = load_average()
    text = render(results)
    print(text)
    path = save_results(results)
    print(f"saved {path}")
    if args.write:
        write_section("training", text)


if __name__ == "__main__":
    main()
