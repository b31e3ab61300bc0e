"""The closed loop on the demo data, through Dagster's own APIs on a real instance: baseline → champion;
drift → exactly one retrain → new champion and Bento; corrupt day → alert, no retrain; a drift burst in
cooldown → one coalesced retrain; a restarted or previewed sensor repeats nothing. Along the way every
monitor records what it found: estimated performance (and, the labels having landed with the data, how
wrong it was; concept drift where it was), slices, and explanation drift of served traffic."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from kennel.demo import generate, generate_frame
from kennel.lake.champion import ChampionRegistry
from kennel.model import Model
from kennel.serving.api import new_request_ids
from kennel.serving.prediction_log import PredictionLog
from sensors.retraining import SENSOR_NAME
from tests.projects import Project, days, spec_file

pytestmark = pytest.mark.slow

ROWS = 1500
SPLIT = {"train_days": 2, "validation_days": 1, "test_days": 1}
# The loop's mechanics are under test here; the fairness side of the gate has its own tests
# (tests/test_gate.py), and with one test day the group gaps are too noisy to gate a scenario on.


class Webhook:
    """A loopback HTTP endpoint that records what alerts post to it."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"


def tick(project: Project, cursor: str | None) -> dg.SensorResult:
    sensor = project.defs.resolve_sensor_def(SENSOR_NAME)
    with dg.build_sensor_context(
        instance=project.instance, cursor=cursor, definitions=project.defs, resources={"lake": project.lake}
    ) as context:
        return sensor(context)


