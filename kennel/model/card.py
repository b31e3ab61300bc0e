"""The model card: what a trained model takes (features in order, each category list), its threshold
and where it came from. It travels with the model, so training and serving encode inputs the same way
instead of re-deriving categories from whatever data is at hand: a learned categorical feature's list is
frozen here, from the training rows, once."""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from kennel.spec import OTHER_CATEGORY, DatasetSpec, Feature, FeatureType

if TYPE_CHECKING:
    import pandas as pd

CARD_FILE = "model_card.json"
SPEC_FILE = "spec.yaml"  # the resolved data-set spec the model was trained for


class SeenInTraining(BaseModel):
    """What one feature looked like in the training rows, as the model read it: serving flags an
    input outside this as out of distribution (scored, but the model never saw such a value there)."""

    model_config = ConfigDict(frozen=True)
    nulls: bool  # a missing value occurred
    min: float | None = None  # numeric and boolean (0/1): the smallest value, None when all missing
    max: float | None = None
    categories: tuple[str, ...] | None = None  # categorical: the categories that occurred, in card order


class CardFeature(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    type: FeatureType
    categories: tuple[str, ...] | None = None
    # A learned categorical feature (spec: learned_categories): `categories` were frozen from the training
    # rows (`learned_category_list`), and every value outside them is read as "other", their last entry.
    learned: bool = False
    seen: SeenInTraining | None = None  # None: a card written before training ranges were recorded


class ModelCard(BaseModel):
    """What a served model needs besides the booster: its inputs, threshold and provenance."""

    model_config = ConfigDict(frozen=True)
    dataset: str
    spec_fingerprint: str
    features: tuple[CardFeature, ...]
    threshold: float = 0.5
    model_version: str = ""
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    data_partitions: tuple[str, ...] = ()
    run_id: str = ""

    @classmethod
    def for_spec(cls, spec: DatasetSpec, *, training: pd.DataFrame | None = None, **kwargs: Any) -> ModelCard:
        """The card of a model for `spec`; with the training rows, each feature records what it saw, and
        each learned categorical feature's categories are frozen from them (which a card for a spec with
        learned features needs: raises ValueError without them)."""
        feats = tuple(_card_feature(f, training) for f in spec.model_features)
        card = cls(dataset=spec.name, spec_fingerprint=spec.fingerprint(), features=feats, **kwargs)
        return card if training is None else card.with_training(training, personal=spec.personal_columns)

    def with_training(self, training: pd.DataFrame, *, personal: Collection[str] = ()) -> ModelCard:
        """This card with each feature's `seen` taken from the training rows (read through the card,
        so a value counts as the model saw it: float32 numbers, categories of the card's lists).

        A personal numeric feature's range is widened outward to two significant digits
        (`coarse_range`): the card travels with the model, and its exact smallest and largest values
        would each be one person's. Serving still flags inputs well outside what training saw."""
        from kennel.model.frame import to_model_frame

        frame = to_model_frame(training, self)
        features = []
        for feat in self.features:
            column = frame[feat.name]
            if feat.type is FeatureType.categorical:
                # The model frame holds a categorical over the card's list: which codes occur says which
                # categories training saw, without turning a million values into text.
                codes = column.cat.codes.to_numpy()
                occurred = np.bincount(codes[codes >= 0], minlength=len(feat.categories or ())) > 0
                seen = SeenInTraining(
                    nulls=bool((codes < 0).any()),
                    categories=tuple(c for c, hit in zip(feat.categories or (), occurred, strict=False) if hit),
                )
            else:
                present = column.dropna()
                low = high = None
                if len(present):
                    low, high = float(present.min()), float(present.max())
                    if feat.name in personal and feat.type is FeatureType.numeric:
                        low, high = coarse_range(low, high)
                seen = SeenInTraining(nulls=bool(column.isna().any()), min=low, max=high)
            features.append(feat.model_copy(update={"seen": seen}))
        return self.model_copy(update={"features": tuple(features)})

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CARD_FILE
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, folder: Path) -> ModelCard:
        return cls.model_validate(json.loads((Path(folder) / CARD_FILE).read_text()))


def _round_outward(value: float, digits: int, up: bool) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    step = 10.0 ** (math.floor(math.log10(abs(value))) - digits + 1)
    rounded = (math.ceil if up else math.floor)(value / step) * step
    return max(rounded, value) if up else min(rounded, value)  # never inward, whatever the float rounding


def coarse_range(low: float, high: float, digits: int = 2) -> tuple[float, float]:
    """[low, high] widened outward to `digits` significant digits (a bound already that coarse stays),
    so it names no training row's exact value: coarse_range(17.3, 986.41) == (17.0, 990.0)."""
    return _round_outward(low, digits, up=False), _round_outward(high, digits, up=True)


def _card_feature(feature: Feature, training: pd.DataFrame | None) -> CardFeature:
    if feature.learned_categories is None:
        return CardFeature(name=feature.name, type=feature.type, categories=feature.categories)
    if training is None:
        raise ValueError(
            f"feature {feature.name!r} learns its categories from the training rows: pass them as training="
        )
    return CardFeature(
        name=feature.name,
        type=feature.type,
        categories=learned_category_list(training[feature.name], feature.learned_categories),
        learned=True,
    )


def learned_category_list(values: pd.Series, keep: int) -> tuple[str, ...]:
    """The categories a learned feature's model takes: the `keep` most frequent of `values` (equal counts
    in code-point order of the text, so every run freezes the same list), then "other" for every other
    value. A value "other" in the data is that catch-all, never one of the `keep`."""
    counts = values.dropna().astype(str).value_counts()
    counts = counts[counts.index != OTHER_CATEGORY]
    ranked = sorted(counts.items(), key=lambda value_count: (-value_count[1], value_count[0]))
    return (*(value for value, _ in ranked[:keep]), OTHER_CATEGORY)
