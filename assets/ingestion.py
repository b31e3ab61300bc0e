"""Landing (local folder, S3 or Kafka) → raw → clean + quarantine (Spark), with reconciliation and GX
checks: error-severity checks block downstream assets, warn-severity ones only report."""

import shutil

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_pyspark import LazyPySparkResource

from kennel.landing import list_landed
from kennel.spec import DatasetSpec
from assets.metadata import md_table
from resources.kafka import KafkaResource
from resources.lake import LakeResource

RAW = dg.AssetKey("raw_records")
CLEAN = dg.AssetKey("clean_records")
QUARANTINE = dg.AssetKey("quarantined_records")
KAFKA_LANDING = dg.AssetKey("kafka_landing")


def daily_partitions(spec: DatasetSpec) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=spec.start_date.isoformat())


def check_specs(spec: DatasetSpec) -> list[dg.AssetCheckSpec]:
    """Reconciliation and quarantine rate, one check per built-in GX group, one per user expectation."""
    from kennel.validation import check_definitions

    specs = [
        dg.AssetCheckSpec("rows_reconcile", asset=CLEAN, blocking=True,
                          description="Every raw row is either clean or quarantined: raw = clean + quarantined"),
        dg.AssetCheckSpec("quarantine_rate", asset=CLEAN, blocking=True,
                          description="The share of quarantined rows stays under the spec's max_quarantine_fraction"),
    ]
    for check in check_definitions(spec):
        specs.append(dg.AssetCheckSpec(
            f"gx_{check.name}", asset=CLEAN, blocking=check.severity == "error",
            description=f"Great Expectations ({check.severity}): {check.description}",
        ))
    return specs


