"""`kennel init` and `kennel check` on data Kennel never saw, and on the demo's: the drafted spec loads,
types each column as cleaning reads it, asks (or names the flag) when a choice is ambiguous, and
quarantines the demo's corrupt days exactly as the hand-written demo spec does."""

import argparse
import csv
import io
import re
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import yaml

from kennel.demo.generator import GenerationReport, generate
from kennel.onboarding.cli import add_check_parser, add_init_parser
from kennel.onboarding.dry_run import CheckReport, dry_run
from kennel.onboarding.infer import InitRequest, init_spec
from kennel.spec import DEFAULT_SPEC_PATH, FeatureType, load_spec
from tests.stranger_data import write_stranger_dataset

START = date(2026, 3, 1)


def kennel(*argv: str) -> int:
    """The subcommands as the `kennel` console script wires them."""
    parser = argparse.ArgumentParser(prog="kennel")
    subcommands = parser.add_subparsers(required=True)
    add_init_parser(subcommands)
    add_check_parser(subcommands)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch):
    """Without a terminal nothing can be asked: ambiguity must end the command."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stranger") / "landing"
    write_stranger_dataset(folder, start=START, days=10, rows_per_day=1000, drift_from_day=7)
    return folder


def test_init_drafts_a_commented_spec_for_data_kennel_never_saw(stranger, tmp_path, capsys):
    out = tmp_path / "shipments.yaml"
    assert kennel("init", stranger, "--name", "shipments", "--label", "delivered_late", "--out", out) == 0
    printed = capsys.readouterr().out
    assert "timestamp column: booked_at (the only column of timestamps" in printed
    assert "id column: shipment_ref (the only column with a value in every sampled row" in printed

    spec = load_spec(out)
    assert spec.source_location() == str(stranger.resolve())
    assert (spec.source.format, spec.source.options) == ("csv", {"delimiter": ";"})
    assert (spec.id_column, spec.timestamp_column, spec.start_date) == ("shipment_ref", "booked_at", START)
    assert (spec.label.column, spec.label.positive, spec.label.negative) == ("delivered_late", "yes", "no")
    assert spec.sensitive_columns == ()
    assert spec.split.total_days == 10
    types = {f.name: f.type for f in spec.features}
    assert types == {
        "carrier": FeatureType.categorical,
        "origin_station": FeatureType.categorical,
        "package_type": FeatureType.categorical,
        "weight_kg": FeatureType.numeric,
        "distance_km": FeatureType.numeric,
        "declared_value": FeatureType.numeric,
        "is_express": FeatureType.boolean,
        "customer_segment": FeatureType.categorical,
    }
    carrier, station, package = (spec.feature(n) for n in ("carrier", "origin_station", "package_type"))
    assert len(carrier.categories or ()) == 5 and carrier.unknown_category == "quarantine"
    # 150 Zipf-distributed codes: learned, not listed, keeping the frequent ones.
    assert station.categories is None and station.learned_categories is not None
    assert 10 <= station.learned_categories < 150
    # Four common package types and a tail of rare ones: unseen values become "other".
    assert package.unknown_category == "other" and "other" in (package.categories or ())
    weight, distance = spec.feature("weight_kg"), spec.feature("distance_km")
    assert weight.min == 0 and weight.max is not None and weight.max > 50 and weight.nullable
    assert distance.min == 0 and not distance.nullable

    text = out.read_text()
    for evidence in (
        "sensitive_columns:",
        "learned_categories: ",
        "long tail:",
        "# no negative value seen",
        "have no label yet",
    ):
        assert evidence in text
    # The same files give the same spec.
    again = tmp_path / "again.yaml"
    assert kennel("init", stranger, "--name", "shipments", "--label", "delivered_late", "--out", again) == 0
    assert again.read_text() == text


def test_an_ambiguous_label_without_a_terminal_names_the_candidates_and_the_flag(stranger, tmp_path, capsys):
    out = tmp_path / "shipments.yaml"
    assert kennel("init", stranger, "--name", "shipments", "--out", out) == 2
    error = capsys.readouterr().err
    assert "--label COLUMN" in error and "is_express" in error and "delivered_late" in error
    assert not out.exists()


def test_an_answer_on_the_terminal_settles_the_choice(stranger, tmp_path):
    asked = []

    def answer(question, candidates):
        asked.append((question, [name for name, _ in candidates]))
        return "delivered_late"

    init_spec(InitRequest(source=str(stranger), name="shipments", out=tmp_path / "s.yaml", rows_per_day=200), answer)
    assert asked == [("Which column is the label?", ["is_express", "delivered_late"])]
    assert load_spec(tmp_path / "s.yaml").label.positive == "yes"


@pytest.mark.parametrize("file_format", ["parquet", "jsonl"])
def test_init_reads_parquet_and_json_lines(stranger, tmp_path, file_format):
    import pandas as pd

    for csv_file in sorted(stranger.glob("*/part-00000.csv"))[:2]:
        frame = pd.read_csv(csv_file, sep=";", dtype={"is_express": str, "delivered_late": str})
        target = tmp_path / "landing" / csv_file.parent.name / f"part-00000.{file_format}"
        target.parent.mkdir(parents=True)
        if file_format == "parquet":
            frame.to_parquet(target)
        else:
            frame.to_json(target, orient="records", lines=True)
    out = tmp_path / "s.yaml"
    assert kennel("init", tmp_path / "landing", "--name", "s", "--label", "delivered_late", "--out", out) == 0
    spec = load_spec(out)
    assert spec.source.format == file_format and spec.source.options == {}
    assert spec.feature("weight_kg").type is FeatureType.numeric and spec.feature("weight_kg").nullable
    assert spec.feature("is_express").type is FeatureType.boolean
    assert (spec.id_column, spec.timestamp_column, spec.label.positive) == ("shipment_ref", "booked_at", "yes")


def _write_days(folder: Path, header: list[str], rows: list[list[str]], days: int = 2) -> None:
    for i in range(days):
        day_dir = folder / date(2026, 5, 1 + i).isoformat()
        day_dir.mkdir(parents=True)
        with (day_dir / "part-0.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows([[v.replace("DAY", day_dir.name) for v in row] for row in rows])


def test_a_column_name_kennel_refuses_is_named_with_the_reason(tmp_path, capsys):
    rows = [
        [f"r{i}-DAY", "DAY 10:00:00", str(i % 7), "x" if i % 2 else "y", "late" if i % 3 else "on_time"]
        for i in range(30)
    ]
    _write_days(tmp_path / "landing", ["ref", "at", "reason", "weight (kg)", "outcome"], rows)
    assert kennel("init", tmp_path / "landing", "--name", "odd", "--out", tmp_path / "odd.yaml") == 2
    error = capsys.readouterr().err
    assert "column 'reason' is reserved by Kennel for the quarantine table" in error
    assert "column 'weight (kg)' must be a plain identifier" in error
    assert not (tmp_path / "odd.yaml").exists()


def test_a_label_without_an_obvious_positive_value_asks_for_it(tmp_path, capsys):
    rows = [[f"r{i}-DAY", "DAY 10:00:00", str(i % 7), "late" if i % 3 else "on_time"] for i in range(30)]
    _write_days(tmp_path / "landing", ["ref", "at", "size", "outcome"], rows)
    out = tmp_path / "s.yaml"
    assert kennel("init", tmp_path / "landing", "--name", "s", "--out", out) == 2
    assert "Pass --positive VALUE" in capsys.readouterr().err
    assert kennel("init", tmp_path / "landing", "--name", "s", "--out", out, "--positive", "LATE") == 0
    spec = load_spec(out)
    assert (spec.label.column, spec.label.positive, spec.label.negative) == ("outcome", "late", "on_time")


def test_an_existing_spec_is_kept_without_force(stranger, tmp_path, capsys):
    out = tmp_path / "shipments.yaml"
    out.write_text("mine\n")
    assert kennel("init", stranger, "--name", "shipments", "--label", "delivered_late", "--out", out) == 2
    assert "pass --force" in capsys.readouterr().err and out.read_text() == "mine\n"
    assert kennel("init", stranger, "--name", "shipments", "--label", "delivered_late", "--out", out, "--force") == 0
    assert load_spec(out).name == "shipments"


def test_init_reads_landed_files_on_s3(s3_endpoint, tmp_path, monkeypatch):
    import boto3

    write_stranger_dataset(tmp_path / "landing", start=START, days=3, rows_per_day=300)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="onboarding")
    for path in sorted((tmp_path / "landing").rglob("*.csv")):
        client.upload_file(str(path), "onboarding", f"shipments/{path.relative_to(tmp_path / 'landing').as_posix()}")
    monkeypatch.setenv("KENNEL_S3_ENDPOINT_URL", s3_endpoint)
    out = tmp_path / "s.yaml"
    uri = "s3://onboarding/shipments"
    assert kennel("init", uri, "--name", "shipments", "--label", "delivered_late", "--out", out) == 0
    spec = load_spec(out)
    assert spec.source.uri == uri and spec.start_date == START and spec.id_column == "shipment_ref"


def test_check_refuses_an_invalid_spec_plainly(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_SPEC_PATH.read_text().replace("label: {column: defaulted", "label: {column: reason"))
    assert kennel("check", bad) == 2
    assert "label.column 'reason' is reserved by Kennel" in capsys.readouterr().err


def test_check_fails_when_the_files_cannot_be_listed(tmp_path, capsys):
    spec = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    spec["source"]["uri"] = str(tmp_path / "nowhere")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert kennel("check", tmp_path / "s.yaml") == 1
    assert "nowhere is not a folder" in capsys.readouterr().err


# --- the demo: an inferred spec against the hand-written one -----------------------------------------


def _pointed_at(spec_path: Path, landing: Path, out: Path) -> Path:
    """A copy of a spec whose source is `landing`."""
    spec = yaml.safe_load(spec_path.read_text())
    spec["source"]["uri"] = str(landing)
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


@dataclass(frozen=True)
class DemoLanding:
    folder: Path  # baseline/ (to draft a spec from) and corrupt/ (to clean)
    corrupt: GenerationReport


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoLanding:
    folder = tmp_path_factory.mktemp("demo")
    demo_spec = load_spec(DEFAULT_SPEC_PATH)
    generate(demo_spec, folder / "baseline", days=3, rows_per_day=2000, scenario="baseline")
    corrupt = generate(demo_spec, folder / "corrupt", days=1, rows_per_day=1000, scenario="corrupt")
    return DemoLanding(folder, corrupt)


@pytest.fixture(scope="module")
def inferred_demo_spec(demo) -> Path:
    out = demo.folder / "inferred.yaml"
    init = InitRequest(source=str(demo.folder / "baseline"), name="credit_demo", out=out, label="defaulted")
    init_spec(init)
    return out


@pytest.fixture(scope="module")
def corrupt_checks(spark, demo, inferred_demo_spec) -> dict[str, CheckReport]:
    """Both specs' real cleaning of every corrupt day, every row."""
    specs = {
        "inferred": _pointed_at(inferred_demo_spec, demo.folder / "corrupt", demo.folder / "inferred_corrupt.yaml"),
        "hand-written": _pointed_at(DEFAULT_SPEC_PATH, demo.folder / "corrupt", demo.folder / "demo_corrupt.yaml"),
    }
    return {name: dry_run(load_spec(path), days=2, rows_per_file=10_000) for name, path in specs.items()}


