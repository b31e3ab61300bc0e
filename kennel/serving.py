"""What a served model accepts and answers, derived from its model card and data-set spec.

The Bento service builds its request schema from these functions at import time, so the OpenAPI
page and the validation errors name the real features. Nothing here imports bentoml; xgboost is
imported inside the functions that need it, so importing kennel stays fast.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model

from kennel.features import MODEL_FILE, ModelCard, to_model_frame
from kennel.spec import DatasetSpec, Feature, FeatureType

if TYPE_CHECKING:
    import xgboost

# Strict: a JSON string is not a number and 1 is not a boolean; a typo'd or unknown field is an
# error rather than a silently missing feature; NaN/Infinity literals are refused.
_RECORD_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Prediction(BaseModel):
    """One answer: the positive-class probability and the label at the model card's threshold."""

    probability: float = Field(ge=0.0, le=1.0, description="Probability of the positive label")
    label: Literal[0, 1] = Field(description="1 when probability >= the model's threshold")
    model_version: str = Field(description="BentoML model tag (name:version) that answered")
    request_id: str = Field(description="Unique id of this answer (uuid4 hex), for tracing")


def _field_for(feature: Feature, *, type_: FeatureType, categories: tuple[str, ...] | None,
               required: bool) -> tuple[Any, Any]:
    """(annotation, FieldInfo) for one feature; range from the spec, categories from the card."""
    if type_ is FeatureType.categorical:
        annotation: Any = Literal[tuple(categories or ())]
    elif type_ is FeatureType.boolean:
        annotation = bool
    else:
        annotation = float
    info = Field(
        default=... if required else None,
        ge=feature.min,
        le=feature.max,
        description=feature.description or None,
    )
    return (annotation if required else annotation | None), info


def record_model(spec: DatasetSpec, card: ModelCard) -> type[BaseModel]:
    """The pydantic class of one input record for a model trained on `spec`.

    - one field per model feature (the card's list, so the schema matches what the booster saw);
      required unless the spec marks it nullable, in which case it may be omitted or null;
    - the spec's sensitive columns: optional, validated like their spec feature, not used by the
      model (kept for monitoring);
    - the spec's id column: optional string, ignored by the model, so callers can pass their id.

    Raises ValueError when the card was not made for this spec (fingerprint mismatch).
    """
    if card.spec_fingerprint != spec.fingerprint():
        raise ValueError(
            f"model card was trained for spec fingerprint {card.spec_fingerprint}, "
            f"but the spec given has {spec.fingerprint()}"
        )
    fields: dict[str, tuple[Any, Any]] = {
        spec.id_column: (str | None, Field(default=None, description="Caller's record id; not used by the model")),
    }
    for feat in card.features:
        spec_feat = spec.feature(feat.name)
        fields[feat.name] = _field_for(spec_feat, type_=feat.type, categories=feat.categories,
                                       required=not spec_feat.nullable)
    for name in spec.sensitive_columns:
        spec_feat = spec.feature(name)
        fields[name] = _field_for(spec_feat, type_=spec_feat.type, categories=spec_feat.categories,
                                  required=False)
    class_name = "".join(part.title() for part in spec.name.split("_")) + "Record"
    return create_model(class_name, __config__=_RECORD_CONFIG, **fields)  # type: ignore[call-overload]


def load_booster(model_dir: Path) -> xgboost.Booster:
    """Load model.ubj for single-threaded prediction.

    nthread=1: serving predicts a handful of rows at a time, where XGBoost's thread start-up costs
    more than it saves (measured ~10x slower with nthread>1 on a two-core host).

    Raises ValueError unless the objective is binary:logistic: serving reads the booster's output
    as the positive-class probability, and a wrong model should fail at start-up, not per request.
    """
    import xgboost

    path = Path(model_dir) / MODEL_FILE
    booster = xgboost.Booster(model_file=str(path))
    booster.set_param({"nthread": 1})
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if objective != "binary:logistic":
        raise ValueError(f"{path}: objective is {objective}, serving needs binary:logistic")
    return booster


def predict_frame(booster: xgboost.Booster, card: ModelCard,
                  records: pd.DataFrame | Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Positive-class probabilities, one per record, through the same frame builder as training."""
    frame = to_model_frame(records, card)
    return np.asarray(booster.inplace_predict(frame), dtype=np.float64)


def to_predictions(probabilities: Iterable[float], *, threshold: float, model_version: str) -> list[Prediction]:
    """One answer per probability, each with its own request id."""
    return [
        Prediction(probability=float(p), label=int(p >= threshold), model_version=model_version,
                   request_id=uuid.uuid4().hex)
        for p in probabilities
    ]
