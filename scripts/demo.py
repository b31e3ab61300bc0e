"""`make demo`: the closed loop on the demo data, against the persistent Dagster instance in DAGSTER_HOME.

1. Lands baseline days, ingests them and trains the first champion.
2. Lands the drift scenario's next days (same seed: the days after the baseline ones, with covariate and
   concept drift) and ingests them; the ingest job's monitoring assets measure drift and realized
   performance against the champion, day by day.
3. Evaluates the retraining sensor as the daemon does (its definition from the code location, a sensor
   context on the instance, the cursor the instance keeps for it) and runs the runs it requests: the train
   job, whose promotion gate decides whether the challenger replaces the champion.
4. Sums up both champions, the sensor's decisions and drift per day.

Everything shows up in the UI afterwards (`dagster dev -w workspace.yaml`): drift over time, the decision
log (`retraining_decisions`), the sensor's cursor, both training runs and the gate's verdicts.
"""

import argparse
import itertools
import os
import shutil
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import dagster as dg  # noqa: E402
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME  # noqa: E402
from dagster._core.remote_origin import RemoteInstigatorOrigin, RemoteRepositoryOrigin  # noqa: E402
from dagster._core.scheduler.instigation import (  # noqa: E402
    InstigatorState,
    InstigatorStatus,
    InstigatorTick,
    InstigatorType,
    SensorInstigatorData,
    TickData,
    TickStatus,
)
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG  # noqa: E402
from dagster._core.workspace.load import location_origins_from_yaml_paths  # noqa: E402

from assets.graph import GATE_CHECK  # noqa: E402
from jobs import INGEST_JOB, TRAIN_JOB  # noqa: E402
from kennel.demo import NotADemoFolder, generate  # noqa: E402
from kennel.deployment import SPECS_DIR_ENV_VAR  # noqa: E402
from kennel.lake import DatasetLake, Lake, configured_root, read_model_record  # noqa: E402
from kennel.lake.champion import ChampionRegistry  # noqa: E402
from kennel.lake.records import ChampionEntry, EvaluationRecord, TrainingRecord  # noqa: E402
from kennel.spec import DatasetSpec, load_spec  # noqa: E402
from kennel.training.card_page import LATEST_CARD  # noqa: E402
from sensors.retraining import SENSOR_NAME as RETRAIN_SENSOR  # noqa: E402

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
# Where the drift days are written before they land: a name starting with `_` is never ingested, and
# each finished day folder is renamed into the landing folder whole, as the README asks of producers.
INCOMING = "_incoming"


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    name: str,
    days: list[str] | None = None,
    tags: dict[str, str] | None = None,
    gate_may_reject: bool = False,
) -> dg.ExecuteInProcessResult:
    run_tags = dict(tags or {})
    if days:
        # One run for the whole range: the Spark session starts once (the assets' backfill policy).
        run_tags |= {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    started = time.perf_counter()
    result = defs.resolve_job_def(name).execute_in_process(
        instance=instance, tags=run_tags, run_config=QUIET_LOGS, raise_on_error=False
    )
    print(
        f"    {name}: {'succeeded' if result.success else 'FAILED'} in {time.perf_counter() - started:.0f}s "
        f"(run {result.run_id})",
        flush=True,
    )
    rejected = [e for e in result.get_asset_check_evaluations() if e.check_name == GATE_CHECK and not e.passed]
    if not result.success and gate_may_reject and rejected:
        # The gate is a blocking check: a challenger it rejects fails the run before champion and Bento.
        summary = rejected[0].metadata.get("decision")
        print(f"    the promotion gate kept the current champion: {summary.value if summary else 'see the UI'}")
    elif not result.success:
        sys.exit(f"{name} failed: open the UI (dagster dev -w workspace.yaml) and look at run {result.run_id}")
    return result


class DaemonSensorState:
    """A sensor's state where the daemon keeps it: its instigator state in the instance, found by the
    sensor's selector (code location of workspace.yaml, repository, sensor name). Reading the cursor from
    there and saving it back makes the demo's evaluation a tick like the daemon's: a daemon started later
    (or the UI) resumes from this cursor, and evaluating again repeats no decision."""

    def __init__(self, instance: dg.DagsterInstance, sensor: dg.SensorDefinition):
        (location,) = location_origins_from_yaml_paths([str(WORKSPACE)])
        self.instance, self.sensor = instance, sensor
        self.origin = RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), sensor.name)
        # The sensor's ids in the instance (origin id, selector id), which find its stored state and ticks.
        self.key = InstigatorState(self.origin, InstigatorType.SENSOR, InstigatorStatus.STOPPED)

    def _stored(self) -> InstigatorState | None:
        return self.instance.get_instigator_state(self.key.instigator_origin_id, self.key.selector_id)

    def start_tick(self) -> InstigatorTick:
        """A tick recorded as started, as the daemon records one before it evaluates the sensor."""
        return self.instance.create_tick(
            TickData(
                instigator_origin_id=self.key.instigator_origin_id,
                instigator_name=self.sensor.name,
                instigator_type=InstigatorType.SENSOR,
                status=TickStatus.STARTED,
                timestamp=time.time(),
                selector_id=self.key.selector_id,
            )
        )

    def cursor(self) -> str | None:
        stored = self._stored()
        data = stored.instigator_data if stored else None
        return data.cursor if isinstance(data, SensorInstigatorData) else None

    def save_cursor(self, cursor: str | None) -> None:
        stored = self._stored()
        if stored is None:
            # Stopped, as the sensor is by default: the demo evaluates it, it does not start it.
            self.instance.add_instigator_state(
                InstigatorState(
                    self.origin,
                    InstigatorType.SENSOR,
                    InstigatorStatus.STOPPED,
                    SensorInstigatorData(
                        min_interval=self.sensor.minimum_interval_seconds,
                        cursor=cursor,
                        sensor_type=self.sensor.sensor_type,
                    ),
                )
            )
            return
        data = stored.instigator_data
        kept = data if isinstance(data, SensorInstigatorData) else SensorInstigatorData()
        self.instance.update_instigator_state(
            stored.with_data(
                SensorInstigatorData(
                    last_tick_timestamp=kept.last_tick_timestamp,
                    last_run_key=kept.last_run_key,
                    min_interval=self.sensor.minimum_interval_seconds,
                    cursor=cursor,
                    last_tick_start_timestamp=kept.last_tick_start_timestamp,
                    last_sensor_start_timestamp=kept.last_sensor_start_timestamp,
                    sensor_type=self.sensor.sensor_type,
                    last_tick_success_timestamp=kept.last_tick_success_timestamp,
                )
            )
        )


