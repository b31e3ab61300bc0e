"""Shadow evaluation: the challenger served in shadow against the champion on the same live requests.

The service answers every request with the champion (prediction log) and scores it with the shadow
challenger too (shadow log, kennel.serving.prediction_log.ShadowLog); the two are joined by request_id.
On those requests:

- agreement: the share both models label alike, each at its own threshold;
- score PSI: the challenger's scores against the champion's, binned on the champion's deciles (the PSI
  of kennel.monitoring.drift);
- once `shadow_min_requests` requests and `shadow_min_labelled` labelled ones (both label values) are
  in: the paired bootstrap of the offline gate (kennel.training.gate.paired_bootstrap, with the gate
  config's metric, samples, confidence and seed), passed when its lower bound is above
  `min_improvement`, rejected otherwise;
- without a verdict after `shadow_max_days`: expired; before: pending.

Labels come as realized performance gets them (kennel.monitoring.performance): the landed row's own
label for a record that also landed, else the outcome sent to /feedback for the request, else the
latest late label for its record id (kennel.ingestion.labels.latest_labels).

The maths (`agreement`, `score_psi`, `evaluate_shadow`) are pure functions of frames and arrays;
`shadow_traffic` is the thin loader from the lake.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from kennel.lake.records import ChampionEntry, GateDecision, ShadowEntry, ShadowEvaluationRecord
from kennel.training.config import GateConfig
from kennel.training.gate import paired_bootstrap, weighted_metric

if TYPE_CHECKING:
    from kennel.lake import DatasetLake
    from kennel.spec import DatasetSpec

# The joined requests `evaluate_shadow` reads: one row per request scored by both models.
TRAFFIC_COLUMNS = (
    "request_id",
    "predicted_at",
    "champion_probability",
    "champion_label",
    "challenger_probability",
    "challenger_label",
    "label",  # 0/1 as float; NaN = not known yet
)
PSI_BINS = 10  # the champion's deciles, as drift bins a reference


def agreement(champion_labels: np.ndarray, challenger_labels: np.ndarray) -> float | None:
    """Share of requests both models labelled alike; None without requests."""
    if len(champion_labels) == 0:
        return None
    return float(np.mean(np.asarray(champion_labels) == np.asarray(challenger_labels)))


def score_psi(champion_scores: np.ndarray, challenger_scores: np.ndarray, bins: int = PSI_BINS) -> float | None:
    """PSI of the challenger's scores against the champion's (the reference), on the champion's quantile
    bins; None without scores."""
    from kennel.monitoring.drift import binned_shares, psi

    reference = np.asarray(champion_scores, dtype=np.float64)
    current = np.asarray(challenger_scores, dtype=np.float64)
    present = reference[~np.isnan(reference)]
    if present.size == 0 or current.size == 0:
        return None
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    return psi(binned_shares(reference, edges), binned_shares(current, edges))


def shadow_thresholds(config: GateConfig) -> dict[str, Any]:
    """The gate config's settings a shadow evaluation is judged by."""
    return config.model_dump(
        include={
            "primary_metric",
            "min_improvement",
            "confidence",
            "bootstrap_samples",
            "seed",
            "shadow_min_requests",
            "shadow_min_labelled",
            "shadow_max_days",
        }
    )


def evaluate_shadow(
    traffic: pd.DataFrame,
    config: GateConfig,
    shadow: ShadowEntry,
    champion: ChampionEntry,
    *,
    now: datetime | None = None,
) -> ShadowEvaluationRecord:
    """The shadow evaluation of `shadow` against `champion` on `traffic` (TRAFFIC_COLUMNS, in the order
    the requests were served), judged by `config` (the gate config of the shadow's gate decision)."""
    now = now or datetime.now(UTC)
    metric = config.primary_metric
    requests = len(traffic)
    champion_scores = traffic["champion_probability"].to_numpy(dtype=np.float64)
    challenger_scores = traffic["challenger_probability"].to_numpy(dtype=np.float64)
    known = traffic["label"].notna().to_numpy()
    y = traffic["label"].to_numpy(dtype=np.float64)[known].astype(int)
    labelled, positives = int(known.sum()), int(y.sum())
    both_labels = 0 < positives < labelled

    metrics: dict[str, dict[str, float | None]] = {}
    if both_labels:
        ones = np.ones((1, labelled))
        metrics = {
            name: {metric: float(weighted_metric(metric, y, scores[known], ones)[0])}
            for name, scores in (("challenger", challenger_scores), ("champion", champion_scores))
        }
    bootstrap = None
    age_days = (now - datetime.fromisoformat(shadow.since)).total_seconds() / 86400
    outcome: Literal["pending", "passed", "rejected", "expired"]
    enough = requests >= config.shadow_min_requests and labelled >= config.shadow_min_labelled and both_labels
    if enough:
        bootstrap = paired_bootstrap(
            metric,
            y,
            challenger_scores[known],
            champion_scores[known],
            config.bootstrap_samples,
            config.confidence,
            config.seed,
        )
        lower = bootstrap["lower_bound"]
        outcome = "passed" if lower > config.min_improvement else "rejected"
        summary = (
            f"{outcome} in shadow beside champion {champion.run_id} on {labelled} labelled of {requests} live "
            f"requests: {metric} difference {bootstrap['difference']:+.4f}, {config.confidence:.0%} lower bound "
            f"{lower:+.4f} {'>' if outcome == 'passed' else '≤'} {config.min_improvement:+.4f}"
        )
    else:
        waiting = (
            f"{requests}/{config.shadow_min_requests} requests, {labelled}/{config.shadow_min_labelled} labelled"
            + ("" if both_labels or not labelled else " (one label value only)")
        )
        if age_days > config.shadow_max_days:
            outcome = "expired"
            summary = f"expired after {age_days:.1f} of {config.shadow_max_days:g} days without a verdict: {waiting}"
        else:
            outcome = "pending"
            summary = f"pending after {age_days:.1f} of {config.shadow_max_days:g} days: {waiting}"
    return ShadowEvaluationRecord(
        evaluated_at=now.isoformat(timespec="seconds"),
        outcome=outcome,
        summary=summary,
        challenger_run_id=shadow.run_id,
        challenger_model_tag=shadow.model_tag,
        model_dir=shadow.model_dir,
        champion_run_id=champion.run_id,
        champion_model_tag=champion.model_tag,
        shadow_since=shadow.since,
        decided_at=shadow.decided_at,
        requests=requests,
        labelled=labelled,
        positives=positives,
        agreement=agreement(traffic["champion_label"].to_numpy(), traffic["challenger_label"].to_numpy()),
        score_psi=score_psi(champion_scores, challenger_scores),
        mean_score=(
            {"challenger": float(challenger_scores.mean()), "champion": float(champion_scores.mean())}
            if requests
            else {}
        ),
        metrics=metrics,
        bootstrap=bootstrap,
        thresholds=shadow_thresholds(config),
    )


