"""Promotion (the champion pointer) and the Bento that serves the champion."""

from pathlib import Path
from typing import Any, Literal

import dagster as dg

from assets.graph import DatasetGraph
from assets.metadata import latest_metadata, md_table
from kennel.lake.champion import ChampionRegistry
from kennel.spec import DatasetSpec
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource


class ChampionConfig(dg.Config):
    """promote: make the latest evaluated model champion (only with a passing gate decision against the
    current champion; when its gate config asks for a shadow, serve it in shadow first, and the
    shadow_evaluation asset promotes it); rollback: return to the previous champion (ending any shadow)."""

    action: Literal["promote", "rollback"] = "promote"
    reason: str = ""


def _champion_metadata(registry: ChampionRegistry) -> dict[str, Any]:
    pointer = registry.pointer()
    entry = pointer.current
    return {
        "run_id": entry.run_id,
        "model_tag": entry.model_tag,
        "since": entry.since,
        "event": entry.event,
        "reason": entry.reason,
        "pointer_version": pointer.version,
        "earlier_champions": md_table(
            [
                {"run_id": e.run_id, "model_tag": e.model_tag, "since": e.since, "reason": e.reason}
                for e in reversed(pointer.previous)
            ]
        ),
        "history": md_table(
            [
                e.model_dump(include={"version", "at", "event", "run_id", "replaced", "bento_tag", "reason"})
                for e in reversed(registry.history()[-20:])
            ]
        ),
        "pointer_file": dg.MetadataValue.path(str(registry.pointer_file)),
        **_shadow_metadata(registry),
    }


def _shadow_metadata(registry: ChampionRegistry) -> dict[str, Any]:
    shadow = registry.pointer().shadow
    if shadow is None:
        return {"shadow_run_id": "(none)"}
    return {
        "shadow_run_id": shadow.run_id,
        "shadow_model_tag": shadow.model_tag,
        "shadow_since": shadow.since,
        "shadow_decided_at": shadow.decided_at,
    }


def _serves_in_shadow_first(registry: ChampionRegistry, model_dir: Path) -> bool:
    """Whether the model's passed gate decision asks for a shadow it has not yet passed beside the
    champion current now."""
    from kennel.lake import read_model_record
    from kennel.lake.records import GateDecision

    decision = read_model_record(model_dir, GateDecision)
    current = registry.current()
    if decision is None or not decision.passed or not decision.config.get("shadow") or current is None:
        return False
    if current.run_id == decision.challenger.run_id:
        return False
    evaluation = registry.shadow_evaluation(model_dir)
    return not (
        evaluation is not None
        and evaluation.challenger_run_id == decision.challenger.run_id
        and evaluation.champion_run_id == current.run_id
        and evaluation.outcome == "passed"
    )


def build_serving_assets(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=graph.champion,
        deps=[graph.evaluation],
        group_name=graph.name("serving"),
        kinds={"python"},
        description="The champion pointer (which model serves, since when, why; full history in the lake under "
        "registry/). Runs only when the promotion gate passed; when the gate config asks for a shadow, the "
        "challenger first serves in shadow beside the champion (shadow_evaluation promotes it). The "
        "rollback_champion job returns to the previous champion, without shadow.",
    )
    def champion(context: dg.AssetExecutionContext, config: ChampionConfig, lake: LakeResource) -> dg.MaterializeResult:
        from kennel.lake.champion import NothingToRollBack, PromotionRefused

        registry = ChampionRegistry(lake.dataset(spec.name))
        try:
            if config.action == "rollback":
                entry = registry.rollback(config.reason or f"rollback_champion job, run {context.run_id}")
                action = "rolled_back"
            else:
                model_dir = Path(latest_metadata(context, graph.evaluation, "model_dir"))
                if _serves_in_shadow_first(registry, model_dir):
                    shadow = registry.start_shadow(model_dir)
                    context.log.info(
                        f"{shadow.run_id} passed the gate and serves in shadow beside champion "
                        f"{shadow.champion_run_id} since {shadow.since}; shadow_evaluation decides its promotion"
                    )
                    return dg.MaterializeResult(metadata={**_champion_metadata(registry), "action": "shadow_started"})
                entry = registry.promote(model_dir, config.reason)
                action = "promoted"
        except (PromotionRefused, NothingToRollBack) as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(f"champion of {spec.name}: {entry.run_id} ({entry.event}: {entry.reason})")
        return dg.MaterializeResult(metadata={**_champion_metadata(registry), "action": action})

    @dg.asset(
        key=graph.bento,
        deps=[graph.champion, graph.model_card],
        group_name=graph.name("serving"),
        kinds={"bentoml"},
        description="A Bento around the current champion (built once per champion, reused after a rollback), with "
        "a shadow challenger scored beside it while one is in shadow, and the champion's model card as of "
        "promotion (GET /model_card); serve it with `bentoml serve <tag>`.",
    )
    def bento(
        context: dg.AssetExecutionContext, lake: LakeResource, model_store: ModelStoreResource
    ) -> dg.MaterializeResult:
        from kennel.serving.champion import ensure_bento

        model_store.activate()
        try:
            entry, built = ensure_bento(ChampionRegistry(lake.dataset(spec.name)), lake.local)
        except LookupError as exc:
            raise dg.Failure(str(exc)) from None
        shadow = ChampionRegistry(lake.dataset(spec.name)).pointer().shadow
        if shadow is not None and shadow.bento_tag != entry.bento_tag:
            shadow = None  # the pointer moved on after this Bento was chosen
        beside = f" with shadow {shadow.run_id}" if shadow else ""
        context.log.info(
            f"{'built' if built else 'reusing'} Bento {entry.bento_tag} for champion {entry.run_id}{beside}"
        )
        meta: dict[str, Any] = {
            "model_tag": entry.model_tag,
            "bento_tag": entry.bento_tag,
            "champion_run_id": entry.run_id,
            "built": built,
            # The Bento logs its predictions to this project's lake (recorded at build), where monitoring reads.
            "serve_command": dg.MetadataValue.md(f"`BENTOML_HOME={model_store.home} bentoml serve {entry.bento_tag}`"),
        }
        if entry.metrics.get("roc_auc") is not None:
            meta["roc_auc"] = entry.metrics["roc_auc"]
        if shadow:  # what the bento_follows_champion sensor compares with the pointer's shadow
            meta |= {"shadow_model_tag": shadow.model_tag, "shadow_run_id": shadow.run_id}
        return dg.MaterializeResult(metadata=meta)

    return [champion, bento]
