"""The closed loop: a sensor that turns monitoring conclusions into retraining runs, and alerts.

The sensor reads only small records (the per-day quality record and monitoring records), never data;
the decision itself is kennel.retraining.decide, with its state in the sensor cursor so a restarted
daemon repeats no decision. Every decision is appended to the decision log (a JSON-lines file that
DuckDB or pandas can query) and shown in the UI as a materialization of `retraining_decisions`.
"""

import json
import os
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from assets.monitoring import DECISIONS, read_monitoring_records
from kennel.alerts import send_alert
from kennel.retraining import Decision, LoopState, PartitionSignal, RetrainPolicy, decide
from kennel.spec import DatasetSpec
from resources.lake import LakeResource

SENSOR_NAME = "retrain_on_drift_or_decay"


def policy_from_env() -> RetrainPolicy:
    """Thresholds and throttles, overridable per deployment (see the README's configuration table)."""
    env = os.environ.get
    default = RetrainPolicy()
    return RetrainPolicy(
        drifted_share=float(env("KENNEL_RETRAIN_DRIFTED_SHARE", default.drifted_share)),
        prediction_psi=float(env("KENNEL_RETRAIN_PREDICTION_PSI", default.prediction_psi)),
        auc_drop=float(env("KENNEL_RETRAIN_AUC_DROP", default.auc_drop)),
        cooldown=timedelta(hours=float(env("KENNEL_RETRAIN_COOLDOWN_HOURS", default.cooldown.total_seconds() / 3600))),
        max_retrains_per_day=int(env("KENNEL_RETRAIN_MAX_PER_DAY", default.max_retrains_per_day)),
        min_new_validated_rows=int(env("KENNEL_RETRAIN_MIN_ROWS", default.min_new_validated_rows)),
    )


def gather_signals(lake: LakeResource, spec: DatasetSpec) -> list[PartitionSignal]:
    """One signal per day that has a verdict: failed validation, or validated and monitored."""
    drift = read_monitoring_records(lake, spec.name, "data_drift")
    performance = read_monitoring_records(lake, spec.name, "realized_performance")
    signals = []
    for path in sorted(lake.path("quality", spec.name).glob("*.json")):
        quality = json.loads(path.read_text())
        day = quality["day"]
        if not quality["passed"]:
            failed = tuple(sorted(name for name, ok in quality["checks"].items() if not ok))
            signals.append(PartitionSignal(day=day, quality_passed=False, rows=quality["rows_clean"],
                                           failed_checks=failed))
            continue
        d, p = drift.get(day, {}), performance.get(day, {})
        if "drifted_share" not in d and "roc_auc" not in p:
            continue  # validated but not monitored yet (e.g. no champion): nothing to decide on
        signals.append(PartitionSignal(
            day=day, quality_passed=True, rows=quality["rows_clean"],
            drifted_share=d.get("drifted_share"), prediction_psi=d.get("prediction_psi"),
            realized_auc=p.get("roc_auc"), champion_auc=p.get("champion_auc"),
        ))
    return signals


def _log_decisions(lake: LakeResource, spec: DatasetSpec, decisions: list[Decision]) -> None:
    path = lake.path("monitoring", spec.name, "decisions.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for d in decisions:
            fh.write(json.dumps(d.as_record(), default=str) + "\n")


def read_decision_log(lake: LakeResource, dataset: str) -> list[dict[str, Any]]:
    path = lake.path("monitoring", dataset, "decisions.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def build_retraining_sensors(spec: DatasetSpec, train_job_name: str) -> list[dg.SensorDefinition]:
    @dg.sensor(name=SENSOR_NAME, job_name=train_job_name, minimum_interval_seconds=30,
               description="Requests train_and_package when validated days drift or realized performance decays; "
                           "throttled (cooldown, daily limit, minimum new rows) and never on failed data.")
    def retraining_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        policy = policy_from_env()
        decisions, state = decide(policy, gather_signals(lake, spec), LoopState.from_json(context.cursor),
                                  datetime.now(timezone.utc))
        if decisions:
            _log_decisions(lake, spec, decisions)
        for d in decisions:
            if d.action == "alert":
                send_alert(f"[{spec.name}] data-quality alert for {', '.join(d.days)}: {d.reason}", d.as_record(),
                           context.log)
            elif d.action == "retrain":
                context.log.info(f"retraining: {d.reason} ({', '.join(d.days)})")
        events = [dg.AssetMaterialization(DECISIONS, metadata={
            "action": d.action, "reason": d.reason, "days": dg.MetadataValue.json(list(d.days)),
            "numbers": dg.MetadataValue.json(d.numbers), "thresholds": dg.MetadataValue.json(d.thresholds),
            "run_key": d.run_key or "",
        }) for d in decisions]
        runs = [dg.RunRequest(run_key=d.run_key, tags={"kennel/trigger": d.reason, "kennel/days": ",".join(d.days)})
                for d in decisions if d.action == "retrain"]
        return dg.SensorResult(run_requests=runs, cursor=state.to_json(), asset_events=events)

    @dg.run_failure_sensor(name="alert_on_run_failure", description="Logs and (with KENNEL_ALERT_WEBHOOK) posts "
                           "every failed run.")
    def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        send_alert(f"[{spec.name}] run {run.run_id} of {run.job_name} failed: {context.failure_event.message}",
                   {"run_id": run.run_id, "job": run.job_name}, context.log)

    return [retraining_sensor, alert_on_run_failure]
