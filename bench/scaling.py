"""Benchmark: the whole graph by data size, and the orchestration share of a run (issue 13, goal 6).

At each size the demo's closed loop runs as scripts/demo.py runs it, on a lake, a SQLite Dagster instance
and a BENTOML_HOME of its own, with the in-process executor (the project's default): the demo data of
20 days is landed (total rows / 20 a day: the demo spec's whole window, 14 train + 3 validation + 3 test
days; 10 days with --quick, the size of make demo's first part), all but the last 3 are ingested in one
run (raw → clean + quarantine + GX checks), the train job runs (dbt features → training set → model →
evaluation + promotion gate → champion → card → Bento), then the last 3 days are ingested, so the
monitoring assets (drift, realized and estimated performance) measure them against the champion.

Measured per step (an op of a run: raw_records, clean_records, the dbt models, training_set, model, ...):
- time: from the step's STEP_START to its STEP_SUCCESS (or STEP_FAILURE) event in the run's event log:
  what the step's own code and the events it reports cost. The orchestration share of a run is
  (wall − Σ step times) / wall, wall being the execute_in_process call (run creation, planning, resource
  set-up, step launches, run-level events, teardown);
- peak RSS of the process tree (this process, Spark's JVM, dbt's subprocesses), summed, sampled every
  0.25 s by a thread (the children listed once a second), each sample assigned to the step that was
  running at its time.

    .venv/bin/python bench/scaling.py --quick        # 20,000 rows over 10 days (make demo's first part): a look
    .venv/bin/python bench/scaling.py                # 100k, 1M and 10M rows (10M: most of an hour on 2 cores)
    .venv/bin/python bench/scaling.py --rows 100000 1000000 --write
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for _name, _value in {
    "DAGSTER_TELEMETRY_ENABLED": "False",
    "BENTOML_DO_NOT_TRACK": "True",
    "GX_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(_name, _value)

import dagster as dg  # noqa: E402
import yaml  # noqa: E402

from bench.common import (  # noqa: E402
    Goal,
    Results,
    RssTimeline,
    SeriesPoint,
    conditions_line,
    goals_table,
    results_from_json,
    save_results,
    step_intervals,
    write_section,
)

DAYS, QUICK_DAYS, MONITORED_DAYS = 20, 10, 3
ORCHESTRATION_GOAL = 0.15
LINEAR_SLACK = 1.25  # seconds per row may rise this much from the smallest size to the largest and count as linear
GOAL_ROWS, MEMORY_LIMIT_GIB = 10_000_000, 24  # issue 13: 10M rows must finish on 2 cores and 24 GB
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def spec_copy(tmp: Path, landing: Path) -> Path:
    from kennel.spec import DEFAULT_SPEC_PATH

    raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    raw["source"]["uri"] = str(landing)
    path = tmp / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def closed_loop(rows: int, bentoml_home: Path, days: int) -> dict[str, Any]:
    """The demo's loop on `rows` rows spread evenly over `days` days; per run and per step: time, peak RSS."""
    from definitions import build_definitions
    from kennel.demo import generate
    from kennel.deployment import INGEST_JOB, TRAIN_JOB
    from kennel.spec import load_spec
    from resources.lake import LakeResource
    from resources.model_store import ModelStoreResource

    per_day = rows // days
    with tempfile.TemporaryDirectory(prefix="kennel-scaling-") as tmp_name, RssTimeline() as rss:
        tmp = Path(tmp_name)
        spec_path = spec_copy(tmp, tmp / "landing")
        spec = load_spec(spec_path)
        started = time.perf_counter()
        report = generate(spec, tmp / "landing", days=days, rows_per_day=per_day)
        land_seconds = time.perf_counter() - started
        day_keys = list(report.rows_per_day)
        defs = build_definitions(
            str(spec_path),
            resources={
                "lake": LakeResource(root=str(tmp / "lake")),
                "model_store": ModelStoreResource(home=str(bentoml_home)),
            },
        )
        runs: list[dict[str, Any]] = []
        with dg.instance_for_test(temp_dir=str(tmp)) as instance:
            for label, job, run_days in (
                ("ingest", INGEST_JOB, day_keys[: days - MONITORED_DAYS]),
                ("train", TRAIN_JOB, None),
                ("ingest + monitor", INGEST_JOB, day_keys[days - MONITORED_DAYS :]),
            ):
                tags = (
                    {
                        "dagster/asset_partition_range_start": run_days[0],
                        "dagster/asset_partition_range_end": run_days[-1],
                    }
                    if run_days
                    else {}
                )
                began = time.time()
                started = time.perf_counter()
                result = defs.resolve_job_def(job).execute_in_process(
                    instance=instance, tags=tags, run_config=QUIET_LOGS, raise_on_error=False
                )
                wall = time.perf_counter() - started
                intervals = step_intervals(instance, result.run_id)
                steps = {
                    key: {"seconds": end - start, "peak_rss_mib": rss.peak(start, end)}
                    for key, (start, end) in intervals.items()
                }
                compute = sum(s["seconds"] for s in steps.values())
                runs.append(
                    {
                        "run": label,
                        "success": result.success,
                        "wall_seconds": wall,
                        "step_seconds": compute,
                        "orchestration_share": (wall - compute) / wall,
                        "peak_rss_mib": rss.peak(began, time.time()),
                        "steps": steps,
                    }
                )
                print(
                    f"  {rows:,} rows, {label}: {'ok' if result.success else 'FAILED'} in {wall:.1f} s, steps "
                    f"{compute:.1f} s, orchestration {(wall - compute) / wall:.1%}",
                    flush=True,
                )
                if not result.success:
                    raise SystemExit(f"{label} failed at {rows:,} rows (run {result.run_id})")
    return {"rows": rows, "days": days, "rows_per_day": per_day, "land_seconds": land_seconds, "runs": runs}


