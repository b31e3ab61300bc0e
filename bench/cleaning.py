"""Benchmark: Spark cleaning against its single-node floor in DuckDB, and the GX suite against one fused
aggregate.

    .venv/bin/python bench/cleaning.py [--quick] [--write] [--rows 1000000] [--big-rows 10000000]
                                       [--days 10] [--repeats 3] [--load-repeats 2]

Data: the demo spec's corrupt scenario (kennel.demo: ~4 % bad rows of every reason, a file lacking a
required column, duplicates), CSV, one daily partition.

1. Same rules, same rows: before any figure counts, every partition cleaned by both engines is compared
   row for row (clean and quarantine Parquet, schema included: reason and detail too), and so are three
   more data sets: a spec `kennel init` drafts for data Kennel never saw (tests/stranger_data.py: `;`,
   timestamps with a space, a yes/no label with gaps, learned and "other" categories), its corrupt
   scenario, and the malformed-input corpus (tests/data/corpus: BOM, CRLF, CR, broken quoting,
   duplicate header, empty files). A mismatch exits 1 with the first differing rows.
2. `clean_partition` (Spark local[2], session already started) against `clean_partition_duckdb`
   (bench/cleaning_duckdb.py, run in a process of its own: its peak RSS is the floor's alone), repeats
   interleaved, at --rows quiet and under two CPU-busy processes; once at --big-rows (the --rows day
   replicated with suffixed ids, so every copy keeps its mix of reasons). Goal: Spark ≤ 3x DuckDB.
   Peak RSS of Spark is the JVM's: its VmHWM from /proc/<jvm pid>/status, reset through
   /proc/<pid>/clear_refs before each size (the Python driver holds no rows).
3. The GX suite (validate_dataframe) against one fused `df.agg(...)` computing the same statistics on
   the same cached clean table (goal: GX ≤ 2x).
4. --days small partitions (--rows / 100 rows each): per day, both engines and GX.
5. Where the time goes in Spark: one extra run at --rows with per-stage timers around cleaning's own
   functions (line splitting, raw count, each Parquet write) and the Spark stages of each job from the
   status store.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from bench.common import (  # noqa: E402
    Goal,
    Results,
    SeriesPoint,
    background_load,
    conditions_line,
    goals_table,
    median,
    ratio,
    save_results,
    spread,
    write_section,
)

DUCKDB_SCRIPT = ROOT / "bench" / "cleaning_duckdb.py"
SPARK_TARGET, GX_TARGET = 3.0, 2.0


class OutputsDiffer(Exception):
    """The two engines wrote different rows: the floor is not the same cleaning, so no figure counts."""


# --- the comparison -------------------------------------------------------------------------------


def compare_outputs(label: str, spark_out: Path, duckdb_out: Path) -> dict[str, int]:
    """Clean and quarantine tables of both engines, row for row (sorted; multisets, so a row written twice
    must be written twice by both), schema included. Raises OutputsDiffer with the first differing rows."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = {}
    try:
        for table in ("clean", "quarantine"):
            a = f"read_parquet('{spark_out / table / 'part-00000.parquet'}')"
            b = f"read_parquet('{duckdb_out / table / 'part-00000.parquet'}')"
            schema_a = con.execute(f"DESCRIBE SELECT * FROM {a}").fetchall()
            schema_b = con.execute(f"DESCRIBE SELECT * FROM {b}").fetchall()
            if schema_a != schema_b:
                raise OutputsDiffer(f"{label}, {table}: schemas differ\n  Spark:  {schema_a}\n  DuckDB: {schema_b}")
            only_spark = f"SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}"
            only_duckdb = f"SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a}"
            counts = con.execute(
                f"SELECT (SELECT count(*) FROM ({only_spark})), (SELECT count(*) FROM ({only_duckdb}))"
            )
            missing, extra = counts.fetchone()
            if missing or extra:
                first_a = con.execute(f"SELECT * FROM ({only_spark}) ORDER BY ALL LIMIT 5").fetchall()
                first_b = con.execute(f"SELECT * FROM ({only_duckdb}) ORDER BY ALL LIMIT 5").fetchall()
                shown = "\n".join(
                    [f"  only in Spark's ({missing}):", *(f"    {r}" for r in first_a)]
                    + [f"  only in DuckDB's ({extra}):", *(f"    {r}" for r in first_b)]
                )
                raise OutputsDiffer(f"{label}, {table}: the engines disagree\n{shown}")
            rows[table] = con.execute(f"SELECT count(*) FROM {a}").fetchone()[0]
    finally:
        con.close()
    return rows


