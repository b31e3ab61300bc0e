"""Spark cleaning of one daily partition: type every column by the spec, route bad rows to quarantine.

Every raw row ends in exactly one place: the clean table, or the quarantine table with a reason code
(kennel.reasons), a detail naming the column and value, and the original record. Output is written
as one sorted Parquet file per partition, swapped in atomically, so a re-run gives identical rows.
"""

from __future__ import annotations

import csv
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.reasons import Reason
from kennel.spec import DatasetSpec, FeatureType

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

CORRUPT = "_corrupt_record"
TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
QUARANTINE_COLUMNS = ["record_id", "reason", "detail", "raw", "source_file", "partition_date"]


@dataclass
class CleaningResult:
    partition: str
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    reasons: dict[str, int]
    extra_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> unexpected columns
    missing_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> absent columns

    @property
    def reconciled(self) -> bool:
        return self.rows_in == self.rows_clean + self.rows_quarantined


def _delimiter(spec: DatasetSpec) -> str:
    return str(spec.source.options.get("delimiter", ","))


def count_raw_rows(spec: DatasetSpec, files: list[Path]) -> int:
    """Rows as landed, counted without Spark so the reconciliation check is independent of cleaning."""
    if spec.source.format == "parquet":
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            lines = sum(1 for line in fh if line.strip())
        total += max(lines - 1, 0)  # minus the header
    return total


def _file_columns(spec: DatasetSpec, path: Path) -> list[str]:
    if spec.source.format == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with open(path, newline="") as fh:
        header = next(csv.reader(fh, delimiter=_delimiter(spec)), [])
    return [h.strip() for h in header]


