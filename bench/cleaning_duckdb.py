"""The single-node floor for cleaning: kennel.ingestion.cleaning's rules for one daily partition of CSV
files, in DuckDB. It lives in bench/ only, as the figure Spark local-mode cleaning is measured against.

Same rules, same outputs: every landed line ends in the clean table or in quarantine with the same reason
and detail as clean_partition gives it (first matching rule in kennel.ingestion.reasons' order, the
duplicate rule last), typed and named as the spec says, and both outputs are written as one sorted
Parquet file each, swapped in with a rename. The SQL is generated from the data-set spec, not from the
demo's columns; bench/cleaning.py checks row for row that both engines agree.

Lines are Kennel's own (`landed_lines`, `is_blank`, `_split_text_file`): a file that is all ASCII, has no
control character but its delimiter and tabs, no \\r and no blank line has its lines found by DuckDB's
reader directly (the checks run over the whole file at C speed); any other file is split by cleaning's
own Python splitter first, so lines that hold no record are quarantined with cleaning's own words.

Where this floor is narrower than clean_partition (each is a documented difference, not a silent one):
- CSV only (JSON Lines and Parquet landings raise NotImplementedError).
- A line holding the quote character is split by Python's csv module (RFC 4180 with `\\` as escape)
  where Spark uses univocity; an empty quoted field ("") reads as null here, as an empty string there.
- Timestamps: the ISO forms `YYYY-MM-DD`, `YYYY-MM-DD[T ]hh:mm[:ss[.ffffff]]` with an optional `Z` or
  `±hh:mm` offset are parsed as Spark parses them; Spark's rarer forms (a year alone, one-digit months,
  a time of day alone, region zone ids, more than six fraction digits) are wrong_type here.
- A line longer than MAX_LINE_BYTES is refused by DuckDB's reader (Spark has no such limit).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kennel.ingestion.cleaning import (  # noqa: E402
    FALSE_WORDS,
    NUMBER_GRAMMAR,
    PART_FILE,
    TRUE_WORDS,
    _header_columns,
    _split_text_file,
    _TextFile,
)
from kennel.ingestion.reasons import Reason  # noqa: E402
from kennel.spec import (  # noqa: E402
    MAX_CATEGORY_LENGTH,
    MAX_ID_LENGTH,
    OTHER_CATEGORY,
    UNPRINTABLE_CATEGORY_PATTERN,
    WHITESPACE,
    DatasetSpec,
    FeatureType,
)

MAX_LINE_BYTES = 64 * 1024 * 1024
QUOTE = '"'
UNPARSABLE_IN_FILE_LACKING_COLUMNS = "line does not parse into the file's fields"
# The timestamp texts parsed here (see the module's docstring); each is cast to TIMESTAMPTZ in UTC.
_TIMESTAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?"
# ASCII control characters but \t and \n: a file holding none (and no \r) can have its lines read as-is.
_ASCII_CONTROLS = bytes([*range(0x00, 0x09), 0x0B, 0x0C, 0x0D, *range(0x0E, 0x20), 0x7F])
_BLANK_LINE = re.compile(rb"\n[ \t]*\n")  # the first line is the header, checked on its own; the last too
_CHUNK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class DuckdbCleaningResult:
    """What the floor wrote and counted, as clean_partition's CleaningResult has it, with stage timers."""

    rows_in: int
    rows_clean: int
    rows_quarantined: int
    reasons: dict[str, int]
    rows_labelled: int
    mapped_to_other: dict[str, int]
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def reconciled(self) -> bool:
        return self.rows_in == self.rows_clean + self.rows_quarantined


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _delimiter(spec: DatasetSpec) -> str:
    return str(spec.source.options.get("delimiter", ","))


# --- lines ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lines:
    """One landed CSV file, ready for DuckDB: where its record lines are (and how many header lines to
    skip there), its header, the lines that hold no record, and why the whole file cannot be read."""

    records: Path
    skip: int
    header: str | None
    not_records: list[tuple[str, str]]  # (why, escaped bytes), as cleaning writes them
    unreadable: str | None
    rows_in: int


