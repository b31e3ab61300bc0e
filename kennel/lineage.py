"""Lineage: where a served answer came from, and who was champion at any past moment.

`lineage(lake, request_id)` follows one logged prediction back: the prediction-log row (model tag,
endpoint, time), the model's run and folder (through the champion history and the gate decisions),
the data days it was trained on with each day's quality record, the gate decision that promoted it,
the champion history around the request's time, and the challenger's score if the request was
scored in shadow. `champion_at(lake, at)` replays the history (promoted / rolled_back events) to the
champion in force at `at`, with the decision that promoted it. `kennel lineage` (kennel.cli) prints
either.

Everything here reads the lake; nothing is written. A request id is searched in the prediction log's
day folders, newest day first, reading only the few columns lineage shows and only the matching rows
(a pyarrow filter), so a lookup costs about one column scan per day until the id is found (days are
not indexed by request id: an old id costs a scan of every newer day); then in the batch scores.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from kennel.lake import DatasetLake, partition_day, read_model_record
from kennel.lake.champion import ChampionRegistry
from kennel.lake.records import (
    ChampionEvent,
    EvaluationRecord,
    GateDecision,
    QualityRecord,
    ShadowEvaluationRecord,
    TrainingRecord,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from kennel.model.card import ModelCard

CHAMPION_CHANGES = ("promoted", "rolled_back")  # the events that change which model answers
HISTORY_AROUND = 3  # events listed on each side of a request's time
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")  # what the service issues (kennel.serving.request_ids)
_LOGGED_COLUMNS = ["request_id", "predicted_at", "model_tag", "endpoint", "probability", "predicted_label"]
_READ_ATTEMPTS = 20  # a day folder re-listed while compaction swaps its files


@dataclass(frozen=True)
class ServedPrediction:
    """The prediction-log row of one request."""

    request_id: str
    predicted_at: datetime  # UTC
    model_tag: str  # the model that answered (its BentoML tag)
    endpoint: str
    probability: float
    predicted_label: int
    log_folder: Path  # the day folder that holds the row


@dataclass(frozen=True)
class TrainingDay:
    """One data day a model was trained on, with its quality record (None: the lake holds none)."""

    day: str
    quality: QualityRecord | None


@dataclass(frozen=True)
class ModelLineage:
    """A model and what it was made from. run_id / model_dir are None when neither the champion history
    nor the gate decisions name the tag (a model served outside the registry)."""

    model_tag: str
    run_id: str | None
    model_dir: Path | None
    data_days: tuple[TrainingDay, ...] = ()
    threshold: float | None = None
    training: TrainingRecord | None = None
    evaluation: EvaluationRecord | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """A champion-history event, and whether it set the champion in force at the moment asked about."""

    event: ChampionEvent
    in_force: bool


@dataclass(frozen=True)
class ChampionAt:
    """The champion in force at a moment: the promoted / rolled_back event that made it champion, the
    gate decision that promoted it and, where promotion waited for one, the shadow evaluation it passed.
    `event` is None before the first promotion."""

    dataset: str
    at: datetime
    event: ChampionEvent | None
    decision: GateDecision | None
    shadow_evaluation: ShadowEvaluationRecord | None = None

    def render(self) -> str:
        when = _stamp(self.at)
        if self.event is None:
            return f"{self.dataset}: no champion at {when} (nothing promoted yet then)"
        e = self.event
        lines = [
            f"{self.dataset}: champion at {when}: {e.model_tag} (run {e.run_id})",
            f"  {e.event} {e.at}" + (f" replacing {e.replaced}" if e.replaced else "") + f": {e.reason}",
        ]
        lines += _decision_lines(self.decision) + _shadow_evaluation_lines(self.shadow_evaluation)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True)
class ShadowScore:
    """The challenger's score of the same request, from the shadow log."""

    model_tag: str
    probability: float
    predicted_label: int


