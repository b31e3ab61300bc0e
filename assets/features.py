"""dbt feature models over the validated clean table: each model an asset, each dbt test an asset check."""

import json
import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from assets.graph import DatasetGraph
from kennel.spec import DatasetSpec
from resources import dbt_project
from resources.lake import LakeResource


class KennelDbtTranslator(DagsterDbtTranslator):
    """The dbt source `kennel_lake.clean` is the data set's Spark `clean_records` asset; models take the data
    set's keys and join its features group (owners and tags come from the policy every asset gets,
    assets/__init__.py)."""

    def __init__(self, graph: DatasetGraph):
        super().__init__()
        self.graph = graph

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source" and dbt_resource_props["name"] == "clean":
            return self.graph.clean
        return self.graph.key(dbt_resource_props["name"])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return self.graph.name("features")


def dbt_vars(spec: DatasetSpec, lake: LakeResource) -> dict[str, Any]:
    """The spec's columns, handed to the generic dbt models."""
    return {
        "kennel": {
            # Only the published version of each day, each checked against its quality record first.
            "clean_files": [str(path) for path in lake.dataset(spec.name).published_clean_files()],
            "id_column": spec.id_column,
            "timestamp_column": spec.timestamp_column,
            "label_column": spec.label.column,
            "feature_columns": spec.feature_names,
        }
    }


def build_feature_assets(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetsDefinition]:
    if not dbt_project.manifest_path.exists():
        # A fresh clone has no manifest yet; `dbt parse` makes one (a few seconds, once).
        dbt_project.preparer.prepare(dbt_project)

    @dbt_assets(
        manifest=dbt_project.manifest_path,
        dagster_dbt_translator=KennelDbtTranslator(graph),
        project=dbt_project,
        name=graph.name("feature_models"),
    )
    def feature_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource):
        # dbt-duckdb writes its warehouse into the lake; the profile reads the path from the environment.
        warehouse = lake.dataset(spec.name).warehouse()
        os.environ["KENNEL_WAREHOUSE"] = str(warehouse)
        warehouse.parent.mkdir(parents=True, exist_ok=True)
        args = ["build", "--vars", json.dumps(dbt_vars(spec, lake))]
        yield from dbt.cli(args, context=context).stream()

    return [feature_models]