def _plain_ascii_lines(path: Path, delimiter: str) -> tuple[str, int] | None:
    """(header, record lines) when every line of the file can go to DuckDB as it is: ASCII, no control
    character but tabs and the delimiter, no \\r, no blank line, a header with a visible character.
    None otherwise (the file then goes through cleaning's own line splitter)."""
    controls = bytes(c for c in _ASCII_CONTROLS if chr(c) != delimiter)
    if not delimiter.isascii() or not (delimiter.isprintable() or delimiter == "\t"):
        return None
    lines, header, tail = 0, None, b""
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            if not chunk.isascii() or chunk.translate(None, controls) != chunk:
                return None
            # A blank line may straddle two chunks: look at the end of the previous one too.
            if _BLANK_LINE.search(tail + chunk if header is not None else chunk):
                return None
            if header is None:
                header = chunk.split(b"\n", 1)[0].decode("ascii")
            lines += chunk.count(b"\n")
            tail = chunk[-4096:]
    if header is None or not header.strip(WHITESPACE):
        return None
    last_line = tail.rsplit(b"\n", 1)[-1]  # empty when the file ends with its line end
    if last_line and not last_line.strip(b" \t"):
        return None  # a blank last line without its \n
    return header, lines - 1 + bool(last_line)


def _file_lines(spec: DatasetSpec, path: Path, work: Path) -> _Lines:
    plain = _plain_ascii_lines(path, _delimiter(spec))
    if plain is not None:
        header, rows = plain
        return _Lines(path, 1, header, [], None, rows)
    text = _split_text_file(path, spec, work)
    not_records = []
    for line in text.not_records.read_text(encoding="utf-8").splitlines():
        why, raw = line.split("\t", 1)
        not_records.append((why, raw))
    with open(text.records, "rb") as fh:
        records = sum(1 for _ in fh)
    return _Lines(text.records, 0, text.header, not_records, text.unreadable, records + len(not_records))


def _read_lines_sql(lines: _Lines, delimiter: str) -> str:
    """DuckDB's CSV reader as a line reader: one VARCHAR column, split on a byte no record line holds."""
    never = "\x1e" if delimiter == "\x1f" else "\x1f"
    return (
        f"read_csv({sql_text(str(lines.records))}, columns={{'line': 'VARCHAR'}}, header=false, "
        f"skip={lines.skip}, delim=chr({ord(never)}), quote='', escape='', auto_detect=false, "
        f"max_line_size={MAX_LINE_BYTES}, buffer_size={2 * MAX_LINE_BYTES})"
    )


def _csv_fields(line: str, delimiter: str) -> list[str | None]:
    """A line holding the quote character, split into its fields (empty ones as null, as Spark reads
    them); for the rare lines DuckDB's plain split cannot take."""
    import csv

    fields = next(csv.reader([line], delimiter=delimiter, quotechar=QUOTE, escapechar="\\"), [])
    return [f if f != "" else None for f in fields]


# --- the rules, as SQL -----------------------------------------------------------------------------------


def _spark_whitespace_trim(expr: str) -> str:
    return f"trim({expr}, {sql_text(WHITESPACE)})"


