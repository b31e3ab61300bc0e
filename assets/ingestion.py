"""Landing (local folder, S3 or Kafka) → raw → clean + quarantine (Spark), with reconciliation and GX
checks: error-severity checks block downstream assets, warn-severity ones only report."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_pyspark import LazyPySparkResource

from assets.graph import QUARANTINE_RATE, ROWS_RECONCILE, DatasetGraph, daily_partitions
from assets.metadata import md_table
from kennel.ingestion.landing import list_landed
from kennel.lake.records import QualityRecord
from kennel.spec import DatasetSpec
from resources import stream_transports
from resources.lake import LakeResource
from resources.streams import StreamResource


def gx_checks(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetCheckSpec]:
    """One check per built-in GX group and per user expectation, blocking when its severity is error."""
    from kennel.ingestion.validation import check_definitions

    return [
        dg.AssetCheckSpec(
            f"gx_{check.name}",
            asset=graph.clean,
            blocking=check.severity == "error",
            description=f"Great Expectations ({check.severity}): {check.description}",
        )
        for check in check_definitions(spec)
    ]


def check_specs(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetCheckSpec]:
    """Reconciliation and quarantine rate, then the GX checks."""
    return [
        dg.AssetCheckSpec(
            ROWS_RECONCILE,
            asset=graph.clean,
            blocking=True,
            description="Every raw row is either clean or quarantined: raw = clean + quarantined",
        ),
        dg.AssetCheckSpec(
            QUARANTINE_RATE,
            asset=graph.clean,
            blocking=True,
            description="The share of quarantined rows stays under the spec's max_quarantine_fraction",
        ),
        *gx_checks(spec, graph),
    ]


def build_ingestion_assets(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetsDefinition]:
    partitions = daily_partitions(spec)
    source = spec.source_location()
    landings = [build_landing_asset(spec, graph, transport) for transport in stream_transports(spec)]

    @dg.asset(
        key=graph.raw,
        deps=[landing.key for landing in landings],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=graph.name("ingestion"),
        kinds={"python", "file", "s3"} if source.startswith("s3://") else {"python", "file"},
        description=f"Files landed for the day in {source}, copied unchanged into the lake.",
    )
    def raw_records(context: dg.AssetExecutionContext, lake: LakeResource, s3: S3Resource) -> dg.MaterializeResult:
        return copy_landed_days(context, spec, lake, s3)

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                graph.clean,
                deps=[graph.raw],
                description="Raw rows typed by the spec, deduplicated by id "
                "(latest timestamp wins); one Parquet file per day.",
                kinds={"spark", "parquet", "great_expectations"},
                group_name=graph.name("ingestion"),
            ),
            dg.AssetSpec(
                graph.quarantine,
                deps=[graph.raw],
                description="Rows that failed cleaning, each with a reason "
                "code, a detail naming the column and value, and the original record.",
                kinds={"spark", "parquet"},
                group_name=graph.name("ingestion"),
            ),
        ],
        name=graph.name("clean_records"),
        check_specs=check_specs(spec, graph),
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=False,
    )
    def clean_records(context: dg.AssetExecutionContext, lake: LakeResource, pyspark: LazyPySparkResource):
        """One Spark session cleans and validates every day of the run (a backfill is one run)."""
        yield from clean_and_validate(context, spec, graph, lake, pyspark)

    late_labels = [build_late_labels_asset(spec, graph)] if spec.label.late else []
    return [*landings, raw_records, clean_records, *late_labels]


def build_late_labels_asset(spec: DatasetSpec, graph: DatasetGraph) -> dg.AssetsDefinition:
    """The day's landed label files (the spec's label.late folder) as the lake's labels table of the day."""
    from kennel.ingestion.labels import late_labels_location

    @dg.asset(
        key=graph.late_labels,
        partitions_def=daily_partitions(spec),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=graph.name("ingestion"),
        kinds={"python", "parquet"},
        description=f"Labels landed after their records, in {late_labels_location(spec)}: the latest label per "
        "id of the day's files, and every row that is no label with its reason. Joined by id to clean rows "
        "(and with /feedback) when a training set or a performance report is built; clean partitions are "
        "never rewritten.",
    )
    def late_labels(context: dg.AssetExecutionContext, lake: LakeResource, s3: S3Resource) -> dg.MaterializeResult:
        return ingest_late_labels(context, spec, lake, s3)

    return late_labels


