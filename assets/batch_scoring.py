"""Batch scoring: a validated day (or a table of the user's own) scored by the champion on Spark, with the
service's checks and encoding; the scores are logged like served predictions (kennel.serving.batch)."""

from typing import Optional

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from assets.graph import DatasetGraph, daily_partitions
from kennel.lake.champion import ChampionRegistry
from kennel.spec import DatasetSpec
from resources.lake import LakeResource


class BatchScoringConfig(dg.Config):
    table: Optional[str] = Field(
        default=None,
        description="A Parquet file or folder of your own rows to score instead of the day's validated clean "
        "table (columns named like the service's inputs; the scores are filed under the partition's day)",
    )


def build_batch_scoring_assets(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=graph.batch_scores,
        deps=[graph.clean, graph.champion],
        partitions_def=daily_partitions(spec),
        group_name=graph.name("serving"),
        kinds={"spark", "xgboost", "parquet"},
        description="The day's validated rows (or a table of your own) scored by the champion on Spark, "
        "through the service's checks and encoding: scores in the prediction log's schema (endpoint "
        "'batch', request ids /feedback accepts), rows the service would refuse kept apart with their "
        "reasons. A re-run replaces the day.",
    )
    def batch_scores(
        context: dg.AssetExecutionContext,
        config: BatchScoringConfig,
        lake: LakeResource,
        pyspark: LazyPySparkResource,
    ) -> dg.MaterializeResult:
        from kennel.serving.batch import score_day

        day = context.partition_key
        data = lake.dataset(spec.name)
        champion = ChampionRegistry(data).current()
        if champion is None:
            raise dg.Failure(description=f"{spec.name} has no champion yet: nothing to score {day} with")
        if config.table:
            source = config.table
        else:
            record = data.quality(day)
            if record is None or not record.passed:
                raise dg.Failure(
                    description=f"{spec.name} {day}: "
                    + ("no quality record (ingest the day first)" if record is None else "the day failed validation")
                    + "; only a validated day is batch scored (or pass a table of your own in the config)",
                    metadata={"day": day, "quality_record": str(data.quality_path(day))},
                )
            clean = data.published(day)
            if clean is None:
                raise dg.Failure(description=f"{spec.name} {day}: the quality record publishes no clean table")
            source = str(clean)
        result = score_day(
            pyspark.spark_session.read.parquet(source),
            data,
            day,
            model_dir=champion.model_dir,
            model_tag=champion.model_tag,
            version=context.run_id,
        )
        published = result.published
        context.log.info(
            f"{day}: {published.rows_scored} rows scored, {published.rows_rejected} rejected "
            f"{result.rejected_by_reason} by {published.model_tag} in {result.seconds:.1f} s"
        )
        return dg.MaterializeResult(
            metadata={
                "rows_scored": published.rows_scored,
                "rows_rejected": published.rows_rejected,
                "rejected_by_reason": dg.MetadataValue.json(result.rejected_by_reason),
                "model_tag": published.model_tag,
                "champion_run_id": champion.run_id,
                "mean_score": dg.MetadataValue.float(result.mean_probability)
                if result.mean_probability is not None
                else dg.MetadataValue.null(),
                "warnings": dg.MetadataValue.json(result.warnings),
                "source": source,
                "path": dg.MetadataValue.path(str(result.path)),
                "seconds": round(result.seconds, 2),
                "rows_per_second": round(result.rows_per_second, 1),
            }
        )

    return [batch_scores]
