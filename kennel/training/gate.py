"""The promotion gate: may a challenger model replace the champion?

Both models score the same test rows. The challenger passes when every check passes:

- sanity: no NaN or infinite score; the scores are not collapsed to (nearly) one value; one
  single-record prediction through the serving code path stays within the latency budget;
- with a champion: a paired bootstrap over the test rows (the same resample for both models) puts the
  one-sided lower confidence bound of (challenger − champion) on the primary metric above
  `min_improvement`, and no fairness gap (demographic parity, equalized odds; per sensitive column)
  is wider than the champion's on the same rows by more than `fairness_tolerance`;
- without a champion (the first model): the primary metric reaches `floor_primary_metric` and no
  fairness gap exceeds `max_fairness_gap`.

`decide` returns the decision record: every number and the threshold it was held against.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kennel.lake.records import GateDecision, ModelIdentity
from kennel.model import Model, ModelCard, record_columns
from kennel.training.config import GateConfig
from kennel.training.evaluation import EvaluationReport, evaluate

if TYPE_CHECKING:
    from kennel.privacy import Redactor

GAPS = ("demographic_parity_difference", "equalized_odds_difference")
# Bootstrap weights are materialised in chunks of at most this many cells (resamples × rows).
_CHUNK_CELLS = 4_000_000


@dataclass
class Candidate:
    """A model as the gate sees it: its folder (model.ubj, model_card.json, spec.yaml) and identity."""

    run_id: str
    model_dir: Path
    model_tag: str | None = None

    @functools.cached_property
    def model(self) -> Model:
        return Model.load(self.model_dir)

    @property
    def card(self) -> ModelCard:
        return self.model.card

    def identity(self) -> ModelIdentity:
        card = self.card
        return ModelIdentity(
            run_id=self.run_id,
            model_tag=self.model_tag,
            model_dir=str(self.model_dir),
            spec_fingerprint=card.spec_fingerprint,
            threshold=card.threshold,
        )

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.score(frame)


def weighted_metric(metric: str, y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`metric` ("roc_auc" or "pr_auc") of `scores` against labels `y` under each row of `weights`
    (shape resamples × rows; bootstrap counts), ties handled as scikit-learn does. One resample of
    all-ones weights gives exactly roc_auc_score / average_precision_score."""
    order = np.argsort(-scores, kind="stable")
    s_sorted, y_sorted, w = scores[order], y[order].astype(float), weights[:, order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # groups of equal score, best first
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - y_sorted), starts, axis=1)
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "roc_auc":
            neg_below = total_neg[:, None] - np.cumsum(neg, axis=1)  # negatives scored strictly lower
            return (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
        if metric == "pr_auc":
            tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
            return (pos * tp / np.maximum(tp + fp, 1e-12)).sum(axis=1) / total_pos
    raise ValueError(f"unknown metric {metric!r}")


def paired_bootstrap(
    metric: str, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, samples: int, confidence: float, seed: int
) -> dict[str, Any]:
    """Distribution of metric(challenger) − metric(champion) over row resamples shared by both models."""
    n = len(y)
    rng = np.random.default_rng(seed)
    diffs: list[np.ndarray] = []
    chunk = max(1, min(samples, _CHUNK_CELLS // max(n, 1)))
    done = 0
    while done < samples:
        b = min(chunk, samples - done)
        idx = rng.integers(0, n, size=(b, n))
        counts = np.bincount((idx + np.arange(b)[:, None] * n).ravel(), minlength=b * n).reshape(b, n)
        diffs.append(weighted_metric(metric, y, challenger, counts) - weighted_metric(metric, y, champion, counts))
        done += b
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]  # a resample with a single label value has no AUC
    ones = np.ones((1, n))
    observed = float(weighted_metric(metric, y, challenger, ones)[0] - weighted_metric(metric, y, champion, ones)[0])
    return {
        "metric": metric,
        "samples": int(len(d)),
        "confidence": confidence,
        "difference": observed,
        "mean_difference": float(d.mean()),
        "lower_bound": float(np.quantile(d, 1 - confidence)),
        "upper_bound": float(np.quantile(d, confidence)),
        "share_not_better": float((d <= 0).mean()),
    }


def single_record_latency_ms(model: Model, records: list[dict], samples: int) -> dict[str, float]:
    """Latency of one-record predictions through the code the Bento service runs per request
    (a freshly loaded model scoring one record's columns)."""
    names = model.card.feature_names

    def predict_one(record: dict) -> None:
        model.score_columns(record_columns([record], names), 1)

    for record in records[:5]:  # warm-up: first calls pay one-off allocation costs
        predict_one(record)
    timings = []
    for i in range(samples):
        started = time.perf_counter()
        predict_one(records[i % len(records)])
        timings.append((time.perf_counter() - started) * 1000)
    return {f"p{q}": float(np.percentile(timings, q)) for q in (50, 95, 99)}


def _check(name: str, passed: bool, value: Any, threshold: Any, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "value": value, "threshold": threshold, "detail": detail}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _fairness_checks(
    challenger: EvaluationReport, champion: EvaluationReport | None, config: GateConfig
) -> list[dict[str, Any]]:
    checks = []
    for column, group in challenger.groups.items():
        for gap in GAPS:
            value = group.gaps[gap]
            base = champion.groups[column].gaps[gap] if champion else None
            if base is not None:
                limit, basis = (
                    base + config.fairness_tolerance,
                    f"champion {_fmt(base)} + tolerance {config.fairness_tolerance}",
                )
            else:
                limit, basis = config.max_fairness_gap, "absolute limit max_fairness_gap"
            if value is None:
                checks.append(
                    _check(
                        f"fairness_{column}_{gap}",
                        True,
                        None,
                        limit,
                        f"{column}: {gap} not measurable (fewer than two groups of {config.min_group_rows}+ rows)",
                    )
                )
                continue
            checks.append(
                _check(
                    f"fairness_{column}_{gap}",
                    value <= limit,
                    value,
                    limit,
                    f"{column}: {gap} {_fmt(value)} {'≤' if value <= limit else '>'} {_fmt(limit)} ({basis})",
                )
            )
    return checks


def _report_numbers(report: EvaluationReport) -> dict[str, Any]:
    return {
        "metrics": report.metrics,
        "groups": {col: {"gaps": g.gaps, "table": g.table.to_dict("records")} for col, g in report.groups.items()},
    }


def decide(
    challenger: Candidate,
    champion: Candidate | None,
    test: pd.DataFrame,
    sensitive: list[str],
    config: GateConfig,
    redactor: Redactor | None = None,
) -> GateDecision:
    """The gate's decision record for `challenger` against `champion` (None: first model) on `test`; the
    fairness groups of a personal sensitive column are named by their hashes (`redactor`)."""
    metric = config.primary_metric
    chal_card = challenger.card
    chal_scores = challenger.scores(test)
    checks = _sanity_checks(challenger, chal_card, chal_scores, test, config)
    chal_report = champ_report = bootstrap = None
    if checks[0]["passed"]:  # metrics of NaN scores would be meaningless (and scikit-learn refuses them)
        chal_report = evaluate(test, chal_scores, chal_card.threshold, sensitive, config.min_group_rows, redactor)
        value = chal_report.metrics[metric]
        if champion is None:
            ok = value is not None and value >= config.floor_primary_metric
            checks.append(
                _check(
                    f"floor_{metric}",
                    ok,
                    value,
                    config.floor_primary_metric,
                    f"first model: {metric} {_fmt(value)} {'≥' if ok else '<'} floor {config.floor_primary_metric}",
                )
            )
        else:
            champ_card = champion.card
            champ_scores = champion.scores(test)
            champ_report = evaluate(
                test, champ_scores, champ_card.threshold, sensitive, config.min_group_rows, redactor
            )
            champ_value = champ_report.metrics[metric]
            if value is None or champ_value is None:
                checks.append(
                    _check(
                        f"beats_champion_{metric}",
                        False,
                        None,
                        config.min_improvement,
                        f"{metric} is undefined on these test rows (one label value)",
                    )
                )
            else:
                bootstrap = paired_bootstrap(
                    metric,
                    test["label"].to_numpy(dtype=int),
                    chal_scores,
                    champ_scores,
                    config.bootstrap_samples,
                    config.confidence,
                    config.seed,
                )
                lower = bootstrap["lower_bound"]
                ok = lower > config.min_improvement
                checks.append(
                    _check(
                        f"beats_champion_{metric}",
                        ok,
                        lower,
                        config.min_improvement,
                        f"{metric} {_fmt(value)} vs champion {_fmt(champ_value)}: difference "
                        f"{bootstrap['difference']:+.4f}, {config.confidence:.0%} lower bound {lower:+.4f} "
                        f"{'>' if ok else '≤'} {config.min_improvement:+.4f} ({bootstrap['samples']} paired resamples)",
                    )
                )
        checks += _fairness_checks(chal_report, champ_report, config)
    else:
        checks.append(
            _check(
                f"{'floor' if champion is None else 'beats_champion'}_{metric}",
                False,
                None,
                config.floor_primary_metric if champion is None else config.min_improvement,
                f"{metric} not computed: the challenger gives NaN or infinite scores",
            )
        )

    failed = [c for c in checks if not c["passed"]]
    against = f"champion {champion.run_id}" if champion else "the absolute floors (no champion yet)"
    value = chal_report.metrics[metric] if chal_report else None
    summary = (
        f"passed against {against}: {metric} {_fmt(value)}"
        if not failed
        else f"rejected against {against}: " + "; ".join(c["detail"] for c in failed)
    )
    return GateDecision.model_validate(
        {
            "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "passed": not failed,
            "summary": summary,
            "reasons": [c["detail"] for c in failed],
            "challenger": challenger.identity(),
            "champion": champion.identity() if champion else None,
            "test_rows": int(len(test)),
            "config": config.model_dump(),
            "challenger_evaluation": _report_numbers(chal_report) if chal_report else None,
            "champion_evaluation": _report_numbers(champ_report) if champ_report else None,
            "bootstrap": bootstrap,
            "checks": checks,
        }
    )


def _sanity_checks(
    challenger: Candidate, card: ModelCard, scores: np.ndarray, test: pd.DataFrame, config: GateConfig
) -> list[dict[str, Any]]:
    """NaN scores first (decide relies on that order), then collapse and latency."""
    non_finite = int((~np.isfinite(scores)).sum())
    std = float(np.std(scores[np.isfinite(scores)])) if non_finite < len(scores) else 0.0
    # Only the records the latency check sends (it cycles through the first `latency_samples`): turning a
    # whole test window into dicts cost more than the check.
    records = test[card.feature_names].head(max(config.latency_samples, 5)).to_dict("records")
    latency = single_record_latency_ms(Model.load(challenger.model_dir), records, config.latency_samples)
    return [
        _check(
            "no_nan_scores",
            non_finite == 0,
            non_finite,
            0,
            f"{non_finite} of {len(scores)} test scores are NaN or infinite",
        ),
        _check(
            "scores_not_collapsed",
            std >= config.min_score_std,
            std,
            config.min_score_std,
            f"score standard deviation {std:.5f} {'≥' if std >= config.min_score_std else '<'} {config.min_score_std}",
        ),
        _check(
            "latency_p95_ms",
            latency["p95"] <= config.max_latency_ms,
            latency["p95"],
            config.max_latency_ms,
            f"single-record prediction p95 {latency['p95']:.2f} ms (p50 {latency['p50']:.2f}, p99 "
            f"{latency['p99']:.2f}) against a budget of {config.max_latency_ms} ms",
        ),
    ]
