"""Benchmark: batch scoring of 1M rows on Spark (local mode) against in-process scoring of the same rows.

    .venv/bin/python bench/batch_scoring.py [--rows 1000000] [--master local[2]] [--partitions 0]

Both sides score the same demo rows (kennel.demo, credit_demo spec) with the same model (trained as
bench/serving.py trains it): Spark through `kennel.serving.batch.score_day` (the service's checks,
encoding, warnings and request ids, written as Parquet and published: everything the batch_scores asset
does but reading the day), in process through `Model.score` on one pandas frame (encoding and
prediction only, one thread: kennel.model.threads). Rows are written as 4 Parquet files first so the
Spark job reads them in parallel. Spark scores them twice (the first run starts the Python workers and
loads the model in each). Prints rows/s of each side, the ratio, the machine and its load average before
and after, then the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

FILES = 4
DAY = "2026-02-01"


def demo_rows(spec, rows: int):  # noqa: ANN001, ANN201
    """`rows` demo records: 100k generated, repeated with fresh ids (generation is slower than scoring)."""
    import numpy as np
    import pandas as pd

    from kennel.demo import generate_frame

    block = generate_frame(spec, date.fromisoformat(DAY), min(rows, 100_000), np.random.default_rng(5))
    copies = -(-rows // len(block))
    frame = pd.concat([block] * copies, ignore_index=True).iloc[:rows]
    frame[spec.id_column] = [f"bench-{i:08d}" for i in range(len(frame))]
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--partitions", type=int, default=0, help="repartition first (0: as the files are read)")
    args = parser.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq
    from serving import train_demo_model

    from kennel.lake import Lake
    from kennel.model import Model
    from kennel.serving.batch import score_day
    from kennel.spark import get_spark

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="kennel-bench-batch-"))
    model_dir = work / "model"
    spec, _ = train_demo_model(model_dir, days=4, rows_per_day=5_000)
    frame = demo_rows(spec, args.rows)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    source = work / "rows"
    source.mkdir()
    step = -(-len(frame) // FILES)
    for i in range(FILES):
        pq.write_table(table.slice(i * step, step), source / f"part-{i}.parquet")

    model = Model.load(model_dir)
    started = time.perf_counter()
    in_process = model.score(frame)
    in_process_s = time.perf_counter() - started

    spark = get_spark(args.master)
    data = Lake(work / "lake").dataset(spec.name)
    runs = []
    # Twice: the first run also starts the Python workers and loads the model in each (a long-running
    # Dagster process's Spark session has them already, so the second run is the steady state).
    for _ in range(2):
        started = time.perf_counter()
        result = score_day(
            spark.read.parquet(str(source)),
            data,
            DAY,
            model_dir=model_dir,
            model_tag="bench:model",
            partitions=args.partitions or None,
        )
        runs.append(time.perf_counter() - started)
    first_s, spark_s = runs
    load_after = os.getloadavg()
    spark.stop()

    rows = len(frame)
    figures = {
        "rows": rows,
        "spark_master": args.master,
        "spark_seconds": round(spark_s, 2),
        "spark_first_run_seconds": round(first_s, 2),
        "spark_rows_per_s": round(rows / spark_s),
        "rows_scored": result.published.rows_scored,
        "rows_rejected": result.published.rows_rejected,
        "in_process_seconds": round(in_process_s, 2),
        "in_process_rows_per_s": round(rows / in_process_s),
        "ratio_spark_to_in_process": round((rows / spark_s) / (rows / in_process_s), 3),
        "mean_score_spark": result.mean_probability,
        "mean_score_in_process": float(in_process.mean()),
        "cpus": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "python": platform.python_version(),
        "load_before": [round(x, 1) for x in load_before],
        "load_after": [round(x, 1) for x in load_after],
    }
    print(
        f"{rows:,} rows: Spark {args.master} {spark_s:.1f} s ({figures['spark_rows_per_s']:,} rows/s, "
        f"{result.published.rows_rejected} rejected; checks, encoding, warnings, ids, Parquet write) vs in "
        f"process Model.score {in_process_s:.1f} s ({figures['in_process_rows_per_s']:,} rows/s): ratio "
        f"{figures['ratio_spark_to_in_process']}"
    )
    print(f"first Spark run (Python workers start, model loads): {first_s:.1f} s")
    print(f"load average before {figures['load_before']}, after {figures['load_after']}; {figures['cpus']} CPUs")
    print(json.dumps(figures))
    return 0 if result.published.rows_scored == rows else 1


if __name__ == "__main__":
    sys.exit(main())
