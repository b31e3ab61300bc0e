"""Training set (time split over validated days) → XGBoost model → evaluation on the test window."""

import json
import shutil
import uuid
from pathlib import Path

import dagster as dg

from assets.metadata import latest_metadata, md_table
from kennel.spec import DatasetSpec
from kennel.hyperparameters import TrainConfig
from resources.lake import LakeResource

FEATURES = dg.AssetKey("features")
TRAINING_SET = dg.AssetKey("training_set")
MODEL = dg.AssetKey("model")
EVALUATION = dg.AssetKey("model_evaluation")

class ModelConfig(dg.Config, TrainConfig):
    """Hyperparameters, editable in the launchpad; the defaults suit the demo."""


def _validated_days(lake: LakeResource, spec: DatasetSpec) -> tuple[list[str], list[str]]:
    """Days whose quality record passed, and days that failed (never trained on)."""
    passed, failed = [], []
    for record in sorted(lake.path("quality", spec.name).glob("*.json")):
        info = json.loads(record.read_text())
        (passed if info["passed"] else failed).append(info["day"])
    return passed, failed

def build_training_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    tags = {"dataset": spec.name}

    @dg.asset(
        key=TRAINING_SET, deps=[FEATURES], group_name="training", kinds={"duckdb", "parquet"},
        owners=[spec.owner], tags=tags,
        description=(f"Rows of the `features` model from days that passed validation, split by time: the "
                     f"latest {spec.split.test_days} days test, {spec.split.validation_days} validation, up "
                     f"to {spec.split.train_days} train."),
    )
    def training_set(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        import duckdb

        from kennel.training import SPLITS, NotEnoughData, split_windows

        passed, failed = _validated_days(lake, spec)
        if failed:
            context.log.warning(f"excluded days that failed validation: {', '.join(failed)}")
        with duckdb.connect(str(lake.warehouse()), read_only=True) as con:
            available = [str(r[0]) for r in con.execute("select distinct event_date from features order by 1").fetchall()]
            days = sorted(set(available) & set(passed))
            try:
                windows = split_windows(days, spec)
            except NotEnoughData as exc:
                raise dg.Failure(str(exc), metadata={"validated_days": days, "failed_days": failed}) from None
            target = lake.training_dir(spec.name)
            staging = lake.staging() / f"training-{uuid.uuid4().hex}"
            staging.mkdir(parents=True)
            summary = []
            for split in SPLITS:
                window = windows.of(split)
                frame = con.execute(
                    "select * from features where cast(event_date as varchar) in (select unnest(?)) order by event_ts, record_id",
                    [window],
                ).df()
                frame.to_parquet(staging / f"{split}.parquet", index=False)
                summary.append({"split": split, "rows": len(frame), "first_day": window[0], "last_day": window[-1],
                                "days": len(window), "positive_rate": float(frame["label"].mean()) if len(frame) else None})
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
        return dg.MaterializeResult(metadata={
            "splits": md_table(summary),
            "dagster/row_count": sum(s["rows"] for s in summary),
            "data_partitions": dg.MetadataValue.json(days),
            "excluded_failed_days": dg.MetadataValue.json(failed),
            "path": dg.MetadataValue.path(str(target)),
        })

    @dg.asset(
        key=MODEL, deps=[TRAINING_SET], group_name="training", kinds={"xgboost"}, owners=[spec.owner], tags=tags,
        description="XGBoost binary classifier (native categoricals, early stopping on validation, fixed seed), "
                    "saved in XGBoost's own format with its model card.",
    )
    def model(context: dg.AssetExecutionContext, config: ModelConfig, lake: LakeResource) -> dg.MaterializeResult:
        import pandas as pd

        from kennel.features import MODEL_FILE, SPEC_FILE, ModelCard
        from kennel.training import train_model

        data = lake.training_dir(spec.name)
        train, validation = pd.read_parquet(data / "train.parquet"), pd.read_parquet(data / "validation.parquet")
        partitions = tuple(latest_metadata(context, TRAINING_SET, "data_partitions"))
        booster, result = train_model(ModelCard.for_spec(spec), train, validation, config)
        card = ModelCard.for_spec(spec, threshold=result.threshold, params=result.params, run_id=context.run_id,
                                  data_partitions=partitions, model_version=context.run_id[:8])
        out = lake.model_dir(spec.name, context.run_id)
        out.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(out / MODEL_FILE))
        card.save(out)
        (out / SPEC_FILE).write_text(spec.resolved_yaml())
        context.log.info(f"trained on {result.device}: best iteration {result.best_iteration}, {result.train_seconds}s")
        importance = [{"feature": k, "gain_share": v} for k, v in list(result.feature_importance.items())[:25]]
        return dg.MaterializeResult(metadata={
            "model_dir": dg.MetadataValue.path(str(out)),
            "device": result.device,
            "best_iteration": result.best_iteration,
            "train_seconds": result.train_seconds,
            "validation_logloss": result.validation_logloss,
            "threshold": result.threshold,
            "train_rows": len(train),
            "params": dg.MetadataValue.json(result.params),
            "feature_importance": md_table(importance),
        })

    @dg.asset(
        key=EVALUATION, deps=[MODEL], group_name="training", kinds={"xgboost", "scikitlearn"}, owners=[spec.owner],
        tags=tags,
        description="The model on the held-out test window: ROC-AUC, PR-AUC, log loss, Brier, calibration, and "
                    "per-group metrics for each sensitive column.",
    )
    def model_evaluation(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        import pandas as pd
        import xgboost as xgb

        from kennel.evaluation import calibration_markdown, evaluate
        from kennel.features import MODEL_FILE, ModelCard
        from kennel.training import predict_scores

        model_dir = Path(latest_metadata(context, MODEL, "model_dir"))
        card = ModelCard.load(model_dir)
        booster = xgb.Booster(model_file=str(model_dir / MODEL_FILE))
        test = pd.read_parquet(lake.training_dir(spec.name) / "test.parquet")
        scores = predict_scores(booster, card, test)
        report = evaluate(test, scores, card.threshold, list(spec.sensitive_columns))
        metrics = report["metrics"]
        fairness = {col: g["gaps"] for col, g in report["groups"].items()}
        (model_dir / "evaluation.json").write_text(json.dumps({"metrics": metrics, "fairness": fairness}, indent=2))
        meta: dict = {
            **{k: metrics[k] for k in ("roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall")
               if metrics[k] is not None},
            "test_rows": metrics["rows"],
            "threshold": metrics["threshold"],
            "confusion_matrix": md_table([
                {"": "actual 1", "predicted 1": metrics["tp"], "predicted 0": metrics["fn"]},
                {"": "actual 0", "predicted 1": metrics["fp"], "predicted 0": metrics["tn"]},
            ]),
            "calibration": dg.MetadataValue.md(calibration_markdown(report["calibration"])),
            "model_dir": dg.MetadataValue.path(str(model_dir)),
        }
        for col, group in report["groups"].items():
            meta[f"fairness_{col}"] = md_table(group["table"].to_dict("records"))
            for gap, value in group["gaps"].items():
                if value is not None:
                    meta[f"{col}_{gap}"] = value
        return dg.MaterializeResult(metadata=meta)

    return [training_set, model, model_evaluation]
