"""The retraining decision: which signals retrain, which wait, which only alert — pure and replayable.

The orchestrator's sensor feeds new per-partition signals and the state it kept from the last tick
(its cursor) and gets back decisions plus the new state. Nothing here reads data or clocks: the same
inputs give the same decisions, which is what makes a restarted sensor repeat nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from kennel.lake.records import RetrainDecisionRecord

Action = Literal["retrain", "skip", "alert"]


@dataclass(frozen=True)
class RetrainPolicy:
    drifted_share: float = 0.2  # share of drifted features that counts as data-set drift
    prediction_psi: float = 0.2  # score-distribution shift that counts on its own
    auc_drop: float = 0.05  # realized AUC this far below the champion's test AUC is decay
    # The same drop in the AUC estimated without labels (kennel.monitoring.estimation) counts too, on days
    # with at least estimated_min_rows rows; None: estimates never trigger a retrain.
    estimated_auc_drop: float | None = 0.05
    estimated_min_rows: int = 1_000
    cooldown: timedelta = timedelta(hours=12)
    max_retrains_per_day: int = 2
    min_new_validated_rows: int = 1_000


@dataclass(frozen=True)
class PartitionSignal:
    """What monitoring concluded about one daily partition (read from metadata, never from data)."""

    day: str
    quality_passed: bool
    rows: int
    drifted_share: float | None = None
    prediction_psi: float | None = None
    realized_auc: float | None = None
    champion_auc: float | None = None
    failed_checks: tuple[str, ...] = ()
    estimated_auc: float | None = None  # estimated without labels, on `estimated_rows` rows
    estimated_rows: int | None = None
    # Realized AUC below what the calibrated scores promised (kennel.monitoring.performance).
    concept_drift_suspected: bool | None = None


# Signal fields added after cursors were first saved: they enter a fingerprint only once set, so a cursor
# saved before keeps recognising the days it decided on.
_LATER_FIELDS = ("estimated_auc", "estimated_rows", "concept_drift_suspected")


@dataclass
class LoopState:
    """Carried between ticks (serialized into the sensor cursor)."""

    seen: dict[str, str] = field(default_factory=dict)  # day → fingerprint of the signal last seen
    pending: list[str] = field(default_factory=list)  # triggering days waiting for a retrain (coalesced)
    rows_since_retrain: int = 0
    retrains: list[str] = field(default_factory=list)  # ISO times of retrain decisions (recent ones kept)
    last_retrain: str | None = None  # decision id of the latest retrain (kept however long ago it was)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> LoopState:
        return cls(**json.loads(text)) if text else cls()


@dataclass(frozen=True)
class Decision:
    at: str
    action: Action
    reason: str
    days: tuple[str, ...]
    numbers: dict[str, Any]
    thresholds: dict[str, Any]
    decision_id: str
    run_key: str | None = None

    def record(self) -> RetrainDecisionRecord:
        """The decision as the lake's decision log keeps it."""
        return RetrainDecisionRecord.model_validate({**_fields_of(self), "days": list(self.days)})


def _decision(
    at: str,
    action: Action,
    reason: str,
    days: tuple[str, ...],
    numbers: dict[str, Any],
    thresholds: dict[str, Any],
    evidence: dict[str, Any],
) -> Decision:
    """A decision and its id: a digest of what was decided on what evidence (fingerprints of its days'
    signals, and what came before them), never of when. Evaluating the sensor again from the same cursor
    (a preview, or a tick whose cursor was not saved) decides the same ids, which the decision log and the
    run keys recognise; the same evidence arriving again after something changed is a new decision."""
    content = {
        "action": action,
        "reason": reason,
        "days": days,
        "numbers": numbers,
        "thresholds": thresholds,
        "evidence": evidence,
    }
    decision_id = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
    # A retrain's run key is its decision's: the same decision never launches twice, while a retrain on the
    # same days with new evidence (a day re-ingested) is a new run.
    run_key = f"retrain-{decision_id}" if action == "retrain" else None
    return Decision(at, action, reason, days, numbers, thresholds, decision_id, run_key)


def _fields_of(instance: Any) -> dict[str, Any]:
    """A dataclass's fields by name: `asdict` without its deep copy, which a three-year first tick paid
    three times a day (signals hold numbers, text and a tuple of text; a decision's dicts are copied
    by its record's validation anyway)."""
    return {f.name: getattr(instance, f.name) for f in fields(instance)}


