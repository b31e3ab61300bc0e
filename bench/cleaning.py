"""Benchmark: Spark cleaning + GX validation throughput, and the GX suite against one fused df.agg.

    .venv/bin/python bench/cleaning.py [--rows 1000000] [--days 10] [--repeats 3]

1. Cleaning + validation of one partition of --rows rows (the demo's corrupt scenario: ~4 % bad rows
   of every reason, CSV), timed as clean_partition (read, type, reason rules, dedupe, write clean and
   quarantine Parquet, count) and then validate_dataframe on the written clean table (cached, as the
   clean_records asset does). Spark local[2], session already started.
2. The GX suite against one fused `df.agg(...)` computing the same statistics on the same cached
   DataFrame: null counts of the required columns, out-of-set and out-of-range counts, distinct ids
   against the row count, the row count (goal: GX at most 2x the fused query). Medians of --repeats.
3. A run of --days small partitions (--rows / 100 rows each): per day, cleaning vs GX time, to see
   whether GX's fixed per-partition cost dominates a multi-day backfill.

Results are printed as markdown and saved as JSON under .kennel/bench/cleaning-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from kennel.demo import generate  # noqa: E402
from kennel.ingestion.cleaning import clean_partition  # noqa: E402
from kennel.ingestion.validation import validate_dataframe  # noqa: E402
from kennel.spark import get_spark  # noqa: E402
from kennel.spec import DEFAULT_SPEC_PATH, FeatureType, load_spec  # noqa: E402


def fused_statistics(df, spec) -> dict:
    """The numbers the GX suite decides on, in one Spark job."""
    from pyspark.sql import functions as F

    required = [spec.id_column, spec.timestamp_column, spec.label.column] + [
        f.name for f in spec.features if not f.nullable
    ]
    aggs = [F.count("*").alias("rows"), F.count_distinct(spec.id_column).alias("distinct_ids")]
    aggs += [F.count_if(F.col(c).isNull()).alias(f"null_{c}") for c in required]
    aggs.append(F.count_if(~F.col(spec.label.column).isin(0, 1)).alias("label_out_of_set"))
    for f in spec.features:
        if f.type is FeatureType.numeric and (f.min is not None or f.max is not None):
            lo = F.col(f.name) < f.min if f.min is not None else F.lit(False)
            hi = F.col(f.name) > f.max if f.max is not None else F.lit(False)
            aggs.append(F.count_if(lo | hi).alias(f"range_{f.name}"))
        if f.type is FeatureType.categorical:
            aggs.append(F.count_if(~F.col(f.name).isin(*f.categories)).alias(f"set_{f.name}"))
    return df.agg(*aggs).first().asDict()


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    spec = load_spec(DEFAULT_SPEC_PATH)
    spark = get_spark()
    work = Path(tempfile.mkdtemp(prefix="kennel-bench-cleaning-"))
    out: dict = {"rows": args.rows, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "spark": "local[2]"}

    t_gen, report = timed(lambda: generate(spec, work / "landing", days=1, rows_per_day=args.rows, scenario="corrupt"))
    day = spec.start_date.isoformat()
    files = sorted((work / "landing" / day).glob("*.csv"))
    print(f"generated {report.total_rows:,} rows in {t_gen:.1f} s", flush=True)

    cleaning, validation, gx_times, fused_times = [], [], [], []
    for _ in range(args.repeats):
        t_clean, result = timed(
            lambda: clean_partition(spark, spec, files, day, work / "clean", work / "quarantine", work / "_staging")
        )
        assert result.reconciled, result
        clean = spark.read.parquet(str(work / "clean")).cache()
        clean.count()
        t_gx, groups = timed(lambda: validate_dataframe(clean, spec))
        t_fused, stats = timed(lambda: fused_statistics(clean, spec))
        clean.unpersist()
        cleaning.append(t_clean)
        validation.append(t_gx)
        gx_times.append(t_gx)
        fused_times.append(t_fused)
        print(
            f"clean {t_clean:.1f} s, GX {t_gx:.1f} s, fused agg {t_fused:.2f} s "
            f"({result.rows_clean:,} clean, {result.rows_quarantined:,} quarantined)",
            flush=True,
        )
    assert all(g.success for g in groups), [g for g in groups if not g.success]
    assert stats["rows"] == stats["distinct_ids"] == result.rows_clean

    med = statistics.median
    out["single_partition"] = {
        "rows_in": result.rows_in,
        "rows_clean": result.rows_clean,
        "rows_quarantined": result.rows_quarantined,
        "clean_s": med(cleaning),
        "gx_s": med(validation),
        "fused_agg_s": med(fused_times),
        "clean_plus_validate_rows_per_s": result.rows_in / (med(cleaning) + med(validation)),
        "gx_over_fused": med(gx_times) / med(fused_times),
        "expectations": sum(len(g.outcomes) for g in groups),
    }

    small = max(args.rows // 100, 1000)
    start = spec.start_date + timedelta(days=10)
    generate(spec, work / "days", days=args.days, rows_per_day=small, scenario="corrupt", start=start)
    per_day = []
    for i in range(args.days):
        d = (start + timedelta(days=i)).isoformat()
        day_files = sorted((work / "days" / d).glob("*.csv"))
        t_clean, _ = timed(
            lambda: clean_partition(spark, spec, day_files, d, work / "dc" / d, work / "dq" / d, work / "_staging")
        )
        frame = spark.read.parquet(str(work / "dc" / d)).cache()
        t_gx, _ = timed(lambda: validate_dataframe(frame, spec))
        t_fused, _ = timed(lambda: fused_statistics(frame, spec))
        frame.unpersist()
        per_day.append({"clean_s": t_clean, "gx_s": t_gx, "fused_s": t_fused})
    out["multi_day"] = {
        "days": args.days,
        "rows_per_day": small,
        "clean_s_per_day": med(p["clean_s"] for p in per_day),
        "gx_s_per_day": med(p["gx_s"] for p in per_day),
        "fused_s_per_day": med(p["fused_s"] for p in per_day),
    }

    s, m = out["single_partition"], out["multi_day"]
    print(f"""
| measure | value |
|---|---|
| rows in (1 partition, corrupt scenario) | {s["rows_in"]:,} ({s["rows_quarantined"]:,} quarantined) |
| cleaning (clean_partition) | {s["clean_s"]:.1f} s |
| GX suite on Spark ({s["expectations"]} expectations) | {s["gx_s"]:.1f} s |
| cleaning + validation throughput | {s["clean_plus_validate_rows_per_s"]:,.0f} rows/s |
| fused df.agg, same statistics | {s["fused_agg_s"]:.2f} s |
| GX / fused | {s["gx_over_fused"]:.1f}x |
| {m["days"]} days × {m["rows_per_day"]:,} rows: cleaning per day | {m["clean_s_per_day"]:.2f} s |
| … GX per day / fused per day | {m["gx_s_per_day"]:.2f} s / {m["fused_s_per_day"]:.2f} s |
""")
    target = ROOT / ".kennel" / "bench"
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"cleaning-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"saved {path}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
