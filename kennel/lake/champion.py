"""The champion: which model is served for a data set, since when and why, with its full history.

Files, in the data set's registry folder of the lake (kennel.lake):

    champion.json            ChampionPointer: the current champion, the stack of earlier ones (rollback)
                             and the challenger served in shadow beside the champion, if any
    history.jsonl            ChampionEvent per change, append-only: promoted, rolled_back, bento,
                             shadow_started, shadow_ended, shadow_bento
    decisions.jsonl          GateDecision per gate run, passed or not (also in the model folder)
    shadow_evaluations.jsonl ShadowEvaluationRecord per shadow evaluation (the latest also in the model folder)

Promotion only goes through the gate: `promote` reads the model folder's gate decision and refuses
unless it passed against the champion that is current now; when that decision's gate config asks for a
shadow, also a passed shadow evaluation against that champion. A shadow lives only beside the champion
it started against: promoting any model, or rolling back, ends it in the same pointer write. Writes hold
a file lock and replace champion.json atomically, so a reader (the Bento asset, a sensor) sees the old
or the new pointer, never half of one. The command line is kennel.serving.champion.
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
    ShadowEntry,
    ShadowEvaluationRecord,
    ShadowOutcome,
)

_HISTORY_APPENDED = crash_point(
    "champion.history_appended", "the change is in history.jsonl; champion.json still names the previous champion"
)

POINTER_FILE = "champion.json"
HISTORY_FILE = "history.jsonl"
DECISIONS_FILE = "decisions.jsonl"
SHADOW_EVALUATIONS_FILE = "shadow_evaluations.jsonl"


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

    def shadow_evaluations(self) -> list[ShadowEvaluationRecord]:
        return read_lines(self.folder / SHADOW_EVALUATIONS_FILE, ShadowEvaluationRecord)

    @staticmethod
    def shadow_evaluation(model_dir: str | Path) -> ShadowEvaluationRecord | None:
        """The latest shadow evaluation of the model in `model_dir` (what `promote` reads)."""
        return read_model_record(Path(model_dir), ShadowEvaluationRecord)

    # --- writing -----------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[ChampionPointer]:
        with exclusive(self.folder / ".lock"):
            yield self.pointer()

    def _save(self, pointer: ChampionPointer, *events: ChampionEvent) -> ChampionPointer:
        """Log the events (one change may be two: a shadow ends as a champion changes), then swap the
        pointer: the pointer is the truth, the history its account."""
        pointer = pointer.model_copy(update={"version": events[-1].version, "updated_at": events[-1].at})
        append_lines(self.folder / HISTORY_FILE, list(events))
        _HISTORY_APPENDED()
        write_atomically(self.pointer_file, pointer.model_dump_json(indent=2))
        return pointer

    def record_decision(self, decision: GateDecision) -> None:
        """Keep a gate decision with the model (what `promote` reads) and in the data set's log."""
        from kennel.lake import write_model_record

        write_model_record(Path(decision.challenger.model_dir), decision)
        with self._locked():
            append_lines(self.folder / DECISIONS_FILE, [decision])

    def record_shadow_evaluation(self, record: ShadowEvaluationRecord) -> None:
        """Keep a shadow evaluation with the model (what `promote` reads) and in the data set's log."""
        from kennel.lake import write_model_record

        write_model_record(Path(record.model_dir), record)
        with self._locked():
            append_lines(self.folder / SHADOW_EVALUATIONS_FILE, [record])

    @staticmethod
    def _passing_decision(model_dir: Path) -> tuple[GateDecision, str]:
        """The model's gate decision, passed, and its model tag."""
        decision = read_model_record(model_dir, GateDecision)
        if decision is None:
            raise PromotionRefused(f"{model_dir} has no gate decision; run the promotion gate first")
        challenger = decision.challenger
        if not decision.passed:
            raise PromotionRefused(f"model {challenger.run_id} failed its gate: {decision.summary}")
        if not challenger.model_tag:
            raise PromotionRefused(f"model {challenger.run_id} is not in the model store (no model tag)")
        return decision, challenger.model_tag

    def _refuse_unless_current(self, decision: GateDecision, pointer: ChampionPointer) -> None:
        """The decision must be against the champion current now, and its model never rolled back."""
        challenger = decision.challenger
        current_run = pointer.current.run_id if pointer.current else None
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

    def _passed_shadow(self, decision: GateDecision, current_run: str | None) -> ShadowEvaluationRecord:
        """The passed shadow evaluation a decision whose gate config asks for a shadow needs."""
        run_id = decision.challenger.run_id
        evaluation = self.shadow_evaluation(decision.challenger.model_dir)
        if evaluation is None or evaluation.challenger_run_id != run_id:
            raise PromotionRefused(
                f"model {run_id} must first pass a shadow evaluation on live traffic (gate config shadow=true); "
                "it has none: start its shadow"
            )
        if evaluation.champion_run_id != current_run:
            raise PromotionRefused(
                f"model {run_id} was evaluated in shadow beside champion {evaluation.champion_run_id}, but the "
                f"champion is now {current_run or '(none)'}: shadow it again"
            )
        if evaluation.outcome != "passed":
            raise PromotionRefused(
                f"model {run_id}'s shadow evaluation of {evaluation.evaluated_at} is {evaluation.outcome}, "
                f"not passed: {evaluation.summary}"
            )
        return evaluation

    def _shadow_ended(
        self, shadow: ShadowEntry, version: int, outcome: ShadowOutcome, reason: str, at: str
    ) -> ChampionEvent:
        return ChampionEvent(
            version=version,
            event="shadow_ended",
            at=at,
            run_id=shadow.run_id,
            model_tag=shadow.model_tag,
            reason=reason,
            decided_at=shadow.decided_at,
            bento_tag=shadow.bento_tag,
            outcome=outcome,
        )

    def promote(self, model_dir: str | Path, reason: str = "") -> ChampionEntry:
        """Make the model in `model_dir` champion; only with a passing gate decision against the
        champion that is current now (a decision against an older champion is stale) and, when that
        decision's config asks for a shadow (and there is a champion), a passed shadow evaluation beside
        it. Any shadow ends in the same write: promoted when it is this model, else replaced."""
        model_dir = Path(model_dir)
        decision, model_tag = self._passing_decision(model_dir)
        challenger = decision.challenger
        with self._locked() as pointer:
            current_run = pointer.current.run_id if pointer.current else None
            if current_run == challenger.run_id:
                return pointer.current  # type: ignore[return-value]
            self._refuse_unless_current(decision, pointer)
            shadow_evaluation = (
                self._passed_shadow(decision, current_run)
                if decision.config.get("shadow") and pointer.current is not None
                else None
            )
            evaluation = decision.challenger_evaluation
            entry = ChampionEntry(
                run_id=challenger.run_id,
                model_dir=challenger.model_dir,
                model_tag=model_tag,
                since=_now(),
                reason=reason or (shadow_evaluation.summary if shadow_evaluation else decision.summary),
                event="promoted",
                decision_summary=decision.summary,
                metrics=evaluation.metrics if evaluation else {},
                decided_at=decision.decided_at,
                shadow_evaluated_at=shadow_evaluation.evaluated_at if shadow_evaluation else None,
                shadow_summary=shadow_evaluation.summary if shadow_evaluation else None,
            )
            events = []
            if pointer.shadow is not None:
                promoted = pointer.shadow.run_id == entry.run_id
                events.append(
                    self._shadow_ended(
                        pointer.shadow,
                        pointer.version + 1,
                        "promoted" if promoted else "replaced",
                        "promoted to champion" if promoted else f"champion replaced by {entry.run_id}",
                        entry.since,
                    )
                )
            events.append(
                ChampionEvent(
                    version=pointer.version + len(events) + 1,
                    event="promoted",
                    at=entry.since,
                    run_id=entry.run_id,
                    model_tag=entry.model_tag,
                    replaced=current_run,
                    reason=entry.reason,
                    decided_at=decision.decided_at,
                    shadow_evaluated_at=entry.shadow_evaluated_at,
                    shadow_summary=entry.shadow_summary,
                )
            )
            previous = [*pointer.previous, pointer.current] if pointer.current else pointer.previous
            self._save(pointer.model_copy(update={"current": entry, "previous": previous, "shadow": None}), *events)
        return entry

    def rollback(self, reason: str = "") -> ChampionEntry:
        """Make the previous champion current again (the rolled-back one leaves the stack); a shadow
        ends in the same write (rolled_back): the previous champion is served alone."""
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
            events = []
            if pointer.shadow is not None:
                events.append(
                    self._shadow_ended(
                        pointer.shadow,
                        pointer.version + 1,
                        "rolled_back",
                        f"champion {pointer.current.run_id} rolled back to {restored.run_id}",
                        restored.since,
                    )
                )
            events.append(
                ChampionEvent(
                    version=pointer.version + len(events) + 1,
                    event="rolled_back",
                    at=restored.since,
                    run_id=restored.run_id,
                    model_tag=restored.model_tag,
                    replaced=pointer.current.run_id,
                    reason=restored.reason,
                )
            )
            self._save(
                pointer.model_copy(update={"current": restored, "previous": pointer.previous[:-1], "shadow": None}),
                *events,
            )
        return restored

    def start_shadow(self, model_dir: str | Path) -> ShadowEntry:
        """Serve the model in `model_dir` in shadow beside the champion; only with a passing gate decision
        against the champion current now. Idempotent for the model already in shadow; a different
        shadow ends (replaced) in the same write."""
        model_dir = Path(model_dir)
        decision, model_tag = self._passing_decision(model_dir)
        challenger = decision.challenger
        with self._locked() as pointer:
            if pointer.current is None:
                raise PromotionRefused(
                    f"{self.dataset} has no champion for model {challenger.run_id} to shadow: promote it"
                )
            if pointer.current.run_id == challenger.run_id:
                raise PromotionRefused(f"model {challenger.run_id} is the champion; it cannot shadow itself")
            self._refuse_unless_current(decision, pointer)
            old = pointer.shadow
            if old is not None and old.run_id == challenger.run_id and old.decided_at == decision.decided_at:
                return old
            # A shadow that was judged (rejected) or ran out of time on this decision is not tried again.
            judged = [
                e
                for e in self.history()
                if e.event == "shadow_ended"
                and e.run_id == challenger.run_id
                and e.decided_at == decision.decided_at
                and e.outcome in ("rejected", "expired")
            ]
            if judged:
                raise PromotionRefused(
                    f"model {challenger.run_id}'s shadow ended {judged[-1].outcome} at {judged[-1].at} "
                    f"({judged[-1].reason}); train a new challenger"
                )
            shadow = ShadowEntry(
                run_id=challenger.run_id,
                model_dir=challenger.model_dir,
                model_tag=model_tag,
                since=_now(),
                decided_at=decision.decided_at,
                champion_run_id=pointer.current.run_id,
            )
            events = []
            if old is not None:
                events.append(
                    self._shadow_ended(
                        old, pointer.version + 1, "replaced", f"shadow replaced by {shadow.run_id}", shadow.since
                    )
                )
            events.append(
                ChampionEvent(
                    version=pointer.version + len(events) + 1,
                    event="shadow_started",
                    at=shadow.since,
                    run_id=shadow.run_id,
                    model_tag=shadow.model_tag,
                    replaced=old.run_id if old else None,
                    reason=f"shadow beside champion {shadow.champion_run_id}: {decision.summary}",
                    decided_at=decision.decided_at,
                )
            )
            self._save(pointer.model_copy(update={"shadow": shadow}), *events)
        return shadow

    def end_shadow(self, outcome: ShadowOutcome, reason: str = "", *, run_id: str | None = None) -> ShadowEntry | None:
        """End the shadow (the champion serves alone again); None when there was none (or, with `run_id`,
        when the shadow is no longer that model: a judgement of one shadow never ends the next)."""
        with self._locked() as pointer:
            shadow = pointer.shadow
            if shadow is None or (run_id is not None and shadow.run_id != run_id):
                return None
            self._save(
                pointer.model_copy(update={"shadow": None}),
                self._shadow_ended(shadow, pointer.version + 1, outcome, reason or outcome, _now()),
            )
        return shadow

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

    def record_shadow_bento(self, run_id: str, bento_tag: str) -> None:
        """Remember the Bento serving the champion with shadow `run_id` beside it."""
        with self._locked() as pointer:
            shadow = pointer.shadow
            if shadow is None or shadow.run_id != run_id:
                raise RuntimeError(f"{run_id} is no longer in shadow; its Bento is not recorded")
            if shadow.bento_tag == bento_tag:
                return
            shadow = shadow.model_copy(update={"bento_tag": bento_tag})
            self._save(
                pointer.model_copy(update={"shadow": shadow}),
                ChampionEvent(
                    version=pointer.version + 1,
                    event="shadow_bento",
                    at=_now(),
                    run_id=run_id,
                    model_tag=shadow.model_tag,
                    bento_tag=bento_tag,
                ),
            )
