"""The model card a person reads: one self-contained HTML page per champion, with the data days it learned
from, its test metrics, calibration, fairness by group, SHAP summary, the gate decision that promoted it
and, in the daily refresh, how it has done since.

The page loads nothing: no external CSS, scripts, fonts or images (a Content-Security-Policy says so to
the browser too), plots are inline SVG, and every value is HTML-escaped, since category names, feature
names and reasons come from users' data. Tables are capped (top SHAP features, largest groups, the last
year of monitoring), so a card stays small whatever the data set.

Two files per champion under `DatasetLake.cards_dir() / run_id`: `promotion.html`, the card as of
promotion (written once; the Bento ships it), and `latest.html`, rewritten with every refresh.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from kennel.lake import DatasetLake, read_model_record, write_atomically
from kennel.lake.champion import ChampionRegistry
from kennel.lake.records import (
    ChampionEntry,
    EvaluationRecord,
    GateDecision,
    MonitoringKind,
    MonitoringRecord,
    TrainingRecord,
)
from kennel.model.card import CARD_FILE, ModelCard
from kennel.spec import DatasetSpec

PROMOTION_CARD = "promotion.html"
LATEST_CARD = "latest.html"
# What the monitoring section plots: realized and estimated ROC-AUC, and the share of drifted inputs.
MONITORED_KINDS: tuple[MonitoringKind, ...] = ("realized_performance", "estimated_performance", "data_drift")
MAX_SHAP_FEATURES = 25
MAX_GROUPS = 50  # per sensitive column, the largest groups
MAX_MONITORING_DAYS = 365
MAX_INPUTS = 300
MAX_LISTED_DAYS = 400  # per split, in the data-days list
MAX_TEXT = 120  # characters of one user-supplied value (a category name, a reason)
MAX_LONG_TEXT = 2000  # characters of a summary or a check's detail

_METRICS = (
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("log_loss", "log loss"),
    ("brier", "Brier score"),
    ("expected_calibration_error", "expected calibration error"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("threshold", "threshold"),
    ("rows", "test rows"),
    ("positive_rate", "positive rate"),
)
_GROUP_COLUMNS = ("group", "count", "positives", "negatives", "positive_rate", "selection_rate", "tpr", "fpr", "auc")
_SERIES_COLORS = {"realized ROC-AUC": "#1f6feb", "estimated ROC-AUC": "#8250df", "drifted share": "#cf222e"}

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#1f2328}
body{padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.8em}
h3{margin-bottom:.3em}table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#1a7f37;font-weight:600}
.fail{color:#cf222e;font-weight:600}.muted{color:#656d76}.note{color:#656d76;font-size:.9em}
svg{display:block;margin:.5em 0;max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#1f2328}
details{margin:.3em 0}code{background:#f6f8fa;padding:0 3px}
"""


@dataclass(frozen=True)
class MonitoringDay:
    """One day of the champion's monitoring, as the card plots it (None: not measured that day)."""

    day: str
    realized_auc: float | None
    estimated_auc: float | None
    drifted_share: float | None
    labelled_rows: int | None
    concept_drift_suspected: bool | None


@dataclass(frozen=True)
class CardPaths:
    """Where write_cards put a champion's cards, and what the latest one holds."""

    run_id: str
    promotion: Path
    latest: Path
    promotion_written: bool  # False: the card as of promotion was already there, and is kept
    latest_bytes: int
    monitoring_days: int  # days of monitoring in latest.html


