"""A data set's assets, built once per spec by `build_dataset_assets`; the policies every asset gets
(owner, data-set tag) are applied here, once, instead of on each asset."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from assets.batch_scoring import build_batch_scoring_assets
from assets.features import build_feature_assets
from assets.graph import DatasetGraph
from assets.ingestion import build_ingestion_assets
from assets.model_card import build_model_card_assets
from assets.monitoring import build_monitoring_assets
from assets.serving import build_serving_assets
from assets.shadow import build_shadow_assets
from assets.training import build_training_assets
from kennel.spec import DatasetSpec


def build_dataset_assets(spec: DatasetSpec, graph: DatasetGraph) -> Sequence[dg.AssetsDefinition | dg.AssetSpec]:
    assets = [
        *build_ingestion_assets(spec, graph),
        *build_feature_assets(spec, graph),
        *build_training_assets(spec, graph),
        *build_serving_assets(spec, graph),
        *build_model_card_assets(spec, graph),
        *build_shadow_assets(spec, graph),
        *build_batch_scoring_assets(spec, graph),
        *build_monitoring_assets(spec, graph),
    ]
    return dg.map_asset_specs(
        lambda asset: asset.merge_attributes(owners=[spec.owner], tags={"dataset": spec.name}), assets
    )
