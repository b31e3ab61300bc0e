"""Spark cleaning of one daily partition: type every column by the spec, route bad rows to quarantine.

Every raw row ends in exactly one place: the clean table, or the quarantine table with a reason code
(kennel.ingestion.reasons), a detail naming the column and value, and the original record. Output is written
as one sorted Parquet file per partition and swapped in with an atomic rename, so a reader sees the
old file or the new one, never half of one, and a re-run gives byte-for-byte the same file.

A landed text file (CSV, JSON Lines) is split into lines here, in Python, before Spark sees it: the
raw count and the parser share one definition of a line and of a blank one (`landed_lines`,
`is_blank`), and every non-blank line is a record, the CSV header, or quarantined as unparsable_line
with its bytes escaped (`escaped`): a line that is not valid UTF-8, holds a control character or has
no visible character. Spark parses only the lines that can hold a record, so none vanishes on the way
(Spark's CSV reader drops a line made only of control characters as if it were blank).

Schema drift is judged per landed file: columns the spec does not know are kept out of the clean
table and reported; a CSV or Parquet file lacking a required column has all of its rows quarantined
(missing_column). A JSON Lines record names its own fields, so a key it lacks is judged per record.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.ingestion.landing import read_refusals
from kennel.ingestion.reasons import Reason
from kennel.spec import (
    MAX_CATEGORY_LENGTH,
    MAX_ID_LENGTH,
    OTHER_CATEGORY,
    UNPRINTABLE_CATEGORY_PATTERN,
    WHITESPACE,
    DatasetSpec,
    FeatureType,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

CORRUPT = "_corrupt_record"
TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
QUARANTINE_COLUMNS = ["record_id", "reason", "detail", "raw", "source_file", "partition_date"]
PART_FILE = "part-00000.parquet"
# Whitespace, as ingestion defines it: the ASCII whitespace on which Python's bytes.strip() and Java's
# \s agree. A blank line is empty or holds nothing but these; values are trimmed of them.
_WHITESPACE_BYTES = WHITESPACE.encode("ascii")
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # little- and big-endian (UTF-32LE's starts the same)
# A number, after trimming: an optional sign, decimal digits with an optional fraction, an optional
# exponent. Spark's cast (Java's Double.parseDouble) also takes 1d, 1f, 0x1p4, NaN and Infinity; no such
# text is a number here. \z, not $: Java's $ also matches before a final \u2028 or \u0085.
NUMBER_GRAMMAR = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
_NUMBER = rf"^(?:{NUMBER_GRAMMAR})\z"
# Control characters (Unicode Cc). Neither CSV (RFC 4180) nor JSON text holds one raw, apart from the
# tab (whitespace, or a field delimiter) and a file's own delimiter, such as Hive's \x01.
_CONTROL_CHARACTERS = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))
# A JSON line is one record however long: Jackson's default limit on a string (20 M characters) would
# make a line holding a long value unparsable.
_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT, "maxStringLen": str(2**31 - 1)}


@dataclass
class CleaningResult:
    partition: str
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    reasons: dict[str, int]
    rows_labelled: int  # clean rows whose label is known (the others wait for a late label)
    extra_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> unexpected columns
    missing_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> absent columns
    unreadable_files: dict[str, str] = field(default_factory=dict)  # file -> why it cannot be read (or was refused)
    mapped_to_other: dict[str, int] = field(default_factory=dict)  # feature -> unknown values kept as "other"

    @property
    def reconciled(self) -> bool:
        return self.rows_in == self.rows_clean + self.rows_quarantined


def _delimiter(spec: DatasetSpec) -> str:
    return str(spec.source.options.get("delimiter", ","))


# --- lines ---------------------------------------------------------------------------------------------


def landed_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """A landed text file's lines, numbered from 1, without their line ends. A line ends at \\n, \\r\\n
    or a lone \\r, as Spark's line reader has it; a UTF-8 byte-order mark opening the file is no part of
    its first line. Bytes, not text: a line that is not UTF-8 is still a line."""
    number = 0
    with open(path, "rb") as fh:
        for i, chunk in enumerate(fh):
            if i == 0:
                chunk = chunk.removeprefix(_UTF8_BOM)
            if chunk.endswith(b"\n"):
                chunk = chunk[:-2] if chunk.endswith(b"\r\n") else chunk[:-1]
            for line in chunk.split(b"\r"):
                number += 1
                yield number, line


def is_blank(line: bytes) -> bool:
    """The one definition of a blank line, which the raw count and the parser share: empty, or nothing
    but WHITESPACE. A blank line is no record and is not counted; every other line is accounted for."""
    return not line.strip(_WHITESPACE_BYTES)


def _visible(text: str) -> bool:
    """Whether text holds a character a person can see: printable and not a space (so not a control
    character, an invisible one such as U+200B or U+00A0, or a byte that is not UTF-8)."""
    return any(c.isprintable() and not c.isspace() for c in text)


def _could_be_header(line: bytes) -> bool:
    """A CSV file's header is its first line with a visible character: a line of control characters
    before it (a stray \\x1c, NULs) is no header and does not push the header down to a record."""
    return _visible(line.decode("utf-8", "surrogateescape"))


def _not_a_record(line: bytes, controls: re.Pattern[str]) -> str | None:
    """Why a non-blank line cannot hold a record (or a header), or None when it can."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        why = f"is not valid UTF-8 (byte 0x{line[exc.start]:02X} at byte {exc.start + 1})"
        if line.startswith(_UTF16_BOMS):
            why += "; it opens with a UTF-16 byte-order mark, and landed text must be UTF-8"
        return why
    if not _visible(text):
        return "has no visible character, only whitespace, control or invisible characters"
    found = controls.search(text)
    if found:
        return f"holds the control character U+{ord(found.group()):04X} at character {found.start() + 1}"
    return None


