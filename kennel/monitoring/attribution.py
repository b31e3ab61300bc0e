"""Explanation drift: whether the model relies on its features differently on served rows than on the rows
it was trained on, measured on TreeSHAP attributions (`Model.explain`), so it needs no labels.

The statistic is each feature's mean |SHAP| over a batch of rows. When a model is trained, its reference
rows (up to `max_rows`, explained once) give each feature's mean |SHAP|, its share of the total, and the
sampling distribution of a batch's mean |SHAP|: bootstrap batches of `batch_rows` rows drawn with a fixed
seed (mean, standard deviation and quantiles). That is the attribution profile, stored next to the model.

A day of served rows is compared on a sample of at most `max_rows` rows; per feature, with `ref` and `cur`
the reference and current mean |SHAP| and `m` the rows explained:

    z = (cur - ref) / se,   se = batch_std * sqrt(batch_rows) * sqrt(1/m + 1/reference_rows)

(the batch standard deviation scaled to one row, then to the two sample sizes: the reference mean is an
estimate too). A feature is *drifted* when both hold:

  * the change matters: |cur/ref - 1| >= relative_change (counted only for a feature holding at least
    min_share of the attribution, in the reference or now), or |share now - share then| >= share_change;
  * it is not sampling noise: |z| >= z_critical, the two-sided normal quantile at family_alpha / k for
    the k features compared (Bonferroni), so a day with no drift flags any feature at most about
    family_alpha of the time (the normal approximation of a mean of many rows).

`severity` = min(|z| / z_critical, the larger effect divided by its floor): drifted exactly when >= 1.
Fewer than `min_rows` served rows (or a `max_rows` below it) make every feature insufficient_data, never
drifted.

Served rows are sampled deterministically: sorted into a canonical order computed from their values (as
the model reads them), then a seeded permutation picks the sample, so the same rows in any order give the
same answer, bit for bit.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kennel.lake import write_atomically
from kennel.model.frame import to_model_frame

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kennel.model.booster import Model

ATTRIBUTION_FILE = "attribution_profile.json"
QUANTILE_LEVELS = (0.01, 0.05, 0.5, 0.95, 0.99)  # of the bootstrap batch means, reported with the profile
TOP_FEATURES = 5  # the reference's most attributed features whose rank changes a drift result lists


@dataclass(frozen=True)
class FeatureAttribution:
    """One feature's attribution on the reference rows."""

    mean_abs_shap: float  # over all reference rows explained
    share: float  # of the total mean |SHAP| over all features
    batch_mean: float  # of the bootstrap batch means
    batch_std: float  # standard deviation of a batch's mean |SHAP| at the profile's batch_rows
    batch_quantiles: list[float]  # at the profile's quantile_levels


@dataclass(frozen=True)
class AttributionProfile:
    """Per model feature (the card's order), the distribution of mean |SHAP| over the reference rows."""

    features: dict[str, FeatureAttribution]
    rows: int  # reference rows explained
    batch_rows: int
    batches: int
    seed: int
    quantile_levels: list[float] = field(default_factory=lambda: list(QUANTILE_LEVELS))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> AttributionProfile:
        raw = json.loads(text)
        return cls(
            features={name: FeatureAttribution(**values) for name, values in raw.pop("features").items()},
            **raw,
        )


def save_attribution_profile(profile: AttributionProfile, model_dir: str | Path) -> Path:
    path = Path(model_dir) / ATTRIBUTION_FILE
    write_atomically(path, profile.to_json())
    return path


def load_attribution_profile(model_dir: str | Path) -> AttributionProfile:
    return AttributionProfile.from_json((Path(model_dir) / ATTRIBUTION_FILE).read_text())