# --- text and numbers ---------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(value: Any, limit: int = MAX_TEXT) -> str:
    """A value as escaped text: floats to 4 decimals, None as a dash, user text clipped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return html.escape(_clip(", ".join(str(v) for v in value), limit))
    return html.escape(_clip(str(value), limit))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], limit: int = MAX_TEXT) -> str:
    if not rows:
        return '<p class="muted">(none)</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f'<td class="num">{_fmt(value)}</td>' if numeric else f"<td>{_fmt(value, limit)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _verdict(passed: bool) -> str:
    return '<span class="pass">✔ passed</span>' if passed else '<span class="fail">✘ failed</span>'


# --- inline SVG plots -----------------------------------------------------------------------------------


def _svg(width: int, height: int, label: str, body: str) -> str:
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(label)}"><title>{html.escape(label)}</title>{body}</svg>'
    )


def svg_bars(items: Sequence[tuple[str, float]], label: str, width: int = 640) -> str:
    """Horizontal bars, one per (name, value), scaled to the largest value."""
    row, left, right = 18, 220, 70
    top = max((v for _, v in items), default=0.0) or 1.0
    parts = []
    for i, (name, value) in enumerate(items):
        y = i * row
        length = max(0.0, value) / top * (width - left - right)
        parts.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{html.escape(_clip(name, 34))}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 6}" fill="#1f6feb"/>'
            f'<text x="{left + length + 4:.1f}" y="{y + 13}">{value:.4f}</text>'
        )
    return _svg(width, max(row * len(items), row), label, "".join(parts))


def svg_reliability(bins: Sequence[Mapping[str, Any]], size: int = 320) -> str:
    """The reliability plot: observed positive rate against mean predicted score per bin, beside the
    diagonal of perfect calibration; a point's area follows its rows."""
    pad = 40
    span = size - 2 * pad

    def x(v: float) -> float:
        return pad + v * span

    def y(v: float) -> float:
        return size - pad - v * span

    parts = [f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#d0d7de"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{x(tick):.1f}" y="{size - pad + 14}" text-anchor="middle">{tick:g}</text>')
        parts.append(f'<text x="{pad - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    parts.append(
        f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#8c959f" stroke-dasharray="4 3"/>'
        f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle">mean predicted score</text>'
        f'<text x="12" y="{size / 2}" text-anchor="middle" transform="rotate(-90 12 {size / 2})">observed rate</text>'
    )
    points = [
        (score, rate, int(b.get("rows") or 0))
        for b in bins
        if (score := _number(b.get("mean_score"))) is not None and (rate := _number(b.get("observed_rate"))) is not None
    ]
    most = max((rows for *_, rows in points), default=1) or 1
    if points:
        line = " ".join(f"{x(s):.1f},{y(r):.1f}" for s, r, _ in points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="#1f6feb" stroke-width="1.5"/>')
    for score, rate, rows in points:
        radius = 2 + 5 * math.sqrt(rows / most)
        parts.append(
            f'<circle cx="{x(score):.1f}" cy="{y(rate):.1f}" r="{radius:.1f}" fill="#1f6feb" fill-opacity="0.7">'
            f"<title>{rows} rows: predicted {score:.3f}, observed {rate:.3f}</title></circle>"
        )
    return _svg(size, size, "reliability plot", "".join(parts))


def svg_lines(days: Sequence[str], series: Mapping[str, Sequence[float | None]], width: int = 720) -> str:
    """Lines over days (ISO dates, placed on the calendar) on a 0–1 scale (ROC-AUC, shares); a day
    without a value breaks its line."""
    height, left, right, top, bottom = 240, 40, 150, 10, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    ordinals = [date.fromisoformat(day[:10]).toordinal() for day in days]
    first = ordinals[0] if ordinals else 0
    step = plot_w / max(ordinals[-1] - first if ordinals else 0, 1)

    def y(v: float) -> float:
        return top + (1 - min(max(v, 0.0), 1.0)) * plot_h

    parts = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + plot_w}" y2="{y(tick):.1f}" stroke="#eaeef2"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    if days:
        parts.append(f'<text x="{left}" y="{height - 8}">{html.escape(days[0])}</text>')
        parts.append(f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end">{html.escape(days[-1])}</text>')
    for n, (name, values) in enumerate(series.items()):
        color = _SERIES_COLORS.get(name, "#57606a")
        run: list[str] = []
        segments: list[list[str]] = [run]
        for i, value in enumerate(values):
            if value is None:
                run = []
                segments.append(run)
            else:
                run.append(f"{left + (ordinals[i] - first) * step:.1f},{y(value):.1f}")
        for segment in segments:
            if len(segment) > 1:
                parts.append(
                    f'<polyline points="{" ".join(segment)}" fill="none" stroke="{color}" stroke-width="1.5"/>'
                )
            elif segment:
                cx, cy = segment[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
        legend_y = top + 14 + n * 18
        parts.append(
            f'<line x1="{left + plot_w + 12}" y1="{legend_y - 4}" x2="{left + plot_w + 30}" y2="{legend_y - 4}" '
            f'stroke="{color}" stroke-width="2"/>'
            f'<text x="{left + plot_w + 34}" y="{legend_y}">{html.escape(name)}</text>'
        )
    return _svg(width, height, "monitoring since promotion", "".join(parts))


# --- sections -------------------------------------------------------------------------------------------


def data_days(spec: DatasetSpec, card: ModelCard, evaluation: EvaluationRecord | None) -> dict[str, list[str]]:
    """Split → days the model was trained, validated and tested on: the spec's time split of the
    validated days it was trained from (ModelCard.data_partitions), the test days as evaluated."""
    from kennel.training.trainer import NotEnoughData, split_windows

    partitions = list(card.data_partitions)
    try:
        windows = split_windows(partitions, spec)
        days = {"train": windows.train, "validation": windows.validation, "test": windows.test}
    except NotEnoughData:
        days = {"validated days": sorted(set(partitions))}
    if evaluation is not None and evaluation.test_days:
        days["test"] = list(evaluation.test_days)
    return days


def _is_day(text: str) -> bool:
    try:
        return date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def monitoring_days(
    records: Mapping[MonitoringKind, Mapping[str, MonitoringRecord]], entry: ChampionEntry
) -> list[MonitoringDay]:
    """The champion's monitoring days since it became champion (kind → day → record, as
    DatasetLake.monitoring_records gives them), the last MAX_MONITORING_DAYS of them: a record made
    for another champion is left out."""
    since = entry.since[:10]

    def of(kind: MonitoringKind) -> dict[str, MonitoringRecord]:
        return {
            day: record
            for day, record in records.get(kind, {}).items()
            if _is_day(day) and day >= since and record.champion in (None, entry.model_tag)
        }

    realized, estimated, drift = of("realized_performance"), of("estimated_performance"), of("data_drift")
    days = sorted(set(realized) | set(estimated) | set(drift))[-MAX_MONITORING_DAYS:]
    rows = []
    for day in days:
        r, e, d = realized.get(day), estimated.get(day), drift.get(day)
        estimate = e.estimated_roc_auc if e else None
        if e is not None and estimate is None and "roc_auc" in e.estimates:
            estimate = e.estimates["roc_auc"].value
        rows.append(
            MonitoringDay(
                day=day,
                realized_auc=r.roc_auc if r else None,
                estimated_auc=estimate,
                drifted_share=d.drifted_share if d else None,
                labelled_rows=r.rows if r else None,
                concept_drift_suspected=e.concept_drift_suspected if e else None,
            )
        )
    return rows


def _header(spec: DatasetSpec, entry: ChampionEntry, card: ModelCard, as_of: str, promotion: bool) -> str:
    what = "as of promotion" if promotion else "with monitoring since promotion"
    facts = [
        ("data set", spec.name),
        ("model tag", entry.model_tag),
        ("run id", entry.run_id),
        ("model version", card.model_version),
        ("champion since", entry.since),
        ("became champion by", entry.event),
        ("reason", entry.reason),
        ("Bento", entry.bento_tag),
        ("spec fingerprint", card.spec_fingerprint),
        ("as of", as_of),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v, MAX_LONG_TEXT)}</td></tr>" for k, v in facts)
    return (
        f"<h1>Model card: {_fmt(spec.name)}</h1>"
        f'<p class="muted">Champion {_fmt(entry.run_id)}, {what}.</p><table>{rows}</table>'
    )


def _data_section(days: Mapping[str, list[str]], training: TrainingRecord | None) -> str:
    rows = []
    for split, listed in days.items():
        first, last = (listed[0], listed[-1]) if listed else (None, None)
        rows.append([split, len(listed), first, last])
    parts = ["<h2>Data</h2>", _table(["split", "days", "first day", "last day"], rows)]
    for split, listed in days.items():
        shown = listed[-MAX_LISTED_DAYS:]
        more = f" (the last {len(shown)} of {len(listed)})" if len(shown) < len(listed) else ""
        parts.append(
            f"<details><summary>{_fmt(split)} days{more}</summary><p>{_fmt(shown, 20 * len(shown))}</p></details>"
        )
    if training is not None:
        parts.append(
            _table(
                [
                    "train rows",
                    "validation rows",
                    "device",
                    "best iteration",
                    "validation log loss",
                    "validation ROC-AUC",
                ],
                [
                    [
                        training.train_rows,
                        training.validation_rows,
                        training.device,
                        training.best_iteration,
                        training.validation_logloss,
                        training.validation_auc,
                    ]
                ],
            )
        )
    return "".join(parts)


def _metrics_section(evaluation: EvaluationRecord | None, decision: GateDecision | None) -> str:
    metrics = (
        evaluation.metrics
        if evaluation
        else (decision.challenger_evaluation.metrics if decision and decision.challenger_evaluation else {})
    )
    champion = decision.champion_evaluation.metrics if decision and decision.champion_evaluation else None
    header = ["metric", "this model"] + (["champion it replaced (same rows)"] if champion is not None else [])
    rows = [
        [title, metrics.get(key)] + ([champion.get(key)] if champion is not None else [])
        for key, title in _METRICS
        if key in metrics
    ]
    parts = ["<h2>Test metrics</h2>"]
    if evaluation is not None and evaluation.test_days:
        parts.append(
            f'<p class="note">On the held-out test window {_fmt(evaluation.test_days[0])} to '
            f"{_fmt(evaluation.test_days[-1])}.</p>"
        )
    parts.append(_table(header, rows))
    if all(k in metrics for k in ("tp", "fp", "fn", "tn")):
        parts.append("<h3>Confusion matrix at the threshold</h3>")
        parts.append(
            _table(
                ["", "predicted 1", "predicted 0"],
                [["actual 1", metrics["tp"], metrics["fn"]], ["actual 0", metrics["fp"], metrics["tn"]]],
            )
        )
    return "".join(parts)


def _calibration_section(evaluation: EvaluationRecord | None) -> str:
    bins = evaluation.calibration if evaluation else []
    if not bins:
        return '<h2>Calibration</h2><p class="muted">No reliability bins recorded for this model.</p>'
    ece = evaluation.metrics.get("expected_calibration_error") if evaluation else None
    rows = [[b.get("bin"), b.get("rows"), b.get("mean_score"), b.get("observed_rate")] for b in bins[:100]]
    return (
        f'<h2>Calibration</h2><p class="note">Expected calibration error {_fmt(ece)}: the row-weighted distance '
        "between predicted and observed rate over equal-width score bins.</p>"
        + svg_reliability(bins[:100])
        + _table(["score bin", "rows", "mean predicted", "observed rate"], rows)
    )


def _fairness_section(spec: DatasetSpec, decision: GateDecision | None) -> str:
    groups = decision.challenger_evaluation.groups if decision and decision.challenger_evaluation else {}
    champion = decision.champion_evaluation.groups if decision and decision.champion_evaluation else {}
    parts = ["<h2>Fairness by group</h2>"]
    if not groups:
        listed = ", ".join(spec.sensitive_columns) or "none declared"
        parts.append(f'<p class="muted">No group measurements recorded (sensitive columns: {_fmt(listed)}).</p>')
        return "".join(parts)
    for column, report in groups.items():
        parts.append(f"<h3>{_fmt(column)}</h3>")
        base = champion.get(column)
        gap_rows = [[gap, value] + ([base.gaps.get(gap)] if base else []) for gap, value in report.gaps.items()]
        parts.append(_table(["gap", "this model"] + (["champion it replaced"] if base else []), gap_rows))
        table = sorted(report.table, key=lambda row: -(_number(row.get("count")) or 0.0))
        shown = table[:MAX_GROUPS]
        if len(shown) < len(table):
            parts.append(f'<p class="note">The {len(shown)} largest of {len(table)} groups.</p>')
        bars = [(str(row.get("group")), _number(row.get("selection_rate")) or 0.0) for row in shown]
        parts.append(svg_bars(bars, f"selection rate by {_clip(column, 40)}"))
        parts.append(_table(list(_GROUP_COLUMNS), [[row.get(c) for c in _GROUP_COLUMNS] for row in shown]))
    return "".join(parts)


def _shap_section(evaluation: EvaluationRecord | None) -> str:
    shap = evaluation.shap_mean_abs if evaluation else {}
    if not shap:
        return '<h2>SHAP summary</h2><p class="muted">No SHAP summary recorded for this model.</p>'
    ranked = sorted(shap.items(), key=lambda item: -item[1])
    total = sum(abs(v) for _, v in ranked) or 1.0
    top = ranked[:MAX_SHAP_FEATURES]
    note = f"the top {len(top)} of {len(ranked)} features" if len(top) < len(ranked) else f"all {len(ranked)} features"
    return (
        f'<h2>SHAP summary</h2><p class="note">Mean |SHAP| per feature on the test rows (exact TreeSHAP), {note}.</p>'
        + svg_bars(top, "mean absolute SHAP value per feature")
        + _table(["feature", "mean |SHAP|", "share"], [[name, value, abs(value) / total] for name, value in top])
    )


def _gate_section(decision: GateDecision | None) -> str:
    if decision is None:
        return '<h2>Promotion gate</h2><p class="muted">No gate decision recorded for this model.</p>'
    against = decision.champion.run_id if decision.champion else "(none: first model, held to absolute floors)"
    parts = [
        "<h2>Promotion gate</h2>",
        f"<p>{_verdict(decision.passed)} at {_fmt(decision.decided_at)} against champion {_fmt(against)} on "
        f"{decision.test_rows} test rows.</p>",
        f"<p>{_fmt(decision.summary, MAX_LONG_TEXT)}</p>",
        "<h3>Checks</h3>",
        _table(
            ["check", "passed", "value", "threshold", "detail"],
            [[c.name, c.passed, c.value, c.threshold, c.detail] for c in decision.checks],
            MAX_LONG_TEXT,
        ),
    ]
    if decision.bootstrap:
        parts.append("<h3>Paired bootstrap against the champion</h3>")
        parts.append(_table(["quantity", "value"], [[k, v] for k, v in decision.bootstrap.items()]))
    parts.append("<h3>Gate configuration</h3>")
    parts.append(_table(["setting", "value"], [[k, v] for k, v in decision.config.items()]))
    return "".join(parts)


def _inputs_section(card: ModelCard) -> str:
    rows = []
    for feature in card.features[:MAX_INPUTS]:
        seen = feature.seen
        if feature.categories is not None:
            observed: Any = f"{len(feature.categories)} categories: " + ", ".join(feature.categories[:8])
            observed += ", …" if len(feature.categories) > 8 else ""
        elif seen is not None and seen.min is not None:
            observed = f"{seen.min:g} to {seen.max:g}"
        else:
            observed = None
        rows.append([feature.name, feature.type.value, feature.learned, observed])
    more = len(card.features) - len(rows)
    note = f'<p class="note">The first {len(rows)} of {len(card.features)} inputs.</p>' if more else ""
    return (
        f'<h2>Inputs</h2><p class="note">{len(card.features)} inputs in the model\'s order; threshold '
        f"{card.threshold:.4f}.</p>{note}"
        + _table(["feature", "type", "learned categories", "in training"], rows, MAX_TEXT * 3)
        + "<h3>Hyperparameters</h3>"
        + _table(["parameter", "value"], [[k, v] for k, v in card.params.items()])
    )


def _monitoring_section(days: Sequence[MonitoringDay], entry: ChampionEntry) -> str:
    parts = ["<h2>Monitoring since promotion</h2>"]
    if not days:
        parts.append(
            f'<p class="muted">No monitoring records for {_fmt(entry.model_tag)} since {_fmt(entry.since)}.</p>'
        )
        return "".join(parts)
    labels = [d.day for d in days]
    parts.append(
        f'<p class="note">{len(days)} day(s), {_fmt(labels[0])} to {_fmt(labels[-1])} (at most the last '
        f"{MAX_MONITORING_DAYS}). Champion's test ROC-AUC: {_fmt(entry.metrics.get('roc_auc'))}.</p>"
    )
    parts.append(
        svg_lines(
            labels,
            {
                "realized ROC-AUC": [d.realized_auc for d in days],
                "estimated ROC-AUC": [d.estimated_auc for d in days],
                "drifted share": [d.drifted_share for d in days],
            },
        )
    )
    parts.append(
        _table(
            [
                "day",
                "realized ROC-AUC",
                "labelled rows",
                "estimated ROC-AUC",
                "concept drift suspected",
                "drifted share",
            ],
            [
                [d.day, d.realized_auc, d.labelled_rows, d.estimated_auc, d.concept_drift_suspected, d.drifted_share]
                for d in reversed(days)
            ],
        )
    )
    return "".join(parts)


def render_card_page(
    spec: DatasetSpec,
    entry: ChampionEntry,
    card: ModelCard,
    evaluation: EvaluationRecord | None,
    decision: GateDecision | None,
    training: TrainingRecord | None = None,
    monitoring: Mapping[MonitoringKind, Mapping[str, MonitoringRecord]] | None = None,
    as_of: str | None = None,
) -> str:
    """The champion's card as one HTML page. `monitoring` (kind → day → record) adds the section on
    the days since promotion; without it the page is the card as of promotion."""
    as_of = as_of or datetime.now(UTC).isoformat(timespec="seconds")
    sections = [
        _header(spec, entry, card, as_of, promotion=monitoring is None),
        _data_section(data_days(spec, card, evaluation), training),
        _metrics_section(evaluation, decision),
        _calibration_section(evaluation),
        _fairness_section(spec, decision),
        _shap_section(evaluation),
        _gate_section(decision),
    ]
    if monitoring is not None:
        sections.append(_monitoring_section(monitoring_days(monitoring, entry), entry))
    sections.append(_inputs_section(card))
    policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Model card: {_fmt(spec.name)} {_fmt(entry.run_id)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )


# --- the cards in the lake -------------------------------------------------------------------------------


def promoting_decision(registry: ChampionRegistry, entry: ChampionEntry) -> GateDecision | None:
    """The gate decision that made `entry` champion: the decision log's entry the promotion names
    (decided_at), else the model folder's latest decision."""
    decided_at = next(
        (e.decided_at for e in reversed(registry.history()) if e.event == "promoted" and e.run_id == entry.run_id),
        None,
    )
    if decided_at is not None:
        for decision in reversed(registry.decisions()):
            if decision.challenger.run_id == entry.run_id and decision.decided_at == decided_at:
                return decision
    return read_model_record(Path(entry.model_dir), GateDecision)


def write_cards(
    dataset_lake: DatasetLake, spec: DatasetSpec, entry: ChampionEntry | None = None, as_of: str | None = None
) -> CardPaths:
    """Write the champion's cards (`entry`, else the current champion): promotion.html once, latest.html
    (with monitoring since promotion) every time, both atomically. Raises LookupError when there is no
    champion or its model folder has no model card."""
    registry = ChampionRegistry(dataset_lake)
    entry = entry or registry.current()
    if entry is None:
        raise LookupError(f"{dataset_lake.name} has no champion yet: there is no model card to write")
    model_dir = Path(entry.model_dir)
    if not (model_dir / CARD_FILE).is_file():
        raise LookupError(f"champion {entry.run_id}: {model_dir / CARD_FILE} is missing")
    card = ModelCard.load(model_dir)
    evaluation = read_model_record(model_dir, EvaluationRecord)
    training = read_model_record(model_dir, TrainingRecord)
    decision = promoting_decision(registry, entry)
    folder = dataset_lake.cards_dir() / entry.run_id
    promotion, latest = folder / PROMOTION_CARD, folder / LATEST_CARD
    promotion_written = not promotion.is_file()
    if promotion_written:
        write_atomically(
            promotion, render_card_page(spec, entry, card, evaluation, decision, training, as_of=entry.since)
        )
    monitoring = {kind: dataset_lake.monitoring_records(kind) for kind in MONITORED_KINDS}
    page = render_card_page(spec, entry, card, evaluation, decision, training, monitoring, as_of)
    write_atomically(latest, page)
    return CardPaths(
        run_id=entry.run_id,
        promotion=promotion,
        latest=latest,
        promotion_written=promotion_written,
        latest_bytes=len(page.encode("utf-8")),
        monitoring_days=len(monitoring_days(monitoring, entry)),
    )
