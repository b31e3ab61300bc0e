"""Raw landing → clean + quarantine (Spark), with reconciliation and GX checks that block downstream."""

import json
import shutil
from datetime import datetime, timezone

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from kennel.landing import landed_files
from kennel.spec import DatasetSpec
from assets.metadata import md_table
from resources.lake import LakeResource

RAW = dg.AssetKey("raw_records")
CLEAN = dg.AssetKey("clean_records")
QUARANTINE = dg.AssetKey("quarantined_records")

def daily_partitions(spec: DatasetSpec) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=spec.start_date.isoformat())

def _check_descriptions() -> dict[str, str]:
    from kennel.validation import CHECK_DESCRIPTIONS

    return {
        "rows_reconcile": "Every raw row is either clean or quarantined: raw = clean + quarantined",
        "quarantine_rate": "The share of quarantined rows stays under the spec's max_quarantine_fraction",
        **{f"gx_{group}": f"Great Expectations: {text}" for group, text in CHECK_DESCRIPTIONS.items()},
    }

def build_ingestion_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    partitions = daily_partitions(spec)
    source = spec.source_location()
    tags = {"dataset": spec.name}

    @dg.asset(
        key=RAW,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="ingestion",
        kinds={"python", "file"},
        owners=[spec.owner],
        tags=tags,
        description=f"Files landed for the day in {source}, copied unchanged into the lake.",
    )
    def raw_records(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from kennel.cleaning import count_raw_rows

        landed = landed_files(source, spec.source.format)
        per_day, missing = [], []
        for day in context.partition_keys:
            files = landed.get(day, [])
            if not files:
                missing.append(day)
                continue
            target = lake.raw_dir(spec.name, day)
            # Replace the whole day so a file removed upstream does not linger in the lake.
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for f in files:
                shutil.copy2(f, target / f.name)
            copied = sorted(target.iterdir())
            per_day.append({"day": day, "files": len(copied), "bytes": sum(p.stat().st_size for p in copied),
                            "rows": count_raw_rows(spec, copied)})
            context.log.info(f"{day}: {len(copied)} file(s), {per_day[-1]['rows']} rows")
        if missing:
            raise dg.Failure(
                description=f"no landed {spec.source.format} files for {', '.join(missing)} under {source}",
                metadata={"missing_days": missing, "source": source},
            )
        return dg.MaterializeResult(metadata={
            "files": sum(d["files"] for d in per_day),
            "bytes": sum(d["bytes"] for d in per_day),
            "rows": sum(d["rows"] for d in per_day),
            "per_day": md_table(per_day),
            "source": source,
        })

    descriptions = _check_descriptions()

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(CLEAN, deps=[RAW], description="Raw rows typed by the spec, deduplicated by id "
                         "(latest timestamp wins); one Parquet file per day.",
                         kinds={"spark", "parquet", "great_expectations"},
                         group_name="ingestion", owners=[spec.owner], tags=tags),
            dg.AssetSpec(QUARANTINE, deps=[RAW], description="Rows that failed cleaning, each with a reason "
                         "code, a detail naming the column and value, and the original record.",
                         kinds={"spark", "parquet"}, group_name="ingestion", owners=[spec.owner], tags=tags),
        ],
        check_specs=[
            dg.AssetCheckSpec(name, asset=CLEAN, blocking=True, description=text)
            for name, text in descriptions.items()
        ],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=False,
    )
    def clean_records(context: dg.AssetExecutionContext, lake: LakeResource, pyspark: LazyPySparkResource):
        """One Spark session cleans and validates every day of the run (a backfill is one run)."""
        from kennel.cleaning import clean_partition
        from kennel.validation import validate_dataframe

        spark = pyspark.spark_session
        reconcile_rows, quality_rows, group_rows = [], [], {}
        for day in context.partition_keys:
            files = sorted(lake.raw_dir(spec.name, day).glob(f"*.{spec.source.format}"))
            result = clean_partition(
                spark, spec, files, day, lake.clean_dir(spec.name, day), lake.quarantine_dir(spec.name, day),
                lake.staging(),
            )
            groups = validate_dataframe(spark.read.parquet(str(lake.clean_dir(spec.name, day))), spec)
            rate = result.rows_quarantined / result.rows_in if result.rows_in else 0.0
            passed = result.reconciled and rate <= spec.quality.max_quarantine_fraction and all(g.success for g in groups)
            _write_quality_record(lake, spec, day, result, rate, groups, passed, context.run_id)
            context.log.info(
                f"{day}: {result.rows_in} in, {result.rows_clean} clean, {result.rows_quarantined} quarantined "
                f"{result.reasons}; validation {'passed' if passed else 'FAILED'}"
            )
            reconcile_rows.append({"day": day, "raw": result.rows_in, "clean": result.rows_clean,
                                   "quarantined": result.rows_quarantined, "reconciled": result.reconciled})
            quality_rows.append({"day": day, "quarantine_rate": round(rate, 4), "reasons": result.reasons,
                                 "extra_columns": result.extra_columns, "missing_columns": result.missing_columns})
            for g in groups:
                group_rows.setdefault(g.group, []).extend(
                    {"day": day, "expectation": o.expectation, "column": o.column, "success": o.success,
                     "observed": o.observed, "unexpected": o.unexpected_count, "sample": o.unexpected_sample}
                    for o in g.outcomes
                )

        total = {k: sum(r[k] for r in reconcile_rows) for k in ("raw", "clean", "quarantined")}
        reasons: dict[str, int] = {}
        for q in quality_rows:
            for reason, n in q["reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + n
        yield dg.MaterializeResult(asset_key=CLEAN, metadata={
            "rows_in": total["raw"],
            "rows_out": total["clean"],
            "rows_quarantined": total["quarantined"],
            "dagster/row_count": total["clean"],
            "dagster/column_schema": clean_table_schema(spec),
            "per_day": md_table(reconcile_rows),
            "path": dg.MetadataValue.path(str(lake.path("clean", spec.name))),
        })
        yield dg.MaterializeResult(asset_key=QUARANTINE, metadata={
            "rows": total["quarantined"],
            "dagster/row_count": total["quarantined"],
            "reasons": dg.MetadataValue.json(reasons),
            "per_day": md_table(quality_rows),
            "path": dg.MetadataValue.path(str(lake.path("quarantine", spec.name))),
        })
        yield dg.AssetCheckResult(
            asset_key=CLEAN, check_name="rows_reconcile", passed=all(r["reconciled"] for r in reconcile_rows),
            metadata={**total, "per_day": md_table(reconcile_rows)},
        )
        worst = max(quality_rows, key=lambda q: q["quarantine_rate"])
        yield dg.AssetCheckResult(
            asset_key=CLEAN, check_name="quarantine_rate",
            passed=worst["quarantine_rate"] <= spec.quality.max_quarantine_fraction,
            metadata={"max_allowed": spec.quality.max_quarantine_fraction, "worst_day": worst["day"],
                      "worst_rate": worst["quarantine_rate"],
                      "per_day": md_table([{k: q[k] for k in ("day", "quarantine_rate")} for q in quality_rows])},
        )
        for group, rows in group_rows.items():
            failed = [r for r in rows if not r["success"]]
            yield dg.AssetCheckResult(
                asset_key=CLEAN, check_name=f"gx_{group}", passed=not failed,
                metadata={"expectations": len(rows), "failed": len(failed),
                          "results": md_table(failed or rows)},
            )

    return [raw_records, clean_records]

def clean_table_schema(spec: DatasetSpec) -> dg.TableSchema:
    kinds = {"numeric": "double", "boolean": "boolean", "categorical": "string"}
    cols = [dg.TableColumn(spec.id_column, "string", description="Record id (unique per day)"),
            dg.TableColumn(spec.timestamp_column, "timestamp", description="Event time (UTC)")]
    cols += [dg.TableColumn(f.name, kinds[f.type.value], description=f.description or f.type.value)
             for f in spec.features]
    cols.append(dg.TableColumn(spec.label.column, "int", description=f"1 = {spec.label.positive!r}, 0 = {spec.label.negative!r}"))
    return dg.TableSchema(columns=cols)

def _write_quality_record(lake, spec, day, result, rate, groups, passed, run_id) -> None:
    """The per-partition quality record that training (and later sensors) read without touching data."""
    record = {
        "dataset": spec.name, "day": day, "passed": passed, "run_id": run_id,
        "written_at": datetime.now(timezone.utc).isoformat(),
        "rows_in": result.rows_in, "rows_clean": result.rows_clean, "rows_quarantined": result.rows_quarantined,
        "quarantine_rate": rate, "reasons": result.reasons,
        "extra_columns": result.extra_columns, "missing_columns": result.missing_columns,
        "expectations": {g.group: g.success for g in groups},
    }
    path = lake.quality_record(spec.name, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)

