"""Daily monitoring of the champion: drift of validated data and of served traffic against the champion's
training reference, and realized performance once labels exist.

Each asset writes one small JSON record per day under <lake>/monitoring/<dataset>/<day>/ so the
retraining sensor can read the conclusions without touching data.
"""

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg

from assets.ingestion import CLEAN, daily_partitions
from assets.metadata import md_table
from kennel.champion import ChampionRegistry
from kennel.spec import DatasetSpec
from resources.lake import LakeResource

DATA_DRIFT = dg.AssetKey("data_drift")
SERVING_DRIFT = dg.AssetKey("serving_drift")
PERFORMANCE = dg.AssetKey("realized_performance")
PREDICTION_LOG = dg.AssetKey("prediction_log")
DECISIONS = dg.AssetKey("retraining_decisions")


def monitoring_record_path(lake: LakeResource, dataset: str, day: str, kind: str) -> Path:
    return lake.path("monitoring", dataset, day, f"{kind}.json")


def read_monitoring_records(lake: LakeResource, dataset: str, kind: str) -> dict[str, dict[str, Any]]:
    """Day → the record a monitoring asset wrote (small JSON files: cheap enough for a sensor tick)."""
    records = {}
    for path in sorted(lake.path("monitoring", dataset).glob(f"*/{kind}.json")):
        records[path.parent.name] = json.loads(path.read_text())
    return records


def _write_record(lake: LakeResource, dataset: str, day: str, kind: str, record: dict[str, Any]) -> None:
    path = monitoring_record_path(lake, dataset, day, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**record, "day": day, "written_at": datetime.now(timezone.utc).isoformat()},
                              indent=2, default=str))
    tmp.replace(path)


class _Champion:
    """The served model, loaded once per run: booster, card and training reference."""

    def __init__(self, lake: LakeResource, spec: DatasetSpec):
        import xgboost as xgb

        from kennel.features import MODEL_FILE, ModelCard
        from kennel.monitoring import PROFILE_FILE, load_reference

        entry = ChampionRegistry(lake.path(), spec.name).current()
        if entry is None:
            raise LookupError("no champion yet: monitoring starts once a model has been promoted")
        model_dir = Path(entry.model_dir)
        if not (model_dir / PROFILE_FILE).exists():
            raise LookupError(f"champion {entry.model_tag} has no {PROFILE_FILE}; retrain to monitor it")
        self.entry = entry
        self.card = ModelCard.load(model_dir)
        self.booster = xgb.Booster(model_file=str(model_dir / MODEL_FILE))
        self.profile = load_reference(model_dir)

    def scores(self, frame):
        from kennel.training import predict_scores

        return predict_scores(self.booster, self.card, frame)


def _quality_passed(lake: LakeResource, dataset: str, day: str) -> bool:
    record = lake.quality_record(dataset, day)
    return record.exists() and json.loads(record.read_text())["passed"]


