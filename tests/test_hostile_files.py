"""Hostile landed files: control characters, other encodings, huge fields, exotic number notations,
symbolic links, folders named like data and empty files. Every line is tagged with where it must land
(clean, or quarantined with which reason), in the style of tests/test_corpus.py; the files are built
here, byte by byte, rather than kept as fixtures (NULs, UTF-16 and links do not survive editors and
checkouts well).

Asserted for every file: raw = clean + quarantined (rows_reconcile never fails), each tagged line lands
where its tag says, and nothing lands that no line asked for. A line with a visible tag is found in
quarantine by its tag (the escaped bytes keep it), a line without one (NULs only) by its line number,
which the detail of a line that holds no record names. Through Dagster: a symbolic link (to a file
outside the landing folder, to /etc/passwd, to a folder) and a folder named like a data file are
refused, named in the quality record, and nothing of theirs reaches the lake.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from kennel.ingestion.cleaning import clean_partition, count_raw_rows, escaped, is_blank, landed_lines
from kennel.ingestion.landing import (
    REFUSALS_FILE,
    copy_landed_file,
    day_fingerprint,
    landed_files,
    list_landed,
    read_refusals,
)
from kennel.ingestion.reasons import Reason
from kennel.spec import MAX_ID_LENGTH, load_spec
from tests.projects import Project, spec_file

CORPUS_SPEC = Path(__file__).parent / "data" / "corpus" / "spec.yaml"
DAY = "2026-01-01"
T = "2026-01-01T08:00:00"
TAG = re.compile(r"\b([a-z_]+#\d+)\b")
HEADER = b"id,ts,amount,color,size,member,y,expect"
CLEAN = "clean"
HUGE = 20 * 1024 * 1024  # a 20 MiB id


@dataclass(frozen=True)
class Line:
    """One line of a landed file and where it must land: "clean", a reason code, or None for a line
    that is no record (a header, a blank line)."""

    data: bytes
    lands: str | None = None
    id: str | None = None  # the id a clean line keeps


@dataclass(frozen=True)
class WholeFile:
    """A file quarantined as a whole: every non-blank line but its header, under one reason."""

    data: bytes
    reason: str
    rows: int
    detail_mentions: str


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class Corpus:
    """Landed files and where each of their lines must land; tags are numbered across the corpus."""

    def __init__(self) -> None:
        self.files: dict[str, list[Line]] = {}
        self.whole: dict[str, WholeFile] = {}
        self.raw_bytes: dict[str, bytes] = {}
        self._tags = 0

    def tag(self, lands: str) -> str:
        self._tags += 1
        return f"{lands}#{self._tags}"

    def csv(
        self, lands: str, id: str | bytes, amount: str | bytes = "10", color: str | bytes = "red", y: str = "yes",
        tail: bytes = b"",
    ) -> Line:  # fmt: skip
        """A CSV record line tagged with where it lands; `tail` comes after the tag."""
        fields = [_bytes(id), T.encode(), _bytes(amount), _bytes(color), b"s", b"true", y.encode()]
        line = b",".join([*fields, self.tag(lands).encode() + tail])
        return Line(line, lands, _bytes(id).decode().strip(" \t") if lands == CLEAN else None)

    def json(self, lands: str, id: str, tail: bytes = b"", **values: object) -> Line:
        record = {"id": id, "ts": T, "amount": 10, "color": "red", "size": "s", "member": True, "y": "yes"}
        record |= values
        record["expect"] = self.tag(lands)
        return Line(json.dumps(record, ensure_ascii=False).encode() + tail, lands, id if lands == CLEAN else None)

    def add(self, name: str, lines: list[Line], newline: bytes = b"\n", final_newline: bool = True) -> None:
        self.files[name] = lines
        self.raw_bytes[name] = newline.join(line.data for line in lines) + (newline if final_newline else b"")

    def add_whole(self, name: str, whole: WholeFile) -> None:
        self.whole[name] = whole
        self.raw_bytes[name] = whole.data

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.raw_bytes.items():
            (folder / name).write_bytes(data)
        return sorted(folder / name for name in self.raw_bytes)

    @property
    def rows(self) -> int:
        return sum(1 for lines in self.files.values() for line in lines if line.lands) + sum(
            w.rows for w in self.whole.values()
        )

    def clean_ids(self) -> list[str]:
        return sorted(line.id for lines in self.files.values() for line in lines if line.lands == CLEAN and line.id)


def csv_corpus() -> Corpus:
    c = Corpus()
    u = Reason.unparsable_line.value
    # Control characters: lines of nothing else (before the header too), inside a record, at the end
    # of a file without a final line end (as the NUL after a UTF-16 file's last \n).
    c.add(
        "part-00000-control.csv",
        [
            Line(b"\x1c", u),  # before the header: neither the header nor lost
            Line(b"\x00\x00", u),
            Line(HEADER),
            c.csv(CLEAN, "c01"),
            Line(b"\x00", u),
            Line(b"\x01\x02", u),
            c.csv(u, "c02", amount=b"1\x00"),
            Line(b" \t "),  # blank
            Line(b""),  # blank
            Line(b"\x0b\x0c"),  # blank: vertical tab and form feed are whitespace
            Line(b"\x7f", u),
            c.csv(u, "c03", tail="\u0085".encode()),  # a C1 control character
            Line("\u00a0\u200b".encode(), u),  # nothing visible: a no-break and a zero-width space
            Line(b"# a comment line " + c.tag(u).encode(), u),  # Spark's parser: one field, not eight
            c.csv(CLEAN, "c04", amount="\t12\t"),  # a tab is whitespace, trimmed from the value
            c.csv(u, b"\x1b[31mc05"),  # an ANSI escape
            c.csv(u, "c06", tail=b"\x00"),
            Line(b"\x00", u),  # the file ends here, without a line end
        ],
        final_newline=False,
    )
    c.add(
        "part-00001-cr-line-ends.csv",
        [Line(HEADER), Line(b"\x00", u), c.csv(CLEAN, "r01"), Line(b"\x1c\x1d\x1e\x1f", u), c.csv(CLEAN, "r02")],
        newline=b"\r",
    )
    c.add("part-00002-crlf.csv", [Line(HEADER), c.csv(CLEAN, "r03"), Line(b"\x00", u), Line(b"")], newline=b"\r\n")
    # Numbers: only the grammar [+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)? after trimming.
    not_numbers = ["1d", "1f", "1D", "0x1p4", "0x10", "1_000", "∞", "-∞", "１２", "١٢", "²", "NaN", "nan"]
    not_numbers += ["Infinity", "-Infinity", "inf", "1e400", "-1e400", "1e", "e5", ".", "+-1", "1 000", "1.5.1"]
    numbers = ["1.", "+5", ".5", "5e2", "1E+2", " 7 ", "0005", "1e-400", "-0", "999.999e0", "12.50"]
    c.add(
        "part-00003-numbers.csv",
        [
            Line(HEADER),
            *[c.csv(Reason.wrong_type.value, f"n{i:02d}", amount=v) for i, v in enumerate(not_numbers)],
            *[c.csv(CLEAN, f"v{i:02d}", amount=v) for i, v in enumerate(numbers)],
            c.csv(Reason.out_of_range.value, "o01", amount="1e4"),
            c.csv(Reason.out_of_range.value, "o02", amount="-.1"),
        ],
    )
    # Encodings: Latin-1 bytes are no UTF-8 (the line is quarantined, its bytes escaped); UTF-8 is fine.
    c.add(
        "part-00004-latin1.csv",
        [
            Line(HEADER),
            c.csv(u, "e01", color=b"caf\xe9"),
            c.csv(CLEAN, "e02-é"),
            c.csv(u, "e03", tail=b"\xff"),
        ],
    )
    c.add("part-00005-bom.csv", [Line(b"\xef\xbb\xbf" + HEADER), c.csv(CLEAN, "b01")])
    # UTF-16 with its byte-order mark: the header is no UTF-8, so no line can be read. Its lines are
    # the two records and the 00 after the last 0A (the high byte of the last \n).
    utf16 = "\n".join([HEADER.decode(), f"u01,{T},1,red,s,true,yes,x", f"u02,{T},1,red,s,true,yes,x", ""])
    c.add_whole("part-00006-utf16.csv", WholeFile(utf16.encode("utf-16"), Reason.unreadable_file.value, 3, "UTF-16"))
    # Ids: at most MAX_ID_LENGTH characters (not bytes), after trimming.
    c.add(
        "part-00007-ids.csv",
        [
            Line(HEADER),
            c.csv(Reason.id_too_long.value, "h" * HUGE),
            c.csv(CLEAN, "i" * MAX_ID_LENGTH),
            c.csv(Reason.id_too_long.value, "j" * (MAX_ID_LENGTH + 1)),
            c.csv(CLEAN, "é" * MAX_ID_LENGTH),
            c.csv(CLEAN, "  " + "k" * MAX_ID_LENGTH + "\t "),
        ],
    )
    c.add("part-00008-empty.csv", [], final_newline=False)
    c.add("part-00009-blank.csv", [Line(b" "), Line(b"\t"), Line(b"")])
    c.add("part-00010-only-controls.csv", [Line(b"\x00", u), Line(b"\x00\x00", u)])  # no header at all
    return c


def jsonl_corpus() -> Corpus:
    c = Corpus()
    u, w = Reason.unparsable_line.value, Reason.wrong_type.value
    first = c.json(CLEAN, "j01")
    utf16 = json.dumps({"id": "j09", "ts": T, "amount": 1, "y": "yes", "expect": "x"}).encode("utf-16-le")
    c.add(
        "part-00000.jsonl",
        [
            Line(b"\xef\xbb\xbf" + first.data, CLEAN, "j01"),  # a UTF-8 byte-order mark is no part of the line
            Line(b"\x00", u),
            c.json(w, "j02", amount="1d"),
            Line(c.json(w, "j03").data.replace(b'"amount": 10', b'"amount": 1e400'), w),
            Line(c.json(CLEAN, "j04").data.replace(b'"amount": 10', b'"amount": 1.5E2'), CLEAN, "j04"),
            c.json(w, "j05", amount="0x1p4"),
            c.json(w, "j06", amount="１２"),
            c.json(w, "j07", amount="\x00"),  # escaped in the JSON text (\u0000): a value, not a line problem
            Line(c.json(u, "j08").data.replace(b'"id": "j08"', b'"id": "j\x0008"'), u),  # a raw NUL
            Line(utf16, u),  # UTF-16 without a byte-order mark: NULs between the letters
            Line(c.json(u, "j10").data.replace(b'"red"', b'"caf\xe9"'), u),
            Line(b"\x1c", u),
            c.json(Reason.id_too_long.value, "h" * HUGE),  # longer than Jackson's default string limit
            Line(b"   "),
            c.json(CLEAN, "j11", tail=b"\t "),
        ],
    )
    return c


def parquet_corpus(folder: Path) -> Corpus:
    """Parquet has no lines: the accounting is the footer's row count, one row for a file that is not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    c = Corpus()
    folder.mkdir(parents=True)
    w = Reason.wrong_type.value
    texts = [("p01", "12", CLEAN), ("p02", "1d", w), ("p03", "0x1p4", w), ("p04", "1_000", w), ("p05", "NaN", w)]
    texts += [("p06", "∞", w), ("p07", "1e400", w), ("p08", "h" * 10, w), ("h" * HUGE, "1", Reason.id_too_long.value)]
    doubles = [("d01", 1e-7, CLEAN), ("d02", float("nan"), w), ("d03", float("-inf"), w)]
    doubles += [("d04", 1e300, Reason.out_of_range.value), ("d05", 999.5, CLEAN)]
    for name, rows, kind in [
        ("part-00000-text.parquet", texts, pa.string()),
        ("part-00001-doubles.parquet", doubles, pa.float64()),
    ]:
        c.files[name] = [Line(c.tag(lands).encode(), lands, rid if lands == CLEAN else None) for rid, _, lands in rows]
        table = pa.table(
            {
                "id": [rid for rid, _, _ in rows],
                "ts": [T] * len(rows),
                "amount": pa.array([v for _, v, _ in rows], kind),
                "color": ["red"] * len(rows),
                "size": ["s"] * len(rows),
                "member": [True] * len(rows),
                "y": ["yes"] * len(rows),
                "expect": [line.data.decode() for line in c.files[name]],
            }
        )
        pq.write_table(table, folder / name)
    pq.write_table(table.slice(0, 0), folder / "part-00002-no-rows.parquet")
    (folder / "part-00003-empty.parquet").write_bytes(b"")
    c.whole["part-00003-empty.parquet"] = WholeFile(b"", Reason.unreadable_file.value, 1, "not a readable Parquet")
    return c


