"""Benchmark: one tick of the retraining sensor over a lake holding N days of quality and monitoring
records (what a long-running deployment accumulates), evaluated through Dagster's own sensor API.

    .venv/bin/python bench/sensor_tick.py [--days 365] [--ticks 20]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg  # noqa: E402

from assets.graph import DatasetGraph  # noqa: E402
from jobs import TRAIN_JOB  # noqa: E402
from kennel.lake import DatasetLake  # noqa: E402
from kennel.lake.records import FeatureDriftRow, MonitoringRecord, QualityRecord, RowCount  # noqa: E402
from kennel.spec import load_spec  # noqa: E402
from resources.lake import LakeResource  # noqa: E402
from sensors.retraining import build_retraining_sensor  # noqa: E402


def write_records(data: DatasetLake, days: int) -> None:
    """A quality record and a data-drift record per day, as ingestion and monitoring write them (every
    50th day fails validation, every 90th drifts)."""
    start = date(2025, 1, 1)
    written_at = "2025-01-01T00:00:00+00:00"
    for i in range(days):
        day = (start + timedelta(days=i)).isoformat()
        passed = i % 50 != 7
        data.write_quality(
            QualityRecord(
                dataset=data.name,
                day=day,
                passed=passed,
                run_id="bench",
                written_at=written_at,
                spec_fingerprint="bench",
                rows_in=2000,
                rows_clean=2000,
                rows_quarantined=0,
                quarantine_rate=0.0,
                max_quarantine_fraction=0.05,
                row_count=RowCount(clean=2000),
                checks={"gx_row_count": passed},
            )
        )
        data.write_monitoring(
            MonitoringRecord(
                kind="data_drift",
                day=day,
                written_at=written_at,
                status="ok",
                champion="bench",
                drifted_share=0.05 + (0.3 if i % 90 == 0 else 0.0),
                prediction_psi=0.01,
                features=[FeatureDriftRow(feature=f"f{k}", kind="numeric", status="ok", rows=2000) for k in range(20)],
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    spec = load_spec()
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        lake = LakeResource(root=tmp)
        write_records(lake.dataset(spec.name), args.days)
        sensor = build_retraining_sensor(spec, DatasetGraph(spec.name), TRAIN_JOB)
        cursor, times = None, []
        for _ in range(args.ticks):
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}) as context:
                started = time.perf_counter()
                result = sensor(context)
                times.append(time.perf_counter() - started)
            cursor = result.cursor
        print(
            json.dumps(
                {
                    "days_of_records": args.days,
                    "first_tick_ms (decides on every day)": round(times[0] * 1000, 1),
                    "steady_tick_ms (median of later ticks, nothing new)": round(
                        statistics.median(times[1:]) * 1000, 1
                    ),
                    "max_later_tick_ms": round(max(times[1:]) * 1000, 1),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
