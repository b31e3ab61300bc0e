"""Evaluation of scores on held-out rows: overall metrics, calibration, per-group (fairness) metrics and a
SHAP summary from the model's exact feature contributions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from kennel.model import Model
    from kennel.privacy import Redactor


def _counts_by_score(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives per distinct score, highest score first (equal scores form one group,
    so ties count as scikit-learn counts them)."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], np.asarray(y, dtype=np.float64)[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    positives = np.add.reduceat(y_sorted, starts)
    return positives, np.diff(np.r_[starts, len(s)]) - positives


def roc_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC-AUC (= scikit-learn's roc_auc_score), or None when the rows hold only one label value (it is
    undefined then). Labels are 0/1."""
    if len(y) == 0:
        return None
    positives, negatives = _counts_by_score(y, s)
    total_pos, total_neg = positives.sum(), negatives.sum()
    if total_pos == 0 or total_neg == 0:
        return None
    negatives_below = total_neg - np.cumsum(negatives)  # negatives scored strictly lower
    return float((positives * (negatives_below + 0.5 * negatives)).sum() / (total_pos * total_neg))


def average_precision(y: np.ndarray, s: np.ndarray) -> float | None:
    """Area under the precision-recall curve as scikit-learn's average_precision_score computes it
    (precision at each distinct score, weighted by the recall it adds); None without both label values."""
    if len(y) == 0:
        return None
    positives, negatives = _counts_by_score(y, s)
    total_pos = positives.sum()
    if total_pos == 0 or negatives.sum() == 0:
        return None
    tp, fp = np.cumsum(positives), np.cumsum(negatives)
    return float((positives * tp / (tp + fp)).sum() / total_pos)


def log_loss(y: np.ndarray, s: np.ndarray) -> float | None:
    """Mean binary cross-entropy of the scores (clipped to [1e-7, 1 - 1e-7]), or None without rows."""
    if not len(y):
        return None
    p = np.clip(np.asarray(s, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=np.float64)
    return float(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)).mean())