def retrain(project: Project, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    result = project.run("train_and_package", tags={**request.tags, "dagster/run_key": request.run_key})
    assert result.success
    return result


def serve_day(project: Project, day: str, *, bureau_outage: bool) -> None:
    """Log a day of served traffic as the Bento does (kennel.serving.prediction_log), scored by the champion;
    in a credit-bureau outage every applicant comes without a credit score."""
    spec, data = project.spec, project.lake.dataset(project.spec.name)
    champion = ChampionRegistry(data).current()
    model = Model.load(champion.model_dir)
    # Ids after the landed ones: a served record that also landed would count once, through its landed row.
    frame = generate_frame(
        spec,
        pd.Timestamp(day).date(),
        ROWS,
        np.random.default_rng([99, pd.Timestamp(day).dayofyear]),
        first_seq=ROWS + 1,
    )
    if bureau_outage:
        frame["credit_score"] = np.nan
    log = PredictionLog(data, spec, model_tag=champion.model_tag, threshold=model.card.threshold)
    columns = {c: frame[c].tolist() for c in [spec.id_column, *spec.feature_names]}
    log.append(
        "/predict_batch", new_request_ids(ROWS), model.score(frame), columns, at=pd.Timestamp(day).timestamp() + 3600
    )
    log.close()


def monitor_traffic(project: Project, day: str) -> None:
    """Materialize the monitors of served traffic for one day."""
    job = project.defs.resolve_implicit_global_asset_job_def()
    keys = [dg.AssetKey("serving_drift"), dg.AssetKey("attribution_drift")]
    assert job.execute_in_process(instance=project.instance, asset_selection=keys, partition_key=day).success


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loop")
    monkeypatch = pytest.MonkeyPatch()
    webhook = Webhook()
    monkeypatch.setenv("KENNEL_ALERT_WEBHOOK", webhook.url)
    monkeypatch.setenv("KENNEL_RETRAIN_MIN_ROWS", "500")
    spec_path = spec_file(tmp, tmp / "landing", split=SPLIT, sensitive_columns=[])
    timeline = {}
    with dg.instance_for_test() as instance:
        project = Project(tmp, spec_path, instance)
        d = days(project.spec, 11)
        # Days 1–4 baseline, drift from day 5 (the generator's earlier days are byte-identical to baseline).
        generate(project.spec, tmp / "landing", days=9, rows_per_day=ROWS, scenario="drift", drift_start_day=4)

        assert project.run("ingest_daily", d[:4]).success
        assert project.run("train_and_package").success
        timeline["first_champion"] = ChampionRegistry(project.lake.dataset(project.spec.name)).current()
        # Served traffic on two days: like the training rows, then without the model's strongest input.
        serve_day(project, d[2], bureau_outage=False)
        serve_day(project, d[3], bureau_outage=True)
        monitor_traffic(project, d[2])
        monitor_traffic(project, d[3])
        timeline["attribution_drift"] = project.lake.dataset(project.spec.name).monitoring_records("attribution_drift")
        timeline["attribution_metadata"] = project.metadata("attribution_drift")
        assert project.run("monitor_daily", d[:4]).success  # monitoring needs a champion to compare to
        timeline["baseline_tick"] = first = tick(project, None)

        assert project.run("ingest_daily", d[4:8]).success  # drift arrives
        tick(project, first.cursor)  # `dagster sensor preview` first: the tick after it must repeat nothing
        timeline["drift_tick"] = drift = tick(project, first.cursor)
        timeline["restart_tick"] = tick(project, drift.cursor)  # a restarted daemon resumes from its cursor
        timeline["retrain"] = [retrain(project, r) for r in drift.run_requests]
        timeline["second_champion"] = ChampionRegistry(project.lake.dataset(project.spec.name)).current()
        timeline["after_retrain_tick"] = after = tick(project, drift.cursor)

        # Day 9 lands without its label column: it fails validation.
        bad = tmp / "landing" / d[8] / "part-00000.csv"
        pd.read_csv(bad, dtype=str).drop(columns=[project.spec.label.column]).to_csv(bad, index=False)
        project.run("ingest_daily", d[8:9])
        tick(project, after.cursor)  # previewed too: one alert, not two
        timeline["corrupt_tick"] = corrupt = tick(project, after.cursor)

        # The world drifts back (baseline days, drifted against the new champion) inside the cooldown:
        # the burst is held, then retrained on once when the cooldown ends.
        generate(project.spec, tmp / "landing", days=2, rows_per_day=ROWS, start=pd.Timestamp(d[9]).date())
        monkeypatch.setenv("KENNEL_RETRAIN_COOLDOWN_HOURS", "24")
        assert project.run("ingest_daily", d[9:11]).success
        timeline["burst_tick"] = burst = tick(project, corrupt.cursor)
        monkeypatch.setenv("KENNEL_RETRAIN_COOLDOWN_HOURS", "0")
        timeline["released_tick"] = tick(project, burst.cursor)
        timeline["decisions"] = project.lake.dataset(project.spec.name).decisions()
        timeline["estimated"] = project.lake.dataset(project.spec.name).monitoring_records("estimated_performance")
        timeline["data_drift"] = project.lake.dataset(project.spec.name).monitoring_records("data_drift")
        timeline["estimated_metadata"] = project.metadata("estimated_performance")
        timeline["webhook"] = webhook.received
        yield project, timeline
    monkeypatch.undo()
    webhook.server.shutdown()


def test_baseline_days_do_not_retrain(loop):
    _, t = loop
    assert t["first_champion"] is not None
    assert t["baseline_tick"].run_requests == []
    assert {d.action for d in t["decisions"] if d.days[0] <= "2026-01-04"} == {"skip"}


def test_drift_requests_exactly_one_retrain_that_replaces_the_champion(loop):
    _, t = loop
    requests = t["drift_tick"].run_requests
    assert len(requests) == 1 and requests[0].run_key.startswith("retrain-")
    assert t["restart_tick"].run_requests == [] and t["after_retrain_tick"].run_requests == []
    assert t["second_champion"].run_id != t["first_champion"].run_id
    assert t["second_champion"].bento_tag and t["second_champion"].bento_tag != t["first_champion"].bento_tag
    retrain_decision = next(d for d in t["decisions"] if d.action == "retrain")
    assert retrain_decision.run_key == requests[0].run_key
    assert set(retrain_decision.days) <= {"2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08"}
    assert retrain_decision.thresholds["drifted_share"] > 0


def test_corrupt_day_alerts_and_never_retrains(loop):
    _, t = loop
    assert t["corrupt_tick"].run_requests == []
    alerts = [d for d in t["decisions"] if d.action == "alert"]
    assert [a.days for a in alerts] == [["2026-01-09"]]
    assert [w["details"]["decision_id"] for w in t["webhook"] if "2026-01-09" in w["text"]] == [alerts[0].decision_id]


def test_burst_in_cooldown_is_coalesced_into_one_retrain(loop):
    _, t = loop
    assert t["burst_tick"].run_requests == []
    held = [d for d in t["decisions"] if d.action == "skip" and "cooldown" in d.reason]
    assert held and held[-1].days == ["2026-01-10", "2026-01-11"]
    assert len(t["released_tick"].run_requests) == 1
    assert t["decisions"][-1].action == "retrain" and t["decisions"][-1].days == ["2026-01-10", "2026-01-11"]


def test_every_decision_is_reported_to_dagster(loop):
    _, t = loop
    ticks = [v for k, v in t.items() if k.endswith("_tick")]
    events = [e for tick_result in ticks for e in tick_result.asset_events]
    assert len(events) == len(t["decisions"])  # the daemon stores these as materializations
    # Previews and replays from one cursor logged nothing twice.
    assert [e.metadata["decision_id"].value for e in events] == [d.decision_id for d in t["decisions"]]
    assert {e.asset_key for e in events} == {dg.AssetKey("retraining_decisions")}
    assert {e.metadata["action"].value for e in events} == {"skip", "retrain", "alert"}


def test_estimated_performance_is_recorded_with_its_error_and_flags_concept_drift(loop):
    _, t = loop
    estimated = t["estimated"]
    baseline = [estimated[d] for d in ("2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04")]
    drifted = [estimated[d] for d in ("2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08")]
    for record in baseline + drifted:
        auc = record.estimates["roc_auc"]
        assert record.status == "ok" and auc.value == record.estimated_roc_auc
        assert auc.low <= auc.value <= auc.high
        # The labels landed with the data: the estimate is checked against them on the same rows (on the
        # days with served traffic too, whose requests have no label: rows, not labelled rows, grew).
        assert record.labelled_rows == ROWS and record.roc_auc is not None and "roc_auc" in record.estimation_error
        if record.rows == ROWS:
            assert record.estimation_error["roc_auc"] == pytest.approx(record.estimated_roc_auc - record.roc_auc)
    assert estimated["2026-01-03"].rows == estimated["2026-01-04"].rows == 2 * ROWS
    # The drift scenario changes how the label depends on the inputs: the scores promise more than the
    # labels deliver, which estimation cannot see and the comparison with realized does.
    assert not any(r.concept_drift_suspected for r in baseline)
    assert all(r.concept_drift_suspected for r in drifted)
    noted = {d.days[0] for d in t["decisions"] if d.reason.startswith("signal noted: concept drift")}
    # (Days 10-11 return to the baseline world, a concept change for the champion trained on the drift.)
    assert noted >= {"2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08"}
    assert not noted & {"2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"}
    assert "estimation_mean_abs_error_roc_auc" in t["estimated_metadata"]
    assert "error_roc_auc" in t["estimated_metadata"]["over_time"]


def test_monitors_report_slices_worst_first(loop):
    project, t = loop
    for record in (t["data_drift"]["2026-01-06"], t["estimated"]["2026-01-06"]):
        assert {s.column for s in record.slices} == set(project.spec.slice_columns) == {"region", "channel"}
        judged = [s for s in record.slices if s.status not in ("insufficient_data", "no_reference")]
        assert judged and [s.severity for s in judged] == sorted((s.severity for s in judged), reverse=True)
        assert record.slices[: len(judged)] == judged
    # The drift scenario moves applicants online: the channel slices drift, found inside the slices too.
    assert any(s.status == "drifted" for s in t["data_drift"]["2026-01-06"].slices)
    assert "slices_worst_first" in t["estimated_metadata"]


def test_explanation_drift_of_served_traffic(loop):
    _, t = loop
    same, outage = t["attribution_drift"]["2026-01-03"], t["attribution_drift"]["2026-01-04"]
    assert same.rows == outage.rows == ROWS
    assert same.status == "ok" and same.attributions
    # Without credit scores the model leans on other features: its explanations say so.
    assert outage.status == "drifted" and "credit_score" in outage.drifted_features
    assert outage.attributions[0]["feature"] in outage.drifted_features  # most drifted first
    assert "credit_score" in t["attribution_metadata"]["attributions_by_severity"]
