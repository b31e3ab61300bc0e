"""Shadow challengers: the registry's shadow lifecycle, the comparison on live traffic (agreement, score PSI,
the gate's paired bootstrap) and the shadow_evaluation asset on a real Dagster instance."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.lake import Lake, day_partition
from kennel.lake.champion import ChampionRegistry, PromotionRefused
from kennel.lake.records import ChampionEntry, GateDecision, ModelIdentity, ShadowEntry, ShadowEvaluationRecord
from kennel.monitoring.drift import EPS
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from kennel.training.config import GateConfig
from kennel.training.shadow import agreement, evaluate_shadow, score_psi

DATASET = "credit_demo"
SHADOW = {"shadow": True, "shadow_min_requests": 100, "shadow_min_labelled": 80, "bootstrap_samples": 200}


def _identity(run_id: str, model_dir: Path, model_tag: str | None = None) -> ModelIdentity:
    return ModelIdentity(
        run_id=run_id, model_tag=model_tag, model_dir=str(model_dir), spec_fingerprint="test", threshold=0.5
    )


def _decide(
    registry: ChampionRegistry, folder: Path, run_id: str, *, against: str | None = None, config: dict | None = None
) -> Path:
    """A passing gate decision as kennel.training.gate writes it (the gate itself is tested in test_gate)."""
    model_dir = folder / run_id
    model_dir.mkdir(parents=True, exist_ok=True)
    registry.record_decision(
        GateDecision(
            decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
            passed=True,
            summary=f"passed ({run_id})",
            challenger=_identity(run_id, model_dir, f"kennel-credit-demo:{run_id}"),
            champion=_identity(against, folder / against) if against else None,
            test_rows=100,
            config=GateConfig.model_validate(config or {}).model_dump(),
            checks=[],
        )
    )
    return model_dir


def _evaluation(shadow: ShadowEntry, champion: str, outcome: str) -> ShadowEvaluationRecord:
    return ShadowEvaluationRecord(
        evaluated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        outcome=outcome,
        summary=f"{outcome} in shadow",
        challenger_run_id=shadow.run_id,
        challenger_model_tag=shadow.model_tag,
        model_dir=shadow.model_dir,
        champion_run_id=champion,
        champion_model_tag=f"kennel-credit-demo:{champion}",
        shadow_since=shadow.since,
        decided_at=shadow.decided_at,
        requests=600,
        labelled=400,
    )


def _registry(tmp_path: Path) -> ChampionRegistry:
    return ChampionRegistry(Lake(tmp_path / "lake").dataset(DATASET))


def test_a_shadow_starts_only_beside_the_champion_its_decision_was_against_and_promotes_only_when_passed(tmp_path):
    registry = _registry(tmp_path)
    a = _decide(registry, tmp_path, "a")
    with pytest.raises(PromotionRefused, match="no champion for model a to shadow"):
        registry.start_shadow(a)
    registry.promote(a)
    stale = _decide(registry, tmp_path, "stale", config=SHADOW)  # gated as if there were no champion
    with pytest.raises(PromotionRefused, match="gated against champion \\(none\\)"):
        registry.start_shadow(stale)
    with pytest.raises(PromotionRefused, match="cannot shadow itself"):
        registry.start_shadow(a)

    b = _decide(registry, tmp_path, "b", against="a", config=SHADOW)
    with pytest.raises(PromotionRefused, match="must first pass a shadow evaluation"):
        registry.promote(b)
    version = registry.pointer().version
    shadow = registry.start_shadow(b)
    assert (shadow.run_id, shadow.champion_run_id, shadow.model_tag) == ("b", "a", "kennel-credit-demo:b")
    assert registry.pointer().shadow == shadow and registry.pointer().version == version + 1
    assert registry.start_shadow(b) == shadow and registry.pointer().version == version + 1  # idempotent
    assert registry.history()[-1].event == "shadow_started"

    registry.record_shadow_bento("b", "kennel-credit-demo:bento-b")
    assert registry.pointer().shadow.bento_tag == "kennel-credit-demo:bento-b"
    assert registry.history()[-1].model_dump(include={"event", "run_id", "bento_tag"}) == {
        "event": "shadow_bento",
        "run_id": "b",
        "bento_tag": "kennel-credit-demo:bento-b",
    }
    with pytest.raises(RuntimeError, match="no longer in shadow"):
        registry.record_shadow_bento("a", "kennel-credit-demo:other")

    registry.record_shadow_evaluation(_evaluation(shadow, "a", "pending"))
    with pytest.raises(PromotionRefused, match="is pending, not passed"):
        registry.promote(b)
    registry.record_shadow_evaluation(_evaluation(shadow, "someone-else", "passed"))
    with pytest.raises(PromotionRefused, match="beside champion someone-else.*shadow it again"):
        registry.promote(b)
    passed = _evaluation(shadow, "a", "passed")
    registry.record_shadow_evaluation(passed)
    assert [e.outcome for e in registry.shadow_evaluations()] == ["pending", "passed", "passed"]
    assert registry.shadow_evaluation(b) == passed

    version = registry.pointer().version
    entry = registry.promote(b)
    decision = registry.decisions()[-1]
    assert (entry.run_id, entry.decided_at, entry.decision_summary) == ("b", decision.decided_at, "passed (b)")
    assert (entry.shadow_evaluated_at, entry.shadow_summary) == (passed.evaluated_at, "passed in shadow")
    pointer = registry.pointer()
    assert pointer.shadow is None and pointer.current == entry and pointer.version == version + 2
    ended, promoted = registry.history()[-2:]
    assert (ended.event, ended.run_id, ended.outcome) == ("shadow_ended", "b", "promoted")
    assert (promoted.event, promoted.run_id, promoted.replaced) == ("promoted", "b", "a")
    assert (promoted.decided_at, promoted.shadow_evaluated_at) == (decision.decided_at, passed.evaluated_at)


def test_a_rollback_ends_the_shadow_in_the_same_pointer_write(tmp_path):
    registry = _registry(tmp_path)
    registry.promote(_decide(registry, tmp_path, "a"))
    registry.promote(_decide(registry, tmp_path, "b", against="a"))
    registry.start_shadow(_decide(registry, tmp_path, "c", against="b", config=SHADOW))
    version = registry.pointer().version

    restored = registry.rollback("b misbehaves")
    pointer = registry.pointer()
    assert restored.run_id == "a" and pointer.current.run_id == "a" and pointer.shadow is None
    assert pointer.version == version + 2
    ended, rolled_back = registry.history()[-2:]
    assert (ended.event, ended.run_id, ended.outcome) == ("shadow_ended", "c", "rolled_back")
    assert (rolled_back.event, rolled_back.run_id, rolled_back.replaced) == ("rolled_back", "a", "b")
    with pytest.raises(PromotionRefused, match="gated against champion b.*now a"):  # c's decision is stale now
        registry.start_shadow(tmp_path / "c")


def test_a_new_champion_ends_a_stale_shadow_and_a_judged_shadow_is_not_started_again(tmp_path):
    registry = _registry(tmp_path)
    registry.promote(_decide(registry, tmp_path, "a"))
    b = _decide(registry, tmp_path, "b", against="a", config=SHADOW)
    registry.start_shadow(b)
    registry.start_shadow(c := _decide(registry, tmp_path, "c", against="a", config=SHADOW))  # replaces b's shadow
    ended, started = registry.history()[-2:]
    assert (ended.run_id, ended.outcome, started.event, started.run_id, started.replaced) == (
        "b",
        "replaced",
        "shadow_started",
        "c",
        "b",
    )
    assert registry.end_shadow("rejected", "judged", run_id="b") is None  # b no longer shadows: c stays
    assert registry.pointer().shadow.run_id == "c"
    assert registry.end_shadow("rejected", "worse on live traffic").run_id == "c"
    assert registry.pointer().shadow is None and registry.history()[-1].outcome == "rejected"
    assert registry.end_shadow("expired") is None
    with pytest.raises(PromotionRefused, match="shadow ended rejected.*worse on live traffic"):
        registry.start_shadow(c)

    registry.start_shadow(b)  # b's shadow was replaced, not judged: it may shadow again
    registry.promote(_decide(registry, tmp_path, "d", against="a"))  # a champion from elsewhere (no shadow asked)
    pointer = registry.pointer()
    assert pointer.current.run_id == "d" and pointer.shadow is None
    assert [(e.event, e.run_id, e.outcome) for e in registry.history()[-2:]] == [
        ("shadow_ended", "b", "replaced"),
        ("promoted", "d", None),
    ]


# --- the comparison -----------------------------------------------------------------------------------


def test_agreement_and_score_psi_on_constructed_scores():
    assert agreement(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])) == 0.75
    assert agreement(np.array([]), np.array([])) is None
    rng = np.random.default_rng(0)
    champion = rng.random(10_000)
    assert score_psi(champion, champion) == 0.0
    # Every challenger score in the champion's lowest decile: PSI of shares [1, 0 …] against [0.1 …].
    low = champion[champion < np.quantile(champion, 0.1)]
    expected = 0.9 * np.log(1 / 0.1) + 9 * (EPS - 0.1) * np.log(EPS / 0.1)
    assert score_psi(champion, low) == pytest.approx(expected, rel=1e-3)
    assert 0 < score_psi(champion, np.clip(champion + 0.05, 0, 1)) < 0.2 < score_psi(champion, champion**3)
    assert score_psi(np.array([]), champion) is None


def _entries(since: datetime) -> tuple[ShadowEntry, ChampionEntry]:
    shadow = ShadowEntry(
        run_id="b",
        model_dir="/models/b",
        model_tag="kennel-credit-demo:b",
        since=since.isoformat(timespec="seconds"),
        decided_at="2026-01-01T00:00:00+00:00",
        champion_run_id="a",
    )
    champion = ChampionEntry(
        run_id="a", model_dir="/models/a", model_tag="kennel-credit-demo:a", since="", reason="", event="promoted"
    )
    return shadow, champion


def _traffic(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, labelled: int) -> pd.DataFrame:
    label = y.astype(float)
    label[labelled:] = np.nan
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(len(y))],
            "predicted_at": pd.Timestamp("2026-01-02", tz="UTC"),
            "champion_probability": champion,
            "champion_label": (champion >= 0.5).astype(np.int8),
            "challenger_probability": challenger,
            "challenger_label": (challenger >= 0.5).astype(np.int8),
            "label": label,
        }
    )


def test_a_shadow_waits_for_labels_and_requests_then_expires_without_a_verdict():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 600)
    champion = 1 / (1 + np.exp(-(y + rng.normal(0, 1.5, 600))))
    challenger = 1 / (1 + np.exp(-(y + rng.normal(0, 0.7, 600))))
    config = GateConfig.model_validate({**SHADOW, "shadow_min_requests": 500, "shadow_min_labelled": 300})
    now = datetime(2026, 1, 10, tzinfo=UTC)
    shadow, champ = _entries(now - timedelta(days=2))

    few_labels = evaluate_shadow(_traffic(y, champion, challenger, 299), config, shadow, champ, now=now)
    assert (few_labels.outcome, few_labels.requests, few_labels.labelled, few_labels.bootstrap) == (
        "pending",
        600,
        299,
        None,
    )
    assert "299/300 labelled" in few_labels.summary and few_labels.agreement is not None
    few_requests = evaluate_shadow(_traffic(y[:499], champion[:499], challenger[:499], 499), config, shadow, champ)
    assert few_requests.outcome in ("pending", "expired") and few_requests.bootstrap is None
    one_class = evaluate_shadow(_traffic(np.zeros(600, int), champion, challenger, 600), config, shadow, champ, now=now)
    assert one_class.outcome == "pending" and "one label value only" in one_class.summary

    passed = evaluate_shadow(_traffic(y, champion, challenger, 300), config, shadow, champ, now=now)
    assert passed.outcome == "passed" and passed.bootstrap["lower_bound"] > 0
    assert passed.metrics["challenger"]["roc_auc"] > passed.metrics["champion"]["roc_auc"]
    assert passed.thresholds["shadow_min_labelled"] == 300 and passed.thresholds["bootstrap_samples"] == 200
    rejected = evaluate_shadow(_traffic(y, challenger, champion, 300), config, shadow, champ, now=now)
    assert rejected.outcome == "rejected" and rejected.bootstrap["lower_bound"] <= 0

    old_shadow, _ = _entries(now - timedelta(days=7, hours=1))
    expired = evaluate_shadow(_traffic(y, champion, challenger, 10), config, old_shadow, champ, now=now)
    assert expired.outcome == "expired" and "after 7.0 of 7 days" in expired.summary


def test_on_the_same_rows_the_shadow_bootstrap_equals_the_offline_gates(tmp_path):
    from kennel.model import Model, ModelCard
    from kennel.training.config import TrainConfig
    from kennel.training.gate import Candidate, decide
    from kennel.training.trainer import train_model
    from tests.training_data import training_frame

    spec = load_spec(DEFAULT_SPEC_PATH)
    train, validation, test = (training_frame(spec, f"2026-01-0{i}", n, i) for i, n in ((1, 1500), (2, 500), (3, 800)))

    def candidate(run_id: str, rows: int) -> Candidate:
        model, result = train_model(
            ModelCard.for_spec(spec), train[:rows], validation, TrainConfig(device="cpu", nthread=1, n_estimators=60)
        )
        folder = tmp_path / run_id
        folder.mkdir()
        Model(model.booster, ModelCard.for_spec(spec, threshold=result.threshold, run_id=run_id)).save(
            folder, spec.resolved_yaml()
        )
        return Candidate(run_id, folder, f"kennel-credit-demo:{run_id}")

    champion, challenger = candidate("a", 300), candidate("b", 1500)
    config = GateConfig.model_validate(
        {**SHADOW, "shadow_min_requests": len(test), "shadow_min_labelled": len(test), "latency_samples": 20}
    )
    decision = decide(challenger, champion, test, [], config)
    assert decision.bootstrap is not None

    champion_scores, challenger_scores = champion.scores(test), challenger.scores(test)
    traffic = _traffic(test["label"].to_numpy(), champion_scores, challenger_scores, len(test))
    traffic["champion_label"] = (champion_scores >= champion.card.threshold).astype(np.int8)
    traffic["challenger_label"] = (challenger_scores >= challenger.card.threshold).astype(np.int8)
    shadow, champ = _entries(datetime.now(UTC))
    record = evaluate_shadow(traffic, GateConfig.model_validate(decision.config), shadow, champ)
    assert record.bootstrap == decision.bootstrap  # every number, exactly
    assert record.outcome == ("passed" if decision.bootstrap["lower_bound"] > 0 else "rejected")
    assert record.metrics["challenger"]["roc_auc"] == pytest.approx(
        decision.challenger_evaluation.metrics["roc_auc"], abs=1e-12
    )


# --- the asset on a real Dagster instance --------------------------------------------------------------


def _write_logs(data, spec, rows: pd.DataFrame, champion_tag: str, shadow_tag: str) -> None:
    """Served requests in the prediction log, the shadow's scores in the shadow log, outcomes in the
    feedback log, each as the service's writers lay them out (one Parquet part per flush)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kennel.serving.prediction_log import prediction_schema, shadow_schema

    day = rows["predicted_at"].iloc[0].strftime("%Y-%m-%d")
    served = pa.Table.from_pandas(
        rows.assign(
            model_tag=champion_tag, endpoint="predict", warnings=None, probability=rows["champion_probability"]
        ).rename(columns={"champion_label": "predicted_label", "record_id": spec.id_column}),
        preserve_index=False,
    )
    schema = prediction_schema(spec)
    columns = [f for f in schema if f.name in served.column_names]
    shadowed = rows.assign(
        model_tag=shadow_tag,
        champion_model_tag=champion_tag,
        endpoint="predict",
        probability=rows["challenger_probability"],
        predicted_label=rows["challenger_label"],
    )
    feedback = rows[rows["label"].notna()]
    for folder, table in (
        (data.predictions_dir(), served.select([f.name for f in columns]).cast(pa.schema(columns))),
        (data.shadow_predictions_dir(), pa.Table.from_pandas(shadowed[shadow_schema().names], schema=shadow_schema())),
        (
            data.feedback_dir(),
            pa.table(
                {
                    "request_id": feedback["request_id"],
                    "actual_label": feedback["label"].astype(np.int8),
                    "feedback_at": feedback["predicted_at"],
                }
            ),
        ),
    ):
        target = day_partition(folder, day)
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target / f"part-{len(list(target.iterdir()))}.parquet")