def canonical_sample(
    model: Model, frame: pd.DataFrame, max_rows: int, seed: int, *, tie_breakers: Sequence[str] = ()
) -> pd.DataFrame:
    """At most `max_rows` rows of `frame`, chosen by a seeded permutation over a canonical order of the
    rows' values as the model reads them (its model frame), and returned in that order: neither the frame's
    row order nor its index changes which rows are chosen or the order they are explained in.
    `tie_breakers`: columns the model does not read that the caller uses too (rows equal to the model but
    not in these would otherwise be chosen by their position), ordered by their values as text."""
    model_frame = to_model_frame(frame, model.card)
    # Categories by their code in the card's list (missing: -1); numbers as they are (NaN sorts last).
    keys = [
        column.cat.codes.to_numpy(dtype=np.float64)
        if isinstance(column.dtype, pd.CategoricalDtype)
        else column.to_numpy(dtype=np.float64)
        for _, column in model_frame.items()
    ]
    keys += [
        pd.factorize(frame[name].astype("string"), sort=True)[0].astype(np.float64)
        for name in tie_breakers
        if name not in model_frame
    ]
    # lexsort sorts by its last key first: the first feature leads, ties broken by the next ones; rows
    # that tie on every key are identical to the model, so their relative order cannot change the result.
    order = np.lexsort(keys[::-1])
    # The chosen rows are explained in canonical order too: summing their attributions in another order
    # would change the last bits of the means.
    chosen = np.sort(np.random.default_rng(seed).permutation(len(order))[:max_rows])
    return frame.iloc[order[chosen]].reset_index(drop=True)


def _abs_attributions(model: Model, sample: pd.DataFrame) -> np.ndarray:
    """|SHAP| per row and model feature (the bias column dropped), as float64."""
    contributions = model.explain(sample)
    return np.abs(contributions[model.card.feature_names].to_numpy(dtype=np.float64))


def _shares(means: np.ndarray) -> np.ndarray:
    total = float(means.sum())
    return means / total if total > 0 else np.zeros_like(means)


def build_attribution_profile(
    model: Model,
    frame: pd.DataFrame,
    *,
    max_rows: int = 5000,
    batch_rows: int = 500,
    batches: int = 200,
    seed: int = 0,
) -> AttributionProfile:
    """Explain up to `max_rows` reference rows once, then draw `batches` bootstrap batches of
    `batch_rows` of them (seeded) for the sampling distribution of each feature's batch mean |SHAP|."""
    if len(frame) == 0:
        raise ValueError("the reference frame holds no rows: an attribution profile needs some")
    if batch_rows < 1 or batches < 2:
        raise ValueError(f"need batch_rows >= 1 and batches >= 2, got {batch_rows} and {batches}")
    sample = canonical_sample(model, frame, max_rows, seed)
    attributions = _abs_attributions(model, sample)
    rng = np.random.default_rng(seed)
    # Bootstrap from the explained rows: TreeSHAP runs once, however many batches are drawn.
    batch_means = np.stack(
        [attributions[rng.integers(0, len(attributions), batch_rows)].mean(axis=0) for _ in range(batches)]
    )
    means = attributions.mean(axis=0)
    shares = _shares(means)
    quantiles = np.quantile(batch_means, QUANTILE_LEVELS, axis=0)
    features = {
        name: FeatureAttribution(
            mean_abs_shap=float(means[i]),
            share=float(shares[i]),
            batch_mean=float(batch_means[:, i].mean()),
            batch_std=float(batch_means[:, i].std(ddof=1)),
            batch_quantiles=[float(q) for q in quantiles[:, i]],
        )
        for i, name in enumerate(model.card.feature_names)
    }
    return AttributionProfile(features=features, rows=len(sample), batch_rows=batch_rows, batches=batches, seed=seed)


@dataclass(frozen=True)
class AttributionThresholds:
    min_rows: int = 200  # below this many served rows (or max_rows), insufficient_data, never drifted
    relative_change: float = 0.25  # |current / reference mean |SHAP| - 1|
    min_share: float = 0.01  # the relative change counts only for a feature with this share (then or now)
    share_change: float = 0.03  # absolute change in a feature's share of the total attribution
    family_alpha: float = 0.01  # chance, per comparison, that sampling noise alone flags any feature

    def z_critical(self, features: int) -> float:
        """Two-sided Bonferroni bound: |z| beyond it happens with chance family_alpha / features per feature."""
        return NormalDist().inv_cdf(1 - self.family_alpha / (2 * max(features, 1)))


@dataclass(frozen=True)
class FeatureAttributionDrift:
    feature: str
    status: str  # ok | drifted | insufficient_data
    reference_mean_abs_shap: float
    current_mean_abs_shap: float | None
    relative_change: float | None  # current / reference - 1; None when the reference is 0 or no rows
    reference_share: float
    current_share: float | None
    share_change: float | None
    z: float | None  # standardized distance of the current mean from the reference, at this sample size
    reference_rank: int  # 1 = the most attributed feature
    current_rank: int | None
    severity: float = 0.0  # >= 1 exactly when drifted


@dataclass(frozen=True)
class RankChange:
    feature: str
    reference_rank: int
    current_rank: int