class _Columns:
    """SQL names for the spec's raw columns (c0, c1, …: any header text is safe) and their stages:
    raw text `cN`, stripped text `sN` (null when blank), typed value `tN`."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.index = {name: i for i, name in enumerate(spec.raw_columns)}

    def raw(self, name: str) -> str:
        return f"c{self.index[name]}"

    def stripped(self, name: str) -> str:
        return f"s{self.index[name]}"

    def typed(self, name: str) -> str:
        return f"t{self.index[name]}"


def _number(text: str) -> str:
    return f"CASE WHEN regexp_full_match({text}, {sql_text(NUMBER_GRAMMAR)}) THEN TRY_CAST({text} AS DOUBLE) END"


def _label_matches(stripped: str, value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"({_number(stripped)} = {float(value)!r})"
    return f"(lower({stripped}) = {sql_text(str(value).lower())})"


def _in_list(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(sql_text(v) for v in values)


def _unknown(stripped: str, categories: tuple[str, ...]) -> str:
    return f"({stripped} IS NOT NULL AND {stripped} NOT IN ({_in_list(categories)}))"


def _typed_sql(cols: _Columns) -> list[str]:
    spec, s = cols.spec, cols.stripped
    typed = {
        spec.id_column: f"CASE WHEN length({s(spec.id_column)}) <= {MAX_ID_LENGTH} THEN {s(spec.id_column)} END",
        spec.timestamp_column: (
            f"CASE WHEN regexp_full_match({s(spec.timestamp_column)}, {sql_text(_TIMESTAMP)}) "
            f"THEN TRY_CAST({s(spec.timestamp_column)} AS TIMESTAMPTZ) END"
        ),
        spec.label.column: (
            f"CAST(CASE WHEN {_label_matches(s(spec.label.column), spec.label.positive)} THEN 1 "
            f"WHEN {_label_matches(s(spec.label.column), spec.label.negative)} THEN 0 END AS INTEGER)"
        ),
    }
    for f in spec.features:
        raw = s(f.name)
        if f.type is FeatureType.numeric:
            # Text in the grammar too large for a double (1e400) is no measurement either. (nN: the number
            # the stripped text spells, parsed once in its own step.)
            number = f"n{cols.index[f.name]}"
            typed[f.name] = f"CASE WHEN isinf({number}) THEN NULL ELSE {number} END"
        elif f.type is FeatureType.boolean:
            typed[f.name] = (
                f"CASE WHEN lower({raw}) IN ({_in_list(TRUE_WORDS)}) THEN true "
                f"WHEN lower({raw}) IN ({_in_list(FALSE_WORDS)}) THEN false END"
            )
        elif f.unknown_category == "other":
            typed[f.name] = (
                f"CASE WHEN {_unknown(raw, f.categories or ())} THEN {sql_text(OTHER_CATEGORY)} ELSE {raw} END"
            )
        else:
            typed[f.name] = raw
    return [f"{typed[name]} AS {cols.typed(name)}" for name in spec.raw_columns]


def _reason_rules(cols: _Columns, day: date) -> list[tuple[Reason, str, str]]:
    """(reason, condition, detail) in cleaning's priority order (kennel.ingestion.cleaning._reason_rules)."""
    spec, s, t, c = cols.spec, cols.stripped, cols.typed, cols.raw

    def detail(name: str, what: str) -> str:
        return f"({sql_text(f'{name}: {what} ' + chr(39))} || substring({c(name)}, 1, 80) || '''')"

    def blank(name: str) -> str:
        return f"({s(name)} IS NULL)"

    rules = [
        (
            Reason.unparsable_line,
            "(_corrupt IS NOT NULL)",
            sql_text(
                "line does not parse into the file's fields (wrong field count, broken quoting or not a JSON object)"
            ),
        )
    ]
    for name in [spec.timestamp_column] + [f.name for f in spec.features if f.type is not FeatureType.categorical]:
        expected = "timestamp" if name == spec.timestamp_column else spec.feature(name).type.value
        rules.append(
            (Reason.wrong_type, f"(NOT {blank(name)} AND {t(name)} IS NULL)", detail(name, f"not a {expected}:"))
        )
    rules.append(
        (
            Reason.id_too_long,
            f"(length({s(spec.id_column)}) > {MAX_ID_LENGTH})",
            detail(spec.id_column, f"longer than {MAX_ID_LENGTH} characters:"),
        )
    )
    for name in [spec.id_column, spec.timestamp_column] + [f.name for f in spec.features if not f.nullable]:
        rules.append((Reason.missing_required, blank(name), sql_text(f"{name}: required value is empty")))
    label = spec.label
    rules.append(
        (
            Reason.invalid_label,
            f"(NOT {blank(label.column)} AND {t(label.column)} IS NULL)",
            detail(label.column, f"neither {label.positive!r} nor {label.negative!r}:"),
        )
    )
    for f in spec.features:
        if f.type is FeatureType.numeric and (f.min is not None or f.max is not None):
            lo = f"{t(f.name)} < {float(f.min)!r}" if f.min is not None else "false"
            hi = f"{t(f.name)} > {float(f.max)!r}" if f.max is not None else "false"
            rules.append((Reason.out_of_range, f"({lo} OR {hi})", detail(f.name, f"outside [{f.min}, {f.max}]:")))
        if f.learned_categories is not None:
            rules.append(
                (
                    Reason.invalid_category,
                    f"(length({s(f.name)}) > {MAX_CATEGORY_LENGTH})",
                    detail(f.name, f"longer than {MAX_CATEGORY_LENGTH} characters:"),
                )
            )
            rules.append(
                (
                    Reason.invalid_category,
                    f"regexp_matches({s(f.name)}, {sql_text(UNPRINTABLE_CATEGORY_PATTERN)})",
                    detail(f.name, "holds a control or invisible character:"),
                )
            )
        elif f.type is FeatureType.categorical and f.unknown_category == "quarantine":
            rules.append(
                (
                    Reason.unknown_category,
                    _unknown(s(f.name), f.categories or ()),
                    detail(f.name, "not a declared category:"),
                )
            )
    rules.append(
        (
            Reason.timestamp_outside_partition,
            f"(CAST({t(spec.timestamp_column)} AS DATE) <> DATE '{day.isoformat()}')",
            detail(spec.timestamp_column, f"not on {day.isoformat()}:"),
        )
    )
    return rules