def ingest_late_labels(
    context: dg.AssetExecutionContext, spec: DatasetSpec, lake: LakeResource, s3: S3Resource
) -> dg.MaterializeResult:
    """Each day of the run: its landed label files, validated, replace the day's labels in the lake (a day
    without files gets an empty table). Rows that are no label are counted by reason, never dropped unsaid."""
    from kennel.ingestion.labels import ingest_label_files, late_labels_location
    from kennel.ingestion.landing import accepted, copy_landed_file, refusals
    from kennel.lake import s3 as s3_files

    assert spec.label.late is not None  # the asset exists only for a spec with label.late
    source = late_labels_location(spec)
    data = lake.dataset(spec.name)
    on_s3 = source.startswith("s3://")
    client = s3.get_client() if on_s3 else None
    landed = list_landed(source, spec.label.late.format, client)
    staging = lake.local.staging() / context.run_id
    per_day, rejected_sample, refused_by_day = [], [], {}
    try:
        for day in sorted(context.partition_keys):
            refused = refusals(landed.get(day, []))
            if refused:
                refused_by_day[day] = refused
                context.log.warning(f"{day}: label files refused, not read: {refused}")
            # Copied out of the landing folder first, with the checks raw_records makes (no link followed).
            local = staging / f"late-labels-{day}"
            local.mkdir(parents=True, exist_ok=True)
            files = []
            for landed_file in accepted(landed.get(day, [])):
                target = local / landed_file.name.rsplit("/", 1)[-1]  # named as raw_records names copies
                if target in files:
                    raise dg.Failure(f"{day}: two label files share the name {target.name} in different folders")
                if on_s3:
                    bucket, prefix = s3_files.split_uri(source)
                    client.download_file(bucket, prefix + landed_file.name, str(target))
                else:
                    copy_landed_file(source, landed_file, target)
                files.append(target)
            result = ingest_label_files(spec, data, day, files, staging)
            lake.publish_dir(data.labels_dir(day))
            per_day.append(
                {
                    "day": day,
                    "files": len(result.files),
                    "rows": result.rows_in,
                    "labels": result.rows_kept,
                    "superseded": result.rows_superseded,
                    "rejected": result.rows_rejected,
                    "reasons": result.rejected,
                }
            )
            rejected_sample += [{"day": day, **row} for row in result.rejected_sample]
            context.log.info(
                f"{day}: {result.rows_in} label rows in {len(result.files)} file(s): {result.rows_kept} labels, "
                f"{result.rows_superseded} superseded by a later row of their id, {result.rows_rejected} "
                f"rejected {result.rejected}"
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rejected = sum(d["rejected"] for d in per_day)
    if rejected:
        context.log.warning(f"{rejected} label row(s) rejected; see rejected_sample and the lake's rejected files")
    return dg.MaterializeResult(
        metadata={
            "labels": sum(d["labels"] for d in per_day),
            "dagster/row_count": sum(d["labels"] for d in per_day),
            "rejected": rejected,
            "per_day": md_table(per_day),
            "rejected_sample": md_table(rejected_sample[:20]),
            "refused": dg.MetadataValue.json(refused_by_day),
            "source": source,
            "path": dg.MetadataValue.path(lake.location(data.labels_root())),
        }
    )


def build_landing_asset(spec: DatasetSpec, graph: DatasetGraph, transport: str) -> dg.AssetsDefinition:
    """The asset that lands the spec's stream through `transport` (its resource has the same key)."""
    settings = getattr(spec.source, transport)

    @dg.asset(
        key=graph.landing(transport),
        group_name=graph.name("ingestion"),
        kinds={transport, "python"},
        required_resource_keys={transport},
        description=f"Messages of the {transport} stream {settings} landed in {spec.source_location()} as daily JSON "
        "Lines files (day = the record's event time); the stream's position is committed only after "
        "the files are on disk.",
    )
    def landing(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        stream: StreamResource = getattr(context.resources, transport)
        report = stream.land(spec, Path(spec.source_location()))
        context.log.info(f"landed {report.messages} message(s) in {len(report.files)} file(s)")
        return dg.MaterializeResult(
            metadata={
                "messages": report.messages,
                "files": dg.MetadataValue.json([str(f) for f in report.files]),
                "per_day": dg.MetadataValue.json(report.per_day),
                "next_positions": dg.MetadataValue.json(report.positions),
            }
        )

    return landing


def copy_landed_days(
    context: dg.AssetExecutionContext, spec: DatasetSpec, lake: LakeResource, s3: S3Resource
) -> dg.MaterializeResult:
    """Copy each day's landed files into the lake's raw folder (replacing the day as a whole); files refused
    at landing (symbolic links, folders named like data: kennel.ingestion.landing) are not copied but listed
    beside the copies, for cleaning to name in the day's quality record."""
    from kennel.ingestion.cleaning import count_raw_rows
    from kennel.ingestion.landing import (
        REFUSALS_FILE,
        accepted,
        copy_landed_file,
        day_fingerprint,
        refusals,
        write_refusals,
    )
    from kennel.lake import s3 as s3_files

    source = spec.source_location()
    data = lake.dataset(spec.name)
    on_s3 = source.startswith("s3://")
    client = s3.get_client() if on_s3 else None
    landed = list_landed(source, spec.source.format, client)
    per_day, missing = [], []
    fingerprints: dict[str, str] = {}
    refused_by_day: dict[str, dict[str, str]] = {}
    for day in context.partition_keys:
        files, refused = accepted(landed.get(day, [])), refusals(landed.get(day, []))
        if refused:
            refused_by_day[day] = refused
            context.log.warning(f"{day}: landed files refused, not copied: {refused}")
        if not files:
            missing.append(day)
            continue
        target = data.raw_dir(day)
        # Replace the whole day so a file removed upstream does not linger in the lake; names are
        # flattened to the file name, as cleaning reports them.
        if on_s3:
            bucket, prefix = s3_files.split_uri(source)
            writers = {
                f.name.rsplit("/", 1)[-1]: (
                    lambda path, bucket=bucket, key=prefix + f.name: client.download_file(bucket, key, str(path))
                )
                for f in files
            }
        else:
            writers = {f.name.rsplit("/", 1)[-1]: (lambda path, f=f: copy_landed_file(source, f, path)) for f in files}
        if len(writers) != len(files):
            raise dg.Failure(
                f"{day}: two landed files share a file name in different folders: {[f.name for f in files]}"
            )
        if refused:
            writers[REFUSALS_FILE] = lambda path, refused=refused: write_refusals(path, refused)
        target.parent.mkdir(parents=True, exist_ok=True)
        s3_files.replace_local_dir(target, writers)
        lake.publish_dir(target)
        copied = sorted(target.glob(f"*.{spec.source.format}"))
        per_day.append(
            {
                "day": day,
                "files": len(copied),
                "bytes": sum(p.stat().st_size for p in copied),
                "rows": count_raw_rows(spec, copied),
                "refused": len(refused),
            }
        )
        fingerprints[day] = day_fingerprint(files)
        context.log.info(f"{day}: {len(copied)} file(s), {per_day[-1]['rows']} rows")
    if missing:
        raise dg.Failure(
            description=f"no landed {spec.source.format} files to copy for {', '.join(missing)} under {source}"
            + (f" (refused: {refused_by_day})" if refused_by_day else ""),
            metadata={"missing_days": missing, "refused": dg.MetadataValue.json(refused_by_day), "source": source},
        )
    return dg.MaterializeResult(
        metadata={
            "files": sum(d["files"] for d in per_day),
            "bytes": sum(d["bytes"] for d in per_day),
            "rows": sum(d["rows"] for d in per_day),
            "per_day": md_table(per_day),
            "refused": dg.MetadataValue.json(refused_by_day),
            # What was copied, per day, as the new-data sensor fingerprints the landing.
            "landed_fingerprints": dg.MetadataValue.json(fingerprints),
            "source": source,
            "path": lake.location(data.raw_root()),
        }
    )


def clean_and_validate(
    context: dg.AssetExecutionContext,
    spec: DatasetSpec,
    graph: DatasetGraph,
    lake: LakeResource,
    pyspark: LazyPySparkResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    from kennel.ingestion.cleaning import PART_FILE, clean_partition
    from kennel.ingestion.quality import TrailingRows, build_record
    from kennel.ingestion.validation import validate_dataframe

    spark = pyspark.spark_session
    data = lake.dataset(spec.name)
    # The run's own staging folder: a killed run leaves only this behind, never a visible partition.
    staging = lake.local.staging() / context.run_id
    # Read once: a backfill of N days reads the quality records once, not once per day.
    trailing = TrailingRows(data)
    records = []
    for day in sorted(context.partition_keys):
        raw_dir = data.raw_dir(day)
        # Write-audit-publish: this run's version of the day, validated, then published by its record.
        clean_dir = data.clean_version_dir(day, context.run_id)
        quarantine_dir = data.quarantine_version_dir(day, context.run_id)
        lake.fetch_dir(raw_dir)
        files = sorted(raw_dir.glob(f"*.{spec.source.format}"))
        result = clean_partition(spark, spec, files, day, clean_dir, quarantine_dir, staging)
        clean = spark.read.parquet(str(clean_dir)).cache()
        try:
            groups = validate_dataframe(clean, spec)
        finally:
            clean.unpersist()
        outputs = {"clean": data.digest(clean_dir / PART_FILE), "quarantine": data.digest(quarantine_dir / PART_FILE)}
        record = build_record(
            spec, result, groups, run_id=context.run_id, trailing=trailing.before(day), outputs=outputs
        )
        # Data first, the quality record last: a record only ever names files that are in place.
        lake.publish_file(clean_dir / PART_FILE)
        lake.publish_file(quarantine_dir / PART_FILE)
        lake.publish_file(data.publish_day(record))
        trailing.add(record)
        records.append(record)
        context.log.info(
            f"{day}: {result.rows_in} in, {result.rows_clean} clean, {result.rows_quarantined} quarantined "
            f"{result.reasons}; validation {'passed' if record.passed else 'FAILED'}"
        )
    shutil.rmtree(staging, ignore_errors=True)
    yield from _results(spec, graph, lake, records)


def _results(
    spec: DatasetSpec, graph: DatasetGraph, lake: LakeResource, records: list[QualityRecord]
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Materializations and check results of a run's days, from their quality records."""
    data = lake.dataset(spec.name)
    reconcile_rows = [
        {
            "day": r.day,
            "raw": r.rows_in,
            "clean": r.rows_clean,
            "quarantined": r.rows_quarantined,
            "reconciled": r.checks[ROWS_RECONCILE],
        }
        for r in records
    ]
    total = {k: sum(row[k] for row in reconcile_rows) for k in ("raw", "clean", "quarantined")}
    reasons: dict[str, int] = {}
    for r in records:
        for reason, n in r.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    drift = [
        {"day": r.day, **r.schema_drift.model_dump()} for r in records if any(r.schema_drift.model_dump().values())
    ]
    rates = [{"day": r.day, "quarantine_rate": round(r.quarantine_rate, 4), "reasons": r.reasons} for r in records]
    yield dg.MaterializeResult(
        asset_key=graph.clean,
        metadata={
            "rows_in": total["raw"],
            "rows_out": total["clean"],
            "rows_quarantined": total["quarantined"],
            # Unlabelled rows are clean (kept for drift and scoring, labelled later by id): how many are labelled.
            "rows_labelled": sum(r.rows_labelled or 0 for r in records),
            "labelled_share": sum(r.rows_labelled or 0 for r in records) / total["clean"] if total["clean"] else None,
            "dagster/row_count": total["clean"],
            "dagster/column_schema": clean_table_schema(spec),
            "per_day": md_table(
                [
                    {
                        **row,
                        "labelled_share": r.labelled_share,
                        "passed": r.passed,
                        "rows_vs_trailing_mean": r.row_count.ratio,
                    }
                    for row, r in zip(reconcile_rows, records, strict=True)
                ]
            ),
            "failed_days": dg.MetadataValue.json([r.day for r in records if not r.passed]),
            "mapped_to_other": dg.MetadataValue.json({r.day: r.mapped_to_other for r in records if r.mapped_to_other}),
            "path": dg.MetadataValue.path(lake.location(data.clean_root())),
        },
    )
    yield dg.MaterializeResult(
        asset_key=graph.quarantine,
        metadata={
            "rows": total["quarantined"],
            "dagster/row_count": total["quarantined"],
            "reasons": dg.MetadataValue.json(reasons),
            "schema_drift": md_table(drift),
            "per_day": md_table(rates),
            "path": dg.MetadataValue.path(lake.location(data.quarantine_root())),
        },
    )
    yield dg.AssetCheckResult(
        asset_key=graph.clean,
        check_name=ROWS_RECONCILE,
        passed=all(row["reconciled"] for row in reconcile_rows),
        metadata={**total, "per_day": md_table(reconcile_rows)},
    )
    worst = max(records, key=lambda r: r.quarantine_rate)
    yield dg.AssetCheckResult(
        asset_key=graph.clean,
        check_name=QUARANTINE_RATE,
        passed=worst.quarantine_rate <= spec.quality.max_quarantine_fraction,
        metadata={
            "max_allowed": spec.quality.max_quarantine_fraction,
            "worst_day": worst.day,
            "worst_rate": worst.quarantine_rate,
            "per_day": md_table(rates),
        },
    )
    by_check: dict[str, list[dict]] = {}
    for r in records:
        for e in r.expectations:
            by_check.setdefault(e.check, []).append({"day": r.day, **e.model_dump(exclude={"check"})})
    for check in gx_checks(spec, graph):
        rows = by_check.get(check.name, [])
        failed = [e for e in rows if not e["success"]]
        severity = rows[0]["severity"] if rows else "error"
        yield dg.AssetCheckResult(
            asset_key=graph.clean,
            check_name=check.name,
            passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN,
            metadata={
                "severity": severity,
                "expectations": len(rows),
                "failed": len(failed),
                "results": md_table(
                    [
                        {
                            k: e[k]
                            for k in (
                                "day",
                                "expectation",
                                "column",
                                "success",
                                "observed",
                                "unexpected_count",
                                "unexpected_sample",
                            )
                        }
                        for e in rows
                    ]
                ),
                "failing": dg.MetadataValue.json(failed),
            },
        )


def clean_table_schema(spec: DatasetSpec) -> dg.TableSchema:
    kinds = {"numeric": "double", "boolean": "boolean", "categorical": "string"}
    cols = [
        dg.TableColumn(spec.id_column, "string", description="Record id (unique per day)"),
        dg.TableColumn(spec.timestamp_column, "timestamp", description="Event time (UTC)"),
    ]
    cols += [
        dg.TableColumn(f.name, kinds[f.type.value], description=f.description or f.type.value) for f in spec.features
    ]
    cols.append(
        dg.TableColumn(
            spec.label.column,
            "int",
            description=f"1 = {spec.label.positive!r}, 0 = {spec.label.negative!r}, null = not labelled (yet)",
        )
    )
    return dg.TableSchema(columns=cols)
