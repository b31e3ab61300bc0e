"""Benchmark: batch scoring on Spark (local mode) against in-process scoring of the same rows.

    .venv/bin/python bench/batch_scoring.py --quick     # 20,000 rows: a look, asserts nothing
    .venv/bin/python bench/batch_scoring.py             # 100,000 and 1,000,000 rows (~5 minutes on 2 cores)
    .venv/bin/python bench/batch_scoring.py --write     # ... and rewrite its BENCHMARKS.md section
    .venv/bin/python bench/batch_scoring.py --rows 1000000 --master 'local[2]' --partitions 0

All sides score the same demo rows (kennel.demo, credit_demo spec) with the same model (trained as
bench/serving.py trains it): Spark through `kennel.serving.batch.score_day` (the service's checks,
encoding, warnings and request ids, written as Parquet and published: everything the batch_scores asset
does but reading the day); in process through `Model.score` on one pandas frame (encoding and
prediction only, one thread: kennel.model.threads), and through `BatchScorer.score` on one Arrow table
(what each Spark task runs: checks, encoding, prediction, warnings, request ids; no Spark). Rows are
written as 4 Parquet files first so the Spark job reads them in parallel. Spark's first run starts the
Python workers and loads the model in each (a long-running Dagster process's Spark session has them
already), so it is reported apart; the steady state is the runs after it. No goal: the ratio of Spark's
steady state to in-process `Model.score` is reported.
"""

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

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

FILES = 4
DAY = "2026-02-01"
MODEL_TAG = "bench:model"


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


@dataclass
class SizeRun:
    """One data size: every repetition's seconds per path, and what each side scored."""

    rows: int
    in_process: list[float] = field(default_factory=list)
    batch_scorer: list[float] = field(default_factory=list)
    spark: list[float] = field(default_factory=list)
    spark_first: float | None = None  # only for the size Spark's workers started on
    rows_scored: int = 0
    rows_rejected: int = 0
    mean_score_spark: float = 0.0
    mean_score_in_process: float = 0.0


def timed(fn, repeat: int) -> tuple[list[float], object]:  # noqa: ANN001
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return times, out


def rows_per_s(rows: int, seconds: list[float]) -> str:
    return f"{rows / median(seconds):,.0f}"


