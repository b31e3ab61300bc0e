"""The champion pointer: promotion only with a passing, current gate decision; history; rollback (API and CLI)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.lake import Lake, read_model_record
from kennel.lake.champion import (
    ChampionRegistry,
    NothingToRollBack,
    PromotionRefused,
    bento_name,
)
from kennel.lake.records import ChampionEvent, GateDecision, ModelIdentity
from kennel.spec import PROJECT_ROOT

DATASET = "credit_demo"


def _identity(run_id: str, model_dir: Path, model_tag: str | None = None) -> ModelIdentity:
    return ModelIdentity(
        run_id=run_id, model_tag=model_tag, model_dir=str(model_dir), spec_fingerprint="test", threshold=0.5
    )


def _gate_decision(
    run_id: str,
    model_dir: Path,
    model_tag: str | None,
    *,
    passed: bool = True,
    against: str | None = None,
    summary: str | None = None,
) -> GateDecision:
    """A gate decision record as kennel.training.gate writes it (unit level: the gate itself is tested in test_gate)."""
    return GateDecision(
        decided_at="2026-01-01T00:00:00+00:00",
        passed=passed,
        summary=summary or f"{'passed' if passed else 'rejected'} ({run_id})",
        reasons=[] if passed else ["roc_auc worse"],
        challenger=_identity(run_id, model_dir, model_tag),
        champion=_identity(against, model_dir.parent / against) if against else None,
        test_rows=100,
        config={},
        checks=[],
        challenger_evaluation={"metrics": {"roc_auc": 0.8}},
    )


def _decide(
    registry: ChampionRegistry, model_dir: Path, run_id: str, *, passed: bool = True, against: str | None = None
) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    registry.record_decision(
        _gate_decision(run_id, model_dir, f"kennel-credit-demo:{run_id}", passed=passed, against=against)
    )


def _registry(tmp_path: Path) -> ChampionRegistry:
    return ChampionRegistry(Lake(tmp_path / "lake").dataset(DATASET))


def test_promotion_needs_a_passing_decision_against_the_current_champion(tmp_path):
    registry = _registry(tmp_path)
    with pytest.raises(PromotionRefused, match="no gate decision"):
        registry.promote(tmp_path / "ungated")

    _decide(registry, tmp_path / "a", "a")
    first = registry.promote(tmp_path / "a")
    assert (first.run_id, first.event, first.reason) == ("a", "promoted", "passed (a)")

    _decide(registry, tmp_path / "b", "b", passed=False, against="a")
    with pytest.raises(PromotionRefused, match="failed its gate"):
        registry.promote(tmp_path / "b")
    _decide(registry, tmp_path / "c", "c", against=None)  # gated as if there were no champion: stale
    with pytest.raises(PromotionRefused, match="gated against champion \\(none\\).*now a"):
        registry.promote(tmp_path / "c")
    assert registry.current().run_id == "a"

    _decide(registry, tmp_path / "d", "d", against="a")
    assert registry.promote(tmp_path / "d", reason="weekly retrain").reason == "weekly retrain"
    assert registry.promote(tmp_path / "d").run_id == "d"  # promoting the champion again changes nothing
    pointer = registry.pointer()
    assert pointer.current.run_id == "d" and [e.run_id for e in pointer.previous] == ["a"]
    assert pointer.version == 2
    assert [(e.event, e.run_id, e.replaced) for e in registry.history()] == [
        ("promoted", "a", None),
        ("promoted", "d", "a"),
    ]
    assert all(isinstance(e, ChampionEvent) for e in registry.history())
    assert [(d.challenger.run_id, d.passed) for d in registry.decisions()] == [
        ("a", True),
        ("b", False),
        ("c", True),
        ("d", True),
    ]
    kept = read_model_record(tmp_path / "d", GateDecision)  # the decision is kept with its model, too
    assert kept is not None and kept.passed is True and kept.challenger.run_id == "d"
    assert sorted(p.name for p in registry.folder.iterdir()) == [
        ".lock",
        "champion.json",
        "decisions.jsonl",
        "history.jsonl",
    ]  # no half-written temp files


def test_rollback_returns_to_the_previous_champion_and_is_recorded(tmp_path):
    registry = _registry(tmp_path)
    with pytest.raises(NothingToRollBack, match="no champion at all"):
        registry.rollback()
    _decide(registry, tmp_path / "a", "a")
    registry.promote(tmp_path / "a")
    registry.record_bento("a", "kennel-credit-demo:bento-a")
    _decide(registry, tmp_path / "b", "b", against="a")
    registry.promote(tmp_path / "b")

    restored = registry.rollback("b misbehaves in production")
    assert (restored.run_id, restored.event, restored.reason) == ("a", "rolled_back", "b misbehaves in production")
    assert restored.bento_tag == "kennel-credit-demo:bento-a"  # its Bento comes back with it
    assert registry.pointer().previous == []
    last = registry.history()[-1]
    assert last.at == restored.since
    assert last.model_dump(exclude={"at"}) == {
        "version": 4,
        "event": "rolled_back",
        "run_id": "a",
        "model_tag": "kennel-credit-demo:a",
        "replaced": "b",
        "reason": "b misbehaves in production",
        "decided_at": None,
        "bento_tag": None,
        "outcome": None,
        "shadow_evaluated_at": None,
        "shadow_summary": None,
    }
    with pytest.raises(NothingToRollBack, match="current: a"):
        registry.rollback()
    # b's old passing decision was against a, the champion again, but a rollback overrules it.
    with pytest.raises(PromotionRefused, match="was rolled back"):
        registry.promote(tmp_path / "b")


def _stored_model(spec, tmp: Path, run_id: str, seed: int) -> Path:
    """A small real model folder saved into the real model store; returns the folder."""
    from kennel.demo import generate_frame
    from kennel.model import MODEL_FILE, Model, ModelCard
    from kennel.training.config import TrainConfig
    from kennel.training.trainer import train_model

    def frame(day: str, rows: int, s: int) -> pd.DataFrame:
        f = generate_frame(spec, pd.Timestamp(day).date(), rows, np.random.default_rng(s))
        return f.assign(label=(f[spec.label.column].astype(str) == str(spec.label.positive)).astype(int))

    model, result = train_model(
        ModelCard.for_spec(spec),
        frame("2026-01-01", 600, seed),
        frame("2026-01-02", 300, seed + 1),
        TrainConfig(device="cpu", n_estimators=20),
    )
    folder = tmp / run_id
    folder.mkdir()
    Model(model.booster, ModelCard.for_spec(spec, threshold=result.threshold, run_id=run_id)).save(
        folder, spec.resolved_yaml()
    )
    assert (folder / MODEL_FILE).is_file()
    return folder


def test_rollback_command_restores_the_previous_champion_and_its_bento(tmp_path):
    import bentoml

    from kennel.serving.champion import ensure_bento
    from kennel.serving.model_store import save_model
    from kennel.spec import DEFAULT_SPEC_PATH, load_spec

    spec = load_spec(DEFAULT_SPEC_PATH)
    lake = tmp_path / "lake"
    registry = ChampionRegistry(Lake(lake).dataset(spec.name))
    bentos = {}
    against = None
    for run_id, seed in (("first", 1), ("second", 5)):
        folder = _stored_model(spec, tmp_path, run_id, seed)
        tag = save_model(folder, name=bento_name(spec.name), labels={"run_id": run_id}, metadata={})
        registry.record_decision(_gate_decision(run_id, folder, tag, against=against, summary=f"{run_id} passed"))
        registry.promote(folder)
        entry, built = ensure_bento(registry, Lake(lake))
        assert built and [str(m.tag) for m in bentoml.bentos.get(entry.bento_tag).info.all_models] == [tag]
        assert ensure_bento(registry, Lake(lake)) == (entry, False)  # the recorded Bento is reused
        bentos[run_id] = (tag, entry.bento_tag)
        against = run_id

    bentoml.bentos.delete(bentos["first"][1])  # the old Bento was cleaned up meanwhile: rollback rebuilds it
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kennel.serving.champion",
            "rollback",
            "--lake",
            str(lake),
            "--dataset",
            spec.name,
            "--reason",
            "second is miscalibrated",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    current = registry.current()
    assert (current.run_id, current.model_tag, current.reason) == (
        "first",
        bentos["first"][0],
        "second is miscalibrated",
    )
    assert current.bento_tag != bentos["first"][1]
    assert [str(m.tag) for m in bentoml.bentos.get(current.bento_tag).info.all_models] == [bentos["first"][0]]
    assert current.bento_tag in out.stdout and "built" in out.stdout
    assert [e.event for e in registry.history()] == ["promoted", "bento", "promoted", "bento", "rolled_back", "bento"]

    again = subprocess.run(
        [sys.executable, "-m", "kennel.serving.champion", "rollback", "--lake", str(lake), "--dataset", spec.name],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert again.returncode == 1 and "no earlier champion" in again.stderr


def test_the_champion_gate_and_distributed_modules_do_not_import_dagster_or_heavy_libraries():
    # The champion registry and its CLI, the gate, the trainer and the distributed trainer (library and CLI)
    # run outside Dagster (shells, driver processes): importing them must not load Dagster, and the
    # libraries that cost seconds to import are loaded only when used.
    modules = (
        "kennel.lake.champion",
        "kennel.serving.champion",
        "kennel.training.gate",
        "kennel.training.trainer",
        "kennel.model.distributed",
        "kennel.training.distributed",
    )
    code = (
        f"import sys, {', '.join(modules)}; "
        "print(','.join(m for m in ('dagster', 'bentoml', 'pyspark', 'xgboost') if m in sys.modules) or '-')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "-"


def test_the_sensor_repackages_when_the_champion_changes_outside_dagster(tmp_path):
    import dagster as dg

    from definitions import build_definitions
    from resources.lake import LakeResource

    lake = LakeResource(root=str(tmp_path / "lake"))
    defs = build_definitions(resources={"lake": lake})
    registry = ChampionRegistry(lake.dataset(DATASET))
    sensor = defs.resolve_sensor_def("bento_follows_champion")

    def tick(instance, cursor=None):
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
        ) as ctx:
            return sensor(ctx), ctx.cursor

    with dg.instance_for_test() as instance:
        answer, _ = tick(instance)
        assert isinstance(answer, dg.SkipReason) and "no champion yet" in answer.skip_message
        _decide(registry, tmp_path / "a", "a")
        registry.promote(tmp_path / "a")
        _decide(registry, tmp_path / "b", "b", against="a")
        registry.promote(tmp_path / "b")
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="bento", metadata={"model_tag": "kennel-credit-demo:b"})
        )
        answer, cursor = tick(instance)
        assert isinstance(answer, dg.SkipReason) and "already serves" in answer.skip_message

        registry.rollback("from a shell")  # what `python -m kennel.serving.champion rollback` does to the pointer
        answer, cursor = tick(instance, cursor)
        assert isinstance(answer, dg.RunRequest) and answer.run_key == "champion-v3"
        assert answer.tags["kennel/champion"] == "a"
        assert isinstance(tick(instance, cursor)[0], dg.SkipReason)  # the same pointer is not handled twice