def escaped(line: bytes) -> str:
    """A line's bytes as printable text, for the quarantine's `raw`: printable characters as they are, a
    backslash doubled, an ASCII control character and a byte that is not UTF-8 (always 0x80 or above)
    as \\xNN, any other invisible character as \\uNNNN or \\UNNNNNNNN."""
    text = line.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_escaped_character, text))


def _escaped_character(c: str) -> str:
    code = ord(c)
    if c == "\\":
        return "\\\\"
    if c.isprintable():
        return c
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _text_rows(path: Path, has_header: bool) -> int:
    rows, header_seen = 0, not has_header
    for _, line in landed_lines(path):
        if is_blank(line):
            continue
        if not header_seen and _could_be_header(line):
            header_seen = True
            continue
        rows += 1
    return rows


def count_raw_rows(spec: DatasetSpec, files: list[Path]) -> int:
    """Rows as landed, counted without Spark so the reconciliation check does not rest on Spark's parsing;
    lines and blank lines are those cleaning splits (`landed_lines`, `is_blank`).

    CSV: non-blank lines but the header (the first line with a visible character). JSON Lines:
    non-blank lines. Parquet: the footer's row count; a Parquet file that cannot be opened counts as
    one (unreadable) record.
    """
    total = 0
    for f in files:
        if spec.source.format == "parquet":
            total += _parquet_rows(f)
        else:
            total += _text_rows(f, has_header=spec.source.format == "csv")
    return total