def sensor_tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str) -> list[str]:
    """One tick of the sensor `name` as the daemon runs it (dagster/_daemon/sensor.py): evaluate it from the
    stored cursor, store its asset events, save its cursor, and launch each run it requests unless a run
    with that run key was launched for it before. The ids of the runs it launched."""
    sensor = defs.resolve_sensor_def(name)
    state = DaemonSensorState(instance, sensor)
    # The code location's resources, as the daemon's code server gives them (the sensor reads the lake).
    with dg.build_sensor_context(
        instance=instance, cursor=state.cursor(), definitions=defs, sensor_name=name, resources=defs.resources
    ) as context:
        result = sensor(context)
    if not isinstance(result, dg.SensorResult):
        raise TypeError(f"sensor {name} returned {type(result).__name__}; the demo expects a SensorResult")
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    state.save_cursor(result.cursor)
    launched = []
    for request in result.run_requests or []:
        tags = {**request.tags, SENSOR_NAME_TAG: name}
        if request.run_key:
            if instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: name})):
                print(f"    run key {request.run_key} was launched before: not again")
                continue
            tags[RUN_KEY_TAG] = request.run_key
        job = request.job_name or sensor.job_name  # the sensor's own job, when the request names none
        if job is None:
            raise ValueError(f"sensor {name} requested a run without naming a job, and has no job of its own")
        step(f"Running what {name} requested: {job} ({request.tags.get('kennel/trigger', request.run_key)})")
        launched.append(run_job(defs, instance, job, tags=tags, gate_may_reject=True).run_id)
    return launched


def land_drift_days(spec: DatasetSpec, landing: Path, baseline_days: int, drift_days: int, rows: int) -> list[str]:
    """The drift scenario's days after the baseline ones (same seed: its earlier days are the baseline's),
    renamed into the landing folder (the demo's own: the baseline days claimed it) day by day once written."""
    incoming = landing / INCOMING
    shutil.rmtree(incoming, ignore_errors=True)  # what an interrupted demo left
    report = generate(
        spec,
        incoming,
        days=baseline_days + drift_days,
        rows_per_day=rows,
        scenario="drift",
        drift_start_day=baseline_days,
    )
    days = list(report.rows_per_day)[baseline_days:]
    for day in days:
        shutil.rmtree(landing / day, ignore_errors=True)  # an earlier demo's copy of the day
        (incoming / day).rename(landing / day)
    shutil.rmtree(incoming)
    return days