def assert_lands_where_tagged(corpus: Corpus, clean: pd.DataFrame, quarantine: pd.DataFrame) -> None:
    tags = quarantine["raw"].str.extract(TAG.pattern)[0]
    claimed: list[int] = []
    for name, lines in corpus.files.items():
        for number, line in enumerate(lines, 1):
            if line.lands in (None, CLEAN):
                continue
            tag = TAG.search(line.data.decode("utf-8", "surrogateescape"))
            if tag:
                found = quarantine[tags == tag.group(1)]
            else:
                by_line = quarantine["detail"].str.startswith(f"line {number}: ")
                found = quarantine[(quarantine["source_file"] == name) & by_line]
            assert len(found) == 1, f"{name} line {number} {line.data[:60]!r}: {len(found)} quarantine rows"
            assert found["reason"].iloc[0] == line.lands, (name, number, found["detail"].iloc[0])
            claimed += list(found.index)
    for name, whole in corpus.whole.items():
        found = quarantine[quarantine["source_file"] == name]
        assert len(found) == whole.rows and set(found["reason"]) == {whole.reason}, name
        assert found["detail"].str.contains(whole.detail_mentions).all(), found["detail"].iloc[0]
        claimed += list(found.index)
    assert sorted(claimed) == sorted(quarantine.index), "quarantine holds rows no line asked for"
    assert sorted(clean["id"]) == corpus.clean_ids()
    assert quarantine["detail"].notna().all() and quarantine["raw"].notna().all()