def _parquet_rows(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return 1


@dataclass
class _TextFile:
    """A landed CSV or JSON Lines file split into its non-blank lines (see the module's docstring)."""

    records: Path  # the lines that can hold a record, one per line, as UTF-8: all that Spark parses
    not_records: Path  # one line per other line: "line <n>: <why>" TAB its escaped bytes
    header: str | None = None  # CSV: the header line
    unreadable: str | None = None  # why the file as a whole cannot be read


def _split_text_file(path: Path, spec: DatasetSpec, work: Path) -> _TextFile:
    """Split a landed text file into `work`: its header, the lines Spark is to parse, the lines that hold
    no record (with why), and whether the file can be read at all (not when its header is no text)."""
    has_header = spec.source.format == "csv"
    allowed = {"\t", *_delimiter(spec)} if has_header else {"\t"}
    controls = re.compile("[" + re.escape("".join(c for c in _CONTROL_CHARACTERS if c not in allowed)) + "]")
    work.mkdir(parents=True)
    text = _TextFile(work / "records.txt", work / "not_records.txt")
    header_seen = not has_header
    with open(text.records, "wb") as records, open(text.not_records, "w", encoding="utf-8") as not_records:
        for number, line in landed_lines(path):
            if is_blank(line):
                continue
            why = _not_a_record(line, controls)
            if not header_seen and _could_be_header(line):
                header_seen = True
                if why:
                    text.unreadable = f"its header (line {number}) {why}"
                else:
                    text.header = line.decode("utf-8")
            elif why:
                not_records.write(f"line {number}: {why}\t{escaped(line)}\n")
            else:
                records.write(line + b"\n")
    return text


def _header_columns(spec: DatasetSpec, text: _TextFile) -> tuple[list[str], str | None]:
    """The CSV header's column names (an empty name stands for its position; none without a header), or
    why the file cannot be read."""
    if text.header is None:
        return [], text.unreadable
    header = [h.strip(WHITESPACE) for h in next(csv.reader([text.header], delimiter=_delimiter(spec)), [])]
    header = [h or f"_unnamed_{i}" for i, h in enumerate(header)]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        return header, f"the header names column(s) {', '.join(twice)} more than once"
    return header, None


def _jsonl_keys(spark: SparkSession, text: _TextFile) -> list[str]:
    from pyspark.sql import functions as F

    lines = spark.read.text(str(text.records))
    keys = lines.select(F.explode(F.json_object_keys("value")).alias("k")).distinct()
    return sorted(r["k"] for r in keys.collect())


def _parquet_columns(path: Path) -> tuple[list[str], str | None]:
    """A Parquet file's columns, or why it cannot be read as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names), None
    except (pa.ArrowException, OSError) as exc:
        return [], f"not a readable Parquet file: {exc}"


def _quoted(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _read_file(
    spark: SparkSession, spec: DatasetSpec, path: Path, text: _TextFile | None, columns: list[str]
) -> DataFrame:
    """One landed file as rows of strings: the spec's columns it has, CORRUPT (set when the line or
    message cannot be parsed), `_raw` (the original record) and `_source_file`. A text file is read from
    its record lines (`text`), a Parquet file from `path`."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    def all_columns_as_json(df: DataFrame) -> Column:
        return F.to_json(F.struct(*[_quoted(c).alias(c) for c in columns]), {"ignoreNullFields": "false"})

    wanted = [c for c in spec.raw_columns if c in columns]
    if text is None:
        df = spark.read.parquet(str(path))
        df = df.select(*[_quoted(c).cast("string").alias(c) for c in columns])
        df = df.select(*wanted, F.lit(None).cast("string").alias(CORRUPT), all_columns_as_json(df).alias("_raw"))
    elif spec.source.format == "jsonl":
        # Line by line (not spark.read.json): one line is one record even when it holds a JSON array.
        schema = T.StructType([T.StructField(c, T.StringType()) for c in [*wanted, CORRUPT]])
        df = spark.read.text(str(text.records)).select(
            F.from_json("value", schema, _JSON_OPTIONS).alias("r"), F.col("value").alias("_raw")
        )
        df = df.select(*[F.col(f"r.{c}").alias(c) for c in wanted], F.col(f"r.{CORRUPT}").alias(CORRUPT), "_raw")
    else:
        # The file's own header gives the positions (the record lines come without it); the spec decides
        # what is required.
        schema = T.StructType([T.StructField(c, T.StringType()) for c in [*columns, CORRUPT]])
        df = spark.read.csv(
            str(text.records),
            header=False,
            schema=schema,
            mode="PERMISSIVE",
            columnNameOfCorruptRecord=CORRUPT,
            sep=_delimiter(spec),
            enforceSchema=True,
        )
        df = df.select(*wanted, CORRUPT, F.coalesce(F.col(CORRUPT), all_columns_as_json(df)).alias("_raw"))
    return df.withColumn("_source_file", F.lit(path.name))