# --- running the engines --------------------------------------------------------------------------


@dataclass
class Runs:
    """One engine at one size: seconds per repeat and the peak RSS over them."""

    seconds: list[float] = field(default_factory=list)
    peak_rss_mib: float | None = None
    stages: list[dict[str, float]] = field(default_factory=list)

    def add_peak(self, mib: float | None) -> None:
        if mib is not None:
            self.peak_rss_mib = max(self.peak_rss_mib or 0.0, mib)


def jvm_pid(spark: Any) -> int | None:
    """The Spark JVM's process id: PySpark's gateway process (spark-submit execs into the JVM), or the
    java child of it."""
    import psutil

    proc = getattr(spark.sparkContext._gateway, "proc", None)  # noqa: SLF001 (the only handle on the JVM)
    if proc is None:
        return None
    candidates = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    return next((p.pid for p in candidates if p.name() == "java"), None)


def reset_peak_rss(pid: int | None) -> None:
    """Linux: writing 5 to clear_refs resets the process's VmHWM to its current RSS."""
    if pid is not None:
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def run_spark(spark: Any, spec: Any, files: list[Path], day: str, out: Path) -> tuple[float, Any]:
    from kennel.ingestion.cleaning import clean_partition

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = clean_partition(spark, spec, files, day, out / "clean", out / "quarantine", out / "_staging")
    seconds = time.perf_counter() - start
    if not result.reconciled:
        raise SystemExit(f"Spark cleaning does not reconcile: {result}")
    return seconds, result