@dataclass(frozen=True)
class AttributionDrift:
    """Explanation drift of a batch of served rows: features sorted most drifted first."""

    status: str  # ok | drifted | insufficient_data
    rows: int  # served rows given
    rows_explained: int
    z_critical: float
    features: list[FeatureAttributionDrift]
    top_rank_changes: list[RankChange]  # the reference's TOP_FEATURES whose rank moved
    thresholds: AttributionThresholds

    @property
    def drifted(self) -> list[FeatureAttributionDrift]:
        return [f for f in self.features if f.status == "drifted"]

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.drifted]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _z(diff: float, se: float) -> float:
    if se > 0:
        return diff / se
    # No spread in the reference: the feature's attribution was constant (0 for a feature no tree uses),
    # so any change at all is outside the band.
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def _ranks(means: np.ndarray) -> np.ndarray:
    """1-based rank by decreasing mean |SHAP|; ties keep the card's order."""
    ranks = np.empty(len(means), dtype=int)
    ranks[np.argsort(-means, kind="stable")] = np.arange(1, len(means) + 1)
    return ranks


def compare_attributions(
    profile: AttributionProfile,
    model: Model,
    frame: pd.DataFrame,
    *,
    max_rows: int = 2000,
    seed: int = 0,
    thresholds: AttributionThresholds | None = None,
) -> AttributionDrift:
    """Explanation drift of the served rows in `frame` (extra columns ignored) against the model's profile;
    the rule is in the module docstring."""
    t = thresholds or AttributionThresholds()
    names = model.card.feature_names
    if list(profile.features) != names:
        raise ValueError(
            f"the attribution profile covers {list(profile.features)}, the model takes {names}: "
            "a profile of another model"
        )
    reference = np.array([profile.features[n].mean_abs_shap for n in names])
    reference_shares = np.array([profile.features[n].share for n in names])
    reference_ranks = _ranks(reference)
    z_critical = t.z_critical(len(names))
    if min(len(frame), max_rows) < t.min_rows:
        features = [
            FeatureAttributionDrift(
                feature=n,
                status="insufficient_data",
                reference_mean_abs_shap=float(reference[i]),
                current_mean_abs_shap=None,
                relative_change=None,
                reference_share=float(reference_shares[i]),
                current_share=None,
                share_change=None,
                z=None,
                reference_rank=int(reference_ranks[i]),
                current_rank=None,
            )
            for i, n in enumerate(names)
        ]
        return AttributionDrift("insufficient_data", len(frame), 0, z_critical, features, [], t)

    sample = canonical_sample(model, frame, max_rows, seed)
    current = _abs_attributions(model, sample).mean(axis=0)
    current_shares = _shares(current)
    current_ranks = _ranks(current)
    rows = len(sample)
    features = []
    for i, name in enumerate(names):
        ref = profile.features[name]
        row_std = ref.batch_std * math.sqrt(profile.batch_rows)
        z = _z(float(current[i] - reference[i]), row_std * math.sqrt(1 / rows + 1 / profile.rows))
        relative = float(current[i] / reference[i] - 1) if reference[i] > 0 else None
        share_change = float(current_shares[i] - reference_shares[i])
        effects = [abs(share_change) / t.share_change]
        if relative is not None and max(reference_shares[i], current_shares[i]) >= t.min_share:
            effects.append(abs(relative) / t.relative_change)
        severity = min(abs(z) / z_critical, max(effects))
        features.append(
            FeatureAttributionDrift(
                feature=name,
                status="drifted" if severity >= 1 else "ok",
                reference_mean_abs_shap=float(reference[i]),
                current_mean_abs_shap=float(current[i]),
                relative_change=relative,
                reference_share=float(reference_shares[i]),
                current_share=float(current_shares[i]),
                share_change=share_change,
                z=z,
                reference_rank=int(reference_ranks[i]),
                current_rank=int(current_ranks[i]),
                severity=severity,
            )
        )
    features.sort(key=lambda f: -f.severity)
    top = [f for f in sorted(features, key=lambda f: f.reference_rank) if f.reference_rank <= TOP_FEATURES]
    rank_changes = [
        RankChange(f.feature, f.reference_rank, f.current_rank)
        for f in top
        if f.current_rank is not None and f.current_rank != f.reference_rank
    ]
    status = "drifted" if any(f.status == "drifted" for f in features) else "ok"
    return AttributionDrift(status, len(frame), rows, z_critical, features, rank_changes, t)