def _read_file(spark: SparkSession, spec: DatasetSpec, path: Path, columns: list[str]) -> DataFrame:
    """Read one landed file with every column as a string; malformed CSV lines land in CORRUPT."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if spec.source.format == "parquet":
        df = spark.read.parquet(str(path))
        df = df.select(*[F.col(c).cast("string").alias(c) for c in columns]).withColumn(CORRUPT, F.lit(None).cast("string"))
    else:
        # The file's own header gives the positions; the spec decides what is required.
        schema = T.StructType([T.StructField(c, T.StringType()) for c in [*columns, CORRUPT]])
        df = spark.read.csv(
            str(path), header=True, schema=schema, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT,
            sep=_delimiter(spec), enforceSchema=True,
        )
    return df.withColumn("_source_file", F.lit(path.name))


def _blank(c: Column) -> Column:
    from pyspark.sql import functions as F

    return c.isNull() | (F.trim(c) == "")


def _label_matches(raw: Column, value: object) -> Column:
    """Numeric label values compare as numbers (so 1, 1.0 and " 1" agree), others case-insensitively."""
    from pyspark.sql import functions as F

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return F.trim(raw).try_cast("double") == float(value)
    return F.lower(F.trim(raw)) == str(value).lower()


def _typed_columns(spec: DatasetSpec) -> dict[str, Column]:
    """The typed value of each raw column (null where the raw string does not parse)."""
    from pyspark.sql import functions as F

    def s(c: str) -> Column:
        return F.nullif(F.trim(F.col(c)), F.lit(""))

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
        (Reason.unparsable_line, F.col(CORRUPT).isNotNull(),
         F.lit("line does not split into the header's fields (wrong field count or broken quoting)")),
    ]
    typed_cols = [spec.timestamp_column] + [f.name for f in spec.features if f.type is not FeatureType.categorical]
    for c in typed_cols:
        expected = "timestamp" if c == spec.timestamp_column else spec.feature(c).type.value
        rules.append((Reason.wrong_type, ~_blank(F.col(c)) & t(c).isNull(), detail(c, f"not a {expected}:")))
    required = [spec.id_column, spec.timestamp_column, spec.label.column] + [f.name for f in spec.features if not f.nullable]
    for c in required:
        rules.append((Reason.missing_required, _blank(F.col(c)), F.lit(f"{c}: required value is empty")))
    rules.append((Reason.invalid_label, t(spec.label.column).isNull(),
                  detail(spec.label.column, f"neither {spec.label.positive!r} nor {spec.label.negative!r}:")))
    for f in spec.features:
        if f.type is FeatureType.numeric and (f.min is not None or f.max is not None):
            lo = t(f.name) < f.min if f.min is not None else F.lit(False)
            hi = t(f.name) > f.max if f.max is not None else F.lit(False)
            rules.append((Reason.out_of_range, lo | hi, detail(f.name, f"outside [{f.min}, {f.max}]:")))
        if f.type is FeatureType.categorical:
            rules.append((Reason.unknown_category, t(f.name).isNotNull() & ~t(f.name).isin(*f.categories),
                          detail(f.name, "not a declared category:")))
    rules.append((Reason.timestamp_outside_partition, F.to_date(t(spec.timestamp_column)) != F.lit(day),
                  detail(spec.timestamp_column, f"not on {day.isoformat()}:")))
    return rules


def _write_single_parquet(df: DataFrame, final_dir: Path, staging_root: Path, sort_cols: list[str]) -> None:
    """Write df as final_dir/part-00000.parquet, sorted, and swap it in so readers never see a half write."""
    staging_root.mkdir(parents=True, exist_ok=True)
    tmp = staging_root / f"{final_dir.name}-{uuid.uuid4().hex}"
    df.repartition(1).sortWithinPartitions(*sort_cols).write.mode("overwrite").parquet(str(tmp))
    parts = sorted(tmp.glob("part-*.parquet"))
    if len(parts) != 1:
        raise RuntimeError(f"expected one Parquet part in {tmp}, found {len(parts)}")
    parts[0].rename(tmp / "part-00000.parquet")
    for leftover in tmp.iterdir():
        if leftover.name != "part-00000.parquet":
            leftover.unlink()
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    old = staging_root / f"{final_dir.name}-old-{uuid.uuid4().hex}"
    if final_dir.exists():
        final_dir.rename(old)
    tmp.rename(final_dir)
    shutil.rmtree(old, ignore_errors=True)


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
    keep, extra, missing = [], {}, {}
    whole_file_quarantine = []
    for path in sorted(files):
        columns = _file_columns(spec, path)
        df = _read_file(spark, spec, path, columns)
        absent = [c for c in required if c not in columns]
        if absent:
            # Without a required column no row of this file can be typed: quarantine all of it.
            missing[path.name] = absent
            whole_file_quarantine.append(df.select(
                F.nullif(F.trim(F.col(spec.id_column)), F.lit("")).alias("record_id") if spec.id_column in columns
                else F.lit(None).cast("string").alias("record_id"),
                F.lit(Reason.missing_column.value).alias("reason"),
                F.lit(f"file lacks required column(s): {', '.join(absent)}").alias("detail"),
                F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*columns), {"ignoreNullFields": "false"})).alias("raw"),
                F.col("_source_file").alias("source_file"),
            ))
            continue
        unexpected = [c for c in columns if c not in required]
        if unexpected:
            extra[path.name] = unexpected  # kept out of the clean table, reported in metadata
        keep.append(df.select(*required, CORRUPT, "_source_file"))

    typed = _typed_columns(spec)
    reason_col, detail_col = F.lit(None).cast("string"), F.lit(None).cast("string")
    if keep:
        rows = keep[0]
        for other in keep[1:]:
            rows = rows.unionByName(other)
        rows = rows.select(
            "*",
            *[expr.alias(f"_t_{c}") for c, expr in typed.items()],
            F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*required), {"ignoreNullFields": "false"})).alias("_raw"),
        )
        rules = _reason_rules(spec, day)
        reason_col = F.coalesce(*[F.when(cond, F.lit(r.value)) for r, cond, _ in rules])
        detail_col = F.coalesce(*[F.when(cond, d) for _, cond, d in rules])
        rows = rows.withColumn("_reason", reason_col).withColumn("_detail", detail_col)
        # Duplicates: among otherwise valid rows keep the latest version of each id; ties broken by
        # content so the choice is the same on every run.
        latest_first = Window.partitionBy(f"_t_{spec.id_column}").orderBy(
            F.col(f"_t_{spec.timestamp_column}").desc(), F.col("_raw").desc(), F.col("_source_file").desc()
        )
        rank = F.when(F.col("_reason").isNull(), F.row_number().over(latest_first))
        rows = rows.withColumn("_rank", rank).withColumn(
            "_reason", F.when(F.col("_rank") > 1, F.lit(Reason.duplicate_id.value)).otherwise(F.col("_reason"))
        ).withColumn(
            "_detail", F.when(F.col("_rank") > 1, F.concat(F.lit(f"{spec.id_column}: older copy of "), F.col(f"_t_{spec.id_column}")))
            .otherwise(F.col("_detail"))
        )
        rows = rows.cache()
        clean = rows.filter(F.col("_reason").isNull()).select(*[F.col(f"_t_{c}").alias(c) for c in required])
        quarantine = rows.filter(F.col("_reason").isNotNull()).select(
            F.col(f"_t_{spec.id_column}").alias("record_id"),
            F.col("_reason").alias("reason"),
            F.col("_detail").alias("detail"),
            F.col("_raw").alias("raw"),
            F.col("_source_file").alias("source_file"),
        )
    else:
        clean = spark.createDataFrame([], _clean_schema(spec))
        quarantine = spark.createDataFrame([], "record_id string, reason string, detail string, raw string, source_file string")
    for part in whole_file_quarantine:
        quarantine = quarantine.unionByName(part)
    quarantine = quarantine.withColumn("partition_date", F.lit(day))

    _write_single_parquet(clean, clean_dir, staging_root, [spec.id_column])
    _write_single_parquet(quarantine, quarantine_dir, staging_root, ["source_file", "reason", "record_id", "raw"])
    if keep:
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
    )


def _clean_schema(spec: DatasetSpec) -> str:
    spark_types = {FeatureType.numeric: "double", FeatureType.boolean: "boolean", FeatureType.categorical: "string"}
    cols = [f"`{spec.id_column}` string", f"`{spec.timestamp_column}` timestamp"]
    cols += [f"`{f.name}` {spark_types[f.type]}" for f in spec.features]
    cols.append(f"`{spec.label.column}` int")
    return ", ".join(cols)