def build_ingestion_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    partitions = daily_partitions(spec)
    source = spec.source_location()
    tags = {"dataset": spec.name}
    assets = []

    if spec.source.kafka is not None:
        kafka_spec = spec.source.kafka

        @dg.asset(
            key=KAFKA_LANDING, group_name="ingestion", kinds={"kafka", "python"}, owners=[spec.owner], tags=tags,
            description=f"Messages of Kafka topic {kafka_spec.topic} landed in {source} as daily JSON Lines files "
                        "(day = the record's event time); offsets are committed only after the files are on disk.",
        )
        def kafka_landing(context: dg.AssetExecutionContext, kafka: KafkaResource) -> dg.MaterializeResult:
            from kennel.kafka_ingest import drain_topic

            report = drain_topic(spec, kafka.consumer_config(spec), source, max_messages=kafka.max_messages_per_run)
            context.log.info(f"landed {report.messages} message(s) in {len(report.files)} file(s)")
            return dg.MaterializeResult(metadata={
                "messages": report.messages,
                "files": dg.MetadataValue.json([str(f) for f in report.files]),
                "per_day": dg.MetadataValue.json(report.per_day),
                "next_offsets": dg.MetadataValue.json({str(p): o for p, o in report.next_offsets.items()}),
                "topic": kafka_spec.topic,
            })

        assets.append(kafka_landing)

    @dg.asset(
        key=RAW,
        deps=[KAFKA_LANDING] if spec.source.kafka is not None else [],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="ingestion",
        kinds={"python", "file", "s3"} if source.startswith("s3://") else {"python", "file"},
        owners=[spec.owner],
        tags=tags,
        description=f"Files landed for the day in {source}, copied unchanged into the lake.",
    )
    def raw_records(context: dg.AssetExecutionContext, lake: LakeResource, s3: S3Resource) -> dg.MaterializeResult:
        from kennel import s3 as s3_files
        from kennel.cleaning import count_raw_rows

        on_s3 = source.startswith("s3://")
        client = s3.get_client() if on_s3 else None
        landed = list_landed(source, spec.source.format, client)
        per_day, missing = [], []
        for day in context.partition_keys:
            files = landed.get(day, [])
            if not files:
                missing.append(day)
                continue
            target = lake.raw_dir(spec.name, day)
            # Replace the whole day so a file removed upstream does not linger in the lake; names are
            # flattened to the file name, as cleaning reports them.
            if on_s3:
                bucket, prefix = s3_files.split_uri(source)
                writers = {f.name.rsplit("/", 1)[-1]: (lambda path, key=prefix + f.name: client.download_file(bucket, key, str(path)))
                           for f in files}
            else:
                writers = {f.name.rsplit("/", 1)[-1]: (lambda path, src=f.location(source): shutil.copy2(src, path))
                           for f in files}
            if len(writers) != len(files):
                raise dg.Failure(f"{day}: two landed files share a file name in different folders: {[f.name for f in files]}")
            target.parent.mkdir(parents=True, exist_ok=True)
            s3_files.replace_local_dir(target, writers)
            lake.publish_dir(target)
            copied = sorted(target.glob(f"*.{spec.source.format}"))
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
            "path": lake.location(lake.path("raw", spec.name)),
        })

    assets.append(raw_records)

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
        check_specs=check_specs(spec),
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=False,
    )
    def clean_records(context: dg.AssetExecutionContext, lake: LakeResource, pyspark: LazyPySparkResource):
        """One Spark session cleans and validates every day of the run (a backfill is one run)."""
        from kennel.cleaning import PART_FILE, clean_partition
        from kennel.quality import build_record, file_digest, trailing_rows, write_record
        from kennel.validation import validate_dataframe

        spark = pyspark.spark_session
        quality_dir = lake.path("quality", spec.name)
        # The run's own staging folder: a killed run leaves only this behind, never a visible partition.
        staging = lake.staging() / context.run_id
        records = []
        for day in sorted(context.partition_keys):
            raw_dir, clean_dir, quarantine_dir = (lake.raw_dir(spec.name, day), lake.clean_dir(spec.name, day),
                                                  lake.quarantine_dir(spec.name, day))
            lake.fetch_dir(raw_dir)
            files = sorted(raw_dir.glob(f"*.{spec.source.format}"))
            result = clean_partition(spark, spec, files, day, clean_dir, quarantine_dir, staging)
            clean = spark.read.parquet(str(clean_dir)).cache()
            try:
                groups = validate_dataframe(clean, spec)
            finally:
                clean.unpersist()
            outputs = {"clean": file_digest(clean_dir / PART_FILE), "quarantine": file_digest(quarantine_dir / PART_FILE)}
            record = build_record(spec, result, groups, run_id=context.run_id,
                                  trailing=trailing_rows(quality_dir, day), outputs=outputs)
            # Data first, the quality record last: a record always describes files that are in place.
            lake.publish_file(clean_dir / PART_FILE)
            lake.publish_file(quarantine_dir / PART_FILE)
            write_record(lake.quality_record(spec.name, day), record)
            lake.publish_file(lake.quality_record(spec.name, day))
            records.append(record)
            context.log.info(
                f"{day}: {result.rows_in} in, {result.rows_clean} clean, {result.rows_quarantined} quarantined "
                f"{result.reasons}; validation {'passed' if record['passed'] else 'FAILED'}"
            )
        shutil.rmtree(staging, ignore_errors=True)
        yield from _results(spec, lake, records)

    assets.append(clean_records)
    return assets


