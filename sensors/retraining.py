"""The closed loop: a sensor that turns monitoring conclusions into retraining runs, and alerts.

The sensor reads only small records (the per-day quality record and monitoring records), never data;
the decision itself is kennel.monitoring.retraining.decide, with its state in the sensor cursor so a restarted
daemon repeats no decision. Every decision is appended to the decision log (a JSON-lines file that
DuckDB or pandas can query) once per decision id, so evaluating the sensor again on the same evidence (a
`dagster sensor preview`, a tick whose cursor was not saved) logs and alerts nothing twice; each tick's
decisions are shown in the UI as materializations of `retraining_decisions`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.graph import DatasetGraph
from kennel.lake import DatasetLake
from kennel.monitoring.alerts import send_alert
from kennel.monitoring.retraining import (
    LoopState,
    PartitionSignal,
    RetrainPolicy,
    decide,
)
from kennel.spec import DatasetSpec
from resources.lake import LakeResource
from sensors.housekeeping import compact_served_logs, sweep_abandoned_runs

SENSOR_NAME = "retrain_on_drift_or_decay"


def policy_from_env() -> RetrainPolicy:
    """Thresholds and throttles, overridable per deployment (see the README's configuration table)."""
    env = os.environ.get
    default = RetrainPolicy()
    return RetrainPolicy(
        drifted_share=float(env("KENNEL_RETRAIN_DRIFTED_SHARE", default.drifted_share)),
        prediction_psi=float(env("KENNEL_RETRAIN_PREDICTION_PSI", default.prediction_psi)),
        auc_drop=float(env("KENNEL_RETRAIN_AUC_DROP", default.auc_drop)),
        estimated_auc_drop=_optional_float(env("KENNEL_RETRAIN_ESTIMATED_AUC_DROP"), default.estimated_auc_drop),
        estimated_min_rows=int(env("KENNEL_RETRAIN_ESTIMATED_MIN_ROWS", default.estimated_min_rows)),
        cooldown=timedelta(hours=float(env("KENNEL_RETRAIN_COOLDOWN_HOURS", default.cooldown.total_seconds() / 3600))),
        max_retrains_per_day=int(env("KENNEL_RETRAIN_MAX_PER_DAY", default.max_retrains_per_day)),
        min_new_validated_rows=int(env("KENNEL_RETRAIN_MIN_ROWS", default.min_new_validated_rows)),
    )


def _optional_float(text: str | None, default: float | None) -> float | None:
    """A threshold from the environment: unset keeps the default, "off" disables it."""
    if text is None:
        return default
    return None if text.strip().lower() == "off" else float(text)


def gather_signals(data: DatasetLake) -> list[PartitionSignal]:
    """One signal per day that has a verdict: failed validation, or validated and monitored."""
    drift = data.monitoring_records("data_drift")
    performance = data.monitoring_records("realized_performance")
    estimated = data.monitoring_records("estimated_performance")
    signals = []
    for quality in data.quality_records():
        day = quality.day
        if not quality.passed:
            signals.append(
                PartitionSignal(
                    day=day, quality_passed=False, rows=quality.rows_clean, failed_checks=quality.failed_checks
                )
            )
            continue
        d, p, e = drift.get(day), performance.get(day), estimated.get(day)
        drift_measured = d is not None and d.drifted_share is not None
        performance_measured = p is not None and p.status == "ok"
        estimate_measured = e is not None and e.estimated_roc_auc is not None
        if not (drift_measured or performance_measured or estimate_measured):
            continue  # validated but not monitored yet (e.g. no champion): nothing to decide on
        signals.append(
            PartitionSignal(
                day=day,
                quality_passed=True,
                rows=quality.rows_clean,
                drifted_share=d.drifted_share if d else None,
                prediction_psi=d.prediction_psi if d else None,
                realized_auc=p.roc_auc if p else None,
                champion_auc=next(
                    (r.champion_auc for r in (p, e) if r is not None and r.champion_auc is not None), None
                ),
                estimated_auc=e.estimated_roc_auc if estimate_measured and e else None,
                estimated_rows=e.rows if estimate_measured and e else None,
                concept_drift_suspected=e.concept_drift_suspected if e else None,
            )
        )
    return signals


def build_retraining_sensor(spec: DatasetSpec, graph: DatasetGraph, train_job_name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=graph.name(SENSOR_NAME),
        job_name=train_job_name,
        minimum_interval_seconds=30,
        description=f"Requests {train_job_name} when validated days drift or realized performance decays; "
        "throttled (cooldown, daily limit, minimum new rows) and never on failed data.",
    )
    def retraining_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        sweep_abandoned_runs(context.instance, lake.local, context.log)
        data = lake.dataset(spec.name)
        compact_served_logs(data)
        decisions, state = decide(
            policy_from_env(), gather_signals(data), LoopState.from_json(context.cursor), datetime.now(UTC)
        )
        records = [d.record() for d in decisions]
        # Alerts go out for decisions logged now only: an evaluation that decided the same before sent them.
        for record in data.append_decisions(records):
            if record.action == "alert":
                send_alert(
                    f"[{spec.name}] data-quality alert for {', '.join(record.days)}: {record.reason}",
                    record.model_dump(mode="json"),
                    context.log,
                )
            elif record.action == "retrain":
                context.log.info(f"retraining: {record.reason} ({', '.join(record.days)})")
        # Materializations and run requests are kept by the daemon for real ticks only (never for a
        # preview), so they follow this evaluation's decisions, logged now or before; a run key already
        # launched is not launched again.
        events = [
            dg.AssetMaterialization(
                graph.decisions,
                metadata={
                    "action": r.action,
                    "reason": r.reason,
                    "days": dg.MetadataValue.json(r.days),
                    "numbers": dg.MetadataValue.json(r.numbers),
                    "thresholds": dg.MetadataValue.json(r.thresholds),
                    "run_key": r.run_key or "",
                    "decision_id": r.decision_id,
                },
            )
            for r in records
        ]
        runs = [
            dg.RunRequest(run_key=r.run_key, tags={"kennel/trigger": r.reason, "kennel/days": ",".join(r.days)})
            for r in records
            if r.action == "retrain"
        ]
        return dg.SensorResult(run_requests=runs, cursor=state.to_json(), asset_events=events)

    return retraining_sensor


ALERT_SENSOR_NAME = "alert_on_run_failure"


def build_alert_sensor(
    spec: DatasetSpec, graph: DatasetGraph, jobs: list[dg.UnresolvedAssetJobDefinition]
) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=graph.name(ALERT_SENSOR_NAME),
        # This data set's jobs only: in a deployment of several, each failure is alerted once, by its own.
        monitored_jobs=jobs,
        description="Logs and (with KENNEL_ALERT_WEBHOOK) posts every failed run of this data set's jobs.",
    )
    def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        send_alert(
            f"[{spec.name}] run {run.run_id} of {run.job_name} failed: {context.failure_event.message}",
            {"run_id": run.run_id, "job": run.job_name},
            context.log,
        )

    return alert_on_run_failure
