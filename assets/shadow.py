"""The shadow evaluation: a challenger served in shadow beside the champion, judged on live traffic."""

from typing import Any

import dagster as dg

from assets.graph import DatasetGraph
from kennel.lake.records import ShadowEvaluationRecord
from kennel.spec import DatasetSpec
from resources.lake import LakeResource


def _evaluation_metadata(record: ShadowEvaluationRecord) -> dict[str, Any]:
    bootstrap = record.bootstrap or {}
    meta: dict[str, Any] = {
        "outcome": record.outcome,
        "summary": record.summary,
        "shadow_run_id": record.challenger_run_id,
        "shadow_model_tag": record.challenger_model_tag,
        "champion_run_id": record.champion_run_id,
        "champion_model_tag": record.champion_model_tag,
        "shadow_since": record.shadow_since,
        "gate_decided_at": record.decided_at,
        "evaluated_at": record.evaluated_at,
        "rows": record.requests,
        "labelled": record.labelled,
        "positives": record.positives,
        "thresholds": dg.MetadataValue.json(record.thresholds),
    }
    if record.agreement is not None:
        meta["agreement"] = record.agreement
    if record.score_psi is not None:
        meta["score_psi"] = record.score_psi
    for model, score in record.mean_score.items():
        meta[f"mean_score_{model}"] = score
    for model, values in record.metrics.items():
        for metric, value in values.items():
            if value is not None:
                meta[f"{model}_{metric}"] = value
    for name in ("difference", "lower_bound", "upper_bound", "samples", "share_not_better"):
        if name in bootstrap:
            meta[f"bootstrap_{name}"] = bootstrap[name]
    return meta


def build_shadow_assets(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=graph.shadow_evaluation,
        deps=[graph.champion],
        group_name=graph.name("serving"),
        kinds={"python"},
        description="The challenger served in shadow beside the champion, on the same live requests: agreement, "
        "score PSI and, once enough requests are labelled, the gate's paired bootstrap. Passed: the "
        "challenger becomes champion; rejected, or no verdict within shadow_max_days: the shadow ends.",
    )
    def shadow_evaluation(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from kennel.lake.champion import ChampionRegistry, PromotionRefused
        from kennel.training.shadow import evaluate_shadow, shadow_gate_config, shadow_traffic

        data = lake.dataset(spec.name)
        registry = ChampionRegistry(data)
        pointer = registry.pointer()
        shadow, champion = pointer.shadow, pointer.current
        if shadow is None or champion is None:
            return dg.MaterializeResult(
                metadata={
                    "outcome": "no shadow",
                    "champion_run_id": champion.run_id if champion else "(none)",
                    "pointer_version": pointer.version,
                }
            )
        try:
            config = shadow_gate_config(shadow)
        except LookupError as exc:
            raise dg.Failure(str(exc)) from None
        record = evaluate_shadow(shadow_traffic(spec, data, shadow, champion), config, shadow, champion)
        registry.record_shadow_evaluation(record)
        if record.outcome == "passed":
            try:
                entry = registry.promote(shadow.model_dir, record.summary)
            except PromotionRefused as exc:
                raise dg.Failure(str(exc)) from None
            action = f"promoted {entry.run_id} to champion"
        elif record.outcome in ("rejected", "expired"):
            ended = registry.end_shadow(record.outcome, record.summary, run_id=shadow.run_id)
            action = f"shadow of {shadow.run_id} ended ({record.outcome})" if ended else "the shadow had already ended"
        else:
            action = f"shadow of {shadow.run_id} continues"
        context.log.info(f"shadow evaluation of {shadow.run_id} against {champion.run_id}: {record.summary}; {action}")
        return dg.MaterializeResult(
            metadata={**_evaluation_metadata(record), "action": action, "pointer_version": registry.pointer().version}
        )

    return [shadow_evaluation]
