"""A corpus of malformed inputs (CSV, JSON Lines, Parquet): every row must land where its tag says.

Each data row carries `<expected outcome>#<n>` in an `expect` field (tests/data/corpus/spec.yaml), so
a quarantined row is recognised by the tag in its original record and a clean row by its id.
"""

import csv
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from kennel.ingestion.cleaning import clean_partition
from kennel.ingestion.reasons import Reason
from kennel.spec import load_spec

CORPUS = Path(__file__).parent / "data" / "corpus"
DAY = "2026-01-01"
TAG = re.compile(r"\b([a-z_]+#\d+)\b")


@pytest.fixture(scope="module")
def corpus_spec():
    return load_spec(CORPUS / "spec.yaml")


def _spec_for(spec, fmt):
    return spec.model_copy(update={"source": spec.source.model_copy(update={"format": fmt})})


def _expected_from_text(files: list[Path], fmt: str) -> tuple[dict[str, str], set[str]]:
    """Tag → expected outcome for every non-blank data line, and the ids of the rows expected clean."""
    expected, clean_ids = {}, set()
    for path in files:
        lines = [ln for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        if fmt == "csv":
            # Line by line, as Spark reads: a broken quote must not swallow the lines after it.
            header, lines = next(csv.reader(lines[:1]), []), lines[1:]
            records = [
                dict(zip(header, fields))
                for fields in map(lambda ln: next(csv.reader([ln])), lines)
                if len(fields) == len(header)
            ]
        else:
            records = [json.loads(ln) for ln in lines if ln.startswith("{") and ln.endswith("}")]
        for line in lines:
            tags = TAG.findall(line)
            assert len(tags) == 1, f"corpus line without exactly one tag: {line!r}"
            assert tags[0] not in expected, f"tag used twice: {tags[0]}"
            expected[tags[0]] = tags[0].split("#")[0]
        clean_ids |= {r["id"].strip() for r in records if str(r.get("expect", "")).startswith("clean#")}
    return expected, clean_ids


def _write_parquet_corpus(day_dir: Path) -> tuple[dict[str, str], set[str]]:
    """Typed Parquet files (timestamps, doubles, ints, booleans), one without the label column, one
    with other column types, and one that is not Parquet at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def ts(text):
        return None if text is None else datetime.fromisoformat(text)

    t8, t9 = "2026-01-01T08:00:00", "2026-01-01T09:00:00"
    rows = [
        ("p01", ts(t8), 10.0, "red", "s", True, "yes", "clean#1"),
        ("p02", ts(t8), float("nan"), "red", "s", True, "yes", "wrong_type#2"),
        ("p03", ts(t8), -1.0, "red", "s", True, "no", "out_of_range#3"),
        ("p04", ts(t8), 5.0, "red", "huge", False, "no", "unknown_category#4"),
        ("p05", ts("2026-01-02T08:00:00"), 5.0, "red", "m", False, "no", "timestamp_outside_partition#5"),
        (None, ts(t8), 5.0, "red", "m", False, "no", "missing_required#6"),
        ("p07", ts(t8), None, "red", "m", False, "no", "missing_required#7"),
        ("p08", ts(t9), 1.0, "red", "m", None, "no", "clean#8"),
        ("p08", ts(t8), 1.0, "red", "m", None, "no", "duplicate_id#9"),
        ("p10", ts(t8), 1.0, "blue", None, True, "no", "clean#10"),
        ("p11", ts(t8), 1.0, "red", "m", True, "nope", "invalid_label#11"),
        ("p12", None, 1.0, "red", "m", True, "no", "missing_required#12"),
        ("p13", ts(t8), float("inf"), "red", "m", True, "no", "wrong_type#13"),
    ]
    names = ["id", "ts", "amount", "color", "size", "member", "y", "expect"]
    types = [
        pa.string(),
        pa.timestamp("us"),
        pa.float64(),
        pa.string(),
        pa.string(),
        pa.bool_(),
        pa.string(),
        pa.string(),
    ]
    table = pa.table({n: pa.array([r[i] for r in rows], t) for i, (n, t) in enumerate(zip(names, types))})
    pq.write_table(table.append_column("note", pa.array([7] * len(rows), pa.int64())), day_dir / "part-00000.parquet")
    # Another exporter: amount as integers, the timestamp as text.
    pq.write_table(
        pa.table(
            {
                "id": ["q01", "q02"],
                "ts": [t8, "yesterday"],
                "amount": pa.array([42, 43], pa.int64()),
                "color": ["green", "green"],
                "size": ["l", "l"],
                "member": [False, False],
                "y": ["yes", "no"],
                "expect": ["clean#14", "wrong_type#15"],
            }
        ),
        day_dir / "part-00001.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "id": ["r01"],
                "ts": [t8],
                "amount": [1.0],
                "color": ["red"],
                "size": ["s"],
                "member": [True],
                "expect": ["missing_column#16"],
            }
        ),
        day_dir / "part-00002-no-label.parquet",
    )
    broken = (day_dir / "part-00000.parquet").read_bytes()
    (day_dir / "part-00003-truncated.parquet").write_bytes(broken[: len(broken) // 2])
    expected = {r[-1]: r[-1].split("#")[0] for r in rows} | {
        "clean#14": "clean",
        "wrong_type#15": "wrong_type",
        "missing_column#16": "missing_column",
    }
    return expected, {"p01", "p08", "p10", "q01"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_every_corpus_row_lands_where_its_tag_says(spark, corpus_spec, tmp_path, fmt):
    spec = _spec_for(corpus_spec, fmt)
    day_dir = tmp_path / "landing" / DAY
    if fmt == "parquet":
        day_dir.mkdir(parents=True)
        expected, clean_ids = _write_parquet_corpus(day_dir)
        untagged = {"part-00003-truncated.parquet": Reason.unreadable_file.value}
    else:
        shutil.copytree(CORPUS / fmt / DAY, day_dir)
        expected, clean_ids = _expected_from_text(sorted(day_dir.iterdir()), fmt)
        untagged = {}
    files = sorted(day_dir.iterdir())
    lake = tmp_path / "lake"
    result = clean_partition(spark, spec, files, DAY, lake / "clean", lake / "quarantine", lake / "_staging")

    clean = pd.read_parquet(lake / "clean")
    quarantine = pd.read_parquet(lake / "quarantine")
    tags = quarantine["raw"].str.extract(TAG.pattern)[0]
    tagged = quarantine[tags.notna()].assign(tag=tags[tags.notna()])
    assert not tagged["tag"].duplicated().any(), "a row was quarantined twice"
    assert dict(zip(tagged["tag"], tagged["reason"])) == {t: r for t, r in expected.items() if r != "clean"}
    rest = quarantine[tags.isna()]
    assert dict(zip(rest["source_file"], rest["reason"])) == untagged and len(rest) == len(untagged)
    assert sorted(clean["id"]) == sorted(clean_ids)

    assert result.rows_in == len(expected) + len(untagged)
    assert result.reconciled and result.rows_clean == len(clean_ids)
    assert quarantine["detail"].notna().all() and quarantine["raw"].notna().all()
    assert set(quarantine["reason"]) <= {r.value for r in Reason}
    # Unknown colours are kept as "other" (the spec says so for color), unknown sizes are quarantined.
    assert (
        set(clean["color"]) <= {"red", "green", "other"}
        and (clean["color"] == "other").sum() == result.mapped_to_other["color"] == 1
    )
    assert all("expect" in cols for cols in result.extra_columns.values()) and result.extra_columns
    assert "expect" not in clean.columns
    assert (clean["ts"].dt.strftime("%Y-%m-%d") == DAY).all()
    if fmt == "csv":
        assert result.unreadable_files and "amount" in next(iter(result.unreadable_files.values()))
        assert result.missing_columns == {"part-00001-old-exporter.csv": ["size"]}


def test_whitespace_and_number_forms_are_normalised(spark, corpus_spec, tmp_path):
    day_dir = tmp_path / "landing" / DAY
    shutil.copytree(CORPUS / "csv" / DAY, day_dir)
    lake = tmp_path / "lake"
    clean_partition(
        spark, corpus_spec, sorted(day_dir.iterdir()), DAY, lake / "clean", lake / "quarantine", lake / "_staging"
    )
    row = pd.read_parquet(lake / "clean").set_index("id").loc["a16"]
    assert (row["amount"], row["color"], row["size"], row["member"], row["y"]) == (150.0, "green", "l", True, 1)
    assert row["ts"] == pd.Timestamp("2026-01-01 09:00:00", tz="UTC")
    assert pd.read_parquet(lake / "clean").set_index("id").loc["a,20", "amount"] == 1000.0
