"""Training set (time split over validated days) → model → evaluation on the test window + promotion gate."""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from assets.graph import GATE_CHECK, DatasetGraph
from assets.metadata import latest_metadata, md_table
from kennel.lake.records import GateDecision
from kennel.model import LIBRARY
from kennel.spec import DatasetSpec
from kennel.training.config import GateConfig, TrainConfig
from resources.executor import cpu_heavy_step_tags, gpu_step_tags
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource


class ModelConfig(dg.Config, TrainConfig):
    """Hyperparameters, editable in the launchpad; the defaults suit the demo."""


class GateSettings(dg.Config, GateConfig):
    """Promotion-gate thresholds, editable in the launchpad; each is recorded with every decision."""


def _decision_metadata(decision: GateDecision) -> dict[str, Any]:
    """The gate's decision record as UI metadata: every check with its number and threshold."""
    meta: dict[str, Any] = {
        "decision": decision.summary,
        "checks": md_table(
            [
                {
                    "check": c.name,
                    "passed": "✔" if c.passed else "✘",
                    "value": c.value,
                    "threshold": c.threshold,
                    "detail": c.detail,
                }
                for c in decision.checks
            ]
        ),
        "challenger_run_id": decision.challenger.run_id,
        "champion_run_id": decision.champion.run_id if decision.champion else "(none: first model)",
        "test_rows": decision.test_rows,
        "config": dg.MetadataValue.json(decision.config),
        "record": dg.MetadataValue.json(decision.model_dump(mode="json")),
    }
    if decision.bootstrap:
        meta.update({f"bootstrap_{k}": v for k, v in decision.bootstrap.items() if isinstance(v, (int, float))})
    return meta