def _fingerprint(signal: PartitionSignal) -> str:
    content = {k: v for k, v in _fields_of(signal).items() if not (k in _LATER_FIELDS and v is None)}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _triggers(signal: PartitionSignal, policy: RetrainPolicy) -> list[str]:
    reasons = []
    if signal.drifted_share is not None and signal.drifted_share >= policy.drifted_share:
        reasons.append(f"feature drift: {signal.drifted_share:.0%} of features drifted (≥ {policy.drifted_share:.0%})")
    if signal.prediction_psi is not None and signal.prediction_psi >= policy.prediction_psi:
        reasons.append(f"prediction drift: PSI {signal.prediction_psi:.3f} (≥ {policy.prediction_psi})")
    if (
        signal.realized_auc is not None
        and signal.champion_auc is not None
        and signal.champion_auc - signal.realized_auc >= policy.auc_drop
    ):
        reasons.append(f"performance decay: AUC {signal.realized_auc:.3f} vs champion {signal.champion_auc:.3f}")
    if (
        policy.estimated_auc_drop is not None
        and signal.estimated_auc is not None
        and signal.champion_auc is not None
        and (signal.estimated_rows or 0) >= policy.estimated_min_rows
        and signal.champion_auc - signal.estimated_auc >= policy.estimated_auc_drop
    ):
        # Marked as an estimate: no label has confirmed it yet.
        reasons.append(
            f"estimated performance decay (no labels): estimated AUC {signal.estimated_auc:.3f} on "
            f"{signal.estimated_rows} rows vs champion {signal.champion_auc:.3f}"
        )
    if signal.concept_drift_suspected:
        reasons.append("concept drift: realized AUC below the interval its label-free estimate gave")
    return reasons


def decide(
    policy: RetrainPolicy, signals: list[PartitionSignal], state: LoopState, now: datetime
) -> tuple[list[Decision], LoopState]:
    """Evaluate the signals not seen before (or changed since) and the retraining they may call for."""
    state = replace(state, seen=dict(state.seen), pending=list(state.pending), retrains=list(state.retrains))
    thresholds = {k: (str(v) if isinstance(v, timedelta) else v) for k, v in asdict(policy).items()}
    stamp = now.isoformat()
    decisions: list[Decision] = []
    newly_pending = False
    for signal in sorted(signals, key=lambda s: s.day):
        fp = _fingerprint(signal)
        if state.seen.get(signal.day) == fp:
            continue  # already decided on exactly this evidence
        # The signal it replaces is part of the evidence: a day that fails, passes and fails again the
        # same way is decided (and alerted) again.
        evidence = {"day": signal.day, "signal": fp, "replaces": state.seen.get(signal.day)}
        state.seen[signal.day] = fp
        numbers = {k: v for k, v in _fields_of(signal).items() if v not in (None, ())}
        if not signal.quality_passed:
            # Failed data never trains a model; it raises a data-quality alert instead.
            decisions.append(
                _decision(
                    stamp,
                    "alert",
                    "partition failed validation: " + (", ".join(signal.failed_checks) or "blocking checks failed"),
                    (signal.day,),
                    numbers,
                    thresholds,
                    evidence,
                )
            )
            continue
        state.rows_since_retrain += signal.rows
        reasons = _triggers(signal, policy)
        if reasons:
            if signal.day not in state.pending:
                state.pending.append(signal.day)
                newly_pending = True
        else:
            decisions.append(
                _decision(
                    stamp,
                    "skip",
                    "no drift or decay above thresholds",
                    (signal.day,),
                    numbers,
                    thresholds,
                    evidence,
                )
            )
        for reason in reasons:
            decisions.append(
                _decision(stamp, "skip", f"signal noted: {reason}", (signal.day,), numbers, thresholds, evidence)
            )

    if not state.pending:
        return decisions, state
    recent = [t for t in state.retrains if now - datetime.fromisoformat(t) < timedelta(days=1)]
    state.retrains = recent
    numbers = {
        "pending_days": list(state.pending),
        "rows_since_retrain": state.rows_since_retrain,
        "retrains_last_24h": len(recent),
    }
    last = max((datetime.fromisoformat(t) for t in recent), default=None)
    days = tuple(sorted(state.pending))
    held = (
        (last is not None and now - last < policy.cooldown)
        or len(recent) >= policy.max_retrains_per_day
        or state.rows_since_retrain < policy.min_new_validated_rows
    )
    if held and not newly_pending:
        return decisions, state  # still held for the reason already logged: nothing new to say
    action: Action = "skip"
    if last is not None and now - last < policy.cooldown:
        reason = f"cooldown until {(last + policy.cooldown).isoformat()}; {len(days)} signal(s) coalesced, kept"
    elif len(recent) >= policy.max_retrains_per_day:
        reason = f"daily limit of {policy.max_retrains_per_day} retrains reached; kept"
    elif state.rows_since_retrain < policy.min_new_validated_rows:
        reason = f"only {state.rows_since_retrain} new validated rows (< {policy.min_new_validated_rows}); kept"
    else:
        action, reason = "retrain", f"retraining on {len(days)} triggering day(s)"
    # After a retrain, the same evidence arriving again (a day re-ingested back to what it was) is new.
    pending_evidence = {"signals": {day: state.seen[day] for day in days}, "after_retrain": state.last_retrain}
    decision = _decision(stamp, action, reason, days, numbers, thresholds, pending_evidence)
    decisions.append(decision)
    if action == "retrain":
        state.pending, state.rows_since_retrain = [], 0
        state.retrains.append(stamp)
        state.last_retrain = decision.decision_id
    return decisions, state
