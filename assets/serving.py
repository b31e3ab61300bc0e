"""The evaluated model into the BentoML model store, and a Bento that serves exactly that model."""

import json
from pathlib import Path

import dagster as dg

from assets.metadata import latest_metadata
from assets.training import EVALUATION, MODEL, TRAINING_SET
from kennel.spec import DatasetSpec
from resources.model_store import ModelStoreResource

BENTO = dg.AssetKey("bento")

def build_serving_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=BENTO, deps=[EVALUATION], group_name="serving", kinds={"bentoml"}, owners=[spec.owner],
        tags={"dataset": spec.name},
        description="The evaluated model saved to the BentoML model store (labels: run id, data partitions, "
                    "spec hash) and a Bento built from bentos/ around it; serve it with `bentoml serve <tag>`.",
    )
    def bento(context: dg.AssetExecutionContext, model_store: ModelStoreResource) -> dg.MaterializeResult:
        model_dir = Path(latest_metadata(context, MODEL, "model_dir"))
        partitions = list(latest_metadata(context, TRAINING_SET, "data_partitions"))
        evaluation = json.loads((model_dir / "evaluation.json").read_text())
        labels = {
            "dataset": spec.name,
            "run_id": model_dir.name,
            "spec_hash": spec.fingerprint(),
            "data_first_day": partitions[0],
            "data_last_day": partitions[-1],
        }
        model_tag = model_store.save_model(
            model_dir, name=f"kennel-{spec.name}".replace("_", "-"), labels=labels,
            metadata={"data_partitions": partitions, **evaluation},
        )
        bento_tag = model_store.build_bento(model_tag, bento_name=f"kennel-{spec.name}".replace("_", "-"), labels=labels)
        context.log.info(f"built Bento {bento_tag} around model {model_tag}")
        return dg.MaterializeResult(metadata={
            "model_tag": model_tag,
            "bento_tag": bento_tag,
            "serve_command": dg.MetadataValue.md(f"`BENTOML_HOME={model_store.home} bentoml serve {bento_tag}`"),
            "roc_auc": evaluation["metrics"]["roc_auc"],
        })

    return [bento]
