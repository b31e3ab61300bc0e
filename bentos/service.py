"""Kennel's BentoML service: one XGBoost classifier behind POST /predict and POST /predict_batch.

Serve a Bento built by `kennel.registry.build_bento`:

    BENTOML_DO_NOT_TRACK=True bentoml serve <bento_name>:<version> --host 0.0.0.0 --port 3000

The Bento serves the model whose tag is in kennel_model.json next to this file, written at build
time. From a source checkout (no such file) name the model instead, from the repository root:

    KENNEL_MODEL_TAG=<model_name>:<version> bentoml serve bentos.service:KennelService

One worker by default; set KENNEL_SERVE_WORKERS=n for more (`--api-workers` is ignored by
new-style BentoML services). The request schema is generated from the model's card and data-set
spec, so /docs shows the real fields; invalid records get a 400 whose body names the field.
"""

import json
import os
from pathlib import Path
from typing import Annotated

import bentoml
from pydantic import BaseModel, Field

from kennel.features import SPEC_FILE, ModelCard
from kennel.registry import MODEL_TAG_FILE
from kennel.serving import Prediction, load_booster, predict_frame, record_model, to_predictions
from kennel.spec import load_spec

# Bounds one request's memory and time on a single worker; larger jobs belong in batch scoring.
MAX_BATCH_RECORDS = 10_000


def _model_tag() -> str:
    tag_file = Path(__file__).with_name(MODEL_TAG_FILE)
    if tag_file.is_file():  # a built Bento: its own model, whatever the environment says
        return json.loads(tag_file.read_text())["model_tag"]
    tag = os.environ.get("KENNEL_MODEL_TAG")
    if not tag:
        raise RuntimeError(f"no {tag_file} and KENNEL_MODEL_TAG is unset: which model should be served?")
    return tag


MODEL = bentoml.models.BentoModel(_model_tag())
MODEL_DIR = Path(MODEL.resolve().path)
CARD = ModelCard.load(MODEL_DIR)
# Built at import, not in __init__, because the API signatures below need it as their type.
Record = record_model(load_spec(MODEL_DIR / SPEC_FILE), CARD)


@bentoml.service(
    name="kennel",
    workers=int(os.environ.get("KENNEL_SERVE_WORKERS", "1")),
    traffic={"timeout": 30},
)
class KennelService:
    model = MODEL  # declared as a class attribute so the Bento build records the model

    def __init__(self) -> None:
        self.booster = load_booster(MODEL_DIR)
        self.model_version = str(MODEL.tag)

    # Positional-only: the request body is the record itself, not {"record": {...}}.
    @bentoml.api(route="/predict")
    def predict(self, record: Record, /) -> Prediction:  # type: ignore[valid-type]
        return self._answer([record])[0]

    @bentoml.api(route="/predict_batch")
    def predict_batch(
        self,
        records: Annotated[list[Record], Field(min_length=1, max_length=MAX_BATCH_RECORDS)],  # type: ignore[valid-type]
    ) -> list[Prediction]:
        return self._answer(records)

    def _answer(self, records: list[BaseModel]) -> list[Prediction]:
        probabilities = predict_frame(self.booster, CARD, [r.model_dump() for r in records])
        return to_predictions(probabilities, threshold=CARD.threshold, model_version=self.model_version)