def build_monitoring_assets(spec: DatasetSpec) -> list:
    partitions = daily_partitions(spec)
    common = dict(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(), group_name="monitoring",
                  owners=[spec.owner], tags={"dataset": spec.name})

    def per_day(context, lake: LakeResource, kind: str, compute) -> dg.MaterializeResult:
        """Run `compute(champion, day)` for each day of the run and record what it found."""
        try:
            champion = _Champion(lake, spec)
        except LookupError as exc:
            context.log.warning(str(exc))
            return dg.MaterializeResult(metadata={"status": str(exc)})
        rows = []
        for day in context.partition_keys:
            record = compute(champion, day)
            record["champion"] = champion.entry.model_tag
            _write_record(lake, spec.name, day, kind, record)
            rows.append({"day": day, **{k: v for k, v in record.items() if not isinstance(v, (list, dict))}})
        history = read_monitoring_records(lake, spec.name, kind)
        return dg.MaterializeResult(metadata={
            "champion": champion.entry.model_tag,
            "days": md_table(rows),
            "over_time": md_table([{"day": d, **{k: r.get(k) for k in ("status", "drifted_share", "prediction_psi",
                                                                            "roc_auc", "rows") if k in r}}
                                   for d, r in sorted(history.items())][-30:]),
        })

    def drift_record(champion: "_Champion", frame, validated: bool) -> dict[str, Any]:
        from kennel.monitoring import drift_summary

        summary = drift_summary(champion.profile, frame, champion.scores(frame))
        report = summary.pop("report")
        return {
            "status": "drift" if summary["dataset_drift"] else "ok",
            "validated": validated,
            **summary,
            "features": report.table(),
        }

    @dg.asset(key=DATA_DRIFT, deps=[CLEAN], kinds={"python", "xgboost"}, **common,
              description="Feature drift (PSI, Jensen–Shannon, normalized Wasserstein) and prediction drift of each "
                          "validated day against the champion's training reference; failed days are not scored.")
    def data_drift(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        import pandas as pd

        def compute(champion: _Champion, day: str) -> dict[str, Any]:
            if not _quality_passed(lake, spec.name, day):
                return {"status": "skipped: the day failed validation", "validated": False}
            return drift_record(champion, pd.read_parquet(lake.clean_dir(spec.name, day)), True)

        result = per_day(context, lake, "data_drift", compute)
        last = read_monitoring_records(lake, spec.name, "data_drift").get(context.partition_keys[-1], {})
        if not last.get("features"):
            return result
        by_severity = md_table([{k: f[k] for k in ("feature", "status", "severity", "psi", "js_distance", "wasserstein")}
                                for f in last["features"]])
        return dg.MaterializeResult(metadata={**result.metadata, "features_by_severity": by_severity})

    @dg.asset(key=PERFORMANCE, deps=[CLEAN], kinds={"python", "xgboost"}, **common,
              description="Realized performance of the champion per day and per sensitive group, on labelled rows: "
                          "labels landed with the data and labels sent later to the Bento's /feedback.")
    def realized_performance(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        import pandas as pd

        from kennel.monitoring import realized_performance as measure
        from kennel.prediction_log import read_predictions

        def compute(champion: _Champion, day: str) -> dict[str, Any]:
            frames = []
            if _quality_passed(lake, spec.name, day):
                landed = pd.read_parquet(lake.clean_dir(spec.name, day))
                frames.append(landed.assign(label=landed[spec.label.column].astype(float)))
            served = read_predictions(lake.path(), spec.name, start=day, end=day)
            if len(served):
                frames.append(served.assign(label=served["actual_label"].astype(float)))
            if not frames:
                return {"status": "no labelled rows", "rows": 0}
            frame = pd.concat(frames, ignore_index=True)
            perf = measure(frame, champion.scores(frame), champion.card.threshold, list(spec.sensitive_columns))
            if not perf["labelled_rows"]:
                return {"status": "no labelled rows", "rows": 0}
            metrics = perf["metrics"]
            return {"status": "ok", "rows": perf["labelled_rows"], "roc_auc": metrics["roc_auc"],
                    "log_loss": metrics["log_loss"], "champion_auc": champion.entry.metrics.get("roc_auc"),
                    "groups": {c: t.to_dict("records") for c, t in perf["groups"].items()}}

        return per_day(context, lake, "realized_performance", compute)

    prediction_log = dg.AssetSpec(
        PREDICTION_LOG, group_name="monitoring", kinds={"bentoml", "parquet"}, owners=[spec.owner],
        description="Predictions served by the Bento and the labels sent to its /feedback, appended to the lake "
                    "by the service (not by Dagster) in daily files.",
    )

    @dg.asset(key=SERVING_DRIFT, deps=[PREDICTION_LOG], kinds={"python", "bentoml"}, **common,
              description="Drift of served traffic (the features callers sent, and the scores returned) against the "
                          "champion's training reference.")
    def serving_drift(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        from kennel.prediction_log import read_predictions

        def compute(champion: _Champion, day: str) -> dict[str, Any]:
            served = read_predictions(lake.path(), spec.name, start=day, end=day, with_feedback=False)
            if served.empty:
                return {"status": "no traffic", "rows": 0}
            return drift_record(champion, served, True)

        return per_day(context, lake, "serving_drift", compute)

    decisions = dg.AssetSpec(
        DECISIONS, group_name="monitoring", kinds={"python"}, owners=[spec.owner],
        description="Every monitoring signal the retraining sensor evaluated and what it decided (retrain, skip "
                    "and why, alert), with the numbers, thresholds, days and run key; also queryable as "
                    "<lake>/monitoring/<dataset>/decisions.jsonl.",
    )
    return [data_drift, realized_performance, prediction_log, serving_drift, decisions]
