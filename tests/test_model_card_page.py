"""The HTML model card from a real trained, evaluated and gated model: self-contained, escaped, small even
with a year of monitoring and hundreds of features; promotion.html written once, latest.html refreshed."""

from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.graph import DatasetGraph
from assets.model_card import build_model_card_assets
from kennel.lake import Lake, read_model_record, write_model_record
from kennel.lake.champion import ChampionRegistry
from kennel.lake.records import (
    EvaluationRecord,
    FeatureDriftRow,
    GateDecision,
    MetricEstimate,
    MonitoringRecord,
    TrainingRecord,
)
from kennel.model import Model, ModelCard
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from kennel.training.card_page import (
    LATEST_CARD,
    MAX_MONITORING_DAYS,
    MAX_SHAP_FEATURES,
    PROMOTION_CARD,
    render_card_page,
    write_cards,
)
from kennel.training.config import GateConfig, TrainConfig
from kennel.training.evaluation import evaluate, shap_summary
from kennel.training.gate import Candidate, decide
from kennel.training.trainer import train_model
from resources.lake import LakeResource
from tests.projects import days
from tests.training_data import training_frame

HOSTILE = ["<script>alert('card')</script>", "quote \" and ' & <b>bold</b>", "plain"]
TWO_MB = 2 * 1024 * 1024
VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "track", "wbr"}
SVG_LEAVES = {"rect", "line", "circle", "polyline", "path"}  # written self-closed (<rect …/>)


class StrictPage(HTMLParser):
    """Collects every problem a browser would silently repair: unclosed or mismatched tags, and what the
    card must never hold (scripts, external references, images that are not data: URIs)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problems: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("script", "link", "iframe", "object"):
            self.problems.append(f"<{tag}> in the page")
        for name, value in attrs:
            if name in ("src", "href") and not (value or "").startswith("data:"):
                self.problems.append(f"<{tag} {name}={value!r}> is not a data: URI")
            if name.startswith("on"):
                self.problems.append(f"event handler {name} on <{tag}>")
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID | SVG_LEAVES:
            self.problems.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1] if self.open else 'nothing'}")
        else:
            self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def checked(page: str) -> StrictPage:
    parser = StrictPage()
    parser.feed(page)
    parser.close()
    assert not parser.problems, parser.problems[:5]
    assert parser.open == [], f"unclosed: {parser.open}"
    assert "http://" not in page and "https://" not in page
    assert len(page.encode("utf-8")) < TWO_MB
    return parser


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEFAULT_SPEC_PATH)


@pytest.fixture(scope="module")
def gated(spec, tmp_path_factory):
    """A real small model in a lake's model folder with its training, evaluation and gate records, as
    the model and model_evaluation assets leave them; the test rows' groups have hostile names."""
    lake = Lake(tmp_path_factory.mktemp("card") / "lake").dataset(spec.name)
    partitions = days(spec, 6)
    train = pd.concat([training_frame(spec, day, 800, i) for i, day in enumerate(partitions[:2])])
    validation = training_frame(spec, partitions[2], 600, 10)
    test = pd.concat([training_frame(spec, day, 700, 20 + i) for i, day in enumerate(partitions[3:])])
    test["gender"] = [HOSTILE[i % len(HOSTILE)] for i in range(len(test))]
    config = TrainConfig(device="cpu", nthread=1, n_estimators=60, max_depth=4)
    trained, result = train_model(ModelCard.for_spec(spec, training=train), train, validation, config)
    run_id = "run-card-1"
    card = ModelCard.for_spec(
        spec, threshold=result.threshold, run_id=run_id, data_partitions=tuple(partitions), training=train
    )
    model_dir = lake.model_dir(run_id)
    Model(trained.booster, card).save(model_dir, spec.resolved_yaml())
    model = Model.load(model_dir)
    scores = model.score(test)
    report = evaluate(test, scores, card.threshold, ["gender"])
    shap = shap_summary(model, test)
    write_model_record(
        model_dir,
        TrainingRecord(
            code_version="test",
            device=result.device,
            best_iteration=result.best_iteration,
            train_seconds=result.train_seconds,
            validation_logloss=result.validation_logloss,
            validation_auc=result.validation_auc,
            train_rows=result.train_rows,
            validation_rows=len(validation),
        ),
    )
    write_model_record(
        model_dir,
        EvaluationRecord(
            metrics=report.metrics,
            fairness={col: g.gaps for col, g in report.groups.items()},
            test_days=partitions[3:],
            shap_mean_abs=dict(zip(shap["feature"], shap["mean_abs_shap"].round(6), strict=True)),
            calibration=report.calibration.to_dict("records"),
        ),
    )
    registry = ChampionRegistry(lake)
    gate = GateConfig(bootstrap_samples=100, latency_samples=20, max_latency_ms=1000.0, max_fairness_gap=1.0)
    decision = decide(Candidate(run_id, model_dir, f"kennel-credit-demo:{run_id}"), None, test, ["gender"], gate)
    assert decision.passed, decision.reasons
    registry.record_decision(decision)
    entry = registry.promote(model_dir)
    return lake, entry, report


