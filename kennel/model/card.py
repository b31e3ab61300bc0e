"""The model card: what a trained model takes (features in order, each category list), its threshold
and where it came from. It travels with the model, so training and serving encode inputs the same way
instead of re-deriving categories from whatever data is at hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from kennel.spec import DatasetSpec, FeatureType

CARD_FILE = "model_card.json"
SPEC_FILE = "spec.yaml"  # the resolved data-set spec the model was trained for


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