def test_the_shadow_evaluation_asset_waits_then_promotes_the_challenger(tmp_path):
    import dagster as dg
    import pyarrow as pa
    import pyarrow.parquet as pq

    from assets.graph import DatasetGraph
    from assets.serving import build_serving_assets
    from assets.shadow import build_shadow_assets
    from resources.lake import LakeResource

    spec = load_spec(DEFAULT_SPEC_PATH)
    lake = LakeResource(root=str(tmp_path / "lake"))
    data = lake.dataset(spec.name)
    registry = ChampionRegistry(data)
    graph = DatasetGraph(spec.name)
    [asset] = build_shadow_assets(spec, graph)
    champion_asset = next(a for a in build_serving_assets(spec, graph) if a.key == graph.champion)

    def materialize(instance, target=asset) -> dict:
        result = dg.materialize([target], instance=instance, resources={"lake": lake})
        assert result.success
        [event] = result.get_asset_materialization_events()
        return {k: v.value for k, v in event.materialization.metadata.items()}

    def evaluated(instance, model_dir: Path) -> None:  # what the model_evaluation asset reports
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=graph.evaluation, metadata={"model_dir": str(model_dir)})
        )

    with dg.instance_for_test() as instance:
        assert materialize(instance)["outcome"] == "no shadow"
        evaluated(instance, _decide(registry, tmp_path, "a", config=SHADOW))
        assert materialize(instance, champion_asset)["action"] == "promoted"  # no champion to shadow
        evaluated(instance, _decide(registry, tmp_path, "b", against="a", config=SHADOW))
        started = materialize(instance, champion_asset)
        assert (started["action"], started["run_id"], started["shadow_run_id"]) == ("shadow_started", "a", "b")

        rng = np.random.default_rng(7)
        n = 200
        y = rng.integers(0, 2, n)
        champion = 1 / (1 + np.exp(-(y + rng.normal(0, 1.5, n))))
        challenger = 1 / (1 + np.exp(-(y + rng.normal(0, 0.6, n))))
        rows = _traffic(y, champion, challenger, 50).assign(
            predicted_at=pd.Timestamp.now(tz="UTC").floor("s") + pd.Timedelta(seconds=1),
            record_id=[f"id-{i}" for i in range(n)],
        )
        _write_logs(data, spec, rows, "kennel-credit-demo:a", "kennel-credit-demo:b")
        # Scores of another pair of models, and requests only one log has, are not compared.
        _write_logs(data, spec, rows.assign(request_id=rows["request_id"] + "-x"), "kennel-credit-demo:z", "other")
        pending = materialize(instance)
        assert (pending["outcome"], pending["rows"], pending["labelled"]) == ("pending", n, 50)
        assert pending["agreement"] == pytest.approx(float(np.mean((champion >= 0.5) == (challenger >= 0.5))))
        assert "bootstrap_lower_bound" not in pending and registry.pointer().shadow.run_id == "b"

        # The rest of the outcomes arrive (the same requests' feedback, written later): the verdict comes.
        late = rows.iloc[50:150].assign(label=y[50:150].astype(float))
        feedback_dir = day_partition(data.feedback_dir(), rows["predicted_at"].iloc[0].strftime("%Y-%m-%d"))
        pq.write_table(
            pa.table(
                {
                    "request_id": late["request_id"],
                    "actual_label": late["label"].astype(np.int8),
                    "feedback_at": late["predicted_at"],
                }
            ),
            feedback_dir / "part-late.parquet",
        )
        verdict = materialize(instance)
        assert (verdict["outcome"], verdict["rows"], verdict["labelled"]) == ("passed", n, 150)
        assert verdict["bootstrap_lower_bound"] > 0 and verdict["action"] == "promoted b to champion"
        pointer = registry.pointer()
        assert pointer.current.run_id == "b" and pointer.shadow is None
        assert pointer.current.shadow_evaluated_at == verdict["evaluated_at"]
        assert materialize(instance)["outcome"] == "no shadow"
        assert materialize(instance, champion_asset)["action"] == "promoted"  # b is champion already: no shadow again
        assert registry.pointer().shadow is None and registry.pointer().version == pointer.version