def _spec(fmt: str, **changes):
    raw = yaml.safe_load(CORPUS_SPEC.read_text())
    raw["source"]["format"] = fmt
    raw.update(changes)
    return raw


def _load(tmp_path: Path, raw: dict):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def _clean(spark, spec, files: list[Path], lake: Path):
    result = clean_partition(spark, spec, files, DAY, lake / "clean", lake / "quarantine", lake / "_staging")
    return result, pd.read_parquet(lake / "clean"), pd.read_parquet(lake / "quarantine")


# --- lines, without Spark ------------------------------------------------------------------------------


def test_lines_end_where_spark_ends_them_and_blank_means_whitespace_only(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xef\xbb\xbfa\r\nb\rc\nd\r\r\n\x00\n\x0b\x0c \t\n\xe9")
    lines = [line for _, line in landed_lines(path)]
    assert lines == [b"a", b"b", b"c", b"d", b"", b"\x00", b"\x0b\x0c \t", b"\xe9"]
    assert [is_blank(line) for line in lines] == [False] * 4 + [True, False, True, False]


def test_escaped_bytes_are_unambiguous_and_keep_what_is_printable():
    assert escaped(b"\x00a\x1c\\b") == "\\x00a\\x1c\\\\b"
    assert escaped(b"caf\xe9 caf\xc3\xa9") == "caf\\xe9 café"  # \xNN >= 80 is always a byte that is not UTF-8
    assert escaped("\u0085\u200b".encode()) == "\\u0085\\u200b"
    assert escaped(b"plain, text") == "plain, text"


def test_the_raw_count_is_every_line_but_blank_ones_and_the_header(tmp_path):
    spec = _load(tmp_path, _spec("csv"))
    corpus = csv_corpus()
    files = corpus.write(tmp_path / "day")
    assert count_raw_rows(spec, files) == corpus.rows


# --- cleaning, directly ---------------------------------------------------------------------------------


def test_every_hostile_csv_line_lands_where_its_tag_says(spark, tmp_path):
    spec = _load(tmp_path, _spec("csv"))
    corpus = csv_corpus()
    result, clean, quarantine = _clean(spark, spec, corpus.write(tmp_path / "landing" / DAY), tmp_path / "lake")
    assert result.rows_in == corpus.rows and result.reconciled, result
    assert_lands_where_tagged(corpus, clean, quarantine)

    amounts = clean.set_index("id")["amount"]
    assert [amounts[f"v{i:02d}"] for i in range(11)] == [1.0, 5.0, 0.5, 500.0, 100.0, 7.0, 5.0, 0.0, 0.0, 999.999, 12.5]
    assert amounts["c04"] == 12.0
    assert (
        "part-00006-utf16.csv" in result.unreadable_files
        and "UTF-16" in result.unreadable_files["part-00006-utf16.csv"]
    )
    # A line that is no record keeps its bytes, escaped, and says why.
    latin1 = quarantine[quarantine["raw"].str.contains("caf\\xe9", regex=False)]
    assert len(latin1) == 1 and "not valid UTF-8 (byte 0xE9" in latin1["detail"].iloc[0]
    nul_line = quarantine[(quarantine["source_file"] == "part-00000-control.csv") & (quarantine["raw"] == "\\x00")]
    assert len(nul_line) == 2 and nul_line["detail"].str.contains("no visible character").all()
    huge = quarantine[quarantine["reason"] == Reason.id_too_long.value]
    assert huge["record_id"].isna().all() and huge["detail"].str.len().max() < 200
    assert huge["raw"].str.len().max() > HUGE, "the original record is kept whole"


def test_every_hostile_json_line_lands_where_its_tag_says(spark, tmp_path):
    spec = _load(tmp_path, _spec("jsonl"))
    corpus = jsonl_corpus()
    result, clean, quarantine = _clean(spark, spec, corpus.write(tmp_path / "landing" / DAY), tmp_path / "lake")
    assert result.rows_in == corpus.rows and result.reconciled, result
    assert_lands_where_tagged(corpus, clean, quarantine)
    assert clean.set_index("id").loc["j04", "amount"] == 150.0


def test_parquet_row_accounting_and_the_number_grammar(spark, tmp_path):
    spec = _load(tmp_path, _spec("parquet"))
    folder = tmp_path / "landing" / DAY
    corpus = parquet_corpus(folder)
    files = sorted(folder.iterdir())
    result, clean, quarantine = _clean(spark, spec, files, tmp_path / "lake")
    assert result.rows_in == corpus.rows and result.reconciled, result
    assert_lands_where_tagged(corpus, clean, quarantine)
    assert clean.set_index("id").loc["d01", "amount"] == 1e-7


def test_a_numeric_label_is_a_number_only_in_the_grammar(spark, tmp_path):
    spec = _load(tmp_path, _spec("csv", label={"column": "y", "positive": 1, "negative": 0}))
    c = Corpus()
    positive = ["1", "1.0", "1e0", "+1", " 1 ", "1.", "001"]
    negative = ["0", "0.0", "-0", ".0e5"]
    invalid = ["1d", "0x1p0", "1f", "１", "NaN", "2", "0.0d", "1_0", "Infinity", "true", "yes"]
    c.add(
        "part-00000.csv",
        [
            Line(HEADER),
            *[c.csv(CLEAN, f"p{i}", y=v) for i, v in enumerate(positive)],
            *[c.csv(CLEAN, f"n{i}", y=v) for i, v in enumerate(negative)],
            *[c.csv(Reason.invalid_label.value, f"x{i}", y=v) for i, v in enumerate(invalid)],
        ],
    )
    result, clean, quarantine = _clean(spark, spec, c.write(tmp_path / "landing" / DAY), tmp_path / "lake")
    assert result.reconciled
    assert_lands_where_tagged(c, clean, quarantine)
    labels = clean.set_index("id")["y"]
    assert all(labels[f"p{i}"] == 1 for i in range(len(positive))) and all(
        labels[f"n{i}"] == 0 for i in range(len(negative))
    )


# --- landing confinement --------------------------------------------------------------------------------


def _hostile_landing(tmp_path: Path) -> tuple[Path, Corpus, dict[str, str]]:
    """A landing folder holding the CSV corpus, and around it what must be refused: name → reason."""
    landing = tmp_path / "landing"
    day = landing / DAY
    corpus = csv_corpus()
    corpus.write(day)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "stolen.csv").write_bytes(HEADER + b"\ns01," + T.encode() + b",1,red,s,true,yes,outside#1\n")
    (day / "part-00011-link.csv").symlink_to(outside / "stolen.csv")
    (day / "part-00012-passwd.csv").symlink_to("/etc/passwd")
    (day / "linked").symlink_to(outside, target_is_directory=True)
    (day / "part-00013.csv").mkdir()
    (day / "part-00013.csv" / "inner.csv").write_bytes((outside / "stolen.csv").read_bytes())
    (day / ".part-00014-link.csv").symlink_to("/etc/passwd")  # hidden: in flight, ignored altogether
    refused = {
        f"{DAY}/part-00011-link.csv": "symbolic link: refused",
        f"{DAY}/part-00012-passwd.csv": "symbolic link: refused",
        f"{DAY}/linked": "symbolic link to a folder: refused",
        f"{DAY}/part-00013.csv": "a folder, not a file: refused",
    }
    return landing, corpus, refused


