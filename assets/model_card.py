"""The champion's model card as HTML: as of promotion (shipped in the Bento) and refreshed with monitoring."""

from typing import Any

import dagster as dg

from assets.graph import DatasetGraph
from kennel.spec import DatasetSpec
from resources.lake import LakeResource


def build_model_card_assets(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=graph.model_card,
        deps=[graph.champion],
        group_name=graph.name("serving"),
        kinds={"html"},
        description="The champion's model card, one self-contained HTML page (data days, test metrics, "
        "calibration, fairness by group, SHAP summary, the gate decision and its thresholds): "
        "promotion.html as of promotion, written once and shipped in the Bento, and latest.html, "
        "rewritten on every run with the monitoring since promotion (realized and estimated ROC-AUC, "
        "drifted share).",
    )
    def model_card(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from kennel.training.card_page import write_cards

        try:
            cards = write_cards(lake.dataset(spec.name), spec)
        except LookupError as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(
            f"model card of champion {cards.run_id}: {cards.latest} ({cards.monitoring_days} day(s) of monitoring)"
            + ("; wrote the card as of promotion" if cards.promotion_written else "")
        )
        meta: dict[str, Any] = {
            "run_id": cards.run_id,
            "latest": dg.MetadataValue.path(str(cards.latest)),
            "promotion": dg.MetadataValue.path(str(cards.promotion)),
            "latest_url": dg.MetadataValue.url(cards.latest.resolve().as_uri()),
            "size_kb": round(cards.latest_bytes / 1024, 1),
            "monitoring_days": cards.monitoring_days,
            "promotion_written": cards.promotion_written,
        }
        return dg.MaterializeResult(metadata=meta)

    return [model_card]