def detail_table(runs: list[SizeRun]) -> str:
    lines = ["| rows | path | time, s | rows/s | throughput against `Model.score` |", "|---:|---|---:|---:|---:|"]
    for run in runs:
        base = median(run.in_process)
        paths = [
            (
                "Spark batch scoring, steady state: checks, encoding, scoring, warnings, request ids, Parquet write, "
                "publish",
                run.spark,
            ),
            (
                "in-process `BatchScorer.score` on one Arrow table (what a Spark task runs, without Spark)",
                run.batch_scorer,
            ),
            ("in-process `Model.score` (encoding and prediction only)", run.in_process),
        ]
        for path, seconds in paths:
            lines.append(
                f"| {run.rows:,} | {path} | {spread(seconds, 2)} | {rows_per_s(run.rows, seconds)} "
                f"| {base / median(seconds):.2f}x |"
            )
        if run.spark_first is not None:
            lines.append(
                f"| {run.rows:,} | Spark, first run (Python workers start and load the model) | {run.spark_first:.2f} "
                "| – | – |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 rows, a small model; asserts nothing")
    parser.add_argument("--write", action="store_true", help="rewrite the batch-scoring section of BENCHMARKS.md")
    parser.add_argument("--rows", type=int, nargs="*", help="rows to score (default 100000 1000000; quick 20000)")
    parser.add_argument("--repeat", type=int, help="timed runs per path after Spark's first (default 3; quick 2)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--partitions", type=int, default=0, help="repartition first (0: as the files are read)")
    args = parser.parse_args(argv)
    sizes = sorted(args.rows or ([20_000] if args.quick else [100_000, 1_000_000]))
    repeat = max(1, args.repeat or (2 if args.quick else 3))
    train_days, train_rows = (2, 2_000) if args.quick else (4, 5_000)
    results = Results(name="batch-scoring", quick=args.quick)

    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.serving import train_demo_model
    from kennel.lake import Lake
    from kennel.model import Model
    from kennel.serving.batch import BatchScorer, score_day
    from kennel.serving.request_ids import KEY_BYTES, RequestIds
    from kennel.spark import get_spark

    runs: list[SizeRun] = []
    with tempfile.TemporaryDirectory(prefix="kennel-bench-batch-") as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        spec, _ = train_demo_model(model_dir, days=train_days, rows_per_day=train_rows)
        model = Model.load(model_dir)
        scorer = BatchScorer(model, spec)
        ids = RequestIds(os.urandom(KEY_BYTES))
        data = Lake(work / "lake").dataset(spec.name)
        spark = get_spark(args.master)
        try:
            for rows in sizes:
                frame = demo_rows(spec, rows)
                table = pa.Table.from_pandas(frame, preserve_index=False)
                source = work / f"rows-{rows}"
                source.mkdir()
                step = -(-len(frame) // FILES)
                for i in range(FILES):
                    pq.write_table(table.slice(i * step, step), source / f"part-{i}.parquet")

                run = SizeRun(rows)
                run.in_process, scores = timed(lambda frame=frame: model.score(frame), repeat)
                run.mean_score_in_process = float(scores.mean())
                run.batch_scorer, _ = timed(
                    lambda table=table: scorer.score(table, ids=ids, model_tag=MODEL_TAG, at=time.time()), repeat
                )

                def on_spark(source: Path = source):  # noqa: ANN202
                    return score_day(
                        spark.read.parquet(str(source)),
                        data,
                        DAY,
                        model_dir=model_dir,
                        model_tag=MODEL_TAG,
                        partitions=args.partitions or None,
                    )

                if not runs:
                    first, _ = timed(on_spark, 1)
                    run.spark_first = first[0]
                run.spark, scored = timed(on_spark, repeat)
                run.rows_scored, run.rows_rejected = scored.published.rows_scored, scored.published.rows_rejected
                run.mean_score_spark = scored.mean_probability
                runs.append(run)
                print(
                    f"{rows:,} rows: Spark {args.master} {spread(run.spark)} s ({rows_per_s(rows, run.spark)} rows/s, "
                    f"{run.rows_rejected} rejected), BatchScorer {spread(run.batch_scorer)} s, Model.score "
                    f"{spread(run.in_process)} s ({rows_per_s(rows, run.in_process)} rows/s)"
                    + (f"; first Spark run {run.spark_first:.1f} s" if run.spark_first is not None else ""),
                    flush=True,
                )
                for stage, seconds in (
                    ("Spark batch scoring (steady state)", run.spark),
                    ("in-process BatchScorer.score", run.batch_scorer),
                    ("in-process Model.score", run.in_process),
                ):
                    results.series.extend(SeriesPoint(stage, rows, s) for s in seconds)
                if run.spark_first is not None:
                    results.series.append(SeriesPoint("Spark first run (workers start)", rows, run.spark_first))
        finally:
            spark.stop()
            ids.close()

    largest = runs[-1]
    spark_s, in_process_s = median(largest.spark), median(largest.in_process)
    results.goals.append(
        Goal(
            name=f"batch scoring: Spark {args.master} steady state / in-process `Model.score`, rows/s, "
            f"{largest.rows:,} rows",
            target="reported (no goal)",
            measured=f"{in_process_s / spark_s:.2f}x ({rows_per_s(largest.rows, largest.spark)} / "
            f"{rows_per_s(largest.rows, largest.in_process)} rows/s; {spark_s:.2f} s / {in_process_s:.2f} s)",
            met=None,
            note="reported",
        )
    )
    results.raw = {
        "master": args.master,
        "partitions": args.partitions,
        "repeat": repeat,
        "sizes": [r.__dict__ for r in runs],
    }
    save_results(results)

    same = all(abs(r.mean_score_spark - r.mean_score_in_process) < 1e-9 for r in runs)
    means = "; ".join(f"{r.rows:,} rows: {r.mean_score_spark!r} / {r.mean_score_in_process!r}" for r in runs)
    text = "\n\n".join(
        [
            "## Batch scoring (bench/batch_scoring.py)",
            conditions_line(results),
            goals_table(results.goals),
            f"Generated credit_demo rows, a demo model (trained on {train_days} days × {train_rows:,} rows), Spark "
            f"`{args.master}` reading {FILES} Parquet files, {repeat} timed runs per path after Spark's first: median "
            "(min–max). The in-process `BatchScorer.score` row shows how much of Spark's cost is the service's own "
            "work per row (checks, warnings, request ids) rather than Spark's (tasks, Arrow transfer to the Python "
            "workers, Parquet write, publish).",
            detail_table(runs),
            f"Mean scores, Spark / in process: {'identical' if same else 'DIFFERENT'} ({means}). Rows scored by "
            f"Spark: {', '.join(f'{r.rows_scored:,} of {r.rows:,}' for r in runs)}; rejected: "
            f"{', '.join(f'{r.rows_rejected:,}' for r in runs)}.",
        ]
    )
    print(text)
    if args.write:
        write_section("batch-scoring", text)
    return 0 if all(r.rows_scored == r.rows for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