def _file_rows_sql(spec: DatasetSpec, lines: _Lines, columns: list[str], source_file: str) -> str:
    """One file's record lines as the spec's raw columns (cN, null where absent or empty), `_corrupt` (the
    line, where its field count is not the header's), `_raw` and `_source_file`."""
    delimiter = _delimiter(spec)
    position = {name: i + 1 for i, name in enumerate(columns)}
    split = (
        f"CASE WHEN contains(line, {sql_text(QUOTE)}) THEN kennel_csv_fields(line) "
        f"ELSE list_transform(string_split(line, {sql_text(delimiter)}), lambda x: nullif(x, '')) END"
    )
    raw_json = "to_json(struct_pack(" + ", ".join(f"{sql_name(n)} := f[{position[n]}]" for n in columns) + "))::VARCHAR"
    wanted = [
        f"f[{position[name]}] AS c{i}" if name in position else f"NULL::VARCHAR AS c{i}"
        for i, name in enumerate(spec.raw_columns)
    ]
    corrupt = f"len(f) <> {len(columns)}"
    return (
        f"SELECT {', '.join(wanted)}, CASE WHEN {corrupt} THEN line END AS _corrupt, "
        f"CASE WHEN {corrupt} THEN line ELSE {raw_json} END AS _raw, {sql_text(source_file)} AS _source_file "
        f"FROM (SELECT line, {split} AS f FROM {_read_lines_sql(lines, delimiter)})"
    )


# --- the partition -----------------------------------------------------------------------------------