def _monitoring(first: date, n: int, model_tag: str, features: int = 3) -> dict[str, dict[str, MonitoringRecord]]:
    """n days of realized, estimated and drift records from `first` on (synthetic: no traffic needed)."""
    kinds: dict[str, dict[str, MonitoringRecord]] = {"realized_performance": {}, "estimated_performance": {}}
    kinds["data_drift"] = {}
    for i in range(n):
        day = (first + timedelta(days=i)).isoformat()
        common = {"day": day, "written_at": f"{day}T23:00:00+00:00", "status": "ok", "champion": model_tag}
        if i % 7 != 3:  # labels missing on some days: the realized line breaks there
            kinds["realized_performance"][day] = MonitoringRecord(
                kind="realized_performance", rows=500, roc_auc=0.8 - i * 0.0005, **common
            )
        kinds["estimated_performance"][day] = MonitoringRecord(
            kind="estimated_performance",
            estimated_roc_auc=0.81,
            estimates={"roc_auc": MetricEstimate(value=0.81, low=0.78, high=0.84)},
            concept_drift_suspected=i % 50 == 0,
            **common,
        )
        kinds["data_drift"][day] = MonitoringRecord(
            kind="data_drift",
            drifted_share=(i % 10) / 10,
            features=[
                FeatureDriftRow(feature=f"<f{j}>", kind="numeric", status="ok", rows=500, psi=0.01)
                for j in range(features)
            ],
            **common,
        )
    return kinds


def test_the_card_of_a_real_model_is_self_contained_escaped_and_complete(spec, gated):
    lake, entry, report = gated
    model_dir = Path(entry.model_dir)
    since = date.fromisoformat(entry.since[:10])
    monitoring = _monitoring(since - timedelta(days=3), 33, entry.model_tag)
    monitoring["realized_performance"]["2099-01-01"] = MonitoringRecord(
        kind="realized_performance",
        day="2099-01-01",
        written_at="x",
        status="ok",
        champion="another:model",
        roc_auc=0.1,
    )
    monitoring["data_drift"]["not-a-day"] = monitoring["data_drift"][since.isoformat()]  # a stray folder: ignored
    page = render_card_page(
        spec,
        entry,
        ModelCard.load(model_dir),
        read_model_record(model_dir, EvaluationRecord),
        read_model_record(model_dir, GateDecision),
        read_model_record(model_dir, TrainingRecord),
        monitoring,
    )
    parsed = checked(page)
    # Hostile group names come out as text, never as markup.
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;card&#x27;)&lt;/script&gt;" in page and "&quot;" in page
    text = "".join(parsed.text)
    assert HOSTILE[0] in text and HOSTILE[1] in text
    # Plots are inline SVG: reliability, selection rate by group, SHAP bars, monitoring lines.
    assert parsed.tags.count("svg") == 4 and "img" not in parsed.tags
    # Data days, metrics, calibration, fairness, gate checks and thresholds are all there.
    for day in days(spec, 6):
        assert day in text
    metrics = report.metrics
    assert f"{metrics['roc_auc']:.4f}" in text and f"{metrics['brier']:.4f}" in text
    assert f"{metrics['expected_calibration_error']:.4f}" in text
    assert f"{report.calibration['observed_rate'].iloc[0]:.4f}" in text
    gaps = report.groups["gender"].gaps
    assert f"{gaps['demographic_parity_difference']:.4f}" in text
    for check in ("floor_roc_auc", "no_nan_scores", "latency_p95_ms", "fairness_gender_equalized_odds_difference"):
        assert check in text
    assert "max_fairness_gap" in text and "bootstrap_samples" in text
    assert entry.since in text and entry.model_tag in text
    # Monitoring: only this champion's days since promotion (33 days from 3 before it: 30 shown).
    assert "Monitoring since promotion" in text and "2099-01-01" not in text
    assert (since - timedelta(days=1)).isoformat() not in text
    assert (since + timedelta(days=29)).isoformat() in text


