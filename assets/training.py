"""Training set (time split over validated days) → XGBoost model → evaluation on the test window."""

import json
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from assets.metadata import latest_metadata, md_table
from kennel.hyperparameters import GateConfig, TrainConfig
from kennel.spec import DatasetSpec
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource

FEATURES = dg.AssetKey("features")
TRAINING_SET = dg.AssetKey("training_set")
MODEL = dg.AssetKey("model")
EVALUATION = dg.AssetKey("model_evaluation")
GATE_CHECK = "promotion_gate"
TRAINING_FILE = "training.json"  # in the model folder: how the model was trained (device, code version, search)


class ModelConfig(dg.Config, TrainConfig):
    """Hyperparameters, editable in the launchpad; the defaults suit the demo."""


class GateSettings(dg.Config, GateConfig):
    """Promotion-gate thresholds, editable in the launchpad; each is recorded with every decision."""


def _test_days(test) -> list[str]:
    return sorted({str(d)[:10] for d in test["event_date"].unique()}) if "event_date" in test.columns else []


def _decision_metadata(decision: dict) -> dict:
    """The gate's decision record as UI metadata: every check with its number and threshold."""
    meta: dict = {
        "decision": decision["summary"],
        "checks": md_table([{"check": c["name"], "passed": "✔" if c["passed"] else "✘", "value": c["value"],
                             "threshold": c["threshold"], "detail": c["detail"]} for c in decision["checks"]]),
        "challenger_run_id": decision["challenger"]["run_id"],
        "champion_run_id": (decision["champion"] or {}).get("run_id") or "(none: first model)",
        "test_rows": decision["test_rows"],
        "config": dg.MetadataValue.json(decision["config"]),
        "record": dg.MetadataValue.json(decision),
    }
    if decision["bootstrap"]:
        meta.update({f"bootstrap_{k}": v for k, v in decision["bootstrap"].items() if isinstance(v, (int, float))})
    return meta


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
        description="XGBoost binary classifier (native categoricals, early stopping on validation log loss, fixed "
                    "seed) on CUDA when available, on the Spark cluster when the Spark master is one; optional "
                    "budgeted hyperparameter search. Saved in XGBoost's own format with its model card.",
    )
    def model(context: dg.AssetExecutionContext, config: ModelConfig, lake: LakeResource,
              pyspark: LazyPySparkResource) -> dg.MaterializeResult:
        import pandas as pd

        from kennel.distributed import is_cluster, train_distributed
        from kennel.features import MODEL_FILE, SPEC_FILE, ModelCard
        from kennel.monitoring import build_reference, save_reference
        from kennel.training import code_version, predict_scores, search_hyperparameters, train_model

        data = lake.training_dir(spec.name)
        validation = pd.read_parquet(data / "validation.parquet")
        partitions = tuple(latest_metadata(context, TRAINING_SET, "data_partitions"))
        base_card = ModelCard.for_spec(spec)
        settings = TrainConfig.model_validate(config.model_dump())
        if is_cluster(pyspark.spark_config):
            # The executors read the training rows from the lake; the driver never holds them.
            def train_once(cfg: TrainConfig):
                return train_distributed(pyspark.spark_session, base_card, data / "train.parquet",
                                         data / "validation.parquet", validation, cfg)
        else:
            train = pd.read_parquet(data / "train.parquet")

            def train_once(cfg: TrainConfig):
                return train_model(base_card, train, validation, cfg)
        booster, result, trials = search_hyperparameters(train_once, settings)
        card = ModelCard.for_spec(spec, threshold=result.threshold, params=result.params, run_id=context.run_id,
                                  data_partitions=partitions, model_version=context.run_id[:8])
        out = lake.model_dir(spec.name, context.run_id)
        out.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(out / MODEL_FILE))
        card.save(out)
        (out / SPEC_FILE).write_text(spec.resolved_yaml())
        version = code_version()
        training = {"code_version": version, "device": result.device, "distributed": result.distributed,
                    "best_iteration": result.best_iteration, "train_seconds": result.train_seconds,
                    "validation_logloss": result.validation_logloss, "validation_auc": result.validation_auc,
                    "train_rows": result.train_rows, "validation_rows": len(validation),
                    "search_trials": [asdict(t) for t in trials] if settings.search_trials else []}
        (out / TRAINING_FILE).write_text(json.dumps(training, indent=2))
        # The drift reference travels with the model: monitoring compares new data to what it learned from.
        save_reference(build_reference(spec, train, predict_scores(booster, card, train)), out)
        where = f"Spark cluster ({settings.num_workers} workers)" if result.distributed else result.device
        context.log.info(f"trained on {where}: best iteration {result.best_iteration}, {result.train_seconds}s")
        importance = [{"feature": k, "gain_share": v} for k, v in list(result.feature_importance.items())[:25]]
        meta: dict = {
            "model_dir": dg.MetadataValue.path(str(out)),
            "device": result.device,
            "distributed": result.distributed,
            "best_iteration": result.best_iteration,
            "train_seconds": result.train_seconds,
            "validation_logloss": result.validation_logloss,
            "threshold": result.threshold,
            "train_rows": result.train_rows,
            "params": dg.MetadataValue.json(result.params),
            "code_version": version,
            "feature_importance": md_table(importance),
        }
        if result.validation_auc is not None:
            meta["validation_auc"] = result.validation_auc
        if settings.search_trials:
            chosen = min(trials, key=lambda t: t.validation_logloss).trial
            meta["search_trials"] = md_table([
                {"trial": t.trial, "chosen": "✔" if t.trial == chosen else "", **t.params,
                 "validation_logloss": t.validation_logloss, "validation_auc": t.validation_auc,
                 "best_iteration": t.best_iteration, "seconds": t.seconds} for t in trials])
            meta["search_trials_run"] = len(trials)
        return dg.MaterializeResult(metadata=meta)

    @dg.asset(
        key=EVALUATION, deps=[MODEL], group_name="training", kinds={"xgboost", "scikitlearn", "bentoml"},
        owners=[spec.owner], tags=tags,
        check_specs=[dg.AssetCheckSpec(
            GATE_CHECK, asset=EVALUATION, blocking=True,
            description="Promotion gate: beats the champion on the primary metric on the same test rows (paired "
                        "bootstrap), widens no fairness gap beyond tolerance, passes sanity checks (no NaN "
                        "scores, not collapsed, latency budget); the first model must pass absolute floors. "
                        "A failure stops promotion and the Bento.",
        )],
        description="The model on the held-out test window: ROC-AUC, PR-AUC, log loss, Brier, calibration, "
                    "confusion matrix, SHAP summary and per-group fairness metrics; the model is registered in the "
                    "BentoML model store and judged by the promotion gate.",
    )
    def model_evaluation(context: dg.AssetExecutionContext, config: GateSettings, lake: LakeResource,
                         model_store: ModelStoreResource):
        import pandas as pd
        import xgboost as xgb

        from kennel.champion import ChampionRegistry, bento_name
        from kennel.evaluation import bars_markdown, calibration_markdown, evaluate, shap_summary
        from kennel.features import MODEL_FILE, ModelCard
        from kennel.gate import Candidate, decide
        from kennel.training import predict_scores

        model_dir = Path(latest_metadata(context, MODEL, "model_dir"))
        card = ModelCard.load(model_dir)
        booster = xgb.Booster(model_file=str(model_dir / MODEL_FILE))
        test = pd.read_parquet(lake.training_dir(spec.name) / "test.parquet")
        scores = predict_scores(booster, card, test)
        report = evaluate(test, scores, card.threshold, list(spec.sensitive_columns), config.min_group_rows)
        shap = shap_summary(booster, card, test)
        metrics = report["metrics"]
        fairness = {col: g["gaps"] for col, g in report["groups"].items()}
        evaluation = {"metrics": metrics, "fairness": fairness, "test_days": _test_days(test),
                      "shap_mean_abs": dict(zip(shap["feature"], shap["mean_abs_shap"].round(6)))}
        (model_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2))

        training = json.loads((model_dir / TRAINING_FILE).read_text())
        partitions = list(card.data_partitions)
        model_tag = model_store.save_model(
            model_dir, name=bento_name(spec.name),
            labels={"dataset": spec.name, "run_id": card.run_id, "spec_hash": spec.fingerprint(),
                    "data_first_day": partitions[0] if partitions else "",
                    "data_last_day": partitions[-1] if partitions else "",
                    "code_version": training["code_version"]},
            metadata={"run_id": card.run_id, "data_partitions": partitions, "params": card.params,
                      "code_version": training["code_version"], "training": training, **evaluation},
        )

        registry = ChampionRegistry(lake.path(), spec.name)
        champion = registry.current()
        champion_candidate = None
        if champion is not None:
            model_store.activate()
            from kennel.registry import load_model_folder

            champion_candidate = Candidate(champion.run_id, load_model_folder(champion.model_tag), champion.model_tag)
        decision = decide(Candidate(card.run_id, model_dir, model_tag), champion_candidate, test,
                          list(spec.sensitive_columns), config)
        registry.record_decision(model_dir, decision)
        context.log.info(f"promotion gate: {decision['summary']}")

        meta: dict = {
            **{k: metrics[k] for k in ("roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall",
                                       "expected_calibration_error") if metrics[k] is not None},
            "test_rows": metrics["rows"],
            "threshold": metrics["threshold"],
            "confusion_matrix": md_table([
                {"": "actual 1", "predicted 1": metrics["tp"], "predicted 0": metrics["fn"]},
                {"": "actual 0", "predicted 1": metrics["fp"], "predicted 0": metrics["tn"]},
            ]),
            "calibration": dg.MetadataValue.md(calibration_markdown(report["calibration"])),
            "shap_summary": dg.MetadataValue.md(bars_markdown(shap.head(25), "feature", "mean_abs_shap")),
            "model_dir": dg.MetadataValue.path(str(model_dir)),
            "model_tag": model_tag,
            "gate_passed": decision["passed"],
        }
        for col, group in report["groups"].items():
            meta[f"fairness_{col}"] = md_table(group["table"].to_dict("records"))
            for gap, value in group["gaps"].items():
                if value is not None:
                    meta[f"{col}_{gap}"] = value
        yield dg.MaterializeResult(metadata=meta)
        yield dg.AssetCheckResult(
            check_name=GATE_CHECK, passed=decision["passed"], severity=dg.AssetCheckSeverity.ERROR,
            description=decision["summary"], metadata=_decision_metadata(decision),
        )

    return [training_set, model, model_evaluation]
