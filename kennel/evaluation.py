"""Evaluation of scores on held-out rows: overall metrics, calibration and per-group (fairness) metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None


def classification_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss

    y = y.astype(int)
    pred = scores >= threshold
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    both = len(np.unique(y)) == 2
    return {
        "rows": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else None,
        "roc_auc": _auc(y, scores),
        "pr_auc": float(average_precision_score(y, scores)) if both else None,
        "log_loss": float(log_loss(y, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])) if len(y) else None,
        "brier": float(brier_score_loss(y, scores)) if len(y) else None,
        "threshold": float(threshold),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def calibration_table(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Reliability curve on equal-width score bins: mean predicted vs observed positive rate."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            rows.append({"bin": f"{edges[b]:.1f}–{edges[b + 1]:.1f}", "rows": int(mask.sum()),
                         "mean_score": float(scores[mask].mean()), "observed_rate": float(y[mask].mean())})
    return pd.DataFrame(rows)


def group_metrics(frame: pd.DataFrame, scores: np.ndarray, column: str, threshold: float) -> pd.DataFrame:
    """Per-group count, selection rate, TPR, FPR and AUC for one sensitive column (missing = its own group)."""
    groups = frame[column].astype("object").where(frame[column].notna(), "(missing)")
    y = frame["label"].to_numpy(dtype=int)
    pred = scores >= threshold
    rows = []
    for group in sorted(groups.unique(), key=str):
        m = (groups == group).to_numpy()
        yg, pg = y[m], pred[m]
        rows.append({
            "group": str(group),
            "count": int(m.sum()),
            "positive_rate": float(yg.mean()),
            "selection_rate": float(pg.mean()),
            "tpr": float(pg[yg == 1].mean()) if (yg == 1).any() else None,
            "fpr": float(pg[yg == 0].mean()) if (yg == 0).any() else None,
            "auc": _auc(yg, scores[m]),
        })
    return pd.DataFrame(rows)


def fairness_gaps(groups: pd.DataFrame) -> dict[str, float | None]:
    """Demographic-parity difference and equalized-odds difference (max of TPR and FPR gaps)."""

    def spread(col: str) -> float | None:
        vals = groups[col].dropna()
        return float(vals.max() - vals.min()) if len(vals) >= 2 else None

    tpr, fpr = spread("tpr"), spread("fpr")
    eo = max(v for v in (tpr, fpr) if v is not None) if (tpr is not None or fpr is not None) else None
    return {"demographic_parity_difference": spread("selection_rate"), "equalized_odds_difference": eo}


def evaluate(frame: pd.DataFrame, scores: np.ndarray, threshold: float, sensitive: list[str]) -> dict[str, Any]:
    y = frame["label"].to_numpy(dtype=int)
    report: dict[str, Any] = {
        "metrics": classification_metrics(y, scores, threshold),
        "calibration": calibration_table(y, scores),
        "groups": {},
    }
    for column in sensitive:
        table = group_metrics(frame, scores, column, threshold)
        report["groups"][column] = {"table": table, "gaps": fairness_gaps(table)}
    return report


def calibration_markdown(calibration: pd.DataFrame, width: int = 30) -> str:
    """A reliability plot the Dagster UI can render: predicted vs observed rate as bars per bin."""
    lines = ["| score bin | rows | predicted | observed | observed rate |", "|---|---|---|---|---|"]
    for row in calibration.itertuples(index=False):
        bar = "█" * round(row.observed_rate * width)
        lines.append(f"| {row.bin} | {row.rows} | {row.mean_score:.3f} | {row.observed_rate:.3f} | `{bar:<{width}}` |")
    return "\n".join(lines)