def test_a_year_of_monitoring_and_hundreds_of_features_and_groups_stay_under_two_megabytes(spec, gated):
    lake, entry, _ = gated
    model_dir = Path(entry.model_dir)
    evaluation = read_model_record(model_dir, EvaluationRecord)
    decision = read_model_record(model_dir, GateDecision)
    long_name = "<script>" + "x" * 5000
    many = evaluation.model_copy(update={"shap_mean_abs": {f"{long_name}{i}": 1.0 / (i + 1) for i in range(200)}})
    groups = decision.challenger_evaluation.groups["gender"]
    table = [{**groups.table[0], "group": f'{long_name}"{i}', "count": 2000 - i} for i in range(2000)]
    big = decision.model_copy(
        update={
            "challenger_evaluation": decision.challenger_evaluation.model_copy(
                update={"groups": {"gender": groups.model_copy(update={"table": table})}}
            )
        }
    )
    old = entry.model_copy(update={"since": "2025-01-01T00:00:00+00:00"})
    monitoring = _monitoring(date(2025, 1, 1), 500, entry.model_tag, features=200)
    page = render_card_page(spec, old, ModelCard.load(model_dir), many, big, None, monitoring)
    parsed = checked(page)
    assert "<script" not in page
    size = len(page.encode("utf-8"))
    assert size < TWO_MB / 4, size
    # Capped: the top SHAP features, the largest groups, the last year of monitoring.
    assert f"the top {MAX_SHAP_FEATURES} of 200 features" in page
    assert "The 50 largest of 2000 groups" in page
    first_shown = (date(2025, 1, 1) + timedelta(days=500 - MAX_MONITORING_DAYS)).isoformat()
    assert (
        first_shown in page
        and (date(2025, 1, 1) + timedelta(days=500 - MAX_MONITORING_DAYS - 1)).isoformat() not in page
    )
    assert parsed.tags.count("svg") == 4


def test_write_cards_writes_the_promotion_card_once_and_refreshes_the_latest(spec, gated):
    lake, entry, _ = gated
    first = write_cards(lake, spec)
    folder = lake.cards_dir() / entry.run_id
    assert first.promotion == folder / PROMOTION_CARD and first.latest == folder / LATEST_CARD
    assert first.promotion_written and first.monitoring_days == 0
    promotion = first.promotion.read_text()
    checked(promotion)
    assert "as of promotion" in promotion and "Monitoring since promotion" not in promotion
    assert "Monitoring since promotion" in first.latest.read_text()

    day = entry.since[:10]
    for records in _monitoring(date.fromisoformat(day), 1, entry.model_tag).values():
        for record in records.values():
            lake.write_monitoring(record)
    second = write_cards(lake, spec)
    assert not second.promotion_written and second.monitoring_days == 1
    assert second.promotion.read_text() == promotion  # kept as it was at promotion
    latest = second.latest.read_text()
    checked(latest)
    assert f"<td>{day}</td>" in latest and second.latest_bytes == len(latest.encode("utf-8"))
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_the_model_card_asset_writes_the_cards_with_their_metadata(spec, gated):
    lake, entry, _ = gated
    (asset,) = build_model_card_assets(spec, DatasetGraph(spec.name))
    result = dg.materialize([asset], resources={"lake": LakeResource(root=str(lake.lake.root))})
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("model_card")[0].metadata.items()}
    latest = lake.cards_dir() / entry.run_id / LATEST_CARD
    assert meta["latest"] == str(latest) and meta["latest_url"] == latest.as_uri()
    assert meta["run_id"] == entry.run_id and meta["size_kb"] == pytest.approx(latest.stat().st_size / 1024, abs=0.1)
    assert "monitoring_days" in meta


def test_without_a_champion_the_asset_fails_with_a_clear_error(spec, tmp_path):
    (asset,) = build_model_card_assets(spec, DatasetGraph(spec.name))
    result = dg.materialize(
        [asset], resources={"lake": LakeResource(root=str(tmp_path / "lake"))}, raise_on_error=False
    )
    assert not result.success
    failure = result.failure_data_for_node("model_card")
    assert "has no champion yet" in failure.error.message


def test_an_evaluation_record_written_before_calibration_was_kept_still_renders(spec, gated):
    lake, entry, _ = gated
    model_dir = Path(entry.model_dir)
    older = read_model_record(Path(__file__).parent / "data" / "lake_records", EvaluationRecord)
    assert older.calibration == []
    page = render_card_page(spec, entry, ModelCard.load(model_dir), older, None, None, None)
    checked(page)
    assert "No reliability bins recorded" in page and "No gate decision recorded" in page