def connect(threads: int | None = None, memory_limit: str = "4GB", temp_directory: Path | None = None) -> Any:
    """A DuckDB connection for the floor: UTC, `threads` (default: the cores this process may use), a
    memory limit beyond which it spills to `temp_directory`."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {threads or len(os.sched_getaffinity(0))}")
    con.execute(f"SET memory_limit = {sql_text(memory_limit)}")
    con.execute("SET preserve_insertion_order = false")
    if temp_directory is not None:
        con.execute(f"SET temp_directory = {sql_text(str(temp_directory))}")
    return con


def _register_csv_fields(con: Any, delimiter: str) -> None:
    import duckdb

    with contextlib.suppress(duckdb.InvalidInputException):  # a fresh connection has no such function yet
        con.remove_function("kennel_csv_fields")
    con.create_function(
        "kennel_csv_fields",
        lambda line: _csv_fields(line, delimiter),
        [duckdb.sqltype("VARCHAR")],
        duckdb.list_type(duckdb.sqltype("VARCHAR")),
        null_handling="special",
        side_effects=False,
    )


def _write_sorted_parquet(con: Any, query: str, order: str, final_dir: Path, staging: Path) -> None:
    """COPY the query, sorted, into one Parquet file, renamed over final_dir/part-00000.parquet."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{final_dir.name}-{uuid.uuid4().hex}.parquet"
    try:
        con.execute(f"COPY ({query} ORDER BY {order}) TO {sql_text(str(tmp))} (FORMAT parquet)")
        final_dir.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final_dir / PART_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    for stale in final_dir.iterdir():
        if stale.name != PART_FILE:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def clean_partition_duckdb(
    con: Any,
    spec: DatasetSpec,
    files: list[Path],
    partition: str,
    clean_dir: Path,
    quarantine_dir: Path,
    staging_root: Path,
) -> DuckdbCleaningResult:
    """Clean one daily partition's landed CSV files into clean_dir and quarantine_dir (both replaced), as
    kennel.ingestion.cleaning.clean_partition does."""
    if spec.source.format != "csv":
        raise NotImplementedError(f"the DuckDB floor reads CSV landings only, not {spec.source.format}")
    timers: dict[str, float] = {}
    start = time.perf_counter()
    day = date.fromisoformat(partition)
    cols = _Columns(spec)
    _register_csv_fields(con, _delimiter(spec))
    work = staging_root / f"duckdb-lines-{uuid.uuid4().hex}"
    required = spec.raw_columns
    try:
        to_judge: list[str] = []
        judged: list[str] = []  # quarantine rows decided before typing
        rows_in = 0
        for n, path in enumerate(sorted(files)):
            lines = _file_lines(spec, path, work / str(n))
            rows_in += lines.rows_in
            columns, unreadable = _header_columns(
                spec, _TextFile(lines.records, lines.records, lines.header, lines.unreadable)
            )
            name = sql_text(path.name)
            not_records = [
                f"(NULL, {sql_text(Reason.unparsable_line.value)}, {sql_text(why)}, {sql_text(raw)}, {name})"
                for why, raw in lines.not_records
            ]
            if unreadable:
                detail = sql_text(f"file {path.name}: {unreadable}")
                judged.append(
                    f"SELECT NULL::VARCHAR, {sql_text(Reason.unreadable_file.value)}, {detail}, line, {name} "
                    f"FROM {_read_lines_sql(lines, _delimiter(spec))}"
                )
                not_records = [
                    f"(NULL, {sql_text(Reason.unreadable_file.value)}, {detail}, {sql_text(raw)}, {name})"
                    for _, raw in lines.not_records
                ]
                if not_records:
                    judged.append(f"SELECT * FROM (VALUES {', '.join(not_records)})")
                continue
            if not_records:
                judged.append(f"SELECT * FROM (VALUES {', '.join(not_records)})")
            if lines.header is None:
                continue  # no header, so no records
            rows = _file_rows_sql(spec, lines, columns, path.name)
            absent = [c for c in required if c not in columns]
            if absent:
                record_id = (
                    f"nullif({_spark_whitespace_trim(cols.raw(spec.id_column))}, '')"
                    if spec.id_column in columns
                    else "NULL::VARCHAR"
                )
                judged.append(
                    f"SELECT {record_id}, "
                    f"CASE WHEN _corrupt IS NOT NULL THEN {sql_text(Reason.unparsable_line.value)} "
                    f"ELSE {sql_text(Reason.missing_column.value)} END, "
                    f"CASE WHEN _corrupt IS NOT NULL THEN {sql_text(UNPARSABLE_IN_FILE_LACKING_COLUMNS)} "
                    f"ELSE {sql_text('file lacks required column(s): ' + ', '.join(absent))} END, _raw, _source_file "
                    f"FROM ({rows})"
                )
                continue
            to_judge.append(rows)
        timers["lines"] = time.perf_counter() - start

        start = time.perf_counter()
        _judge(con, spec, cols, day, to_judge)
        others = [f for f in spec.features if f.unknown_category == "other"]
        quarantine = (
            f"SELECT {cols.typed(spec.id_column)} AS record_id, _reason AS reason, _detail AS detail, _raw AS raw, "
            "_source_file AS source_file FROM judged WHERE _reason IS NOT NULL"
        )
        quarantine = " UNION ALL ".join([quarantine, *(f"SELECT * FROM ({q})" for q in judged)])
        quarantine = f"SELECT *, DATE '{day.isoformat()}' AS partition_date FROM ({quarantine})"
        clean = "SELECT " + ", ".join(f"t{i} AS {sql_name(c)}" for i, c in enumerate(required))
        clean += " FROM judged WHERE _reason IS NULL"
        timers["judge"] = time.perf_counter() - start

        start = time.perf_counter()
        _write_sorted_parquet(con, clean, f"{sql_name(spec.id_column)} NULLS FIRST", clean_dir, staging_root)
        _write_sorted_parquet(
            con,
            quarantine,
            "source_file NULLS FIRST, reason NULLS FIRST, record_id NULLS FIRST, raw NULLS FIRST",
            quarantine_dir,
            staging_root,
        )
        timers["write"] = time.perf_counter() - start

        start = time.perf_counter()
        mapped = {}
        if others:
            counts = con.execute(
                "SELECT "
                + ", ".join(f"count(*) FILTER (_other{cols.index[f.name]})" for f in others)
                + " FROM judged WHERE _reason IS NULL"
            ).fetchone()
            mapped = {f.name: int(n) for f, n in zip(others, counts, strict=True) if n}
        con.execute("DROP TABLE judged")
        written_q = sql_text(str(quarantine_dir / PART_FILE))
        written_c = sql_text(str(clean_dir / PART_FILE))
        reasons = dict(
            con.execute(
                f"SELECT reason, count(*) FROM read_parquet({written_q}) GROUP BY reason ORDER BY reason"
            ).fetchall()
        )
        clean_rows, labelled = con.execute(
            f"SELECT count(*), count({sql_name(spec.label.column)}) FROM read_parquet({written_c})"
        ).fetchone()
        timers["count"] = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return DuckdbCleaningResult(
        rows_in=rows_in,
        rows_clean=int(clean_rows),
        rows_quarantined=sum(reasons.values()),
        reasons=reasons,
        rows_labelled=int(labelled),
        mapped_to_other=mapped,
        stage_seconds=timers,
    )