def _judged(rows: DataFrame, path: Path, reason: Reason, detail: Column) -> DataFrame:
    """Quarantine rows decided before typing (rows with a `raw` column): no record id, one reason."""
    from pyspark.sql import functions as F

    return rows.select(
        F.lit(None).cast("string").alias("record_id"),
        F.lit(reason.value).alias("reason"),
        detail.alias("detail"),
        F.col("raw"),
        F.lit(path.name).alias("source_file"),
    )


def _not_record_lines(spark: SparkSession, text: _TextFile) -> DataFrame:
    """The lines of a text file that cannot hold a record: `raw` (escaped bytes) and `why` (line number and
    reason)."""
    from pyspark.sql import functions as F

    parts = F.split(F.col("value"), "\t", 2)
    return spark.read.text(str(text.not_records)).select(
        F.element_at(parts, 2).alias("raw"), F.element_at(parts, 1).alias("why")
    )


def _whole_file(spark: SparkSession, path: Path, text: _TextFile | None, reason: Reason, detail: str) -> DataFrame:
    """Quarantine rows for a file none of whose rows can be judged: one per non-blank line but the header,
    or one for a binary file that cannot be opened."""
    from pyspark.sql import functions as F

    if text is None:
        note = f"<{path.stat().st_size} bytes that cannot be read as Parquet; the file is kept in raw/>"
        return _judged(spark.createDataFrame([(note,)], "raw string"), path, reason, F.lit(detail))
    lines = spark.read.text(str(text.records)).select(F.col("value").alias("raw"))
    lines = lines.unionByName(_not_record_lines(spark, text).select("raw"))
    return _judged(lines, path, reason, F.lit(detail))


def _trimmed(c: Column) -> Column:
    from pyspark.sql import functions as F

    return F.btrim(c, F.lit(WHITESPACE))


def _number(text: Column) -> Column:
    """The double a trimmed text spells in the number grammar (NUMBER_GRAMMAR), else null."""
    from pyspark.sql import functions as F

    return F.when(text.rlike(_NUMBER), text.try_cast("double"))


def _label_matches(text: Column, value: object) -> Column:
    """Numeric label values compare as numbers (so 1, 1.0 and " 1" agree; only text in the number grammar
    is a number, not 1d or 0x1p0), others case-insensitively. `text`: the stripped label."""
    from pyspark.sql import functions as F

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(text) == float(value)
    return F.lower(text) == str(value).lower()


def _strip(raw: Column) -> Column:
    """The raw text trimmed of WHITESPACE, null where nothing is left (a blank value)."""
    from pyspark.sql import functions as F

    return F.nullif(_trimmed(raw), F.lit(""))


def _stripped(c: str) -> Column:
    """Column c's stripped text, computed once per row in a projection of its own (`_judge`): every rule
    reads it, and string functions are the largest share of cleaning's time (bench/cleaning.py)."""
    from pyspark.sql import functions as F

    return F.col(f"_s_{c}")


def _unknown(c: str, categories: tuple[str, ...]) -> Column:
    return _stripped(c).isNotNull() & ~_stripped(c).isin(*categories)


