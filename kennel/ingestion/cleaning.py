"""Spark cleaning of one daily partition: type every column by the spec, route bad rows to quarantine.

Every raw row ends in exactly one place: the clean table, or the quarantine table with a reason code
(kennel.ingestion.reasons), a detail naming the column and value, and the original record. Output is written
as one sorted Parquet file per partition and swapped in with an atomic rename, so a reader sees the
old file or the new one, never half of one, and a re-run gives byte-for-byte the same file.

Schema drift is judged per landed file: columns the spec does not know are kept out of the clean
table and reported; a CSV or Parquet file lacking a required column has all of its rows quarantined
(missing_column). A JSON Lines record names its own fields, so a key it lacks is judged per record.
"""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.ingestion.reasons import Reason
from kennel.spec import OTHER_CATEGORY, DatasetSpec, FeatureType

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

CORRUPT = "_corrupt_record"
TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
QUARANTINE_COLUMNS = ["record_id", "reason", "detail", "raw", "source_file", "partition_date"]
PART_FILE = "part-00000.parquet"
# Python's bytes.strip() and Java's \s agree on these: a line of nothing else is no record.
_WHITESPACE = " \t\n\r\x0b\x0c"
_NOT_BLANK = r"[^ \t\n\r\x0b\x0c]"


@dataclass
class CleaningResult:
    partition: str
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    reasons: dict[str, int]
    extra_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> unexpected columns
    missing_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> absent columns
    unreadable_files: dict[str, str] = field(default_factory=dict)  # file -> why it cannot be read
    mapped_to_other: dict[str, int] = field(default_factory=dict)  # feature -> unknown values kept as "other"

    @property
    def reconciled(self) -> bool:
        return self.rows_in == self.rows_clean + self.rows_quarantined


def _delimiter(spec: DatasetSpec) -> str:
    return str(spec.source.options.get("delimiter", ","))


def _non_blank_lines(path: Path) -> int:
    # Lines end at \n, \r\n or a lone \r, as Spark's line reader has it; latin-1 maps every byte.
    with open(path, encoding="latin-1", newline=None) as fh:
        return sum(1 for line in fh if line.strip(_WHITESPACE))


def count_raw_rows(spec: DatasetSpec, files: list[Path]) -> int:
    """Rows as landed, counted without Spark so the reconciliation check is independent of cleaning.

    CSV: non-blank lines after the header. JSON Lines: non-blank lines. Parquet: the footer's row
    count; a Parquet file that cannot be opened counts as one (unreadable) record.
    """
    total = 0
    for f in files:
        if spec.source.format == "parquet":
            total += _parquet_rows(f)
        elif spec.source.format == "jsonl":
            total += _non_blank_lines(f)
        else:
            total += max(_non_blank_lines(f) - 1, 0)
    return total


