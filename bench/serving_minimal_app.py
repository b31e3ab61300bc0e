"""The baseline of bench/serving.py: the same booster behind a minimal Starlette app on uvicorn.

Same request contract and scoring as the Bento (strict pydantic validation from the spec and model
card, `kennel.model.Model` with one XGBoost thread, a request id per answer), none of BentoML's machinery
(middleware stack, adaptive batching, probes) and no prediction log. Run by the benchmark as

    KENNEL_BENCH_MODEL_DIR=<model folder> uvicorn bench.serving_minimal_app:app --port <port>
"""

import json
import os
from pathlib import Path

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from kennel.model import SPEC_FILE, Model, record_columns
from kennel.serving.api import (
    ArrowReader,
    InputError,
    answer_rows,
    batch_request_model,
    columns_model,
    input_field_names,
    labels_at,
    new_request_ids,
    record_model,
)
from kennel.spec import load_spec

MODEL_DIR = Path(os.environ["KENNEL_BENCH_MODEL_DIR"])
MODEL = Model.load(MODEL_DIR)  # as the service loads it: checked, one prediction thread
CARD = MODEL.card
SPEC = load_spec(MODEL_DIR / SPEC_FILE)
FIELDS = input_field_names(SPEC, CARD)
RECORD = record_model(SPEC, CARD)
BATCH = batch_request_model(RECORD)
COLUMNS = columns_model(SPEC, CARD)
ARROW = ArrowReader(SPEC, CARD)
MODEL_VERSION = f"bench:{MODEL_DIR.name}"


def _answers(columns: dict, n_rows: int) -> tuple[list[str], object]:
    probabilities = MODEL.score_columns(columns, n_rows)
    return new_request_ids(n_rows), probabilities


async def predict(request: Request) -> Response:
    try:
        record = RECORD.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"error": str(exc.error_count()), "detail": exc.errors(include_input=False)}, 400)
    ids, probabilities = _answers(record_columns([record], FIELDS), 1)
    body = answer_rows(probabilities, ids, threshold=CARD.threshold, model_version=MODEL_VERSION)[0]
    return Response(json.dumps(body), media_type="application/json")


async def predict_batch(request: Request) -> Response:
    try:
        records = BATCH.model_validate_json(await request.body()).records
    except ValidationError as exc:
        return JSONResponse({"error": str(exc.error_count()), "detail": exc.errors(include_input=False)}, 400)
    ids, probabilities = _answers(record_columns(records, FIELDS), len(records))
    body = answer_rows(probabilities, ids, threshold=CARD.threshold, model_version=MODEL_VERSION)
    return Response(json.dumps(body), media_type="application/json")


async def predict_columns(request: Request) -> Response:
    try:
        data = COLUMNS.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"error": str(exc.error_count()), "detail": exc.errors(include_input=False)}, 400)
    n_rows = data.n_rows
    ids, probabilities = _answers({name: getattr(data, name) for name in FIELDS}, n_rows)
    body = {
        "probability": probabilities.tolist(),
        "label": labels_at(probabilities, CARD.threshold).tolist(),
        "request_id": ids,
        "model_version": MODEL_VERSION,
    }
    return Response(json.dumps(body), media_type="application/json")


async def predict_arrow(request: Request) -> Response:
    try:
        batch = ARROW.read(await request.body())
    except InputError as exc:
        return JSONResponse({"error": str(exc), "detail": exc.problems}, 400)
    probabilities = MODEL.score_numbers(batch.values, batch.table.num_rows)
    body = {
        "probability": probabilities.tolist(),
        "label": labels_at(probabilities, CARD.threshold).tolist(),
        "request_id": new_request_ids(batch.table.num_rows),
        "model_version": MODEL_VERSION,
    }
    return Response(json.dumps(body), media_type="application/json")


async def readyz(request: Request) -> Response:
    return PlainTextResponse("\n")


app = Starlette(
    routes=[
        Route("/predict", predict, methods=["POST"]),
        Route("/predict_batch", predict_batch, methods=["POST"]),
        Route("/predict_columns", predict_columns, methods=["POST"]),
        Route("/predict_arrow", predict_arrow, methods=["POST"]),
        Route("/readyz", readyz),
    ]
)
