"""The one place that turns records into the model's input frame, used by training and serving alike.

Categorical codes must be identical at training and serving time, so the category lists travel
with the model in its ModelCard instead of being re-derived from whatever data is at hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
from pydantic import BaseModel, ConfigDict

from kennel.spec import DatasetSpec, FeatureType

MODEL_FILE = "model.ubj"  # XGBoost's own binary format: never pickled
CARD_FILE = "model_card.json"
SPEC_FILE = "spec.yaml"


class CardFeature(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    type: FeatureType
    categories: tuple[str, ...] | None = None


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
    def for_spec(cls, spec: DatasetSpec, **kwargs: Any) -> ModelCard:
        feats = tuple(CardFeature(name=f.name, type=f.type, categories=f.categories) for f in spec.model_features)
        return cls(dataset=spec.name, spec_fingerprint=spec.fingerprint(), features=feats, **kwargs)

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


def to_model_frame(data: pd.DataFrame | Iterable[Mapping[str, Any]], card: ModelCard) -> pd.DataFrame:
    """Select the card's features in order and give each its model dtype.

    Numeric → float32 (missing → NaN); boolean → float32 0/1 (missing → NaN); categorical → pandas
    Categorical over the card's fixed category list (unknown or missing → NaN), which XGBoost's
    native categorical support consumes directly.
    """
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame.from_records(list(data))
    out: dict[str, Any] = {}
    for feat in card.features:
        col = frame[feat.name] if feat.name in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        if feat.type is FeatureType.categorical:
            out[feat.name] = pd.Categorical(col.astype("object"), categories=list(feat.categories or ()))
        elif feat.type is FeatureType.boolean:
            flags = pd.array(col.astype("object").where(col.notna(), None), dtype="boolean")
            out[feat.name] = flags.to_numpy(dtype="float32", na_value=float("nan"))
        else:
            out[feat.name] = pd.to_numeric(col, errors="coerce").astype("float32")
    return pd.DataFrame(out, index=frame.index)