def _typed_columns(spec: DatasetSpec) -> dict[str, Column]:
    """The typed value of each raw column (null where the raw string does not parse)."""
    from pyspark.sql import functions as F

    s = _stripped
    typed: dict[str, Column] = {
        spec.id_column: F.when(F.length(s(spec.id_column)) <= MAX_ID_LENGTH, s(spec.id_column)),
        spec.timestamp_column: F.try_to_timestamp(s(spec.timestamp_column)),
        spec.label.column: F.when(_label_matches(s(spec.label.column), spec.label.positive), F.lit(1))
        .when(_label_matches(s(spec.label.column), spec.label.negative), F.lit(0))
        .cast("int"),
    }
    for feat in spec.features:
        raw = s(feat.name)
        if feat.type is FeatureType.numeric:
            num = _number(raw)
            # Text in the grammar too large for a double (1e400) is no measurement either.
            typed[feat.name] = F.when(F.abs(num) == float("inf"), F.lit(None)).otherwise(num)
        elif feat.type is FeatureType.boolean:
            low = F.lower(raw)
            typed[feat.name] = F.when(low.isin(*TRUE_WORDS), F.lit(True)).when(low.isin(*FALSE_WORDS), F.lit(False))
        elif feat.unknown_category == "other":
            typed[feat.name] = F.when(_unknown(feat.name, feat.categories or ()), F.lit(OTHER_CATEGORY)).otherwise(raw)
        else:
            typed[feat.name] = raw
    return typed


def _reason_rules(spec: DatasetSpec, day: date) -> list[tuple[Reason, Column, Column]]:
    """(reason, condition, detail) in priority order; the first matching rule names the row's reason."""
    from pyspark.sql import functions as F

    def t(c: str) -> Column:
        return F.col(f"_t_{c}")

    def detail(c: str, what: str) -> Column:
        # Quote the offending value, cut short: details are for people and must stay small.
        return F.concat(F.lit(f"{c}: {what} '"), F.substring(F.col(c), 1, 80), F.lit("'"))

    rules: list[tuple[Reason, Column, Column]] = [
        (
            Reason.unparsable_line,
            F.col(CORRUPT).isNotNull(),
            F.lit(
                "line does not parse into the file's fields (wrong field count, broken quoting or not a JSON object)"
            ),
        ),
    ]
    typed_cols = [spec.timestamp_column] + [f.name for f in spec.features if f.type is not FeatureType.categorical]
    for c in typed_cols:
        expected = "timestamp" if c == spec.timestamp_column else spec.feature(c).type.value
        rules.append((Reason.wrong_type, _stripped(c).isNotNull() & t(c).isNull(), detail(c, f"not a {expected}:")))
    rules.append(
        (
            Reason.id_too_long,
            F.length(_stripped(spec.id_column)) > MAX_ID_LENGTH,
            detail(spec.id_column, f"longer than {MAX_ID_LENGTH} characters:"),
        )
    )
    # The label is not required: a row whose outcome is not known yet (or never will be) is clean with
    # a null label, kept for drift and scoring and labelled later by id (kennel.ingestion.labels).
    required = [spec.id_column, spec.timestamp_column] + [f.name for f in spec.features if not f.nullable]
    for c in required:
        rules.append((Reason.missing_required, _stripped(c).isNull(), F.lit(f"{c}: required value is empty")))
    rules.append(
        (
            Reason.invalid_label,
            _stripped(spec.label.column).isNotNull() & t(spec.label.column).isNull(),
            detail(spec.label.column, f"neither {spec.label.positive!r} nor {spec.label.negative!r}:"),
        )
    )
    for f in spec.features:
        if f.type is FeatureType.numeric and (f.min is not None or f.max is not None):
            lo = t(f.name) < f.min if f.min is not None else F.lit(False)
            hi = t(f.name) > f.max if f.max is not None else F.lit(False)
            rules.append((Reason.out_of_range, lo | hi, detail(f.name, f"outside [{f.min}, {f.max}]:")))
        if f.learned_categories is not None:
            # Any text is a learned category's value, kept as landed: which ones a model keeps is frozen
            # when it is trained, never here. Only text that can be no category at all is refused.
            text = _stripped(f.name)
            rules.append(
                (
                    Reason.invalid_category,
                    F.length(text) > MAX_CATEGORY_LENGTH,
                    detail(f.name, f"longer than {MAX_CATEGORY_LENGTH} characters:"),
                )
            )
            rules.append(
                (
                    Reason.invalid_category,
                    text.rlike(UNPRINTABLE_CATEGORY_PATTERN),
                    detail(f.name, "holds a control or invisible character:"),
                )
            )
        elif f.type is FeatureType.categorical and f.unknown_category == "quarantine":
            rules.append(
                (
                    Reason.unknown_category,
                    _unknown(f.name, f.categories or ()),
                    detail(f.name, "not a declared category:"),
                )
            )
    rules.append(
        (
            Reason.timestamp_outside_partition,
            F.to_date(t(spec.timestamp_column)) != F.lit(day),
            detail(spec.timestamp_column, f"not on {day.isoformat()}:"),
        )
    )
    return rules


