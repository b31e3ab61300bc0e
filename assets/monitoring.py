"""Daily monitoring of the champion: drift of validated data and of served traffic against the champion's
training reference, estimated performance without labels (and how wrong it was once labels came),
realized performance once labels exist, and drift of the model's explanations on served traffic; each
overall and per slice (a value of a sensitive or segment column), worst slices first.

Each asset writes one MonitoringRecord per day into the lake (kennel.lake), so the retraining sensor
can read the conclusions without touching data.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from assets.graph import DatasetGraph, daily_partitions
from assets.metadata import md_table
from kennel.lake import DatasetLake
from kennel.lake.champion import ChampionRegistry
from kennel.lake.records import ChampionEntry, MonitoringKind, MonitoringRecord, SliceRow
from kennel.model import LIBRARY, Model
from kennel.spec import DatasetSpec
from resources.lake import LakeResource

if TYPE_CHECKING:
    import pandas as pd

    from kennel.monitoring.attribution import AttributionProfile
    from kennel.monitoring.drift import ReferenceProfile
    from kennel.monitoring.estimation import Calibrator
    from kennel.privacy import Redactor

Measure = Callable[["ServedChampion", str], dict[str, Any]]


class ServedChampion:
    """The served model, loaded once per run: the model and its training reference."""

    def __init__(self, data: DatasetLake):
        from kennel.monitoring.profile import PROFILE_FILE, load_reference

        entry = ChampionRegistry(data).current()
        if entry is None:
            raise LookupError("no champion yet: monitoring starts once a model has been promoted")
        model_dir = Path(entry.model_dir)
        if not (model_dir / PROFILE_FILE).exists():
            raise LookupError(f"champion {entry.model_tag} has no {PROFILE_FILE}; retrain to monitor it")
        self.entry: ChampionEntry = entry
        self.model_dir = model_dir
        self.model = Model.load(model_dir)
        self.profile: ReferenceProfile = load_reference(model_dir)

    def calibrator(self) -> "Calibrator":
        """The score calibration fitted on the validation window (for estimation only); LookupError for a
        champion trained before Kennel stored one."""
        from kennel.monitoring.estimation import CALIBRATION_FILE, load_calibrator

        if not (self.model_dir / CALIBRATION_FILE).exists():
            raise LookupError(f"champion {self.entry.model_tag} has no {CALIBRATION_FILE}; retrain to estimate")
        return load_calibrator(self.model_dir)

    def attribution(self) -> "AttributionProfile":
        """The distribution of mean |SHAP| per feature on the training rows; LookupError when absent."""
        from kennel.monitoring.attribution import ATTRIBUTION_FILE, load_attribution_profile

        if not (self.model_dir / ATTRIBUTION_FILE).exists():
            raise LookupError(f"champion {self.entry.model_tag} has no {ATTRIBUTION_FILE}; retrain to monitor it")
        return load_attribution_profile(self.model_dir)


def record_days(
    context: dg.AssetExecutionContext, data: DatasetLake, kind: MonitoringKind, measure: Measure
) -> dg.MaterializeResult:
    """Run `measure(champion, day)` for each day of the run and record what it found."""
    try:
        champion = ServedChampion(data)
    except LookupError as exc:
        context.log.warning(str(exc))
        return dg.MaterializeResult(metadata={"status": str(exc)})
    rows = []
    flagged: dict[str, int] = {}  # served values flagged, per warning, over the run's days
    for day in context.partition_keys:
        record = MonitoringRecord.model_validate(
            {
                **measure(champion, day),
                "kind": kind,
                "day": day,
                "champion": champion.entry.model_tag,
                "written_at": datetime.now(UTC).isoformat(),
            }
        )
        data.write_monitoring(record)
        for warning, count in record.input_warnings.items():
            flagged[warning] = flagged.get(warning, 0) + count
        rows.append(
            {
                "day": day,
                **record.model_dump(
                    include={
                        "status",
                        "rows",
                        "drifted_share",
                        "prediction_psi",
                        "roc_auc",
                        "log_loss",
                        "estimated_roc_auc",
                        "labelled_rows",
                        "concept_drift_suspected",
                    },
                    exclude_none=True,
                ),
                **{f"error_{k}": v for k, v in record.estimation_error.items() if k == "roc_auc"},
                # The worst slice first: where to look.
                **({"worst slice": _slice_label(record.slices[0])} if _judged(record.slices) else {}),
                # Served values the model never learned from: unseen categories, out of distribution.
                **({"flagged values": sum(record.input_warnings.values())} if kind == "serving_drift" else {}),
            }
        )
    history = data.monitoring_records(kind)
    last = history.get(context.partition_keys[-1])
    return dg.MaterializeResult(
        metadata={
            "champion": champion.entry.model_tag,
            **(
                {"slices_worst_first": md_table([s.model_dump() for s in last.slices])}
                if last is not None and last.slices
                else {}
            ),
            **(
                {"flagged_inputs": md_table([{"warning": k, "values": v} for k, v in sorted(flagged.items())])}
                if flagged
                else {}
            ),
            "days": md_table(rows),
            "over_time": md_table(
                [
                    {
                        "day": d,
                        **r.model_dump(
                            include={
                                "status",
                                "drifted_share",
                                "prediction_psi",
                                "roc_auc",
                                "estimated_roc_auc",
                                "rows",
                                "labelled_rows",
                            },
                            exclude_none=True,
                        ),
                        # How wrong the label-free estimate was, once labels came: shown over time.
                        **{f"error_{k}": v for k, v in r.estimation_error.items()},
                    }
                    for d, r in sorted(history.items())
                ][-30:]
            ),
        }
    )


def _judged(slices: list[SliceRow]) -> bool:
    return bool(slices) and slices[0].status != "insufficient_data"


def _slice_label(row: SliceRow) -> str:
    return f"{row.column}={row.value} ({row.status}, {row.rows} rows)"


def drift_measures(
    champion: ServedChampion, frame: "pd.DataFrame", validated: bool, redactor: "Redactor"
) -> dict[str, Any]:
    from kennel.monitoring.performance import monitored_scores
    from kennel.monitoring.profile import drift_slices, drift_summary

    inputs = champion.model.card.feature_names
    scores = monitored_scores(champion.model, frame, redactor)
    # The reference profile holds personal columns redacted (kennel.privacy): compare like with like.
    frame = redactor.redact_frame(frame)
    summary = drift_summary(champion.profile, frame, scores, inputs=inputs)
    return {
        "status": "drift" if summary.dataset_drift else "ok",
        "validated": validated,
        "rows": summary.rows,
        "drifted_share": summary.drifted_share,
        "dataset_drift": summary.dataset_drift,
        "drifted_features": summary.drifted_features,
        "drifted_non_inputs": summary.drifted_non_inputs,
        "slices": drift_slices(champion.profile, frame, inputs=inputs),
        "prediction_psi": summary.prediction_psi,
        "mean_score": summary.mean_score,
        "reference_mean_score": summary.reference_mean_score,
        "features": summary.report.table(),
    }


def build_monitoring_assets(spec: DatasetSpec, graph: DatasetGraph) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    common: dict[str, Any] = dict(
        partitions_def=daily_partitions(spec),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=graph.name("monitoring"),
    )

    @dg.asset(
        key=graph.data_drift,
        deps=[graph.clean],
        kinds={"python", LIBRARY},
        **common,
        description="Feature drift (PSI, Jensen–Shannon, normalized Wasserstein) and prediction drift of each "
        "validated day against the champion's training reference; failed days are not scored.",
    )
    def data_drift(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        return measure_data_drift(context, spec, lake.dataset(spec.name))

    @dg.asset(
        key=graph.performance,
        deps=[graph.clean],
        kinds={"python", LIBRARY},
        **common,
        description="Realized performance of the champion per day and per sensitive group, on labelled rows: "
        "labels landed with the data and labels sent later to the Bento's /feedback.",
    )
    def realized_performance(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        return measure_realized_performance(context, spec, lake.dataset(spec.name))

    @dg.asset(
        key=graph.estimated_performance,
        deps=[graph.clean, graph.prediction_log],
        kinds={"python", LIBRARY},
        **common,
        description="The champion's ROC-AUC, precision and recall at its threshold and expected calibration "
        "error, estimated without labels from its calibrated scores (CBPE: the calibration fitted on its "
        "validation window) with 95% intervals, per day and per slice; once labels arrive, the estimate's "
        "error on the labelled rows, over time, and a concept-drift flag when the realized AUC falls below "
        "what the scores promised.",
    )
    def estimated_performance(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        return measure_estimated_performance(context, spec, lake.dataset(spec.name))

    prediction_log = dg.AssetSpec(
        graph.prediction_log,
        group_name=graph.name("monitoring"),
        kinds={"bentoml", "parquet"},
        description="Predictions served by the Bento and the labels sent to its /feedback, appended to the lake "
        "by the service (not by Dagster) in daily files.",
    )

    @dg.asset(
        key=graph.serving_drift,
        deps=[graph.prediction_log],
        kinds={"python", "bentoml"},
        **common,
        description="Drift of served traffic (the features callers sent, and the scores returned) against the "
        "champion's training reference.",
    )
    def serving_drift(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        return measure_serving_drift(context, spec, lake.dataset(spec.name))

    @dg.asset(
        key=graph.attribution_drift,
        deps=[graph.prediction_log],
        kinds={"python", LIBRARY},
        **common,
        description="Drift of the champion's explanations on served traffic: mean |SHAP| per feature on a "
        "sample of the day's requests against its distribution on the training rows.",
    )
    def attribution_drift(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        return measure_attribution_drift(context, spec, lake.dataset(spec.name))

    decisions = dg.AssetSpec(
        graph.decisions,
        group_name=graph.name("monitoring"),
        kinds={"python"},
        description="Every monitoring signal the retraining sensor evaluated and what it decided (retrain, skip "
        "and why, alert), with the numbers, thresholds, days and run key; also queryable as the "
        "decision log in the lake (monitoring/<dataset>/decisions.jsonl).",
    )
    return [
        data_drift,
        realized_performance,
        estimated_performance,
        prediction_log,
        serving_drift,
        attribution_drift,
        decisions,
    ]


def measure_data_drift(context: dg.AssetExecutionContext, spec: DatasetSpec, data: DatasetLake) -> dg.MaterializeResult:
    import pandas as pd

    from kennel.privacy import Redactor

    redactor = Redactor.for_spec(spec, data)

    def measure(champion: ServedChampion, day: str) -> dict[str, Any]:
        if not data.passed_validation(day):
            return {"status": "skipped: the day failed validation", "validated": False}
        return drift_measures(champion, pd.read_parquet(data.published(day)), True, redactor)

    result = record_days(context, data, "data_drift", measure)
    # Personal numbers and booleans never leave the data tables: the reference holds no profile to compare.
    unmeasured = {"personal_not_profiled": list(redactor.dropped_columns)} if redactor.dropped_columns else {}
    last = data.monitoring_records("data_drift").get(context.partition_keys[-1])
    if last is None or not last.features:
        return dg.MaterializeResult(metadata={**(result.metadata or {}), **unmeasured})
    # Every statistic the drift report holds (a new one shows up without a change here), most drifted first.
    by_severity = md_table([f.model_dump(exclude={"kind", "rows"}) for f in last.features])
    return dg.MaterializeResult(metadata={**(result.metadata or {}), **unmeasured, "features_by_severity": by_severity})


def measure_realized_performance(
    context: dg.AssetExecutionContext, spec: DatasetSpec, data: DatasetLake
) -> dg.MaterializeResult:
    from kennel.ingestion.labels import latest_labels
    from kennel.monitoring.performance import monitored_rows, monitored_scores, realized_slices
    from kennel.monitoring.profile import realized_performance
    from kennel.privacy import Redactor

    redactor = Redactor.for_spec(spec, data)

    # Labels that arrived after their records (label files, /feedback), by id.
    late = latest_labels(spec, data).set_index("record_id")["label"].astype(float)
    came_late: dict[str, int] = {}  # day → labelled rows whose label did not land with them

    def measure(champion: ServedChampion, day: str) -> dict[str, Any]:
        monitored = monitored_rows(spec, data, day, late)
        came_late[day] = monitored.late_labelled_rows
        frame = monitored.frame
        if frame.empty:
            return {"status": "no labelled rows", "rows": 0}
        scores = monitored_scores(champion.model, frame, redactor)
        frame = redactor.redact_frame(frame)  # slices and groups are named by hashed personal values
        threshold = champion.model.card.threshold
        perf = realized_performance(frame, scores, threshold, list(spec.sensitive_columns))
        if perf.metrics is None:
            return {"status": "no labelled rows", "rows": 0}
        champion_auc = champion.entry.metrics.get("roc_auc")
        labelled = frame["label"].notna().to_numpy()
        return {
            "status": "ok",
            "rows": perf.labelled_rows,
            "late_labelled_rows": came_late[day],
            "roc_auc": perf.metrics["roc_auc"],
            "log_loss": perf.metrics["log_loss"],
            "champion_auc": champion_auc,
            "groups": {c: t.to_dict("records") for c, t in perf.groups.items()},
            "slices": realized_slices(frame[labelled], scores[labelled], threshold, spec.slice_columns, champion_auc),
        }

    result = record_days(context, data, "realized_performance", measure)
    return dg.MaterializeResult(
        metadata={
            **(result.metadata or {}),
            "labels_came_late": sum(came_late.values()),
            "labels_came_late_per_day": dg.MetadataValue.json(came_late),
        }
    )


def measure_estimated_performance(
    context: dg.AssetExecutionContext, spec: DatasetSpec, data: DatasetLake
) -> dg.MaterializeResult:
    from kennel.ingestion.labels import latest_labels
    from kennel.monitoring.performance import estimate_day, monitored_rows, monitored_scores
    from kennel.privacy import Redactor

    redactor = Redactor.for_spec(spec, data)
    late = latest_labels(spec, data).set_index("record_id")["label"].astype(float)

    def measure(champion: ServedChampion, day: str) -> dict[str, Any]:
        try:
            calibrator = champion.calibrator()
        except LookupError as exc:
            return {"status": f"skipped: {exc}"}
        frame = monitored_rows(spec, data, day, late).frame
        if frame.empty:
            return {"status": "no rows", "rows": 0}
        scores = monitored_scores(champion.model, frame, redactor)
        estimated = estimate_day(
            redactor.redact_frame(frame),  # slices are named by hashed personal values
            scores,
            calibrator,
            threshold=champion.model.card.threshold,
            champion_auc=champion.entry.metrics.get("roc_auc"),
            slice_columns=spec.slice_columns,
        )
        auc = estimated.estimates["roc_auc"]
        return {
            "status": "ok" if auc.value is not None else f"no estimate: {auc.reason}",
            "rows": estimated.rows,
            "estimates": estimated.estimates,
            "estimated_roc_auc": auc.value,
            "champion_auc": champion.entry.metrics.get("roc_auc"),
            "labelled_rows": estimated.labelled_rows,
            "roc_auc": estimated.realized_roc_auc,
            "estimation_error": estimated.estimation_error,
            "concept_drift_suspected": estimated.concept_drift_suspected,
            "slices": estimated.slices,
        }

    result = record_days(context, data, "estimated_performance", measure)
    history = data.monitoring_records("estimated_performance")
    errors = [abs(r.estimation_error["roc_auc"]) for r in history.values() if "roc_auc" in r.estimation_error]
    return dg.MaterializeResult(
        metadata={
            **(result.metadata or {}),
            # The monitor's own track record: how far its AUC estimates were from the realized AUC.
            **(
                {"estimation_mean_abs_error_roc_auc": sum(errors) / len(errors), "days_with_labels": len(errors)}
                if errors
                else {}
            ),
        }
    )


def measure_attribution_drift(
    context: dg.AssetExecutionContext, spec: DatasetSpec, data: DatasetLake
) -> dg.MaterializeResult:
    from kennel.monitoring.attribution import compare_attributions
    from kennel.serving.prediction_log import read_predictions

    def measure(champion: ServedChampion, day: str) -> dict[str, Any]:
        unlogged = [c for c in spec.personal_columns if c in champion.model.card.feature_names]
        if unlogged:
            # Explanations of redacted inputs would describe values the model was never sent.
            return {"status": f"skipped: personal model inputs {unlogged} are not logged in the clear"}
        try:
            profile = champion.attribution()
        except LookupError as exc:
            return {"status": f"skipped: {exc}"}
        served = read_predictions(data, start=day, end=day, with_feedback=False)
        if served.empty:
            return {"status": "no traffic", "rows": 0}
        drift = compare_attributions(profile, champion.model, served)
        return {
            "status": drift.status,
            "rows": drift.rows,
            "drifted_features": drift.drifted_features,
            "attributions": drift.to_dict()["features"],
        }

    result = record_days(context, data, "attribution_drift", measure)
    last = data.monitoring_records("attribution_drift").get(context.partition_keys[-1])
    if last is None or not last.attributions:
        return result
    columns = ("feature", "status", "reference_mean_abs_shap", "current_mean_abs_shap", "relative_change", "z")
    by_severity = md_table([{k: row[k] for k in columns} for row in last.attributions])
    return dg.MaterializeResult(metadata={**(result.metadata or {}), "attributions_by_severity": by_severity})


def measure_serving_drift(
    context: dg.AssetExecutionContext, spec: DatasetSpec, data: DatasetLake
) -> dg.MaterializeResult:
    from kennel.privacy import Redactor
    from kennel.serving.prediction_log import count_warnings, read_predictions

    redactor = Redactor.for_spec(spec, data)

    def measure(champion: ServedChampion, day: str) -> dict[str, Any]:
        served = read_predictions(data, start=day, end=day, with_feedback=False)
        if served.empty:
            return {"status": "no traffic", "rows": 0}
        return drift_measures(champion, served, True, redactor) | {"input_warnings": count_warnings(served)}

    return record_days(context, data, "serving_drift", measure)