def classification_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    y = y.astype(int)
    pred = scores >= threshold
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    return {
        "rows": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else None,
        "roc_auc": roc_auc(y, scores),
        "pr_auc": average_precision(y, scores),
        "log_loss": log_loss(y, scores),
        "brier": float(np.mean((np.asarray(scores, dtype=np.float64) - y) ** 2)) if len(y) else None,
        "threshold": float(threshold),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def calibration_table(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Reliability curve on equal-width score bins: mean predicted vs observed positive rate."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            rows.append(
                {
                    "bin": f"{edges[b]:.1f}–{edges[b + 1]:.1f}",
                    "rows": int(mask.sum()),
                    "mean_score": float(scores[mask].mean()),
                    "observed_rate": float(y[mask].mean()),
                }
            )
    return pd.DataFrame(rows)


def group_metrics(frame: pd.DataFrame, scores: np.ndarray, column: str, threshold: float) -> pd.DataFrame:
    """Per-group count (positives, negatives), selection rate, TPR, FPR and AUC for one sensitive column
    (missing = its own group)."""
    groups = frame[column].astype("object").where(frame[column].notna(), "(missing)")
    y = frame["label"].to_numpy(dtype=int)
    pred = scores >= threshold
    rows = []
    for group in sorted(groups.unique(), key=str):
        m = (groups == group).to_numpy()
        yg, pg = y[m], pred[m]
        rows.append(
            {
                "group": str(group),
                "count": int(m.sum()),
                "positives": int((yg == 1).sum()),
                "negatives": int((yg == 0).sum()),
                "positive_rate": float(yg.mean()),
                "selection_rate": float(pg.mean()),
                "tpr": float(pg[yg == 1].mean()) if (yg == 1).any() else None,
                "fpr": float(pg[yg == 0].mean()) if (yg == 0).any() else None,
                "auc": roc_auc(yg, scores[m]),
            }
        )
    return pd.DataFrame(rows)


def fairness_gaps(groups: pd.DataFrame, min_count: int = 1) -> dict[str, float | None]:
    """Demographic-parity difference and equalized-odds difference (max of TPR and FPR gaps).

    A group's rate enters a gap only when it rests on at least `min_count` rows of its own denominator
    (all rows for the selection rate, positives for TPR, negatives for FPR): a rate from a handful of
    rows is noise, and the largest gap would always be the smallest group's. Every group stays in the
    table."""

    def spread(col: str, denominator: str) -> float | None:
        vals = groups.loc[groups[denominator] >= min_count, col].dropna() if len(groups) else pd.Series(dtype=float)
        return float(vals.max() - vals.min()) if len(vals) >= 2 else None

    tpr, fpr = spread("tpr", "positives"), spread("fpr", "negatives")
    eo = max(v for v in (tpr, fpr) if v is not None) if (tpr is not None or fpr is not None) else None
    return {"demographic_parity_difference": spread("selection_rate", "count"), "equalized_odds_difference": eo}


def expected_calibration_error(calibration: pd.DataFrame) -> float | None:
    """Row-weighted mean distance between predicted and observed rate over the reliability bins."""
    if calibration.empty:
        return None
    weights = calibration["rows"] / calibration["rows"].sum()
    return float((weights * (calibration["mean_score"] - calibration["observed_rate"]).abs()).sum())


def shap_summary(model: Model, frame: pd.DataFrame, max_rows: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Mean |SHAP| and mean SHAP per feature (exact TreeSHAP, `Model.explain`), on up to `max_rows` rows
    drawn with a fixed seed; `share` is each feature's part of the total mean |SHAP|."""
    sample = frame.sample(n=max_rows, random_state=seed) if len(frame) > max_rows else frame
    contributions = model.explain(sample).drop(columns="bias")
    mean_abs = contributions.abs().mean(axis=0).to_numpy()
    table = pd.DataFrame(
        {
            "feature": list(contributions.columns),
            "mean_abs_shap": mean_abs,
            "mean_shap": contributions.mean(axis=0).to_numpy(),
            "share": mean_abs / (mean_abs.sum() or 1.0),
        }
    )
    return table.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class GroupFairness:
    table: pd.DataFrame  # per group of one sensitive column: count, selection rate, TPR, FPR, AUC
    gaps: dict[str, float | None]  # demographic parity and equalized odds differences


@dataclass(frozen=True)
class EvaluationReport:
    metrics: dict[str, Any]  # classification_metrics plus expected_calibration_error
    calibration: pd.DataFrame
    groups: dict[str, GroupFairness]  # per sensitive column


def evaluate(
    frame: pd.DataFrame,
    scores: np.ndarray,
    threshold: float,
    sensitive: list[str],
    min_group_rows: int = 1,
    redactor: Redactor | None = None,
) -> EvaluationReport:
    """Metrics, calibration and per-group fairness of `scores` on `frame` (its `label` and sensitive
    columns); a personal sensitive column's groups are named by their hashes (`redactor`)."""
    y = frame["label"].to_numpy(dtype=int)
    if redactor:
        frame = redactor.redact_frame(frame[["label", *sensitive]])
    calibration = calibration_table(y, scores)
    groups = {}
    for column in sensitive:
        table = group_metrics(frame, scores, column, threshold)
        groups[column] = GroupFairness(table=table, gaps=fairness_gaps(table, min_group_rows))
    metrics = {
        **classification_metrics(y, scores, threshold),
        "expected_calibration_error": expected_calibration_error(calibration),
    }
    return EvaluationReport(metrics=metrics, calibration=calibration, groups=groups)


def calibration_markdown(calibration: pd.DataFrame, width: int = 30) -> str:
    """A reliability plot the Dagster UI can render: predicted vs observed rate as bars per bin."""
    lines = ["| score bin | rows | predicted | observed | observed rate |", "|---|---|---|---|---|"]
    for row in calibration.itertuples(index=False):
        bar = "█" * round(row.observed_rate * width)
        lines.append(f"| {row.bin} | {row.rows} | {row.mean_score:.3f} | {row.observed_rate:.3f} | `{bar:<{width}}` |")
    return "\n".join(lines)


def bars_markdown(table: pd.DataFrame, label: str, value: str, width: int = 30, digits: int = 4) -> str:
    """A horizontal bar chart as a markdown table (bars scaled to the largest value)."""
    top = float(table[value].max()) if len(table) else 0.0
    lines = [f"| {label} | {value} | |", "|---|---|---|"]
    for row in table.itertuples(index=False):
        v = float(getattr(row, value))
        bar = "█" * (round(v / top * width) if top > 0 else 0)
        lines.append(f"| {getattr(row, label)} | {v:.{digits}f} | `{bar:<{width}}` |")
    return "\n".join(lines)