def span(days: list[str]) -> str:
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"


def describe(champion: ChampionEntry) -> str:
    model_dir = Path(champion.model_dir)
    training = read_model_record(model_dir, TrainingRecord)
    evaluation = read_model_record(model_dir, EvaluationRecord)
    auc = champion.metrics.get("roc_auc")
    tested = "test ROC-AUC " + ("n/a" if auc is None else f"{auc:.4f}")
    if evaluation is not None and evaluation.test_days:
        tested += f" on {span(evaluation.test_days)}"
    trained = f", trained on {training.train_rows:,} rows ({training.device})" if training else ""
    return (
        f"{champion.model_tag}: {tested}{trained}\n"
        f"{'':22}since {champion.since}, Bento {champion.bento_tag}\n"
        f"{'':22}why: {champion.reason}"
    )


def print_summary(data: DatasetLake, first: ChampionEntry | None, drifted: list[str], sensor: str) -> None:
    registry = ChampionRegistry(data)
    champion = registry.current()
    quality = data.quality_records()
    rows_in, clean = sum(q.rows_in for q in quality), sum(q.rows_clean for q in quality)
    step("Summary")
    print(f"    {len(quality)} days ingested: {rows_in:,} raw rows, {clean:,} clean, {rows_in - clean:,} quarantined")
    if first is not None and champion is not None and champion.run_id != first.run_id:
        print(f"    first champion    {describe(first)}")
        print(f"    new champion      {describe(champion)}")
    elif champion is not None:
        print(f"    champion          {describe(champion)}")

    if drifted:
        drift = data.monitoring_records("data_drift")
        performance = data.monitoring_records("realized_performance")
        estimated = data.monitoring_records("estimated_performance")
        print(
            "\n    Drift and performance per day (data_drift, estimated_performance, realized_performance: against "
            "the champion when the day was ingested; the estimate uses no label):"
        )
        print(
            f"    {'day':<11} {'drifted features':<17} {'prediction PSI':<15} {'estimated AUC':<14} "
            "realized AUC (champion's test AUC)"
        )
        for day in drifted:
            d, p, e = drift.get(day), performance.get(day), estimated.get(day)
            if d is None or d.drifted_share is None:
                print(f"    {day:<11} {d.status if d else 'not monitored'}")
                continue
            features = f"{d.drifted_share:.0%} ({len(d.drifted_features)})"
            psi = "" if d.prediction_psi is None else f"{d.prediction_psi:.3f}"
            if p is not None and p.roc_auc is not None and p.champion_auc is not None:
                realized = f"{p.roc_auc:.3f} ({p.champion_auc:.3f})"
            else:
                realized = p.status if p else "not measured"
            guess = "" if e is None or e.estimated_roc_auc is None else f"{e.estimated_roc_auc:.3f}"
            if e is not None and e.concept_drift_suspected:
                realized += "  concept drift: below the estimate"
            print(f"    {day:<11} {features:<17} {psi:<15} {guess:<14} {realized}")

    print(f"\n    Decisions of {sensor} (log: {data.decision_log()}):")
    # One line per action and days: a day's signals are separate decisions in the log.
    for (action, days), same in itertools.groupby(data.decisions(), key=lambda d: (d.action, tuple(d.days))):
        first_reason, *more = [d.reason for d in same]
        reasons = "; ".join([first_reason, *(r.removeprefix("signal noted: ") for r in more)])
        print(f"    {action:<7} {span(list(days)):<22} {reasons}")
    print("\n    Promotion gate:")
    for verdict in registry.decisions():
        outcome = "promoted" if verdict.passed else "rejected"
        against = verdict.champion.model_tag if verdict.champion else "the absolute floors (the first model)"
        print(f"    {outcome} {verdict.challenger.model_tag} against {against}")
        if verdict.challenger_evaluation is not None and verdict.champion_evaluation is not None:
            challenger_auc = verdict.challenger_evaluation.metrics.get("roc_auc")
            champion_auc = verdict.champion_evaluation.metrics.get("roc_auc")
            print(
                f"{'':13}ROC-AUC on the same {verdict.test_rows:,} test rows: challenger {challenger_auc:.4f}, "
                f"champion {champion_auc:.4f}"
            )
        print(f"{'':13}{verdict.summary}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 10 + 10 days fill the demo spec's split (3 test, 3 validation, 14 train) once the drift has landed: the
    # retrained challenger learns from 4 drifted days and is judged on 3 more, while the whole demo stays
    # within about three minutes on two cores, six when they are busy (each ingested day costs seconds of
    # Spark and validation, whatever its rows).
    parser.add_argument("--days", type=int, default=10, help="baseline days, before the drift")
    parser.add_argument("--drift-days", type=int, default=10, help="drifted days landed after the first champion")
    parser.add_argument("--rows-per-day", type=int, default=2000)
    parser.add_argument("--scenario", choices=("baseline", "corrupt"), default="baseline", help="of the baseline days")
    args = parser.parse_args()
    started = time.perf_counter()
    if os.environ.get(SPECS_DIR_ENV_VAR):
        # The demo drives the one-spec deployment's jobs and sensor by their bare names.
        sys.exit(f"make demo runs the demo's own deployment: unset {SPECS_DIR_ENV_VAR} (it names a folder of specs)")

    spec = load_spec()
    split = spec.split
    fewest = split.test_days + split.validation_days + 1
    if args.days < fewest:
        parser.error(
            f"--days must be at least {fewest}: the first model needs {fewest - 1} days to validate and "
            "test it and one to train on"
        )
    landing = Path(spec.source_location())
    step(f"Landing {args.days} days × {args.rows_per_day} rows of '{spec.name}' ({args.scenario}) in {landing}")
    try:
        report = generate(spec, landing, days=args.days, rows_per_day=args.rows_per_day, scenario=args.scenario)
    except NotADemoFolder as exc:
        sys.exit(f"make demo: {exc}")
    baseline = list(report.rows_per_day)

    step("Loading the Kennel code location")
    from definitions import defs

    instance = dg.DagsterInstance.get()
    lake = Lake(configured_root())  # the lake the code location uses (resources/__init__.py)
    data = lake.dataset(spec.name)
    step(f"Ingesting {baseline[0]} .. {baseline[-1]}: raw → clean + quarantine (Spark) → GX checks")
    run_job(defs, instance, INGEST_JOB, baseline)
    step("Training: dbt features → training set → XGBoost model → evaluation + promotion gate → champion → Bento")
    train_days = len(baseline) - split.validation_days - split.test_days
    if train_days < split.train_days:
        # Said before the training set's own warning about it, so a newcomer knows it is expected.
        print(
            f"    the first model trains on {train_days} of the {split.train_days} days the spec asks for (the "
            f"latest {split.validation_days + split.test_days} validate and test it); the window fills as days land"
        )
    run_job(defs, instance, TRAIN_JOB, gate_may_reject=True)
    first = ChampionRegistry(data).current()
    if first is None:
        sys.exit(
            "make demo: the first model did not pass the promotion gate's absolute floors, so there is no champion "
            "to measure drift against: see the gate's verdict on model_evaluation in the UI, or land more days (--days)"
        )

    drifted: list[str] = []
    if args.drift_days > 0:
        step(f"Landing {args.drift_days} drifted days (the drift scenario's days after the baseline ones)")
        drifted = land_drift_days(spec, landing, args.days, args.drift_days, args.rows_per_day)
        step(f"Ingesting {drifted[0]} .. {drifted[-1]}: cleaning, then drift and realized performance vs the champion")
        run_job(defs, instance, INGEST_JOB, drifted)
        step(f"Ticking the retraining sensor {RETRAIN_SENSOR} as the daemon would")
        if not sensor_tick(defs, instance, RETRAIN_SENSOR):
            print("    no run to launch: its decisions are below")
    print_summary(data, first, drifted, RETRAIN_SENSOR)

    champion = ChampionRegistry(data).current() or first
    home = os.environ.get("DAGSTER_HOME", "")
    print("\nLook further:")
    print(f"    DAGSTER_HOME={home} .venv/bin/dagster dev -w workspace.yaml      # the UI on http://127.0.0.1:3000")
    print(
        f"    BENTOML_HOME={os.environ.get('BENTOML_HOME', '')} KENNEL_LAKE_ROOT={lake.root} "
        f".venv/bin/bentoml serve {champion.bento_tag} --port 3001"
    )
    print(
        "    curl -s -X POST http://127.0.0.1:3001/predict -H 'content-type: application/json' "
        "-d @datasets/credit_demo_example.json"
    )
    print("    .venv/bin/kennel lineage <request_id of an answer>    # which model answered, trained on what, why")
    card = data.cards_dir() / champion.run_id / LATEST_CARD
    if card.is_file():
        print(f"    the champion's model card: {card}  (and GET /model_card on the server)")
    print(f"\nThe demo took {time.perf_counter() - started:.0f}s.")


if __name__ == "__main__":
    main()