def run_duckdb(spec_path: Path, files: list[Path], day: str, out: Path) -> dict[str, Any]:
    """The floor in a fresh process (its start is not timed: the script times the cleaning itself)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = [sys.executable, str(DUCKDB_SCRIPT), "--spec", str(spec_path), "--partition", day, "--out", str(out)]
    done = subprocess.run([*command, *map(str, files)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"DuckDB cleaning failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    result = report["result"]
    if result["rows_in"] != result["rows_clean"] + result["rows_quarantined"]:
        raise SystemExit(f"DuckDB cleaning does not reconcile: {result}")
    return report


def fused_statistics(df: Any, spec: Any) -> dict:
    """The numbers the GX suite decides on, in one Spark job."""
    from pyspark.sql import functions as F

    from kennel.spec import FeatureType

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


def gx_against_fused(spark: Any, spec: Any, clean_dir: Path, rows_clean: int) -> tuple[float, float, int]:
    """(GX seconds, fused seconds, expectations) on the written clean table, cached as clean_records does."""
    from kennel.ingestion.validation import validate_dataframe

    clean = spark.read.parquet(str(clean_dir)).cache()
    clean.count()
    start = time.perf_counter()
    groups = validate_dataframe(clean, spec)
    t_gx = time.perf_counter() - start
    start = time.perf_counter()
    stats = fused_statistics(clean, spec)
    t_fused = time.perf_counter() - start
    clean.unpersist()
    failed = [g for g in groups if not g.success]
    if failed:
        raise SystemExit(f"GX failed on a clean table: {failed}")
    if not stats["rows"] == stats["distinct_ids"] == rows_clean:
        raise SystemExit(f"fused statistics disagree with the clean table: {stats}")
    return t_gx, t_fused, sum(len(g.outcomes) for g in groups)


@dataclass
class Size:
    """Both engines (and GX) at one partition size, in one condition."""

    rows_in: int
    spark: Runs = field(default_factory=Runs)
    duckdb: Runs = field(default_factory=Runs)
    gx: list[float] = field(default_factory=list)
    fused: list[float] = field(default_factory=list)
    expectations: int = 0
    rows_clean: int = 0
    rows_quarantined: int = 0
    compared: bool = False

    def spark_over_duckdb(self) -> float:
        return ratio(median(self.spark.seconds), median(self.duckdb.seconds))


def measure(
    spark: Any, spec: Any, spec_path: Path, files: list[Path], day: str, work: Path, repeats: int, label: str
) -> Size:
    """`repeats` interleaved runs of both engines on one partition; outputs compared after the first."""
    pid = jvm_pid(spark)
    reset_peak_rss(pid)
    size: Size | None = None
    for repeat in range(repeats):
        t_spark, result = run_spark(spark, spec, files, day, work / "spark")
        report = run_duckdb(spec_path, files, day, work / "duckdb")
        if size is None:
            size = Size(rows_in=result.rows_in, rows_clean=result.rows_clean, rows_quarantined=result.rows_quarantined)
        size.spark.seconds.append(t_spark)
        size.duckdb.seconds.append(report["seconds"])
        size.duckdb.add_peak(report["peak_rss_mib"])
        size.duckdb.stages.append(report["result"]["stage_seconds"])
        if repeat == 0:
            compare_outputs(label, work / "spark", work / "duckdb")
            size.compared = True
        t_gx, t_fused, size.expectations = gx_against_fused(spark, spec, work / "spark" / "clean", result.rows_clean)
        size.gx.append(t_gx)
        size.fused.append(t_fused)
        print(
            f"{label} #{repeat + 1}: Spark {t_spark:.2f} s, DuckDB {report['seconds']:.2f} s, "
            f"GX {t_gx:.2f} s, fused {t_fused:.2f} s",
            flush=True,
        )
    assert size is not None
    size.spark.add_peak(peak_rss_mib(pid))
    return size


# --- data -----------------------------------------------------------------------------------------


def corrupt_day(spec: Any, folder: Path, rows: int) -> tuple[str, list[Path]]:
    from kennel.demo import generate

    generate(spec, folder, days=1, rows_per_day=rows, scenario="corrupt")
    day = spec.start_date.isoformat()
    return day, sorted((folder / day).glob("*.csv"))


def replicated(spec: Any, files: list[Path], copies: int, folder: Path) -> list[Path]:
    """`copies` copies of a day's CSV files, each copy's ids suffixed with its number (blank ids stay
    blank), so the day grows `copies` times with the same mix of reasons. Plain text: the demo's lines
    hold no quotes."""
    delimiter = str(spec.source.options.get("delimiter", ","))
    folder.mkdir(parents=True)
    out = []
    for path in files:
        with open(path, encoding="utf-8", newline="") as fh:
            header = fh.readline()
            lines = fh.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        position = [c.strip() for c in header.rstrip("\n").split(delimiter)].index(spec.id_column)
        for copy in range(copies):
            target = folder / f"{path.stem}-copy{copy:02d}{path.suffix}"
            with open(target, "w", encoding="utf-8", newline="") as fh:
                fh.write(header)
                for line in lines:
                    fields = line.split(delimiter)
                    if position < len(fields) and fields[position].strip():
                        fields[position] = f"{fields[position]}~{copy}"
                    fh.write(delimiter.join(fields) + "\n")
            out.append(target)
    return out


def second_spec_checks(spark: Any, work: Path, rows: int) -> list[dict[str, Any]]:
    """Both engines on data sets other than the demo's: the drafted spec for tests/stranger_data.py's
    shipments (as landed, and its corrupt scenario) and the malformed-input corpus."""
    from datetime import date

    from kennel.demo import generate
    from kennel.onboarding.infer import InitRequest, init_spec
    from kennel.spec import load_spec
    from tests.stranger_data import write_stranger_dataset

    checks = []
    landing = work / "stranger"
    write_stranger_dataset(landing, start=date(2026, 3, 1), days=3, rows_per_day=rows, drift_from_day=2)
    spec_path = work / "shipments.yaml"
    init_spec(InitRequest(source=str(landing), name="shipments", out=spec_path, label="delivered_late"))
    spec = load_spec(spec_path)
    corpus_spec = ROOT / "tests" / "data" / "corpus" / "spec.yaml"
    corrupt = work / "stranger-corrupt"
    generate(spec, corrupt, days=1, rows_per_day=rows, scenario="corrupt")
    cases = [
        ("shipments (drafted spec), as landed", spec, spec_path, landing, "2026-03-03"),
        ("shipments (drafted spec), corrupt scenario", spec, spec_path, corrupt, spec.start_date.isoformat()),
        ("malformed-input corpus", load_spec(corpus_spec), corpus_spec, ROOT / "tests/data/corpus/csv", "2026-01-01"),
    ]
    for label, case_spec, path, folder, day in cases:
        files = sorted((folder / day).iterdir())
        out = work / "checks" / label.split()[0]
        _, result = run_spark(spark, case_spec, files, day, out / "spark")
        run_duckdb(path, files, day, out / "duckdb")
        rows_compared = compare_outputs(label, out / "spark", out / "duckdb")
        checks.append({"data": label, "files": len(files), "rows_in": result.rows_in, **rows_compared})
        print(f"same rows: {label} ({result.rows_in:,} rows in)", flush=True)
    return checks


# --- the Spark profile ----------------------------------------------------------------------------


# Where a running Spark task is, by the first frame of its stack that falls in one of these (top first).
FRAME_BUCKETS = (
    ("CSV parsing (univocity)", ("com.univocity",)),
    ("regular expressions (rlike)", ("java.util.regex",)),
    ("JSON of the raw record (to_json)", ("com.fasterxml.jackson", "JacksonGenerator")),
    ("compression", ("snappy", "lz4", "zstd", "xerial")),
    ("Parquet write", ("org.apache.parquet",)),
    ("shuffle", ("org.apache.spark.shuffle", "ShuffleExternalSorter", "DiskBlockObjectWriter")),
    ("sorting", ("UnsafeExternalSorter", "UnsafeInMemorySorter", "UnsafeSorterSpillWriter", "RadixSort", "TimSort")),
    ("in-memory cache", ("columnar", "InMemoryRelation", "CachedBatch")),
    ("reading lines", ("LineRecordReader", "hadoop.util.LineReader", "HadoopFileLinesReader")),
    ("string functions (trim, casts, concat)", ("UTF8String", "DoubleUtils", "FloatingDecimal", "SparkDateTimeUtils")),
    ("generated expression code", ("GeneratedClass",)),
)


class StackSampler:
    """A poor man's profiler of the JVM: `jstack` every `interval` seconds while the block runs, counting
    where each running executor task is (FRAME_BUCKETS)."""

    def __init__(self, pid: int | None, interval: float = 3.0) -> None:
        self.pid, self.interval = pid, interval
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StackSampler:
        if self.pid is not None and shutil.which("jstack"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                dump = subprocess.run(
                    ["jstack", str(self.pid)], capture_output=True, text=True, timeout=30, check=False
                ).stdout
            except subprocess.TimeoutExpired:
                continue
            for block in dump.split("\n\n"):
                if not block.startswith('"Executor task launch worker') or "State: RUNNABLE" not in block:
                    continue
                frames = [ln.strip()[3:] for ln in block.splitlines() if ln.strip().startswith("at ")]
                bucket = next(
                    (name for frame in frames for name, keys in FRAME_BUCKETS if any(k in frame for k in keys)),
                    f"other: {frames[0].split('(')[0]}" if frames else "other",
                )
                self.counts[bucket] = self.counts.get(bucket, 0) + 1


def spark_stage_profile(spark: Any, spec: Any, files: list[Path], day: str, out: Path) -> dict[str, Any]:
    """One clean_partition with timers around cleaning's own steps (patched in this process only; the code
    under test is unchanged) and the Spark stages it ran, from the status store (names, task time)."""
    import kennel.ingestion.cleaning as cleaning

    timers: dict[str, float] = {}
    originals: dict[str, Callable[..., Any]] = {}

    def timed(name: str, label: Callable[..., str]) -> None:
        original = getattr(cleaning, name)
        originals[name] = original

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                key = label(*args)
                timers[key] = timers.get(key, 0.0) + time.perf_counter() - start

        setattr(cleaning, name, wrapper)

    timed("_split_text_file", lambda *a: "split lines (Python)")
    timed("count_raw_rows", lambda *a: "count raw rows (Python)")
    timed("_write_single_parquet", lambda df, final_dir, *a: f"job: type, judge, write {final_dir.name}")
    before = {s.stageId() for s in _stages(spark)}
    try:
        with StackSampler(jvm_pid(spark)) as sampler:
            total, _ = run_spark(spark, spec, files, day, out)
    finally:
        for name, original in originals.items():
            setattr(cleaning, name, original)
    timers["rest (read back, counts, session calls)"] = total - sum(timers.values())
    stages = []
    for s in _stages(spark):
        if s.stageId() in before:
            continue
        stages.append(
            {
                "stage": s.stageId(),
                "name": str(s.name()).split(" at ")[0],
                "tasks": s.numTasks(),
                "task_seconds": s.executorRunTime() / 1000,
                "cpu_seconds": s.executorCpuTime() / 1e9,
                "input_mib": s.inputBytes() / 2**20,
                "shuffle_write_mib": s.shuffleWriteBytes() / 2**20,
            }
        )
    samples = dict(sorted(sampler.counts.items(), key=lambda kv: -kv[1]))
    return {
        "total_seconds": total,
        "steps": timers,
        "stages": sorted(stages, key=lambda s: s["stage"]),
        "jvm_samples": samples,
        "sample_interval_s": sampler.interval,
    }


def _stages(spark: Any) -> list[Any]:
    """Every stage Spark's status store keeps (AppStatusStore.stageList: all statuses, no task details)."""
    gateway, jvm = spark.sparkContext._gateway, spark.sparkContext._jvm  # noqa: SLF001
    store = spark.sparkContext._jsc.sc().statusStore()  # noqa: SLF001 (Spark's own stage records)
    empty = jvm.java.util.ArrayList
    stages = store.stageList(empty(), False, False, gateway.new_array(jvm.double, 0), empty())
    return [stages.apply(i) for i in range(stages.size())]