def step_table(sizes: list[dict[str, Any]]) -> str:
    header = "| run: step | " + " | ".join(f"{s['rows']:,} rows: s (µs/row), peak RSS" for s in sizes) + " |"
    lines = [header, "|---|" + "---:|" * len(sizes)]
    keys: list[tuple[str, str]] = []
    for size in sizes:
        for run in size["runs"]:
            keys += [(run["run"], k) for k in run["steps"] if (run["run"], k) not in keys]
    for run_name, key in keys:
        cells = []
        for size in sizes:
            run = next(r for r in size["runs"] if r["run"] == run_name)
            step = run["steps"].get(key)
            if step is None:
                cells.append("–")
                continue
            peak = f"{step['peak_rss_mib']:,.0f} MiB" if step["peak_rss_mib"] else "–"
            cells.append(f"{step['seconds']:.1f} s ({step['seconds'] / size['rows'] * 1e6:.1f}), {peak}")
        lines.append(f"| {run_name}: {key} | " + " | ".join(cells) + " |")
    for run_name in dict.fromkeys(r["run"] for s in sizes for r in s["runs"]):
        cells = []
        for size in sizes:
            run = next(r for r in size["runs"] if r["run"] == run_name)
            cells.append(
                f"**{run['wall_seconds']:.1f} s** ({run['wall_seconds'] / size['rows'] * 1e6:.1f}), "
                f"{run['peak_rss_mib'] or 0:,.0f} MiB; orchestration {run['orchestration_share']:.1%}"
            )
        lines.append(f"| **{run_name}: whole run** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals_of(sizes: list[dict[str, Any]], quick: bool) -> list[Goal]:
    """Goal 6's rows: orchestration share, linear time, and peak memory (finishing at 10M rows on this
    machine, ingestion bounded by a partition rather than by the days of a run, training by its window)."""
    goals: list[Goal] = []
    smallest, largest = sizes[0], sizes[-1]
    wall = sum(r["wall_seconds"] for r in smallest["runs"])
    compute = sum(r["step_seconds"] for r in smallest["runs"])
    share = (wall - compute) / wall
    goals.append(
        Goal(
            name=f"orchestration share of the closed loop, in-process executor ({smallest['rows']:,} rows)",
            target=f"<= {ORCHESTRATION_GOAL:.0%}",
            measured=f"{share:.1%} ({wall - compute:.1f} s of {wall:.1f} s)",
            met=None if quick else share <= ORCHESTRATION_GOAL,
        )
    )

    def per_row(size: dict[str, Any]) -> float:
        return sum(r["wall_seconds"] for r in size["runs"]) / size["rows"]

    growth = per_row(largest) / per_row(smallest)
    several = not quick and len(sizes) > 1
    goals.append(
        Goal(
            name=f"whole graph: time grows at most linearly ({smallest['rows']:,} → {largest['rows']:,} rows)",
            target=f"seconds per row at the largest size <= {LINEAR_SLACK}x the smallest's",
            measured=f"{per_row(smallest) * 1e6:.1f} → {per_row(largest) * 1e6:.1f} µs per row ({growth:.2f}x)",
            met=growth <= LINEAR_SLACK if several else None,
            note="" if len(sizes) > 1 else "one size only",
        )
    )
    peak = max(r["peak_rss_mib"] or 0 for r in largest["runs"])
    goals.append(
        Goal(
            name=f"{GOAL_ROWS:,} rows finish on 2 cores and {MEMORY_LIMIT_GIB} GiB",
            target=f"every run succeeds; peak RSS <= {MEMORY_LIMIT_GIB} GiB",
            measured=f"{largest['rows']:,} rows: every run succeeded, peak RSS {peak:,.0f} MiB",
            met=peak <= MEMORY_LIMIT_GIB * 1024 if not quick and largest["rows"] >= GOAL_ROWS else None,
            note="" if largest["rows"] >= GOAL_ROWS else f"largest size run: {largest['rows']:,} rows",
        )
    )
    by_run = {r["run"]: r for r in largest["runs"]}
    many, few = by_run["ingest"], by_run["ingest + monitor"]
    days_many, days_few = largest["days"] - MONITORED_DAYS, MONITORED_DAYS
    ratio = (many["peak_rss_mib"] or 0) / (few["peak_rss_mib"] or 1)
    goals.append(
        Goal(
            name=f"ingestion memory bounded by one partition, not by the days of a run ({largest['rows_per_day']:,} "
            "rows a day)",
            target=f"peak RSS of a run of {days_many} days <= {LINEAR_SLACK}x a run of {days_few} days",
            measured=f"{ratio:.2f}x ({many['peak_rss_mib']:,.0f} / {few['peak_rss_mib']:,.0f} MiB; the "
            f"{days_few}-day run monitors too)",
            met=ratio <= LINEAR_SLACK if not quick else None,
        )
    )
    train = [next(r for r in size["runs"] if r["run"] == "train") for size in (smallest, largest)]
    window = [size["rows_per_day"] * (size["days"] - MONITORED_DAYS) for size in (smallest, largest)]
    memory_growth = (train[1]["peak_rss_mib"] or 0) / (train[0]["peak_rss_mib"] or 1)
    marginal = (
        ((train[1]["peak_rss_mib"] or 0) - (train[0]["peak_rss_mib"] or 0)) * 2**20 / max(window[1] - window[0], 1)
    )
    goals.append(
        Goal(
            name=f"training memory bounded by its window ({window[0]:,} → {window[1]:,} rows ingested before training)",
            target="peak RSS of the train run grows at most as the window does",
            measured=f"{memory_growth:.2f}x for {window[1] / window[0]:.0f}x the rows ({train[0]['peak_rss_mib']:,.0f} "
            f"→ {train[1]['peak_rss_mib']:,.0f} MiB; {marginal:,.0f} bytes per added window row)",
            met=memory_growth <= window[1] / window[0] if several else None,
        )
    )
    return goals


def measure(sizes_wanted: list[int], quick: bool) -> Results:
    """The closed loop at each size: results with their series and raw figures (goals not set yet)."""
    results = Results(name="scaling", quick=quick)
    sizes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kennel-scaling-bentoml-") as bentoml_home:
        for rows in sizes_wanted:
            size = closed_loop(rows, Path(bentoml_home), QUICK_DAYS if quick else DAYS)
            sizes.append(size)
            for run in size["runs"]:
                for key, step in run["steps"].items():
                    results.series.append(
                        SeriesPoint(f"{run['run']}: {key}", rows, step["seconds"], step["peak_rss_mib"])
                    )
                results.series.append(
                    SeriesPoint(f"{run['run']}: whole run", rows, run["wall_seconds"], run["peak_rss_mib"])
                )
    results.raw = {"sizes": sizes}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 rows over 10 days; asserts nothing about speed")
    parser.add_argument("--write", action="store_true", help="rewrite the scaling section of BENCHMARKS.md")
    parser.add_argument("--rows", type=int, nargs="*", help="total rows per size (default 100k 1M 10M)")
    parser.add_argument(
        "--from-results",
        type=Path,
        metavar="JSON",
        help="measure nothing: report a saved run (.kennel/bench/scaling-*.json) against the current goals",
    )
    args = parser.parse_args()
    if args.from_results:
        results = results_from_json(json.loads(args.from_results.read_text()))
    else:
        sizes_wanted = args.rows or ([20_000] if args.quick else [100_000, 1_000_000, 10_000_000])
        results = measure(sizes_wanted, args.quick)
    sizes = results.raw["sizes"]
    results.goals = goals_of(sizes, results.quick)
    save_results(results)
    days = sizes[0]["days"]
    text = "\n\n".join(
        [
            "### The whole graph by size (bench/scaling.py)",
            conditions_line(results),
            goals_table(results.goals),
            f"Each size: the demo data over {days} days (rows / {days} a day), the first "
            f"{days - MONITORED_DAYS} ingested in one run, the train job, then the last {MONITORED_DAYS} "
            "ingested with monitoring against the new champion, as `make demo` runs them. A step's time runs "
            "from its STEP_START to its STEP_SUCCESS event; a run's orchestration share is (wall − Σ step "
            "times) / wall. Peak RSS: this process, Spark's JVM and dbt's subprocesses, summed, sampled every "
            "0.25 s and assigned to the step running at the time (a process keeps memory it has freed, so a "
            "step's peak can be an earlier step's).",
            step_table(sizes),
        ]
    )
    print(text)
    if args.write:
        write_section("scaling", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