def test_listing_refuses_links_and_folders_and_reports_them(tmp_path):
    landing, corpus, refused = _hostile_landing(tmp_path)
    (landing / "2026-01-02").symlink_to(tmp_path / "outside", target_is_directory=True)  # a whole day, linked
    os.mkfifo(landing / DAY / "part-00015-pipe.csv")
    listed = list_landed(str(landing), "csv")
    by_name = {f.name: f for files in listed.values() for f in files}
    assert {n: f.refused for n, f in by_name.items() if f.refused} == refused | {
        "2026-01-02": "symbolic link to a folder: refused",
        f"{DAY}/part-00015-pipe.csv": "not a regular file (a device, pipe or socket): refused",
    }
    assert {n.split("/")[-1] for n, f in by_name.items() if not f.refused} == set(corpus.raw_bytes)
    assert landed_files(landing, "csv") == {DAY: [landing / DAY / n for n in sorted(corpus.raw_bytes)]}
    # The fingerprint is that of the files a run copies: refused entries do not count.
    accepted = [f for f in listed[DAY] if not f.refused]
    assert day_fingerprint(listed[DAY]) == day_fingerprint(accepted)


def test_a_file_swapped_for_a_link_after_listing_is_not_followed(tmp_path):
    landing, _, _ = _hostile_landing(tmp_path)
    file = next(f for f in list_landed(str(landing), "csv")[DAY] if f.name.endswith("part-00005-bom.csv"))
    (landing / file.name).unlink()
    (landing / file.name).symlink_to("/etc/passwd")
    with pytest.raises(OSError):
        copy_landed_file(landing, file, tmp_path / "copy.csv")
    assert not (tmp_path / "copy.csv").exists()