# --- the report -----------------------------------------------------------------------------------


def mib(value: float | None) -> str:
    return f"{value:,.0f} MiB" if value is not None else "–"


def section(results: Results) -> str:
    raw = results.raw
    lines = [
        "## Cleaning: Spark against the DuckDB floor; GX against a fused aggregate (bench/cleaning.py)",
        "",
        conditions_line(results),
        "",
        goals_table(results.goals),
        "",
        f"Data: the demo spec's corrupt scenario, CSV, one day; Spark `{raw['spark_master']}` (session already "
        f"started), DuckDB {raw['duckdb_version']} with {raw['duckdb_threads']} threads in a process of its own "
        "(bench/cleaning_duckdb.py: the same rules, generated from the spec). Seconds are medians (min–max, n) of "
        "interleaved repeats; peak RSS is Spark's JVM (VmHWM, reset before each size) and the DuckDB process's.",
        "",
        "| partition | condition | Spark | DuckDB | Spark / DuckDB | peak RSS Spark / DuckDB |",
        "|---|---|---:|---:|---:|---|",
    ]
    for entry in raw["sizes"]:
        lines.append(
            f"| {entry['rows_in']:,} rows ({entry['rows_quarantined']:,} quarantined) | {entry['condition']} | "
            f"{spread(entry['spark_s'], 2, ' s')} | {spread(entry['duckdb_s'], 2, ' s')} | "
            f"{entry['ratio']:.1f}x | {mib(entry['spark_peak_rss_mib'])} / {mib(entry['duckdb_peak_rss_mib'])} |"
        )
    if raw.get("big_generation_s") is not None:
        lines += ["", f"The {raw['big_rows_in']:,}-row day was written in {raw['big_generation_s']:.0f} s."]
    lines += [
        "",
        "Same rows: each partition above was cleaned by both engines and compared row for row (clean and "
        "quarantine tables, schema, reason and detail), and so were:",
        "",
        "| data | files | rows in | clean rows | quarantined rows |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c['data']} | {c['files']} | {c['rows_in']:,} | {c['clean']:,} | {c['quarantine']:,} |"
        for c in raw["checks"]
    ]
    main_size = raw["sizes"][0]
    lines += [
        "",
        f"GX suite ({main_size['expectations']} expectations, on the cached clean table) against one fused "
        f"`df.agg(...)` with the same statistics, {main_size['rows_in']:,} rows: "
        f"{spread(main_size['gx_s'], 2, ' s')} against {spread(main_size['fused_s'], 2, ' s')}.",
    ]
    days = raw["small_days"]
    lines += [
        "",
        f"{days['days']} days × {days['rows_in']:,} rows, per day: Spark cleaning {spread(days['spark_s'], 2, ' s')}, "
        f"DuckDB {spread(days['duckdb_s'], 2, ' s')}, GX {spread(days['gx_s'], 2, ' s')}, fused aggregate "
        f"{spread(days['fused_s'], 2, ' s')}.",
    ]
    profile = raw.get("spark_profile")
    if profile:
        lines += [
            "",
            f"Where Spark's {profile['total_seconds']:.1f} s go ({main_size['rows_in']:,} rows, one profiled run; "
            "timers around cleaning's steps):",
            "",
            "| step | seconds |",
            "|---|---:|",
            *(f"| {k} | {v:.2f} |" for k, v in profile["steps"].items()),
            "",
            "| Spark stage | tasks | task time | CPU | input | shuffle write |",
            "|---|---:|---:|---:|---:|---:|",
            *(
                f"| {s['stage']}: {s['name']} | {s['tasks']} | {s['task_seconds']:.1f} s | {s['cpu_seconds']:.1f} s | "
                f"{s['input_mib']:.0f} MiB | {s['shuffle_write_mib']:.0f} MiB |"
                for s in profile["stages"]
                if s["task_seconds"] > 0  # stages Spark skipped (their shuffle output was there) ran no task
            ),
        ]
        samples = profile.get("jvm_samples") or {}
        total_samples = sum(samples.values())
        if total_samples:
            lines += [
                "",
                f"Where the running Spark tasks were ({total_samples} samples: `jstack` of the JVM every "
                f"{profile['sample_interval_s']:g} s, executor threads that were running, by the first frame "
                "of their stack in a known library):",
                "",
                "| code | share of samples |",
                "|---|---:|",
                *(f"| {name} | {n / total_samples:.0%} |" for name, n in samples.items()),
            ]
        duck = raw["duckdb_stages"]
        lines += [
            "",
            "DuckDB's stages on the same partition (median seconds): "
            + ", ".join(f"{k} {v:.2f}" for k, v in duck.items())
            + ".",
        ]
    if raw.get("note"):
        lines += ["", raw["note"]]
    return "\n".join(lines)