def shadow_gate_config(shadow: ShadowEntry) -> GateConfig:
    """The gate config the shadow is judged by: the one its gate decision recorded."""
    from pathlib import Path

    from kennel.lake import read_model_record

    decision = read_model_record(Path(shadow.model_dir), GateDecision)
    if decision is None:
        raise LookupError(f"shadow {shadow.run_id} has no gate decision in {shadow.model_dir}")
    return GateConfig.model_validate(decision.config)


def _landed_labels(spec: DatasetSpec, data: DatasetLake, since_day: str) -> pd.Series:
    """Record id → own label of validated rows that landed on or after `since_day`."""
    from kennel.spec import WHITESPACE

    frames = []
    for record in data.quality_records():
        if record.day < since_day or not record.passed:
            continue
        path = data.published(record.day)
        if path is not None:
            frames.append(pd.read_parquet(path, columns=[spec.id_column, spec.label.column]))
    if not frames:
        return pd.Series([], dtype=float)
    landed = pd.concat(frames, ignore_index=True)
    ids = landed[spec.id_column].astype("string").str.strip(WHITESPACE)
    labels = pd.Series(landed[spec.label.column].astype(float).to_numpy(), index=ids)
    labels = labels[labels.notna() & labels.index.notna()]
    return labels[~labels.index.duplicated(keep="last")]


def shadow_traffic(spec: DatasetSpec, data: DatasetLake, shadow: ShadowEntry, champion: ChampionEntry) -> pd.DataFrame:
    """The requests served since the shadow started that both the champion (prediction log) and the
    shadow (shadow log) scored, joined by request_id, with labels as far as they have arrived
    (TRAFFIC_COLUMNS, oldest first)."""
    from kennel.ingestion.labels import latest_labels
    from kennel.serving.prediction_log import read_predictions, read_shadow_predictions
    from kennel.spec import WHITESPACE

    since = pd.Timestamp(shadow.since)
    since_day = since.strftime("%Y-%m-%d")
    served = read_predictions(data, start=since_day)
    served = served[(served["model_tag"] == champion.model_tag) & (served["predicted_at"] >= since)]
    shadowed = read_shadow_predictions(data, start=since_day)
    shadowed = shadowed[
        (shadowed["model_tag"] == shadow.model_tag) & (shadowed["champion_model_tag"] == champion.model_tag)
    ]
    joined = served.drop_duplicates("request_id").merge(
        shadowed.drop_duplicates("request_id")[["request_id", "probability", "predicted_label"]],
        on="request_id",
        how="inner",
        suffixes=("", "_challenger"),
    )
    if joined.empty:
        return _traffic(joined, pd.Series([], dtype=np.float64))
    record_ids = joined[spec.id_column].astype("string").str.strip(WHITESPACE)
    late = latest_labels(spec, data).set_index("record_id")["label"].astype(float)
    label = (
        record_ids.map(_landed_labels(spec, data, since_day))
        .astype(float)
        .fillna(joined["actual_label"].astype(float))
        .fillna(record_ids.map(late).astype(float))
    )
    return _traffic(joined, label)


def _traffic(joined: pd.DataFrame, label: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": joined["request_id"].astype(str),
            "predicted_at": joined["predicted_at"],
            "champion_probability": joined["probability"].astype(np.float64),
            "champion_label": joined["predicted_label"].astype(np.int8),
            "challenger_probability": joined["probability_challenger"].astype(np.float64),
            "challenger_label": joined["predicted_label_challenger"].astype(np.int8),
            "label": label.to_numpy(dtype=np.float64),
        }
    ).reset_index(drop=True)
