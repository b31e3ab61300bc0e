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
    current champion); rollback: return to the previous champion."""

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
    }


def build_serving_assets(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=graph.champion,
        deps=[graph.evaluation],
        group_name=graph.name("serving"),
        kinds={"python"},
        description="The champion pointer (which model serves, since when, why; full history in the lake under "
        "registry/). Runs only when the promotion gate passed; the rollback_champion job returns to "
        "the previous champion.",
    )
    def champion(context: dg.AssetExecutionContext, config: ChampionConfig, lake: LakeResource) -> dg.MaterializeResult:
        from kennel.lake.champion import NothingToRollBack, PromotionRefused

        registry = ChampionRegistry(lake.dataset(spec.name))
        try:
            if config.action == "rollback":
                entry = registry.rollback(config.reason or f"rollback_champion job, run {context.run_id}")
            else:
                model_dir = Path(latest_metadata(context, graph.evaluation, "model_dir"))
                entry = registry.promote(model_dir, config.reason)
        except (PromotionRefused, NothingToRollBack) as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(f"champion of {spec.name}: {entry.run_id} ({entry.event}: {entry.reason})")
        return dg.MaterializeResult(metadata=_champion_metadata(registry))

    @dg.asset(
        key=graph.bento,
        deps=[graph.champion],
        group_name=graph.name("serving"),
        kinds={"bentoml"},
        description="A Bento around the current champion (built once per champion, reused after a rollback); "
        "serve it with `bentoml serve <tag>`.",
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
        context.log.info(f"{'built' if built else 'reusing'} Bento {entry.bento_tag} for champion {entry.run_id}")
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
        return dg.MaterializeResult(metadata=meta)

    return [champion, bento]