def size_entry(size: Size, condition: str) -> dict[str, Any]:
    return {
        "condition": condition,
        "rows_in": size.rows_in,
        "rows_clean": size.rows_clean,
        "rows_quarantined": size.rows_quarantined,
        "spark_s": size.spark.seconds,
        "duckdb_s": size.duckdb.seconds,
        "ratio": size.spark_over_duckdb(),
        "spark_peak_rss_mib": size.spark.peak_rss_mib,
        "duckdb_peak_rss_mib": size.duckdb.peak_rss_mib,
        "gx_s": size.gx,
        "fused_s": size.fused,
        "expectations": size.expectations,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (20k rows, 2 small days, 1 repeat)")
    parser.add_argument("--write", action="store_true", help="rewrite the cleaning section of BENCHMARKS.md")
    parser.add_argument("--rows", type=int, help="rows of the main partition (default 1,000,000)")
    parser.add_argument("--big-rows", type=int, help="rows of the large partition, 0 for none (default 10,000,000)")
    parser.add_argument("--days", type=int, help="small days (default 10)")
    parser.add_argument("--repeats", type=int, help="quiet repeats per engine (default 3)")
    parser.add_argument("--load-repeats", type=int, help="repeats under two busy processes, 0 for none (default 2)")
    args = parser.parse_args()
    quick = args.quick
    rows = args.rows or (20_000 if quick else 1_000_000)
    big_rows = args.big_rows if args.big_rows is not None else (0 if quick else 10_000_000)
    days = args.days or (2 if quick else 10)
    repeats = args.repeats or (1 if quick else 3)
    load_repeats = args.load_repeats if args.load_repeats is not None else (0 if quick else 2)

    import duckdb

    from kennel.demo import generate
    from kennel.spark import get_spark
    from kennel.spec import DEFAULT_SPEC_PATH, load_spec

    results = Results(name="cleaning", quick=quick)
    spec = load_spec(DEFAULT_SPEC_PATH)
    spark = get_spark()
    work = Path(tempfile.mkdtemp(prefix="kennel-bench-cleaning-"))
    sizes: list[tuple[Size, str]] = []
    try:
        checks = second_spec_checks(spark, work, 2_000 if quick else 20_000)

        start = time.perf_counter()
        day, files = corrupt_day(spec, work / "landing", rows)
        print(f"generated {rows:,} rows in {time.perf_counter() - start:.1f} s", flush=True)
        main_size = measure(spark, spec, DEFAULT_SPEC_PATH, files, day, work / "main", repeats, f"{rows:,} quiet")
        sizes.append((main_size, "quiet"))
        if load_repeats:
            with background_load(2):
                loaded = measure(
                    spark, spec, DEFAULT_SPEC_PATH, files, day, work / "main", load_repeats, f"{rows:,} loaded"
                )
            sizes.append((loaded, "two busy processes"))
        profile = None if quick else spark_stage_profile(spark, spec, files, day, work / "profile")

        small = max(rows // 100, 1_000)
        start_day = spec.start_date + timedelta(days=10)
        generate(spec, work / "days", days=days, rows_per_day=small, scenario="corrupt", start=start_day)
        per_day = Size(rows_in=0)
        for i in range(days):
            d = (start_day + timedelta(days=i)).isoformat()
            day_size = measure(
                spark, spec, DEFAULT_SPEC_PATH, sorted((work / "days" / d).glob("*.csv")), d, work / "day", 1, d
            )
            per_day.rows_in = max(per_day.rows_in, day_size.rows_in)
            per_day.spark.seconds += day_size.spark.seconds
            per_day.duckdb.seconds += day_size.duckdb.seconds
            per_day.spark.add_peak(day_size.spark.peak_rss_mib)
            per_day.duckdb.add_peak(day_size.duckdb.peak_rss_mib)
            per_day.gx += day_size.gx
            per_day.fused += day_size.fused

        big = None
        big_generation = None
        if big_rows:
            start = time.perf_counter()
            copies = max(1, round(big_rows / rows))
            big_files = replicated(spec, files, copies, work / "big" / day)
            big_generation = time.perf_counter() - start
            shutil.rmtree(work / "main", ignore_errors=True)
            big = measure(spark, spec, DEFAULT_SPEC_PATH, big_files, day, work / "big-out", 1, f"{copies} × {rows:,}")
            sizes.append((big, "quiet"))
    except OutputsDiffer as exc:
        print(f"DuckDB floor and Spark cleaning disagree: {exc}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)

    for size, condition in sizes:
        if condition != "quiet":
            continue
        results.series += [
            SeriesPoint("spark cleaning", size.rows_in, median(size.spark.seconds), size.spark.peak_rss_mib),
            SeriesPoint("duckdb cleaning", size.rows_in, median(size.duckdb.seconds), size.duckdb.peak_rss_mib),
            SeriesPoint("gx validation", size.rows_in, median(size.gx), None),
        ]
    results.series += [
        SeriesPoint("spark cleaning", per_day.rows_in, median(per_day.spark.seconds), per_day.spark.peak_rss_mib),
        SeriesPoint("duckdb cleaning", per_day.rows_in, median(per_day.duckdb.seconds), per_day.duckdb.peak_rss_mib),
        SeriesPoint("gx validation", per_day.rows_in, median(per_day.gx), None),
    ]
    results.series.sort(key=lambda p: (p.stage, p.rows))

    def spark_goal(size: Size, condition: str) -> Goal:
        measured = size.spark_over_duckdb()
        met = None if quick else measured <= SPARK_TARGET
        note = "" if quick or met else profile_note(profile)
        return Goal(
            name=f"cleaning: Spark local mode / DuckDB floor at {size.rows_in:,} rows, {condition}",
            target=f"<= {SPARK_TARGET:g}x",
            measured=f"{measured:.1f}x ({median(size.spark.seconds):.1f} s / {median(size.duckdb.seconds):.2f} s)",
            met=met,
            note=note if not quick else "quick mode",
        )

    results.goals = [spark_goal(size, condition) for size, condition in sizes[: 1 + bool(load_repeats)]]
    gx_ratio = ratio(median(main_size.gx), median(main_size.fused))
    results.goals.append(
        Goal(
            name=f"validation: GX suite / fused aggregate at {main_size.rows_clean:,} clean rows",
            target=f"<= {GX_TARGET:g}x",
            measured=f"{gx_ratio:.1f}x ({median(main_size.gx):.2f} s / {median(main_size.fused):.2f} s)",
            met=None if quick else gx_ratio <= GX_TARGET,
            note="quick mode" if quick else "",
        )
    )
    duckdb_stages = {
        k: median([s[k] for s in main_size.duckdb.stages])
        for k in (main_size.duckdb.stages[0] if main_size.duckdb.stages else {})
    }
    results.raw = {
        "spark_master": spark_master(),
        "duckdb_version": duckdb.__version__,
        "duckdb_threads": len(os.sched_getaffinity(0)),
        "sizes": [size_entry(size, condition) for size, condition in sizes],
        "small_days": {
            "days": days,
            "rows_in": per_day.rows_in,
            "spark_s": per_day.spark.seconds,
            "duckdb_s": per_day.duckdb.seconds,
            "gx_s": per_day.gx,
            "fused_s": per_day.fused,
        },
        "checks": checks,
        "spark_profile": profile,
        "duckdb_stages": duckdb_stages,
        "big_generation_s": big_generation,
        "big_rows_in": big.rows_in if big else None,
    }
    text = section(results)
    print(text)
    if args.write:
        write_section("cleaning", text)
    print(f"saved {save_results(results)}")
    return 0


def profile_note(profile: dict[str, Any] | None) -> str:
    """What bounds Spark, from the profiled run: its steps by share of the time."""
    if not profile:
        return "no profile taken"
    total = profile["total_seconds"]
    steps = sorted(profile["steps"].items(), key=lambda kv: -kv[1])
    return "profile: " + ", ".join(f"{name} {seconds / total:.0%}" for name, seconds in steps) + " (table below)"


def spark_master() -> str:
    from kennel.spark import spark_conf

    return spark_conf()["spark.master"]


if __name__ == "__main__":
    sys.exit(main())