@dataclass(frozen=True)
class RequestLineage:
    """Everything lineage knows about one served request (see the module docstring)."""

    dataset: str
    prediction: ServedPrediction
    model: ModelLineage
    promotion: ChampionEvent | None  # the event that made the answering model champion (None: never was)
    decision: GateDecision | None  # the gate decision that promotion rests on
    shadow_evaluation: ShadowEvaluationRecord | None  # the live-traffic evaluation it passed, if it waited for one
    champion_then: ChampionAt  # from the history: differs from the answering model while a Bento lags
    history: tuple[HistoryEntry, ...]
    shadow: ShadowScore | None
    shadow_note: str  # why there is no shadow score, or where it came from

    def render(self) -> str:
        p, m = self.prediction, self.model
        lines = [
            f"request {p.request_id} ({self.dataset})",
            f"  answered   {_stamp(p.predicted_at)} on /{p.endpoint}: probability {p.probability:.4f}, "
            f"label {p.predicted_label}",
            f"  model      {m.model_tag}" + (f"  run {m.run_id}" if m.run_id else "  (not in the champion registry)"),
        ]
        if m.model_dir is not None:
            lines.append(f"  folder     {m.model_dir}")
        if m.training is not None:
            lines.append(
                f"  trained    on {m.training.device}, {m.training.train_rows:,} train / "
                f"{m.training.validation_rows:,} validation rows, code {m.training.code_version}"
            )
        if m.evaluation is not None:
            shown = {k: m.evaluation.metrics.get(k) for k in ("roc_auc", "pr_auc", "log_loss")}
            numbers = ", ".join(f"{k} {v:.4f}" for k, v in shown.items() if isinstance(v, float))
            days = ", ".join(m.evaluation.test_days)
            lines.append(f"  tested     {numbers}" + (f" on {days}" if days else ""))
        lines.append(f"  data days  {len(m.data_days)}" + ("" if m.data_days else " (unknown: no model card)"))
        for d in m.data_days:
            q = d.quality
            if q is None:
                lines.append(f"    {d.day}  no quality record in the lake")
                continue
            verdict = "passed" if q.passed else "FAILED"
            lines.append(
                f"    {d.day}  {verdict}  {q.rows_in:,} in, {q.rows_clean:,} clean, quarantine rate "
                f"{q.quarantine_rate:.2%} (max {q.max_quarantine_fraction:.0%})  run {q.run_id}"
            )
        if self.promotion is None:
            lines.append("  promoted   never: this model was not champion in this data set's history")
        else:
            lines.append(f"  promoted   {self.promotion.at} (history version {self.promotion.version})")
        lines += _decision_lines(self.decision) + _shadow_evaluation_lines(self.shadow_evaluation)
        then = self.champion_then.event
        if then is None:
            lines.append("  champion then: none in the history")
        elif then.model_tag != m.model_tag:
            lines.append(f"  champion then: {then.model_tag} (the history's; the answering Bento had not followed yet)")
        lines.append("  history around then (* = in force at the request):")
        for h in self.history:
            e = h.event
            mark = "*" if h.in_force else " "
            change = f"{e.event} {e.run_id}" + (f" (replaced {e.replaced})" if e.replaced else "")
            extra = f": {e.bento_tag}" if e.bento_tag else ""
            lines.append(f"   {mark} v{e.version:<3} {e.at}  {change}{extra}  {e.reason}".rstrip())
        if self.shadow is not None:
            s = self.shadow
            lines.append(f"  shadow score {s.model_tag}: probability {s.probability:.4f}, label {s.predicted_label}")
        else:
            lines.append(f"  shadow score {self.shadow_note}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return _jsonable(self)


# --- the lookups ---------------------------------------------------------------------------------------


def lineage(lake: DatasetLake, request_id: str, *, around: int = HISTORY_AROUND) -> RequestLineage:
    """The lineage of one served request (see the module docstring).

    Raises ValueError for an id that is not 32 hex digits, LookupError (naming the folders searched)
    for one no log holds.
    """
    prediction = find_prediction(lake, request_id)
    registry = ChampionRegistry(lake)
    history = registry.history()
    decisions = registry.decisions()
    model = _model_lineage(lake, registry, history, decisions, prediction.model_tag)
    promotion = _promotion(history, model.run_id, prediction.predicted_at)
    decision = _decision_for(decisions, promotion, model.model_dir)
    evaluations = registry.shadow_evaluations()
    then = _champion_at(lake.name, history, decisions, evaluations, prediction.predicted_at)
    shadow, note = _shadow_score(lake, prediction)
    return RequestLineage(
        dataset=lake.name,
        prediction=prediction,
        model=model,
        promotion=promotion,
        decision=decision,
        shadow_evaluation=_shadow_evaluation_for(evaluations, promotion),
        champion_then=then,
        history=_history_around(history, prediction.predicted_at, then.event, around),
        shadow=shadow,
        shadow_note=note,
    )


def champion_at(lake: DatasetLake, at: datetime) -> ChampionAt:
    """The champion in force at `at` (naive = UTC) from the champion history, with its gate decision."""
    registry = ChampionRegistry(lake)
    history, decisions = registry.history(), registry.decisions()
    return _champion_at(lake.name, history, decisions, registry.shadow_evaluations(), as_utc(at))


def as_utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def parse_moment(text: str) -> datetime:
    """An ISO 8601 moment (a day alone is its midnight), naive read as UTC; ValueError otherwise."""
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 timestamp (e.g. 2026-03-01T12:00:00Z)") from None


def find_prediction(lake: DatasetLake, request_id: str) -> ServedPrediction:
    """The logged row of `request_id`: served predictions first, then batch scores; newest day first."""
    import pyarrow.dataset as ds

    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id.strip().lower()):
        raise ValueError("a request id is 32 hexadecimal digits, as the service returns it")
    wanted = request_id.strip().lower()
    condition = ds.field("request_id") == wanted
    for folder in _day_folders_newest_first(lake.predictions_dir()):
        rows = _matching_rows(folder, condition)
        if rows is not None and rows.num_rows:
            return _prediction(rows.slice(0, 1).to_pylist()[0], folder)
    # Batch scores are published per day by kennel.serving.batch, whose reader knows their layout; a
    # day is read whole, which only an id that no served day holds comes to.
    from kennel.serving.batch import read_batch_scores

    for folder in _day_folders_newest_first(lake.batch_scores_dir()):
        day = partition_day(folder)
        frame = read_batch_scores(lake, start=day, end=day)
        hit = frame[frame["request_id"] == wanted]
        if len(hit):
            return _prediction(hit.iloc[0][_LOGGED_COLUMNS].to_dict(), folder)
    searched = f"{lake.predictions_dir()} and {lake.batch_scores_dir()}"
    raise LookupError(f"request {wanted} is in no prediction log of {lake.name}: searched {searched}")