def test_hostile_landing_through_dagster_ingestion(tmp_path):
    """raw_records + clean_records for one day in a real Dagster instance."""
    landing, corpus, refused = _hostile_landing(tmp_path)
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(_spec("csv", quality={"max_quarantine_fraction": 1.0})))
    with dg.instance_for_test() as instance:
        project = Project(tmp_path, spec_file(tmp_path, landing, base=base), instance)
        job = dg.define_asset_job(
            "hostile_ingest",
            selection=["raw_records", "clean_records", "quarantined_records"],
            partitions_def=project.defs.resolve_job_def("ingest_daily").partitions_def,
        ).resolve(asset_graph=project.defs.resolve_asset_graph())
        result = job.execute_in_process(
            instance=instance, partition_key=DAY, raise_on_error=False, resources=project.defs.resources
        )
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["rows_reconcile"] is True
        raw_metadata = project.metadata("raw_records")

    data = project.lake.dataset(project.spec.name)
    record = data.quality(DAY)
    assert record is not None and record.rows_in == corpus.rows == record.rows_clean + record.rows_quarantined
    for name, why in refused.items():
        assert record.schema_drift.unreadable_files[name] == why
    assert "UTF-16" in record.schema_drift.unreadable_files["part-00006-utf16.csv"]

    raw_dir = data.raw_dir(DAY)
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted([*corpus.raw_bytes, REFUSALS_FILE])
    assert not any(p.is_symlink() or p.is_dir() for p in raw_dir.iterdir())
    assert read_refusals(raw_dir) == refused
    assert all((raw_dir / name).read_bytes() == data for name, data in corpus.raw_bytes.items())
    landed = [f for f in list_landed(str(landing), "csv")[DAY] if not f.refused]
    assert raw_metadata["landed_fingerprints"] == {DAY: day_fingerprint(landed)}

    [clean_file] = list(data.clean_dir(DAY).rglob("*.parquet"))
    [quarantine_file] = list(data.quarantine_dir(DAY).rglob("*.parquet"))
    clean, quarantine = pd.read_parquet(clean_file), pd.read_parquet(quarantine_file)
    assert_lands_where_tagged(corpus, clean, quarantine)
    # Nothing a link pointed at reached the lake: not /etc/passwd, not the file outside the landing.
    passwd_line = Path("/etc/passwd").read_text().splitlines()[0]
    for table in (clean, quarantine):
        text = table.astype(str).to_csv()
        assert passwd_line not in text and "outside#1" not in text and "s01" not in text
    for path in data.lake.root.rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json"):
            assert passwd_line.encode() not in path.read_bytes(), path