def build_training_assets(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=graph.training_set,
        # Late labels are joined in by id: lineage says so when the spec has them.
        deps=[graph.features, *([graph.late_labels] if spec.label.late else [])],
        group_name=graph.name("training"),
        kinds={"duckdb", "parquet"},
        description=(
            f"Rows of the `features` model from days that passed validation, split by time: the "
            f"latest {spec.split.test_days} days test, {spec.split.validation_days} validation, up "
            f"to {spec.split.train_days} train."
        ),
    )
    def training_set(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        return build_training_set(context, spec, lake)

    @dg.asset(
        key=graph.model,
        deps=[graph.training_set],
        group_name=graph.name("training"),
        kinds={LIBRARY},
        op_tags=gpu_step_tags(),  # GPU node under KENNEL_EXECUTOR=k8s; ignored in process
        description="Binary classifier (native categoricals, early stopping on validation log loss, fixed seed) on "
        "CUDA when available, on the Spark cluster when the Spark master is one; optional budgeted "
        "hyperparameter search. Saved in the library's own format with its model card.",
    )
    def model(
        context: dg.AssetExecutionContext, config: ModelConfig, lake: LakeResource, pyspark: LazyPySparkResource
    ) -> dg.MaterializeResult:
        return train(context, spec, graph, TrainConfig.model_validate(config.model_dump()), lake, pyspark)

    @dg.asset(
        key=graph.evaluation,
        deps=[graph.model],
        group_name=graph.name("training"),
        kinds={LIBRARY, "scikitlearn", "bentoml"},
        op_tags=cpu_heavy_step_tags(),  # TreeSHAP over the test window, on the CPU
        check_specs=[
            dg.AssetCheckSpec(
                GATE_CHECK,
                asset=graph.evaluation,
                blocking=True,
                description="Promotion gate: beats the champion on the primary metric on the same test rows (paired "
                "bootstrap), widens no fairness gap beyond tolerance, passes sanity checks (no NaN "
                "scores, not collapsed, latency budget); the first model must pass absolute floors. "
                "A failure stops promotion and the Bento.",
            )
        ],
        description="The model on the held-out test window: ROC-AUC, PR-AUC, log loss, Brier, calibration, "
        "confusion matrix, SHAP summary and per-group fairness metrics; the model is registered in the "
        "BentoML model store and judged by the promotion gate.",
    )
    def model_evaluation(
        context: dg.AssetExecutionContext, config: GateSettings, lake: LakeResource, model_store: ModelStoreResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        yield from evaluate_and_gate(
            context, spec, graph, GateConfig.model_validate(config.model_dump()), lake, model_store
        )

    return [training_set, model, model_evaluation]


def build_training_set(
    context: dg.AssetExecutionContext, spec: DatasetSpec, lake: LakeResource
) -> dg.MaterializeResult:
    import duckdb

    from kennel.ingestion.labels import latest_labels
    from kennel.training.trainer import SPLITS, NotEnoughData, split_windows, window_shortfall

    data = lake.dataset(spec.name)
    # Labels that arrived after their records (label files, /feedback), joined by id: a clean row's own
    # label comes first, and rows with neither are left out (they serve drift monitoring, not training).
    late = latest_labels(spec, data)
    records = data.quality_records()
    passed = [r.day for r in records if r.passed]
    failed = [r.day for r in records if not r.passed]
    if failed:
        context.log.warning(f"excluded days that failed validation: {', '.join(failed)}")
    with duckdb.connect(str(data.warehouse()), read_only=True) as con:
        available = [str(r[0]) for r in con.execute("select distinct event_date from features order by 1").fetchall()]
        days = sorted(set(available) & set(passed))
        try:
            windows = split_windows(days, spec)
        except NotEnoughData as exc:
            raise dg.Failure(str(exc), metadata={"validated_days": days, "failed_days": failed}) from None
        shortfall = window_shortfall(windows, spec, failed)
        if shortfall:
            context.log.warning(shortfall)
        # Written into this run's version folder, published by the training-set record once complete.
        target = data.training_version_dir(context.run_id)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        con.register("late_labels", late)
        summary = []
        for split in SPLITS:
            window = windows.of(split)
            rows = (
                "from features f left join late_labels l on f.record_id = l.record_id "
                "where cast(f.event_date as varchar) in (select unnest(?))"
            )
            frame = con.execute(
                "select f.* replace (cast(coalesce(f.label, l.label) as integer) as label) "
                f"{rows} and coalesce(f.label, l.label) is not null order by f.event_ts, f.record_id",
                [window],
            ).df()
            came_late, unlabelled = con.execute(
                "select count(*) filter (where f.label is null and l.label is not null), "
                f"count(*) filter (where f.label is null and l.label is null) {rows}",
                [window],
            ).fetchone() or (0, 0)
            if frame.empty:
                raise dg.Failure(
                    f"the {split} window ({window[0]} to {window[-1]}) holds no labelled row ({unlabelled} "
                    "unlabelled): land their labels (label.late, /feedback) or widen the windows"
                )
            frame.to_parquet(target / f"{split}.parquet", index=False)
            summary.append(
                {
                    "split": split,
                    "rows": len(frame),
                    "labels_came_late": came_late,
                    "unlabelled_left_out": unlabelled,
                    "first_day": window[0],
                    "last_day": window[-1],
                    "days": len(window),
                    "positive_rate": float(frame["label"].mean()),
                }
            )
    came_late = sum(s["labels_came_late"] for s in summary)
    unlabelled = sum(s["unlabelled_left_out"] for s in summary)
    context.log.info(
        f"left out {unlabelled} unlabelled row(s) (kept for drift monitoring); {came_late} of the "
        f"{sum(s['rows'] for s in summary)} labelled rows took a late label (label files, /feedback)"
    )
    published = data.publish_training_set(context.run_id, {split: windows.of(split) for split in SPLITS})
    return dg.MaterializeResult(
        metadata={
            "splits": md_table(summary),
            "dagster/row_count": sum(s["rows"] for s in summary),
            "unlabelled_left_out": unlabelled,
            "labels_came_late": came_late,
            "data_partitions": dg.MetadataValue.json(days),
            "excluded_failed_days": dg.MetadataValue.json(failed),
            # Said, not left to be noticed: a window shorter than the spec's (the run log says it too).
            "train_window": shortfall or f"{spec.split.train_days} days, as the spec asks",
            "path": dg.MetadataValue.path(str(target)),
            "version": published.version,
        }
    )


def train(
    context: dg.AssetExecutionContext,
    spec: DatasetSpec,
    graph: DatasetGraph,
    settings: TrainConfig,
    lake: LakeResource,
    pyspark: LazyPySparkResource,
) -> dg.MaterializeResult:
    import pandas as pd

    from kennel.lake import write_model_record
    from kennel.lake.records import SearchTrialRow, TrainingRecord
    from kennel.model import Model, ModelCard
    from kennel.monitoring.profile import save_monitoring_reference
    from kennel.privacy import Redactor
    from kennel.spark import is_cluster
    from kennel.training.trainer import (
        TrainResult,
        code_version,
        search_hyperparameters,
        train_distributed,
        train_model,
    )

    data = lake.dataset(spec.name)
    train_file, validation_file = data.training_file("train"), data.training_file("validation")
    validation = pd.read_parquet(validation_file)
    train_rows = pd.read_parquet(train_file)
    partitions = tuple(latest_metadata(context, graph.training_set, "data_partitions"))
    base_card = ModelCard.for_spec(spec, training=train_rows)  # learned categories are frozen from the train window

    def train_once(cfg: TrainConfig) -> tuple[Model, TrainResult]:
        if is_cluster(pyspark.spark_config):
            # The executors read the training rows from the lake; the driver only keeps them for the profile.
            return train_distributed(
                pyspark.spark_session,
                base_card,
                train_file,
                validation_file,
                validation,
                cfg,
            )
        return train_model(base_card, train_rows, validation, cfg)

    trained, result, trials = search_hyperparameters(train_once, settings)
    # The base card already holds what each feature looked like in training (serving flags inputs outside
    # it): the trained model's card adds its provenance, validated, without reading the rows again.
    card = ModelCard.model_validate(
        {
            **base_card.model_dump(),
            "threshold": result.threshold,
            "params": result.params,
            "run_id": context.run_id,
            "data_partitions": partitions,
            "model_version": context.run_id[:8],
        }
    )
    model = Model(trained.booster, card)
    # The folder is assembled in staging and moved into place whole: a model folder is complete or absent.
    staging = model.save(lake.local.staging() / f"model-{context.run_id}", spec.resolved_yaml())
    version = code_version()
    write_model_record(
        staging,
        TrainingRecord(
            code_version=version,
            device=result.device,
            distributed=result.distributed,
            best_iteration=result.best_iteration,
            train_seconds=result.train_seconds,
            validation_logloss=result.validation_logloss,
            validation_auc=result.validation_auc,
            train_rows=result.train_rows,
            validation_rows=len(validation),
            search_trials=[SearchTrialRow.model_validate(vars(t)) for t in trials] if settings.search_trials else [],
        ),
    )
    # Monitoring's references travel with the model: the drift profile of what it learned from, its score
    # calibration on the validation window and the distribution of its explanations.
    save_monitoring_reference(spec, model, train_rows, validation, staging, Redactor.for_spec(spec, data))
    out = data.model_dir(context.run_id)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(out)
    where = f"Spark cluster ({settings.num_workers} workers)" if result.distributed else result.device
    context.log.info(f"trained on {where}: best iteration {result.best_iteration}, {result.train_seconds}s")
    importance = [{"feature": k, "gain_share": v} for k, v in list(result.feature_importance.items())[:25]]
    meta: dict[str, Any] = {
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
        meta["search_trials"] = md_table(
            [
                {
                    "trial": t.trial,
                    "chosen": "✔" if t.trial == chosen else "",
                    **t.params,
                    "validation_logloss": t.validation_logloss,
                    "validation_auc": t.validation_auc,
                    "best_iteration": t.best_iteration,
                    "seconds": t.seconds,
                }
                for t in trials
            ]
        )
        meta["search_trials_run"] = len(trials)
    return dg.MaterializeResult(metadata=meta)


def evaluate_and_gate(
    context: dg.AssetExecutionContext,
    spec: DatasetSpec,
    graph: DatasetGraph,
    config: GateConfig,
    lake: LakeResource,
    model_store: ModelStoreResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    import pandas as pd

    from kennel.lake import read_model_record, write_model_record
    from kennel.lake.champion import ChampionRegistry, bento_name
    from kennel.lake.records import EvaluationRecord, TrainingRecord
    from kennel.model import Model
    from kennel.privacy import Redactor
    from kennel.training.evaluation import (
        bars_markdown,
        calibration_markdown,
        evaluate,
        shap_summary,
    )
    from kennel.training.gate import Candidate, decide

    data = lake.dataset(spec.name)
    model_dir = Path(latest_metadata(context, graph.model, "model_dir"))
    model = Model.load(model_dir)
    card = model.card
    test = pd.read_parquet(data.training_file("test"))
    scores = model.score(test)
    redactor = Redactor.for_spec(spec, data)  # fairness groups of a personal column are named by hashes
    report = evaluate(test, scores, card.threshold, list(spec.sensitive_columns), config.min_group_rows, redactor)
    shap = shap_summary(model, test)
    metrics = report.metrics
    test_days = sorted({str(d)[:10] for d in test["event_date"].unique()}) if "event_date" in test.columns else []
    evaluation = EvaluationRecord(
        metrics=metrics,
        fairness={col: g.gaps for col, g in report.groups.items()},
        test_days=test_days,
        shap_mean_abs=dict(zip(shap["feature"], shap["mean_abs_shap"].round(6), strict=True)),
        calibration=report.calibration.to_dict("records"),
    )
    write_model_record(model_dir, evaluation)

    training = read_model_record(model_dir, TrainingRecord)
    if training is None:
        raise dg.Failure(f"{model_dir} has no training record: materialize `model` again")
    partitions = list(card.data_partitions)
    model_tag = model_store.save_model(
        model_dir,
        name=bento_name(spec.name),
        labels={
            "dataset": spec.name,
            "run_id": card.run_id,
            "spec_hash": spec.fingerprint(),
            "data_first_day": partitions[0] if partitions else "",
            "data_last_day": partitions[-1] if partitions else "",
            "code_version": training.code_version,
        },
        metadata={
            "run_id": card.run_id,
            "data_partitions": partitions,
            "params": card.params,
            "code_version": training.code_version,
            "training": training.model_dump(mode="json"),
            **evaluation.model_dump(mode="json", exclude={"schema_version"}),
        },
    )

    registry = ChampionRegistry(data)
    champion = registry.current()
    champion_candidate = None
    if champion is not None:
        champion_candidate = Candidate(
            champion.run_id, model_store.model_folder(champion.model_tag), champion.model_tag
        )
    decision = decide(
        Candidate(card.run_id, model_dir, model_tag),
        champion_candidate,
        test,
        list(spec.sensitive_columns),
        config,
        redactor,
    )
    registry.record_decision(decision)
    context.log.info(f"promotion gate: {decision.summary}")

    meta: dict[str, Any] = {
        **{
            k: metrics[k]
            for k in ("roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall", "expected_calibration_error")
            if metrics[k] is not None
        },
        "test_rows": metrics["rows"],
        "threshold": metrics["threshold"],
        "confusion_matrix": md_table(
            [
                {"": "actual 1", "predicted 1": metrics["tp"], "predicted 0": metrics["fn"]},
                {"": "actual 0", "predicted 1": metrics["fp"], "predicted 0": metrics["tn"]},
            ]
        ),
        "calibration": dg.MetadataValue.md(calibration_markdown(report.calibration)),
        "shap_summary": dg.MetadataValue.md(bars_markdown(shap.head(25), "feature", "mean_abs_shap")),
        "model_dir": dg.MetadataValue.path(str(model_dir)),
        "model_tag": model_tag,
        "gate_passed": decision.passed,
    }
    for col, group in report.groups.items():
        meta[f"fairness_{col}"] = md_table(group.table.to_dict("records"))
        for gap, value in group.gaps.items():
            if value is not None:
                meta[f"{col}_{gap}"] = value
    yield dg.MaterializeResult(metadata=meta)
    yield dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=decision.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=decision.summary,
        metadata=_decision_metadata(decision),
    )