def _write_single_parquet(df: DataFrame, final_dir: Path, staging_root: Path, sort_cols: list[str]) -> None:
    """Write df as final_dir/part-00000.parquet, sorted. Spark writes into staging; the one file is then
    renamed over the old one (atomic on one file system), so readers never see a half write."""
    staging_root.mkdir(parents=True, exist_ok=True)
    tmp = staging_root / f"{final_dir.name}-{uuid.uuid4().hex}"
    try:
        df.repartition(1).sortWithinPartitions(*sort_cols).write.mode("overwrite").parquet(str(tmp))
        parts = sorted(tmp.glob("part-*.parquet"))
        if len(parts) != 1:
            raise RuntimeError(f"expected one Parquet part in {tmp}, found {len(parts)}")
        final_dir.mkdir(parents=True, exist_ok=True)
        os.replace(parts[0], final_dir / PART_FILE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in final_dir.iterdir():
        if stale.name != PART_FILE:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


@dataclass
class _Landed:
    """A partition's landed files, read: rows still to type and judge, rows already judged (whole files,
    lines that hold no record), and what the quality record says about the files."""

    to_judge: list[DataFrame] = field(default_factory=list)
    judged: list[DataFrame] = field(default_factory=list)
    extra: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


def _read_landed(spark: SparkSession, spec: DatasetSpec, files: list[Path], work: Path) -> _Landed:
    """Read every landed file; a text file's lines are split into `work` first."""
    from pyspark.sql import functions as F

    landed = _Landed()
    required = spec.raw_columns
    for n, path in enumerate(sorted(files)):
        text = None if spec.source.format == "parquet" else _split_text_file(path, spec, work / str(n))
        if text is None:
            columns, unreadable = _parquet_columns(path)
        elif spec.source.format == "jsonl":
            columns, unreadable = _jsonl_keys(spark, text), None
        else:
            columns, unreadable = _header_columns(spec, text)
        if unreadable:
            landed.unreadable[path.name] = unreadable
            landed.judged.append(
                _whole_file(spark, path, text, Reason.unreadable_file, f"file {path.name}: {unreadable}")
            )
            continue
        if text is not None:
            landed.judged.append(_judged(_not_record_lines(spark, text), path, Reason.unparsable_line, F.col("why")))
            if spec.source.format == "csv" and text.header is None:
                continue  # no header, so no records: at most lines without a visible character
        # A JSON record names its own fields: a key it lacks is an empty value (missing_required when
        # the column is required), judged per record, not per file.
        readable = sorted(set(columns) | set(required)) if spec.source.format == "jsonl" else columns
        df = _read_file(spark, spec, path, text, readable)
        absent = [c for c in required if c not in readable]
        if absent:
            # Without a required column no row of this file can be typed: quarantine all of it, but
            # a line that does not even parse keeps that (earlier) reason.
            landed.missing[path.name] = absent
            landed.judged.append(
                df.select(
                    _strip(F.col(spec.id_column)).alias("record_id")
                    if spec.id_column in columns
                    else F.lit(None).cast("string").alias("record_id"),
                    F.when(F.col(CORRUPT).isNotNull(), F.lit(Reason.unparsable_line.value))
                    .otherwise(F.lit(Reason.missing_column.value))
                    .alias("reason"),
                    F.when(F.col(CORRUPT).isNotNull(), F.lit("line does not parse into the file's fields"))
                    .otherwise(F.lit(f"file lacks required column(s): {', '.join(absent)}"))
                    .alias("detail"),
                    F.col("_raw").alias("raw"),
                    F.col("_source_file").alias("source_file"),
                )
            )
            continue
        unexpected = [c for c in columns if c not in required]
        if unexpected:
            landed.extra[path.name] = unexpected  # kept out of the clean table, reported in metadata
        landed.to_judge.append(df)
    return landed


def _judge(
    spark: SparkSession, spec: DatasetSpec, day: date, to_judge: list[DataFrame]
) -> tuple[DataFrame, DataFrame, DataFrame | None, dict[str, int]]:
    """Type and judge rows: (clean rows, quarantined rows, the cached frame both come from, to unpersist
    once written, and the unknown values kept as "other" per feature)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    required = spec.raw_columns
    if not to_judge:
        quarantine_schema = "record_id string, reason string, detail string, raw string, source_file string"
        return spark.createDataFrame([], _clean_schema(spec)), spark.createDataFrame([], quarantine_schema), None, {}
    rows = to_judge[0]
    for other in to_judge[1:]:
        rows = rows.unionByName(other)
    # Stripped text first, in a projection of its own: Spark keeps it apart (its expressions are read many
    # times), so each value is trimmed once, not once per rule that reads it.
    rows = rows.select("*", *[_strip(F.col(c)).alias(f"_s_{c}") for c in required])
    rows = rows.select("*", *[expr.alias(f"_t_{c}") for c, expr in _typed_columns(spec).items()])
    rules = _reason_rules(spec, day)
    others = [f for f in spec.features if f.unknown_category == "other"]
    # Each condition is evaluated once: the index of the first rule that matches names the reason
    # and picks the detail.
    rows = rows.withColumn("_rule", F.coalesce(*[F.when(cond, F.lit(i)) for i, (_, cond, _) in enumerate(rules)]))
    # (Not element_at over an array of reasons: Spark 4.3 returns its last element for a NULL index.)
    rows = rows.withColumn(
        "_reason", F.coalesce(*[F.when(F.col("_rule") == i, F.lit(r.value)) for i, (r, _, _) in enumerate(rules)])
    ).withColumn("_detail", F.coalesce(*[F.when(F.col("_rule") == i, d) for i, (_, _, d) in enumerate(rules)]))
    # Only what the outputs need goes through the shuffle and into the cache: about half the width.
    rows = rows.select(
        *[f"_t_{c}" for c in required], "_reason", "_detail", "_raw", "_source_file", *[f"_s_{f.name}" for f in others]
    )
    # Duplicates: among otherwise valid rows keep the latest version of each id; ties broken by
    # content so the choice is the same on every run.
    latest_first = Window.partitionBy(f"_t_{spec.id_column}").orderBy(
        F.col(f"_t_{spec.timestamp_column}").desc(), F.col("_raw").desc(), F.col("_source_file").desc()
    )
    rank = F.when(F.col("_reason").isNull(), F.row_number().over(latest_first))
    older = F.col("_rank") > 1
    rows = (
        rows.withColumn("_rank", rank)
        .withColumn("_reason", F.when(older, F.lit(Reason.duplicate_id.value)).otherwise(F.col("_reason")))
        .withColumn(
            "_detail",
            F.when(
                older, F.concat(F.lit(f"{spec.id_column}: older copy of "), F.col(f"_t_{spec.id_column}"))
            ).otherwise(F.col("_detail")),
        )
        .cache()
    )
    clean = rows.filter(F.col("_reason").isNull()).select(*[F.col(f"_t_{c}").alias(c) for c in required])
    quarantine = rows.filter(F.col("_reason").isNotNull()).select(
        F.col(f"_t_{spec.id_column}").alias("record_id"),
        F.col("_reason").alias("reason"),
        F.col("_detail").alias("detail"),
        F.col("_raw").alias("raw"),
        F.col("_source_file").alias("source_file"),
    )
    mapped_to_other: dict[str, int] = {}
    if others:
        kept = rows.filter(F.col("_reason").isNull())
        counts = kept.agg(*[F.count_if(_unknown(f.name, f.categories or ())).alias(f.name) for f in others]).first()
        assert counts is not None  # an aggregate without grouping always has one row
        mapped_to_other = {f.name: counts[f.name] for f in others if counts[f.name]}
    return clean, quarantine, rows, mapped_to_other


def clean_partition(
    spark: SparkSession,
    spec: DatasetSpec,
    files: list[Path],
    partition: str,
    clean_dir: Path,
    quarantine_dir: Path,
    staging_root: Path,
) -> CleaningResult:
    """Clean one daily partition's landed files into clean_dir and quarantine_dir (both replaced). Files
    refused at landing (listed beside the files, see kennel.ingestion.landing) are reported as unreadable."""
    from pyspark.sql import functions as F

    day = date.fromisoformat(partition)
    # The lines Spark parses are written here and read while the outputs are written.
    work = staging_root / f"lines-{uuid.uuid4().hex}"
    rows = None
    try:
        landed = _read_landed(spark, spec, files, work)
        clean, quarantine, rows, mapped_to_other = _judge(spark, spec, day, landed.to_judge)
        for part in landed.judged:
            quarantine = quarantine.unionByName(part)
        quarantine = quarantine.withColumn("partition_date", F.lit(day))
        _write_single_parquet(clean, clean_dir, staging_root, [spec.id_column])
        _write_single_parquet(quarantine, quarantine_dir, staging_root, ["source_file", "reason", "record_id", "raw"])
    finally:
        if rows is not None:
            rows.unpersist()
        shutil.rmtree(work, ignore_errors=True)

    for folder in sorted({f.parent for f in files}):
        landed.unreadable.update(read_refusals(folder))
    rows_clean, rows_labelled, reasons = _written_counts(spec, clean_dir, quarantine_dir)
    return CleaningResult(
        partition=partition,
        rows_in=count_raw_rows(spec, files),
        rows_clean=rows_clean,
        rows_quarantined=sum(reasons.values()),
        reasons=dict(sorted(reasons.items())),
        rows_labelled=rows_labelled,
        extra_columns=landed.extra,
        missing_columns=landed.missing,
        unreadable_files=dict(sorted(landed.unreadable.items())),
        mapped_to_other=mapped_to_other,
    )


def _written_counts(spec: DatasetSpec, clean_dir: Path, quarantine_dir: Path) -> tuple[int, int, dict[str, int]]:
    """Clean rows, labelled clean rows and quarantined rows per reason, counted from the files just
    written (so the record cannot disagree with them), one column each with pyarrow: on a small day the
    Spark jobs a read-back takes cost more than the cleaning."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    clean = clean_dir / PART_FILE
    labels = pq.read_table(clean, columns=[spec.label.column]).column(0)
    reasons = pq.read_table(quarantine_dir / PART_FILE, columns=["reason"]).column(0)
    per_reason = pc.value_counts(reasons)
    counts = dict(zip(per_reason.field("values").to_pylist(), per_reason.field("counts").to_pylist(), strict=True))
    return pq.ParquetFile(clean).metadata.num_rows, len(labels) - labels.null_count, counts


def _clean_schema(spec: DatasetSpec) -> str:
    spark_types = {FeatureType.numeric: "double", FeatureType.boolean: "boolean", FeatureType.categorical: "string"}
    cols = [f"`{spec.id_column}` string", f"`{spec.timestamp_column}` timestamp"]
    cols += [f"`{f.name}` {spark_types[f.type]}" for f in spec.features]
    cols.append(f"`{spec.label.column}` int")
    return ", ".join(cols)
