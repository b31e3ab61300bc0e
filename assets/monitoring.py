"""Daily monitoring of the champion: drift of validated data and of served traffic against the champion's
training reference, and realized performance once labels exist.

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
from kennel.lake.records import ChampionEntry, MonitoringKind, MonitoringRecord
from kennel.model import LIBRARY, Model
from kennel.spec import DatasetSpec
from resources.lake import LakeResource

if TYPE_CHECKING:
    import pandas as pd

    from kennel.monitoring.drift import ReferenceProfile

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
        self.model = Model.load(model_dir)
        self.profile: ReferenceProfile = load_reference(model_dir)


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
                    include={"status", "rows", "drifted_share", "prediction_psi", "roc_auc", "log_loss"},
                    exclude_none=True,
                ),
                # Served values the model never learned from: unseen categories, out of distribution.
                **({"flagged values": sum(record.input_warnings.values())} if kind == "serving_drift" else {}),
            }
        )
    history = data.monitoring_records(kind)
    return dg.MaterializeResult(
        metadata={
            "champion": champion.entry.model_tag,
            **(
                {"flagged_inputs": md_table([{"warning": k, "values": v} for k, v in sorted(flagged.items())])}
                if flagged
                else {}
            ),
            "days": md_table(rows),
            "over_time": md_table(
                [
                    {"day": d, **r.model_dump(include={"status", "drifted_share", "prediction_psi", "roc_auc", "rows"})}
                    for d, r in sorted(history.items())
                ][-30:]
            ),
        }
    )


def drift_measures(champion: ServedChampion, frame: "pd.DataFrame", validated: bool) -> dict[str, Any]:
    from kennel.monitoring.profile import drift_summary

    summary = drift_summary(champion.profile, frame, champion.model.score(frame))
    return {
        "status": "drift" if summary.dataset_drift else "ok",
        "validated": validated,
        "rows": summary.rows,
        "drifted_share": summary.drifted_share,
        "dataset_drift": summary.dataset_drift,
        "drifted_features": summary.drifted_features,
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
        return measure_data_drift(context, lake.dataset(spec.name))

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
        return measure_serving_drift(context, lake.dataset(spec.name))

    decisions = dg.AssetSpec(
        graph.decisions,
        group_name=graph.name("monitoring"),
        kinds={"python"},
        description="Every monitoring signal the retraining sensor evaluated and what it decided (retrain, skip "
        "and why, alert), with the numbers, thresholds, days and run key; also queryable as the "
        "decision log in the lake (monitoring/<dataset>/decisions.jsonl).",
    )
    return [data_drift, realized_performance, prediction_log, serving_drift, decisions]


def measure_data_drift(context: dg.AssetExecutionContext, data: DatasetLake) -> dg.MaterializeResult:
    import pandas as pd

    def measure(champion: ServedChampion, day: str) -> dict[str, Any]:
        if not data.passed_validation(day):
            return {"status": "skipped: the day failed validation", "validated": False}
        return drift_measures(champion, pd.read_parquet(data.published(day)), True)

    result = record_days(context, data, "data_drift", measure)
    last = data.monitoring_records("data_drift").get(context.partition_keys[-1])
    if last is None or not last.features:
        return result
    # Every statistic the drift report holds (a new one shows up without a change here), most drifted first.
    by_severity = md_table([f.model_dump(exclude={"kind", "rows"}) for f in last.features])
    return dg.MaterializeResult(metadata={**(result.metadata or {}), "features_by_severity": by_severity})


def measure_realized_performance(
    context: dg.AssetExecutionContext, spec: DatasetSpec, data: DatasetLake
) -> dg.MaterializeResult:
    import pandas as pd

    from kennel.ingestion.labels import latest_labels
    from kennel.monitoring.profile import realized_performance
    from kennel.serving.prediction_log import read_predictions
    from kennel.spec import WHITESPACE

    # Labels that arrived after their records (label files, /feedback), by id: a row's own label (as
    # landed, or fed back for its request) comes first.
    late = latest_labels(spec, data).set_index("record_id")["label"].astype(float)
    came_late: dict[str, int] = {}  # day → labelled rows whose label did not land with them

    def measure(champion: ServedChampion, day: str) -> dict[str, Any]:
        frames = []
        landed_ids = pd.Series([], dtype="string")
        if data.passed_validation(day):
            landed = pd.read_parquet(data.published(day))
            landed_ids = landed[spec.id_column].astype("string")
            own = landed[spec.label.column].astype(float)
            label = own.fillna(landed_ids.map(late))
            came_late[day] = int((own.isna() & label.notna()).sum())
            frames.append(landed.assign(label=label))
        served = read_predictions(data, start=day, end=day)
        if len(served):
            served_ids = served[spec.id_column].astype("string").str.strip(WHITESPACE)
            # A record that landed and was served too counts once, through its landed row.
            once = ~served_ids.isin(landed_ids)
            served, served_ids = served[once], served_ids[once]
            label = served["actual_label"].astype(float).fillna(served_ids.map(late))
            came_late[day] = came_late.get(day, 0) + int(label.notna().sum())  # a served row's label is always late
            frames.append(served.assign(label=label))
        if not frames:
            return {"status": "no labelled rows", "rows": 0}
        frame = pd.concat(frames, ignore_index=True)
        perf = realized_performance(
            frame, champion.model.score(frame), champion.model.card.threshold, list(spec.sensitive_columns)
        )
        if perf.metrics is None:
            return {"status": "no labelled rows", "rows": 0}
        return {
            "status": "ok",
            "rows": perf.labelled_rows,
            "late_labelled_rows": came_late.get(day, 0),
            "roc_auc": perf.metrics["roc_auc"],
            "log_loss": perf.metrics["log_loss"],
            "champion_auc": champion.entry.metrics.get("roc_auc"),
            "groups": {c: t.to_dict("records") for c, t in perf.groups.items()},
        }

    result = record_days(context, data, "realized_performance", measure)
    return dg.MaterializeResult(
        metadata={
            **(result.metadata or {}),
            "labels_came_late": sum(came_late.values()),
            "labels_came_late_per_day": dg.MetadataValue.json(came_late),
        }
    )


def measure_serving_drift(context: dg.AssetExecutionContext, data: DatasetLake) -> dg.MaterializeResult:
    from kennel.serving.prediction_log import count_warnings, read_predictions

    def measure(champion: ServedChampion, day: str) -> dict[str, Any]:
        served = read_predictions(data, start=day, end=day, with_feedback=False)
        if served.empty:
            return {"status": "no traffic", "rows": 0}
        return drift_measures(champion, served, True) | {"input_warnings": count_warnings(served)}

    return record_days(context, data, "serving_drift", measure)