def test_the_inferred_demo_spec_validates(inferred_demo_spec):
    spec = load_spec(inferred_demo_spec)
    demo = load_spec(DEFAULT_SPEC_PATH)
    assert (spec.id_column, spec.timestamp_column) == (demo.id_column, demo.timestamp_column)
    assert (spec.label.positive, spec.label.negative) == (1, 0)
    assert {f.name: f.type for f in spec.features} == {f.name: f.type for f in demo.features}


def test_the_inferred_demo_spec_quarantines_the_corrupt_days_as_the_hand_written_one(demo, corrupt_checks):
    inferred, hand_written = corrupt_checks["inferred"], corrupt_checks["hand-written"]
    per_day = {name: {d.day: d.result.reasons for d in report.days} for name, report in corrupt_checks.items()}
    assert per_day["inferred"] == per_day["hand-written"]
    assert [d.result.rows_clean for d in inferred.days] == [d.result.rows_clean for d in hand_written.days]
    # Every reason the corrupt scenario injects is there to compare.
    assert set(inferred.reasons) == {reason for reason, n in demo.corrupt.expected_reasons.items() if n}


def test_check_prints_reasons_with_counts_and_never_writes_the_real_lake(
    spark, demo, corrupt_checks, tmp_path, monkeypatch, capsys
):
    lake = tmp_path / "lake"
    monkeypatch.setenv("KENNEL_LAKE_ROOT", str(lake))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    corrupt = demo.folder / "corrupt"
    before = sorted(p.relative_to(corrupt) for p in corrupt.rglob("*"))

    assert kennel("check", demo.folder / "inferred_corrupt.yaml", "--days", "1", "--rows", "300") == 0
    printed = capsys.readouterr().out
    day = min(demo.corrupt.rows_per_day)
    # At most 300 data lines of each of the day's files (the corrupt day also lands a file lacking a column).
    lines = [len((corrupt / day / f.name).read_text().splitlines()) - 1 for f in (corrupt / day).iterdir()]
    sampled = sum(min(300, n) for n in lines)
    assert f"{day}: {sampled} rows in" in printed and f"total: {sampled} rows in" in printed
    assert "at most the first 300 rows of each file" in printed
    assert re.search(r"^  [a-z_]+ +\d+   e\.g\. \S", printed, re.MULTILINE) and "labelled: " in printed
    assert not lake.exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert sorted(p.relative_to(corrupt) for p in corrupt.rglob("*")) == before

    # The report of the full comparison names each reason with its count and example details.
    lines = corrupt_checks["inferred"].lines()
    for reason, n in corrupt_checks["inferred"].reasons.items():
        assert any(line.startswith(f"  {reason} ") and f" {n:,}   e.g. " in line for line in lines)