def test_the_bento_sensor_repackages_when_a_shadow_starts_or_ends(tmp_path):
    import dagster as dg

    from assets.graph import DatasetGraph
    from resources.lake import LakeResource
    from sensors.promotion import build_bento_sensor

    spec = load_spec(DEFAULT_SPEC_PATH)
    graph = DatasetGraph(spec.name)
    lake = LakeResource(root=str(tmp_path / "lake"))
    registry = ChampionRegistry(lake.dataset(spec.name))
    sensor = build_bento_sensor(spec, graph, dg.define_asset_job("package", selection=[graph.bento]))

    def tick(instance, cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}) as ctx:
            return sensor(ctx), ctx.cursor

    def served(instance, **shadow):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=graph.bento, metadata={"model_tag": "kennel-credit-demo:a", **shadow})
        )

    with dg.instance_for_test() as instance:
        registry.promote(_decide(registry, tmp_path, "a"))
        served(instance)
        answer, cursor = tick(instance, None)
        assert isinstance(answer, dg.SkipReason) and "already serves champion a" in answer.skip_message
        registry.start_shadow(_decide(registry, tmp_path, "b", against="a", config=SHADOW))
        answer, cursor = tick(instance, cursor)
        assert isinstance(answer, dg.RunRequest) and answer.run_key == f"champion-v{registry.pointer().version}"
        served(instance, shadow_model_tag="kennel-credit-demo:b")
        registry.record_shadow_bento("b", "kennel-credit-demo:bento-ab")  # what the bento asset records
        answer, cursor = tick(instance, cursor)
        assert isinstance(answer, dg.SkipReason) and "with shadow b" in answer.skip_message
        registry.end_shadow("rejected", "worse on live traffic")
        answer, cursor = tick(instance, cursor)
        assert isinstance(answer, dg.RunRequest)  # back to the champion alone