def _judge(con: Any, spec: DatasetSpec, cols: _Columns, day: date, to_judge: list[str]) -> None:
    """Type and judge the rows into the table `judged`: typed columns tN, _reason, _detail, _raw,
    _source_file and, per unknown_category: other feature, whether the value was unknown (_otherN)."""
    n = len(spec.raw_columns)
    typed_types = {spec.id_column: "VARCHAR", spec.timestamp_column: "TIMESTAMPTZ", spec.label.column: "INTEGER"}
    for f in spec.features:
        typed_types[f.name] = {FeatureType.numeric: "DOUBLE", FeatureType.boolean: "BOOLEAN"}.get(f.type, "VARCHAR")
    if not to_judge:
        columns = ", ".join(f"NULL::{typed_types[c]} AS t{i}" for i, c in enumerate(spec.raw_columns))
        others = "".join(
            f", NULL::BOOLEAN AS _other{cols.index[f.name]}" for f in spec.features if f.unknown_category == "other"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE judged AS SELECT {columns}, NULL::VARCHAR AS _reason, "
            f"NULL::VARCHAR AS _detail, NULL::VARCHAR AS _raw, NULL::VARCHAR AS _source_file{others} LIMIT 0"
        )
        return
    landed = " UNION ALL ".join(to_judge)
    stripped = ", ".join(f"nullif({_spark_whitespace_trim(f'c{i}')}, '') AS s{i}" for i in range(n))
    numbers = "".join(
        f", {_number(cols.stripped(f.name))} AS n{cols.index[f.name]}"
        for f in spec.features
        if f.type is FeatureType.numeric
    )
    rules = _reason_rules(cols, day)
    rule = "CASE " + " ".join(f"WHEN {cond} THEN {i}" for i, (_, cond, _) in enumerate(rules)) + " END"
    reason = (
        "CASE _rule " + " ".join(f"WHEN {i} THEN {sql_text(r.value)}" for i, (r, _, _) in enumerate(rules)) + " END"
    )
    detail = "CASE _rule " + " ".join(f"WHEN {i} THEN {d}" for i, (_, _, d) in enumerate(rules)) + " END"
    other_flags = "".join(
        f", {_unknown(cols.stripped(f.name), f.categories or ())} AS _other{cols.index[f.name]}"
        for f in spec.features
        if f.unknown_category == "other"
    )
    typed_cols = ", ".join(f"t{i}" for i in range(n))
    id_t, ts_t = cols.typed(spec.id_column), cols.typed(spec.timestamp_column)
    # Duplicates: the row number runs over every row of an id, quarantined ones too, and only rows without
    # a reason take it (as cleaning's window does): the latest version is kept, ties broken by content.
    rank = (
        f"CASE WHEN _reason IS NULL THEN row_number() OVER (PARTITION BY {id_t} ORDER BY {ts_t} DESC NULLS LAST, "
        "_raw DESC NULLS LAST, _source_file DESC NULLS LAST) END"
    )
    older_detail = f"{sql_text(f'{spec.id_column}: older copy of ')} || {id_t}"
    others_out = "".join(f", _other{cols.index[f.name]}" for f in spec.features if f.unknown_category == "other")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE judged AS
        WITH landed AS ({landed}),
        stripped AS (SELECT *, {stripped} FROM landed),
        parsed AS (SELECT *{numbers} FROM stripped),
        typed AS (SELECT *, {", ".join(_typed_sql(cols))} FROM parsed),
        ruled AS (SELECT *, {rule} AS _rule FROM typed),
        reasoned AS (SELECT {typed_cols}, {reason} AS _reason, {detail} AS _detail, _raw, _source_file{other_flags}
                     FROM ruled),
        ranked AS (SELECT *, {rank} AS _rank FROM reasoned)
        SELECT {typed_cols},
               CASE WHEN _rank > 1 THEN {sql_text(Reason.duplicate_id.value)} ELSE _reason END AS _reason,
               CASE WHEN _rank > 1 THEN {older_detail} ELSE _detail END AS _detail,
               _raw, _source_file{others_out}
        FROM ranked
        """
    )


def main() -> int:
    """Clean one partition in a process of its own, so its peak RSS is the floor's alone; prints JSON."""
    import argparse
    import json
    import resource
    import tempfile
    from dataclasses import asdict

    from kennel.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--partition", required=True, help="the day, YYYY-MM-DD")
    parser.add_argument("--out", type=Path, required=True, help="clean/ and quarantine/ are written here")
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    with tempfile.TemporaryDirectory(prefix="kennel-duckdb-", dir=args.out) as scratch:
        con = connect(memory_limit=args.memory_limit, temp_directory=Path(scratch) / "spill")
        started = time.perf_counter()
        result = clean_partition_duckdb(
            con, spec, args.files, args.partition, args.out / "clean", args.out / "quarantine", Path(scratch)
        )
        seconds = time.perf_counter() - started
        con.close()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_mib, "result": asdict(result)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
