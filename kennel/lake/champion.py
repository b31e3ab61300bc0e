"""The champion: which model is served for a data set, since when and why, with its full history.

Files, in the data set's registry folder of the lake (kennel.lake):

    champion.json     ChampionPointer: the current champion and the stack of earlier ones (rollback)
    history.jsonl     ChampionEvent per change, append-only: promoted, rolled_back, bento
    decisions.jsonl   GateDecision per gate run, passed or not (also in the model folder)

Promotion only goes through the gate: `promote` reads the model folder's gate decision and refuses
unless it passed against the champion that is current now. Writes hold a file lock and replace
champion.json atomically, so a reader (the Bento asset, a sensor) sees the old or the new pointer,
never half of one. The command line is kennel.serving.champion.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from kennel.lake import (
    DatasetLake,
    append_lines,
    exclusive,
    read_lines,
    read_model_record,
    read_record,
    write_atomically,
)
from kennel.lake.faults import crash_point
from kennel.lake.records import (
    ChampionEntry,
    ChampionEvent,
    ChampionPointer,
    GateDecision,
)

_HISTORY_APPENDED = crash_point(
    "champion.history_appended", "the change is in history.jsonl; champion.json still names the previous champion"
)

POINTER_FILE = "champion.json"
HISTORY_FILE = "history.jsonl"
DECISIONS_FILE = "decisions.jsonl"


class PromotionRefused(RuntimeError):
    """A model may not become champion: no passing gate decision against the current champion."""


class NothingToRollBack(RuntimeError):
    """There is no earlier champion to return to."""


def bento_name(dataset: str) -> str:
    """The BentoML model and Bento name of a data set's models."""
    return f"kennel-{dataset}".replace("_", "-")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ChampionRegistry:
    """The champion pointer and history of one data set in one lake."""

    def __init__(self, dataset: DatasetLake):
        self.dataset = dataset.name
        self.folder = dataset.registry_dir()

    # --- reading -----------------------------------------------------------------------------------

    @property
    def pointer_file(self) -> Path:
        return self.folder / POINTER_FILE

    def pointer(self) -> ChampionPointer:
        return read_record(self.pointer_file, ChampionPointer) or ChampionPointer(dataset=self.dataset)

    def current(self) -> ChampionEntry | None:
        return self.pointer().current

    def history(self) -> list[ChampionEvent]:
        """Every committed change, oldest first. A line whose pointer swap never happened (a crash between
        the two writes) is not history: lines beyond the pointer's version are left out, and where a
        later change reused a version, its line wins."""
        limit = self.pointer().version
        by_version = {e.version: e for e in read_lines(self.folder / HISTORY_FILE, ChampionEvent) if e.version <= limit}
        return [by_version[v] for v in sorted(by_version)]

    def decisions(self) -> list[GateDecision]:
        return read_lines(self.folder / DECISIONS_FILE, GateDecision)

    # --- writing -----------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[ChampionPointer]:
        with exclusive(self.folder / ".lock"):
            yield self.pointer()

    def _save(self, pointer: ChampionPointer, event: ChampionEvent) -> ChampionPointer:
        """Log the event, then swap the pointer: the pointer is the truth, the history its account."""
        pointer = pointer.model_copy(update={"version": event.version, "updated_at": event.at})
        append_lines(self.folder / HISTORY_FILE, [event])
        _HISTORY_APPENDED()
        write_atomically(self.pointer_file, pointer.model_dump_json(indent=2))
        return pointer

    def record_decision(self, decision: GateDecision) -> None:
        """Keep a gate decision with the model (what `promote` reads) and in the data set's log."""
        from kennel.lake import write_model_record

        write_model_record(Path(decision.challenger.model_dir), decision)
        with self._locked():
            append_lines(self.folder / DECISIONS_FILE, [decision])

    def promote(self, model_dir: str | Path, reason: str = "") -> ChampionEntry:
        """Make the model in `model_dir` champion; only with a passing gate decision against the
        champion that is current now (a decision against an older champion is stale)."""
        model_dir = Path(model_dir)
        decision = read_model_record(model_dir, GateDecision)
        if decision is None:
            raise PromotionRefused(f"{model_dir} has no gate decision; run the promotion gate first")
        challenger = decision.challenger
        if not decision.passed:
            raise PromotionRefused(f"model {challenger.run_id} failed its gate: {decision.summary}")
        if not challenger.model_tag:
            raise PromotionRefused(f"model {challenger.run_id} is not in the model store (no model tag)")
        with self._locked() as pointer:
            current_run = pointer.current.run_id if pointer.current else None
            if current_run == challenger.run_id:
                return pointer.current  # type: ignore[return-value]
            decided_against = decision.champion.run_id if decision.champion else None
            if decided_against != current_run:
                raise PromotionRefused(
                    f"model {challenger.run_id} was gated against champion {decided_against or '(none)'}, but the "
                    f"champion is now {current_run or '(none)'}: run the gate again"
                )
            # A rollback is someone's judgement that the model should not serve; its old decision does not overrule it.
            rolled_back = [e for e in self.history() if e.event == "rolled_back" and e.replaced == challenger.run_id]
            if rolled_back:
                raise PromotionRefused(
                    f"model {challenger.run_id} was rolled back at {rolled_back[-1].at} "
                    f"({rolled_back[-1].reason}); train a new challenger"
                )
            evaluation = decision.challenger_evaluation
            entry = ChampionEntry(
                run_id=challenger.run_id,
                model_dir=challenger.model_dir,
                model_tag=challenger.model_tag,
                since=_now(),
                reason=reason or decision.summary,
                event="promoted",
                decision_summary=decision.summary,
                metrics=evaluation.metrics if evaluation else {},
            )
            previous = [*pointer.previous, pointer.current] if pointer.current else pointer.previous
            self._save(
                pointer.model_copy(update={"current": entry, "previous": previous}),
                ChampionEvent(
                    version=pointer.version + 1,
                    event="promoted",
                    at=entry.since,
                    run_id=entry.run_id,
                    model_tag=entry.model_tag,
                    replaced=current_run,
                    reason=entry.reason,
                    decided_at=decision.decided_at,
                ),
            )
        return entry

    def rollback(self, reason: str = "") -> ChampionEntry:
        """Make the previous champion current again (the rolled-back one leaves the stack)."""
        with self._locked() as pointer:
            if pointer.current is None or not pointer.previous:
                raise NothingToRollBack(
                    f"{self.dataset}: no earlier champion to roll back to"
                    + (f" (current: {pointer.current.run_id})" if pointer.current else " (no champion at all)")
                )
            restored = pointer.previous[-1].model_copy(
                update={
                    "since": _now(),
                    "event": "rolled_back",
                    "reason": reason or f"rollback from {pointer.current.run_id}",
                }
            )
            self._save(
                pointer.model_copy(update={"current": restored, "previous": pointer.previous[:-1]}),
                ChampionEvent(
                    version=pointer.version + 1,
                    event="rolled_back",
                    at=restored.since,
                    run_id=restored.run_id,
                    model_tag=restored.model_tag,
                    replaced=pointer.current.run_id,
                    reason=restored.reason,
                ),
            )
        return restored

    def record_bento(self, run_id: str, bento_tag: str) -> None:
        """Remember the Bento built for champion `run_id` (it stays with the entry through rollbacks)."""
        with self._locked() as pointer:
            if pointer.current is None or pointer.current.run_id != run_id:
                raise RuntimeError(f"{run_id} is no longer champion; its Bento is not recorded")
            if pointer.current.bento_tag == bento_tag:
                return
            current = pointer.current.model_copy(update={"bento_tag": bento_tag})
            self._save(
                pointer.model_copy(update={"current": current}),
                ChampionEvent(
                    version=pointer.version + 1,
                    event="bento",
                    at=_now(),
                    run_id=run_id,
                    model_tag=current.model_tag,
                    bento_tag=bento_tag,
                ),
            )