def _results(spec: DatasetSpec, lake: LakeResource, records: list[dict]):
    """Materializations and check results of a run's days, from their quality records."""
    reconcile_rows = [{"day": r["day"], "raw": r["rows_in"], "clean": r["rows_clean"], "quarantined": r["rows_quarantined"],
                       "reconciled": r["checks"]["rows_reconcile"]} for r in records]
    total = {k: sum(r[k] for r in reconcile_rows) for k in ("raw", "clean", "quarantined")}
    reasons: dict[str, int] = {}
    for r in records:
        for reason, n in r["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    drift = [{"day": r["day"], **r["schema_drift"]} for r in records if any(r["schema_drift"].values())]
    yield dg.MaterializeResult(asset_key=CLEAN, metadata={
        "rows_in": total["raw"],
        "rows_out": total["clean"],
        "rows_quarantined": total["quarantined"],
        "dagster/row_count": total["clean"],
        "dagster/column_schema": clean_table_schema(spec),
        "per_day": md_table([{**row, "passed": r["passed"], "rows_vs_trailing_mean": r["row_count"]["ratio"]}
                             for row, r in zip(reconcile_rows, records)]),
        "failed_days": dg.MetadataValue.json([r["day"] for r in records if not r["passed"]]),
        "mapped_to_other": dg.MetadataValue.json({r["day"]: r["mapped_to_other"] for r in records if r["mapped_to_other"]}),
        "path": dg.MetadataValue.path(lake.location(lake.path("clean", spec.name))),
    })
    yield dg.MaterializeResult(asset_key=QUARANTINE, metadata={
        "rows": total["quarantined"],
        "dagster/row_count": total["quarantined"],
        "reasons": dg.MetadataValue.json(reasons),
        "schema_drift": md_table(drift),
        "per_day": md_table([{"day": r["day"], "quarantine_rate": round(r["quarantine_rate"], 4), "reasons": r["reasons"]}
                             for r in records]),
        "path": dg.MetadataValue.path(lake.location(lake.path("quarantine", spec.name))),
    })
    yield dg.AssetCheckResult(
        asset_key=CLEAN, check_name="rows_reconcile", passed=all(r["reconciled"] for r in reconcile_rows),
        metadata={**total, "per_day": md_table(reconcile_rows)},
    )
    worst = max(records, key=lambda r: r["quarantine_rate"])
    yield dg.AssetCheckResult(
        asset_key=CLEAN, check_name="quarantine_rate",
        passed=worst["quarantine_rate"] <= spec.quality.max_quarantine_fraction,
        metadata={"max_allowed": spec.quality.max_quarantine_fraction, "worst_day": worst["day"],
                  "worst_rate": worst["quarantine_rate"],
                  "per_day": md_table([{"day": r["day"], "quarantine_rate": round(r["quarantine_rate"], 4),
                                        "reasons": r["reasons"]} for r in records])},
    )
    by_check: dict[str, list[dict]] = {}
    for r in records:
        for e in r["expectations"]:
            by_check.setdefault(e["check"], []).append({"day": r["day"], **{k: v for k, v in e.items() if k != "check"}})
    for check in check_specs(spec)[2:]:
        rows = by_check.get(check.name, [])
        failed = [e for e in rows if not e["success"]]
        severity = rows[0]["severity"] if rows else "error"
        yield dg.AssetCheckResult(
            asset_key=CLEAN, check_name=check.name, passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN,
            metadata={
                "severity": severity,
                "expectations": len(rows),
                "failed": len(failed),
                "results": md_table([{k: e[k] for k in ("day", "expectation", "column", "success", "observed",
                                                        "unexpected_count", "unexpected_sample")} for e in rows]),
                "failing": dg.MetadataValue.json(failed),
            },
        )


def clean_table_schema(spec: DatasetSpec) -> dg.TableSchema:
    kinds = {"numeric": "double", "boolean": "boolean", "categorical": "string"}
    cols = [dg.TableColumn(spec.id_column, "string", description="Record id (unique per day)"),
            dg.TableColumn(spec.timestamp_column, "timestamp", description="Event time (UTC)")]
    cols += [dg.TableColumn(f.name, kinds[f.type.value], description=f.description or f.type.value)
             for f in spec.features]
    cols.append(dg.TableColumn(spec.label.column, "int", description=f"1 = {spec.label.positive!r}, 0 = {spec.label.negative!r}"))
    return dg.TableSchema(columns=cols)
