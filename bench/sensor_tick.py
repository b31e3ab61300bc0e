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

from kennel.spec import load_spec  # noqa: E402
from resources.lake import LakeResource  # noqa: E402
from sensors.retraining import SENSOR_NAME, build_retraining_sensors  # noqa: E402


def write_records(lake: LakeResource, dataset: str, days: int) -> None:
    start = date(2025, 1, 1)
    for i in range(days):
        day = (start + timedelta(days=i)).isoformat()
        quality = lake.quality_record(dataset, day)
        quality.parent.mkdir(parents=True, exist_ok=True)
        quality.write_text(json.dumps({"day": day, "passed": i % 50 != 7, "rows_clean": 2000,
                                       "checks": {"gx_row_count": i % 50 != 7}}))
        drift = lake.path("monitoring", dataset, day, "data_drift.json")
        drift.parent.mkdir(parents=True, exist_ok=True)
        drift.write_text(json.dumps({"day": day, "drifted_share": 0.05 + (0.3 if i % 90 == 0 else 0.0),
                                     "prediction_psi": 0.01, "features": [{"feature": f"f{k}"} for k in range(20)]}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    spec = load_spec()
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        lake = LakeResource(root=tmp)
        write_records(lake, spec.name, args.days)
        sensor = next(s for s in build_retraining_sensors(spec, "train_and_package") if s.name == SENSOR_NAME)
        cursor, times = None, []
        for _ in range(args.ticks):
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}) as context:
                started = time.perf_counter()
                result = sensor(context)
                times.append(time.perf_counter() - started)
            cursor = result.cursor
        print(json.dumps({
            "days_of_records": args.days,
            "first_tick_ms (decides on every day)": round(times[0] * 1000, 1),
            "steady_tick_ms (median of later ticks, nothing new)": round(statistics.median(times[1:]) * 1000, 1),
            "max_later_tick_ms": round(max(times[1:]) * 1000, 1),
        }, indent=2))


if __name__ == "__main__":
    main()