def _parquet_rows(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return 1


@dataclass
class _FileShape:
    columns: list[str]
    unreadable: str | None = None  # why the file cannot be read as a table


def _file_shape(spark: SparkSession, spec: DatasetSpec, path: Path) -> _FileShape:
    """The columns a landed file carries, or why it cannot be read at all."""
    if spec.source.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return _FileShape(list(pq.read_schema(path).names))
        except (pa.ArrowException, OSError) as exc:
            return _FileShape([], f"not a readable Parquet file: {exc}")
    if spec.source.format == "jsonl":
        from pyspark.sql import functions as F

        keys = _jsonl_lines(spark, path).select(F.explode(F.json_object_keys("value")).alias("k")).distinct()
        return _FileShape(sorted(r["k"] for r in keys.collect()))
    # Spark takes the first non-blank line as the header; so does this. A BOM is not part of a name.
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        first = next((line for line in fh if line.strip()), "")
    header = [h.strip() for h in next(csv.reader([first], delimiter=_delimiter(spec)), [])]
    header = [h or f"_unnamed_{i}" for i, h in enumerate(header)]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        return _FileShape(header, f"the header names column(s) {', '.join(twice)} more than once")
    return _FileShape(header)


def _jsonl_lines(spark: SparkSession, path: Path) -> DataFrame:
    from pyspark.sql import functions as F

    return spark.read.text(str(path)).where(F.col("value").rlike(_NOT_BLANK))


def _quoted(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _read_file(spark: SparkSession, spec: DatasetSpec, path: Path, columns: list[str]) -> DataFrame:
    """One landed file as rows of strings: the spec's columns it has, CORRUPT (set when the line or
    message cannot be parsed), `_raw` (the original record) and `_source_file`."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    def all_columns_as_json(df: DataFrame) -> Column:
        return F.to_json(F.struct(*[_quoted(c).alias(c) for c in columns]), {"ignoreNullFields": "false"})

    wanted = [c for c in spec.raw_columns if c in columns]
    if spec.source.format == "parquet":
        df = spark.read.parquet(str(path))
        df = df.select(*[_quoted(c).cast("string").alias(c) for c in columns])
        df = df.select(*wanted, F.lit(None).cast("string").alias(CORRUPT), all_columns_as_json(df).alias("_raw"))
    elif spec.source.format == "jsonl":
        # Line by line (not spark.read.json): one line is one record even when it holds a JSON array.
        schema = T.StructType([T.StructField(c, T.StringType()) for c in [*wanted, CORRUPT]])
        options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
        df = _jsonl_lines(spark, path).select(
            F.from_json("value", schema, options).alias("r"), F.col("value").alias("_raw")
        )
        df = df.select(*[F.col(f"r.{c}").alias(c) for c in wanted], F.col(f"r.{CORRUPT}").alias(CORRUPT), "_raw")
    else:
        # The file's own header gives the positions; the spec decides what is required.
        schema = T.StructType([T.StructField(c, T.StringType()) for c in [*columns, CORRUPT]])
        df = spark.read.csv(
            str(path),
            header=True,
            schema=schema,
            mode="PERMISSIVE",
            columnNameOfCorruptRecord=CORRUPT,
            sep=_delimiter(spec),
            enforceSchema=True,
        )
        df = df.select(*wanted, CORRUPT, F.coalesce(F.col(CORRUPT), all_columns_as_json(df)).alias("_raw"))
    return df.withColumn("_source_file", F.lit(path.name))


def _whole_file(spark: SparkSession, spec: DatasetSpec, path: Path, reason: Reason, detail: str) -> DataFrame:
    """Quarantine rows for a file none of whose rows can be judged: one per line (the header is not
    a record), or one for a binary file that cannot be opened."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def rows(df: DataFrame) -> DataFrame:
        return df.select(
            F.lit(None).cast("string").alias("record_id"),
            F.lit(reason.value).alias("reason"),
            F.lit(detail).alias("detail"),
            F.col("raw"),
            F.lit(path.name).alias("source_file"),
        )

    if spec.source.format == "parquet":
        note = f"<{path.stat().st_size} bytes that cannot be read as Parquet; the file is kept in raw/>"
        return rows(spark.createDataFrame([(note,)], "raw string"))
    lines = _jsonl_lines(spark, path).select(F.col("value").alias("raw"), F.monotonically_increasing_id().alias("_n"))
    if spec.source.format == "csv":
        lines = lines.withColumn("_first", F.min("_n").over(Window.partitionBy())).where(F.col("_n") != F.col("_first"))
    return rows(lines)


def _blank(c: Column) -> Column:
    from pyspark.sql import functions as F

    return c.isNull() | (F.trim(c) == "")


def _label_matches(raw: Column, value: object) -> Column:
    """Numeric label values compare as numbers (so 1, 1.0 and " 1" agree), others case-insensitively."""
    from pyspark.sql import functions as F

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return F.trim(raw).try_cast("double") == float(value)
    return F.lower(F.trim(raw)) == str(value).lower()


def _stripped(c: str) -> Column:
    from pyspark.sql import functions as F

    return F.nullif(F.trim(F.col(c)), F.lit(""))


def _unknown(c: str, categories: tuple[str, ...]) -> Column:
    return _stripped(c).isNotNull() & ~_stripped(c).isin(*categories)


def _typed_columns(spec: DatasetSpec) -> dict[str, Column]:
    """The typed value of each raw column (null where the raw string does not parse)."""
    from pyspark.sql import functions as F

    s = _stripped
    typed: dict[str, Column] = {
        spec.id_column: s(spec.id_column),
        spec.timestamp_column: F.try_to_timestamp(s(spec.timestamp_column)),
        spec.label.column: F.when(_label_matches(F.col(spec.label.column), spec.label.positive), F.lit(1))
        .when(_label_matches(F.col(spec.label.column), spec.label.negative), F.lit(0))
        .cast("int"),
    }
    for feat in spec.features:
        raw = s(feat.name)
        if feat.type is FeatureType.numeric:
            num = raw.try_cast("double")
            # NaN and ±Infinity parse as doubles but are never meaningful measurements.
            typed[feat.name] = F.when(F.isnan(num) | (F.abs(num) == float("inf")), F.lit(None)).otherwise(num)
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
        rules.append((Reason.wrong_type, ~_blank(F.col(c)) & t(c).isNull(), detail(c, f"not a {expected}:")))
    required = [spec.id_column, spec.timestamp_column, spec.label.column] + [
        f.name for f in spec.features if not f.nullable
    ]
    for c in required:
        rules.append((Reason.missing_required, _blank(F.col(c)), F.lit(f"{c}: required value is empty")))
    rules.append(
        (
            Reason.invalid_label,
            t(spec.label.column).isNull(),
            detail(spec.label.column, f"neither {spec.label.positive!r} nor {spec.label.negative!r}:"),
        )
    )
    for f in spec.features:
        if f.type is FeatureType.numeric and (f.min is not None or f.max is not None):
            lo = t(f.name) < f.min if f.min is not None else F.lit(False)
            hi = t(f.name) > f.max if f.max is not None else F.lit(False)
            rules.append((Reason.out_of_range, lo | hi, detail(f.name, f"outside [{f.min}, {f.max}]:")))
        if f.type is FeatureType.categorical and f.unknown_category == "quarantine":
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


def clean_partition(
    spark: SparkSession,
    spec: DatasetSpec,
    files: list[Path],
    partition: str,
    clean_dir: Path,
    quarantine_dir: Path,
    staging_root: Path,
) -> CleaningResult:
    """Clean one daily partition's landed files into clean_dir and quarantine_dir (both replaced)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    day = date.fromisoformat(partition)
    required = spec.raw_columns
    keep, whole_files = [], []
    extra: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    unreadable: dict[str, str] = {}
    for path in sorted(files):
        shape = _file_shape(spark, spec, path)
        if shape.unreadable:
            unreadable[path.name] = shape.unreadable
            whole_files.append(
                _whole_file(spark, spec, path, Reason.unreadable_file, f"file {path.name}: {shape.unreadable}")
            )
            continue
        if spec.source.format == "csv" and not shape.columns:
            continue  # an empty or blank file: no header, no records
        # A JSON record names its own fields: a key it lacks is an empty value (missing_required when
        # the column is required), judged per record, not per file.
        columns = sorted(set(shape.columns) | set(required)) if spec.source.format == "jsonl" else shape.columns
        df = _read_file(spark, spec, path, columns)
        absent = [c for c in required if c not in columns]
        if absent:
            # Without a required column no row of this file can be typed: quarantine all of it, but
            # a line that does not even parse keeps that (earlier) reason.
            missing[path.name] = absent
            whole_files.append(
                df.select(
                    _stripped(spec.id_column).alias("record_id")
                    if spec.id_column in shape.columns
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
        unexpected = [c for c in shape.columns if c not in required]
        if unexpected:
            extra[path.name] = unexpected  # kept out of the clean table, reported in metadata
        keep.append(df)

    quarantine_schema = "record_id string, reason string, detail string, raw string, source_file string"
    mapped_to_other: dict[str, int] = {}
    rows = None
    if keep:
        rows = keep[0]
        for other in keep[1:]:
            rows = rows.unionByName(other)
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
            *[f"_t_{c}" for c in required], "_reason", "_detail", "_raw", "_source_file", *[f.name for f in others]
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
        if others:
            kept = rows.filter(F.col("_reason").isNull())
            counts = kept.agg(*[F.count_if(_unknown(f.name, f.categories or ())).alias(f.name) for f in others]).first()
            assert counts is not None  # an aggregate without grouping always has one row
            mapped_to_other = {f.name: counts[f.name] for f in others if counts[f.name]}
    else:
        clean = spark.createDataFrame([], _clean_schema(spec))
        quarantine = spark.createDataFrame([], quarantine_schema)
    for part in whole_files:
        quarantine = quarantine.unionByName(part)
    quarantine = quarantine.withColumn("partition_date", F.lit(day))

    try:
        _write_single_parquet(clean, clean_dir, staging_root, [spec.id_column])
        _write_single_parquet(quarantine, quarantine_dir, staging_root, ["source_file", "reason", "record_id", "raw"])
    finally:
        if rows is not None:
            rows.unpersist()

    written_q = spark.read.parquet(str(quarantine_dir))
    reasons = {r["reason"]: r["n"] for r in written_q.groupBy("reason").agg(F.count("*").alias("n")).collect()}
    return CleaningResult(
        partition=partition,
        rows_in=count_raw_rows(spec, files),
        rows_clean=spark.read.parquet(str(clean_dir)).count(),
        rows_quarantined=sum(reasons.values()),
        reasons=dict(sorted(reasons.items())),
        extra_columns=extra,
        missing_columns=missing,
        unreadable_files=unreadable,
        mapped_to_other=mapped_to_other,
    )


def _clean_schema(spec: DatasetSpec) -> str:
    spark_types = {FeatureType.numeric: "double", FeatureType.boolean: "boolean", FeatureType.categorical: "string"}
    cols = [f"`{spec.id_column}` string", f"`{spec.timestamp_column}` timestamp"]
    cols += [f"`{f.name}` {spark_types[f.type]}" for f in spec.features]
    cols.append(f"`{spec.label.column}` int")
    return ", ".join(cols)
