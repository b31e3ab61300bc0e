"""The champion: which model is served for a data set, since when and why, with its full history.

Layout in the lake, under <lake>/registry/<dataset>/:

    champion.json     the current champion and the stack of earlier ones (what rollback returns to)
    history.jsonl     every event, append-only: promoted, rolled_back, bento
    decisions.jsonl   every gate decision, passed or not (also gate_decision.json in the model folder)

Promotion only goes through the gate: `promote` reads the model folder's gate decision and refuses
unless it passed against the champion that is current now. Writes hold a file lock and replace
champion.json atomically, so a reader (the Bento asset, a sensor) sees the old or the new pointer,
never half of one.

Command line (no Dagster needed):

    python -m kennel.champion show     [--dataset NAME] [--lake PATH]
    python -m kennel.champion history  [--dataset NAME] [--lake PATH]
    python -m kennel.champion rollback [--dataset NAME] [--lake PATH] [--reason TEXT]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from kennel.spec import PROJECT_ROOT

REGISTRY_DIR = "registry"
POINTER_FILE = "champion.json"
HISTORY_FILE = "history.jsonl"
DECISIONS_FILE = "decisions.jsonl"
DECISION_FILE = "gate_decision.json"  # in the challenger's model folder
# Where the embedded defaults put the lake and the BentoML home (the same as resources/ uses).
DEFAULT_LAKE = PROJECT_ROOT / ".kennel" / "lake"
DEFAULT_BENTOML_HOME = PROJECT_ROOT / ".kennel" / "bentoml"


class PromotionRefused(RuntimeError):
    """A model may not become champion: no passing gate decision against the current champion."""


class NothingToRollBack(RuntimeError):
    """There is no earlier champion to return to."""


class ChampionEntry(BaseModel):
    """One champion: the model, where it is stored, and why it became (or became again) champion."""

    run_id: str
    model_dir: str
    model_tag: str
    since: str
    reason: str
    event: str  # promoted | rolled_back
    decision_summary: str = ""
    metrics: dict[str, Any] = {}
    bento_tag: str | None = None


class Pointer(BaseModel):
    dataset: str
    version: int = 0  # increases with every change: a cheap cursor for sensors
    updated_at: str = ""
    current: ChampionEntry | None = None
    previous: list[ChampionEntry] = []  # earlier champions, most recent last


def bento_name(dataset: str) -> str:
    """The BentoML model and Bento name of a data set's models."""
    return f"kennel-{dataset}".replace("_", "-")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _append_line(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ChampionRegistry:
    """The champion pointer and history of one data set in one lake."""

    def __init__(self, lake_root: str | Path, dataset: str):
        self.dataset = dataset
        self.folder = Path(lake_root).resolve() / REGISTRY_DIR / dataset

    # --- reading -----------------------------------------------------------------------------------

    def pointer(self) -> Pointer:
        path = self.folder / POINTER_FILE
        if not path.is_file():
            return Pointer(dataset=self.dataset)
        return Pointer.model_validate_json(path.read_text())

    def current(self) -> ChampionEntry | None:
        return self.pointer().current

    def history(self) -> list[dict[str, Any]]:
        return self._read_lines(HISTORY_FILE)

    def decisions(self) -> list[dict[str, Any]]:
        return self._read_lines(DECISIONS_FILE)

    def _read_lines(self, name: str) -> list[dict[str, Any]]:
        path = self.folder / name
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []

    # --- writing -----------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[Pointer]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self.pointer()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _save(self, pointer: Pointer, event: dict[str, Any]) -> Pointer:
        """Log the event, then swap the pointer: the pointer is the truth, the history its account."""
        pointer = pointer.model_copy(update={"version": pointer.version + 1, "updated_at": event["at"]})
        _append_line(self.folder / HISTORY_FILE, {"version": pointer.version, **event})
        _write_atomically(self.folder / POINTER_FILE, pointer.model_dump_json(indent=2))
        return pointer

    def record_decision(self, model_dir: str | Path, decision: dict[str, Any]) -> None:
        """Keep a gate decision with the model (what `promote` reads) and in the data set's log."""
        text = json.dumps(decision, indent=2, default=str)
        _write_atomically(Path(model_dir) / DECISION_FILE, text)
        with self._locked():
            _append_line(self.folder / DECISIONS_FILE, decision)

    def promote(self, model_dir: str | Path, reason: str = "") -> ChampionEntry:
        """Make the model in `model_dir` champion; only with a passing gate decision against the
        champion that is current now (a decision against an older champion is stale)."""
        model_dir = Path(model_dir)
        path = model_dir / DECISION_FILE
        if not path.is_file():
            raise PromotionRefused(f"{model_dir} has no gate decision ({DECISION_FILE}); run the promotion gate first")
        decision = json.loads(path.read_text())
        challenger = decision["challenger"]
        if not decision["passed"]:
            raise PromotionRefused(f"model {challenger['run_id']} failed its gate: {decision['summary']}")
        if not challenger.get("model_tag"):
            raise PromotionRefused(f"model {challenger['run_id']} is not in the model store (no model tag)")
        with self._locked() as pointer:
            current_run = pointer.current.run_id if pointer.current else None
            if current_run == challenger["run_id"]:
                return pointer.current  # type: ignore[return-value]
            decided_against = (decision.get("champion") or {}).get("run_id")
            if decided_against != current_run:
                raise PromotionRefused(
                    f"model {challenger['run_id']} was gated against champion {decided_against or '(none)'}, but the "
                    f"champion is now {current_run or '(none)'}: run the gate again")
            # A rollback is someone's judgement that the model should not serve; its old decision does not overrule it.
            rolled_back = [e for e in self.history() if e["event"] == "rolled_back" and e["replaced"] == challenger["run_id"]]
            if rolled_back:
                raise PromotionRefused(f"model {challenger['run_id']} was rolled back at {rolled_back[-1]['at']} "
                                       f"({rolled_back[-1]['reason']}); train a new challenger")
            evaluation = decision.get("challenger_evaluation") or {}
            entry = ChampionEntry(
                run_id=challenger["run_id"], model_dir=challenger["model_dir"], model_tag=challenger["model_tag"],
                since=_now(), reason=reason or decision["summary"], event="promoted",
                decision_summary=decision["summary"], metrics=evaluation.get("metrics", {}),
            )
            previous = [*pointer.previous, pointer.current] if pointer.current else pointer.previous
            self._save(pointer.model_copy(update={"current": entry, "previous": previous}), {
                "event": "promoted", "at": entry.since, "run_id": entry.run_id, "model_tag": entry.model_tag,
                "replaced": current_run, "reason": entry.reason, "decided_at": decision["decided_at"],
            })
        return entry

    def rollback(self, reason: str = "") -> ChampionEntry:
        """Make the previous champion current again (the rolled-back one leaves the stack)."""
        with self._locked() as pointer:
            if pointer.current is None or not pointer.previous:
                raise NothingToRollBack(
                    f"{self.dataset}: no earlier champion to roll back to"
                    + (f" (current: {pointer.current.run_id})" if pointer.current else " (no champion at all)"))
            restored = pointer.previous[-1].model_copy(update={
                "since": _now(), "event": "rolled_back",
                "reason": reason or f"rollback from {pointer.current.run_id}",
            })
            self._save(pointer.model_copy(update={"current": restored, "previous": pointer.previous[:-1]}), {
                "event": "rolled_back", "at": restored.since, "run_id": restored.run_id,
                "model_tag": restored.model_tag, "replaced": pointer.current.run_id, "reason": restored.reason,
            })
        return restored

    def record_bento(self, run_id: str, bento_tag: str) -> None:
        """Remember the Bento built for champion `run_id` (it stays with the entry through rollbacks)."""
        with self._locked() as pointer:
            if pointer.current is None or pointer.current.run_id != run_id:
                raise RuntimeError(f"{run_id} is no longer champion; its Bento is not recorded")
            if pointer.current.bento_tag == bento_tag:
                return
            current = pointer.current.model_copy(update={"bento_tag": bento_tag})
            self._save(pointer.model_copy(update={"current": current}), {
                "event": "bento", "at": _now(), "run_id": run_id, "model_tag": current.model_tag,
                "bento_tag": bento_tag,
            })

    def ensure_bento(self) -> tuple[ChampionEntry, bool]:
        """The current champion with a Bento that serves it: the one recorded if it is still in the
        store, else a new build (labelled like its stored model). Returns (entry, built)."""
        import bentoml

        from kennel.registry import build_bento

        entry = self.current()
        if entry is None:
            raise LookupError(f"{self.dataset} has no champion yet: no model has passed the promotion gate")
        if entry.bento_tag:
            try:
                bentoml.bentos.get(entry.bento_tag)
                return entry, False
            except bentoml.exceptions.NotFound:
                pass
        labels = dict(bentoml.models.get(entry.model_tag).info.labels)
        bento_tag = build_bento(entry.model_tag, bento_name=bento_name(self.dataset), labels=labels)
        self.record_bento(entry.run_id, bento_tag)
        return entry.model_copy(update={"bento_tag": bento_tag}), True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kennel.champion", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["show", "history", "rollback"])
    parser.add_argument("--dataset", help="data-set name (default: the spec in KENNEL_DATASET_SPEC)")
    parser.add_argument("--lake", default=os.environ.get("KENNEL_LAKE_ROOT") or str(DEFAULT_LAKE),
                        help="lake root (default: $KENNEL_LAKE_ROOT or .kennel/lake)")
    parser.add_argument("--reason", default="", help="why (recorded in the history)")
    args = parser.parse_args(argv)
    if args.dataset is None:
        from kennel.spec import load_spec

        args.dataset = load_spec().name
    registry = ChampionRegistry(args.lake, args.dataset)
    if args.command == "show":
        print(registry.pointer().model_dump_json(indent=2))
    elif args.command == "history":
        for event in registry.history():
            print(json.dumps(event))
    else:
        os.environ.setdefault("BENTOML_HOME", str(DEFAULT_BENTOML_HOME))
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
        try:
            restored = registry.rollback(args.reason or "rollback from the command line")
        except NothingToRollBack as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        entry, built = registry.ensure_bento()
        print(f"champion of {args.dataset} is now {restored.run_id} (model {entry.model_tag})")
        print(f"Bento {entry.bento_tag} ({'built' if built else 'already in the store'}); serve it with:")
        print(f"  BENTOML_HOME={os.environ['BENTOML_HOME']} bentoml serve {entry.bento_tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