def _prediction(row: dict[str, Any], folder: Path) -> ServedPrediction:
    return ServedPrediction(
        request_id=str(row["request_id"]),
        predicted_at=as_utc(row["predicted_at"]),
        model_tag=str(row["model_tag"]),
        endpoint=str(row["endpoint"]),
        probability=float(row["probability"]),
        predicted_label=int(row["predicted_label"]),
        log_folder=folder,
    )


# --- reading the logs ---------------------------------------------------------------------------------


def _day_folders_newest_first(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted((f for f in root.iterdir() if partition_day(f) is not None and f.is_dir()), reverse=True)


def _matching_rows(folder: Path, condition: Any) -> pa.Table | None:
    """The rows of one day folder that meet `condition` (only the lineage columns). A file compaction
    removed between listing and reading means its rows are in the merged file now: list again. A row
    both in a part and the compacted file that replaces it may come twice; lineage takes one."""
    import pyarrow.dataset as ds

    for _ in range(_READ_ATTEMPTS):
        files = sorted(str(p) for p in folder.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            return None
        try:
            return ds.dataset(files, format="parquet").to_table(columns=_LOGGED_COLUMNS, filter=condition)
        except FileNotFoundError:
            continue
    raise RuntimeError(f"{folder} kept changing while it was read ({_READ_ATTEMPTS} attempts); read it again")


def _shadow_score(lake: DatasetLake, prediction: ServedPrediction) -> tuple[ShadowScore | None, str]:
    from kennel.serving.prediction_log import read_shadow_predictions

    day = prediction.predicted_at.date()
    frame = read_shadow_predictions(lake, start=day, end=day)
    rows = frame[frame["request_id"] == prediction.request_id]
    if rows.empty:
        return None, "not scored in shadow"
    row = rows.iloc[0]
    return ShadowScore(str(row["model_tag"]), float(row["probability"]), int(row["predicted_label"])), "shadow log"


# --- the registry ---------------------------------------------------------------------------------------


def _event_time(event: ChampionEvent) -> datetime:
    return as_utc(datetime.fromisoformat(event.at))


def _model_lineage(
    lake: DatasetLake,
    registry: ChampionRegistry,
    history: list[ChampionEvent],
    decisions: list[GateDecision],
    model_tag: str,
) -> ModelLineage:
    """Tag → run → folder: the history names the run of a champion's tag, a gate decision (or the
    pointer's entries) its folder; a decided but never promoted model is found by its decision."""
    run_id = next((e.run_id for e in reversed(history) if e.model_tag == model_tag), None)
    decided = [d for d in decisions if d.challenger.model_tag == model_tag]
    if run_id is None and decided:
        run_id = decided[-1].challenger.run_id
    if run_id is None:
        return ModelLineage(model_tag=model_tag, run_id=None, model_dir=None)
    pointer = registry.pointer()
    entries = [*pointer.previous, *([pointer.current] if pointer.current else [])]
    candidates = [Path(d.challenger.model_dir) for d in decided if d.challenger.run_id == run_id]
    candidates += [Path(e.model_dir) for e in entries if e.run_id == run_id]
    candidates.append(lake.model_dir(run_id))
    model_dir = next((c for c in candidates if c.is_dir()), None)
    if model_dir is None:
        return ModelLineage(model_tag=model_tag, run_id=run_id, model_dir=None)
    card = _card(model_dir)
    days = card.data_partitions if card is not None else ()
    return ModelLineage(
        model_tag=model_tag,
        run_id=run_id,
        model_dir=model_dir,
        data_days=tuple(TrainingDay(day, lake.quality(day)) for day in days),
        threshold=card.threshold if card is not None else None,
        training=read_model_record(model_dir, TrainingRecord),
        evaluation=read_model_record(model_dir, EvaluationRecord),
    )


def _card(model_dir: Path) -> ModelCard | None:
    # Imported here: kennel.model loads numpy and the model library, which `kennel --help` need not.
    from kennel.model.card import CARD_FILE, ModelCard

    if not (model_dir / CARD_FILE).is_file():
        return None
    try:
        return ModelCard.load(model_dir)
    except (ValidationError, json.JSONDecodeError):
        return None


def _promotion(history: list[ChampionEvent], run_id: str | None, at: datetime) -> ChampionEvent | None:
    """The promotion of `run_id` in force at `at` (the last one before it), else its first later one."""
    promoted = [e for e in history if e.event == "promoted" and e.run_id == run_id]
    before = [e for e in promoted if _event_time(e) <= at]
    return before[-1] if before else (promoted[0] if promoted else None)


def _decision_for(
    decisions: list[GateDecision], promotion: ChampionEvent | None, model_dir: Path | None
) -> GateDecision | None:
    """The gate decision a promotion rests on: the one it names (decided_at); else the model folder's."""
    if promotion is not None:
        named = [
            d
            for d in decisions
            if d.challenger.run_id == promotion.run_id and d.passed and d.decided_at == promotion.decided_at
        ]
        if named:
            return named[-1]
        passed = [d for d in decisions if d.challenger.run_id == promotion.run_id and d.passed]
        if passed:
            return passed[-1]
    return read_model_record(model_dir, GateDecision) if model_dir is not None else None


def _champion_at(
    dataset: str,
    history: list[ChampionEvent],
    decisions: list[GateDecision],
    evaluations: list[ShadowEvaluationRecord],
    at: datetime,
) -> ChampionAt:
    changes = [e for e in history if e.event in CHAMPION_CHANGES and _event_time(e) <= at]
    if not changes:
        return ChampionAt(dataset, at, None, None)
    event = changes[-1]
    # A rollback restores a champion that an earlier promotion (and its decision) made.
    promotion = event if event.event == "promoted" else _promotion(history, event.run_id, _event_time(event))
    decision = _decision_for(decisions, promotion, None)
    return ChampionAt(dataset, at, event, decision, _shadow_evaluation_for(evaluations, promotion))


def _shadow_evaluation_for(
    evaluations: list[ShadowEvaluationRecord], promotion: ChampionEvent | None
) -> ShadowEvaluationRecord | None:
    """The shadow evaluation a promotion names (promotions that did not wait for one name none)."""
    if promotion is None or promotion.shadow_evaluated_at is None:
        return None
    named = [
        r
        for r in evaluations
        if r.challenger_run_id == promotion.run_id and r.evaluated_at == promotion.shadow_evaluated_at
    ]
    return named[-1] if named else None


def _history_around(
    history: list[ChampionEvent], at: datetime, in_force: ChampionEvent | None, around: int
) -> tuple[HistoryEntry, ...]:
    before = [e for e in history if _event_time(e) <= at][-around:] if around else []
    after = [e for e in history if _event_time(e) > at][:around]
    version = in_force.version if in_force is not None else None
    return tuple(HistoryEntry(e, e.version == version) for e in [*before, *after])


# --- rendering ----------------------------------------------------------------------------------------


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _decision_lines(decision: GateDecision | None) -> list[str]:
    if decision is None:
        return ["  gate       no decision recorded for it"]
    against = decision.champion.run_id if decision.champion else "no champion"
    lines = [
        f"  gate       {'passed' if decision.passed else 'REJECTED'} {decision.decided_at} against {against} "
        f"on {decision.test_rows:,} test rows: {decision.summary}"
    ]
    for check in decision.checks:
        lines.append(
            f"    {'ok  ' if check.passed else 'FAIL'} {check.name}: {_number(check.value)} "
            f"(threshold {_number(check.threshold)})"
        )
    return lines


def _shadow_evaluation_lines(record: ShadowEvaluationRecord | None) -> list[str]:
    if record is None:
        return []
    numbers = [f"agreement {_number(record.agreement)}", f"score PSI {_number(record.score_psi)}"]
    if record.bootstrap:
        numbers.append(f"bootstrap {json.dumps(record.bootstrap, sort_keys=True)}")
    thresholds = ", ".join(f"{k} {_number(v)}" for k, v in sorted(record.thresholds.items()))
    return [
        f"  shadow     {record.outcome} {record.evaluated_at} beside {record.champion_run_id} since "
        f"{record.shadow_since} on {record.requests:,} requests ({record.labelled:,} labelled): {record.summary}",
        f"    {'; '.join(numbers)}" + (f" (thresholds: {thresholds})" if thresholds else ""),
    ]


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, QualityRecord):
        # Its expectation results carry samples of unexpected row values: data, not lineage.
        return value.model_dump(mode="json", exclude={"expectations"})
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
