"""A data set Kennel never saw: parcel shipments, labelled by whether the delivery was late.

Nothing here follows the demo's conventions, so `kennel init` has to work the spec out from the files:
other column names, a `;` delimiter, timestamps written with a space (`2026-03-01 14:23:05`), a
yes/no label with empty values (not yet known), Y/N booleans, a categorical with 150 station codes of
long-tailed (Zipf-like) frequency, one with a few common values and a tail of rare ones, and a
sensitive-ish customer segment. The label depends on the features (a model reaches a test AUC well
above 0.6), and from `drift_from_day` on the inputs drift: parcels get heavier and travel further,
and the busiest stations change.

Each day is derived from (seed, day index) only, so the same arguments write byte-identical files.
"""

from __future__ import annotations

import csv
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

DELIMITER = ";"
COLUMNS = (
    "shipment_ref",
    "booked_at",
    "carrier",
    "origin_station",
    "package_type",
    "weight_kg",
    "distance_km",
    "declared_value",
    "is_express",
    "customer_segment",
    "delivered_late",
)
CARRIERS = ("northwind", "swiftline", "pelican", "atlas_freight", "rapidpost")
_CARRIER_SHARE = (0.34, 0.26, 0.2, 0.12, 0.08)
_CARRIER_LATENESS = np.array([0.0, -0.3, 0.4, 0.9, -0.6])  # log-odds of a late delivery
STATIONS = tuple(f"ST{n:03d}" for n in range(1, 151))
# Four common package types and a tail of rare ones that together make up about 6 % of parcels.
COMMON_PACKAGES = ("box", "envelope", "pallet", "tube")
RARE_PACKAGES = ("crate", "drum", "bag", "roll", "case", "cage", "bundle", "sack", "tin", "reel", "coil")
_PACKAGE_SHARE = np.array([0.55, 0.25, 0.09, 0.05] + [0.06 / len(RARE_PACKAGES)] * len(RARE_PACKAGES))
SEGMENTS = ("retail", "small_business", "enterprise")
_SEGMENT_SHARE = (0.55, 0.3, 0.15)
LABEL_MISSING_SHARE = 0.15


def _station_shares(drifted: bool) -> np.ndarray:
    """Zipf-like station frequencies (the k-th busiest has weight 1/k^1.1); after drift the ranking is
    reversed over the first 60 stations, so the busy and the quiet ones swap."""
    ranks = np.arange(1, len(STATIONS) + 1, dtype=float)
    if drifted:
        ranks[:60] = ranks[:60][::-1]
    weights = 1.0 / ranks**1.1
    return weights / weights.sum()


def _station_lateness() -> np.ndarray:
    """Each station's own log-odds of lateness: fixed for the data set, whatever the seed."""
    return np.random.default_rng(20260301).normal(0.0, 0.6, len(STATIONS))


def _day_rows(day: date, rows: int, rng: np.random.Generator, drifted: bool) -> list[list[str]]:
    seconds = np.sort(rng.integers(0, 86_400, rows))
    carrier = rng.choice(len(CARRIERS), rows, p=_CARRIER_SHARE)
    station = rng.choice(len(STATIONS), rows, p=_station_shares(drifted))
    package = rng.choice(len(_PACKAGE_SHARE), rows, p=_PACKAGE_SHARE)
    segment = rng.choice(len(SEGMENTS), rows, p=_SEGMENT_SHARE)
    weight = np.round(rng.lognormal(np.log(4.0) + (0.3 if drifted else 0.0), 0.8, rows), 1)
    weight = np.maximum(weight, 0.1)
    distance = np.round(rng.gamma(2.0, 180.0 * (1.4 if drifted else 1.0), rows)) + 5
    declared = np.round(rng.lognormal(np.log(60.0), 1.0, rows), 2)
    express = rng.random(rows) < 0.25

    logit = (
        -1.9
        + 1.1 * np.log(distance / 360.0)
        + 0.35 * (np.log(weight) - np.log(4.0))
        + _CARRIER_LATENESS[carrier]
        + _station_lateness()[station]
        + 0.5 * (package == COMMON_PACKAGES.index("pallet"))
        - 1.3 * express
        + 0.3 * (segment == SEGMENTS.index("retail"))
        + rng.normal(0.0, 0.5, rows)
    )
    late = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
    unlabelled = rng.random(rows) < LABEL_MISSING_SHARE
    weight_missing = rng.random(rows) < 0.02
    declared_missing = rng.random(rows) < 0.05

    start = datetime(day.year, day.month, day.day)
    packages = COMMON_PACKAGES + RARE_PACKAGES
    lines = []
    for i in range(rows):
        lines.append(
            [
                f"{day:%y%m%d}-{i:05d}-{int(rng.integers(0, 16**4)):04x}",
                (start + timedelta(seconds=int(seconds[i]))).strftime("%Y-%m-%d %H:%M:%S"),
                CARRIERS[carrier[i]],
                STATIONS[station[i]],
                packages[package[i]],
                "" if weight_missing[i] else f"{weight[i]:.1f}",
                f"{int(distance[i])}",
                "" if declared_missing[i] else f"{declared[i]:.2f}",
                "Y" if express[i] else "N",
                SEGMENTS[segment[i]],
                "" if unlabelled[i] else ("yes" if late[i] else "no"),
            ]
        )
    return lines


def write_stranger_dataset(
    folder: Path, *, start: date, days: int, rows_per_day: int, seed: int = 0, drift_from_day: int | None = None
) -> None:
    """Write `days` daily files `<folder>/<YYYY-MM-DD>/part-00000.csv` of `rows_per_day` shipments each,
    the inputs drifting from day index `drift_from_day` on (None: no drift)."""
    for index in range(days):
        day = start + timedelta(days=index)
        rng = np.random.default_rng([seed, index])
        drifted = drift_from_day is not None and index >= drift_from_day
        day_dir = Path(folder) / day.isoformat()
        day_dir.mkdir(parents=True, exist_ok=True)
        with (day_dir / "part-00000.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter=DELIMITER, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(_day_rows(day, rows_per_day, rng, drifted))
