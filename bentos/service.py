"""Kennel's BentoML service: one XGBoost classifier behind /predict, /predict_batch, /predict_columns,
/predict_arrow, /explain (one record's score with the features that moved it most), plus /feedback for
the outcomes that arrive later.

Serve a Bento built by `kennel.serving.model_store.build_bento`:

    BENTOML_DO_NOT_TRACK=True bentoml serve <bento_name>:<version> --port 3000

The Bento serves the model named in kennel_model.json next to this file, written at build time with
the lake of the project that built it. From a source checkout (no such file) name the model instead,
from the repository root:

    KENNEL_MODEL_TAG=<model_name>:<version> bentoml serve bentos.service:KennelService

Settings (environment, read at start-up; a bad value stops the start with a message):
  KENNEL_SERVE_WORKERS            worker processes (default 1; `--api-workers` is ignored by
                                  new-style BentoML services). Each scores with one XGBoost thread.
  KENNEL_MAX_REQUEST_BYTES        largest request body, checked before parsing (default 32 MiB) → 413
  KENNEL_API_KEY                  when set (16+ characters), every route but the probes and
                                  /docs.json needs `Authorization: Bearer <key>` → 401 otherwise
  KENNEL_LAKE_ROOT                lake folder for the prediction log and feedback (default: the
                                  lake the Bento was built from; from a checkout, the project's)
  KENNEL_PREDICTION_LOG_FLUSH_S   seconds between prediction-log writes (default 60)
  KENNEL_REQUEST_TIMEOUT_S        answer 504 after this many seconds (default 10)
  KENNEL_TRACE_REQUESTS           1 = let OpenTelemetry trace the API routes (off by default: even
                                  with no exporter configured its middleware costs ~0.25 ms of CPU
                                  per request, more than scoring one record)
  KENNEL_ACCESS_LOG               1 = BentoML's access log line per request (off by default)
  KENNEL_EXPLAIN_TOP_K            features /explain lists by |contribution| (default 5; the others are
                                  summed into `rest`)
  KENNEL_SHADOW_QUEUE_ROWS        rows waiting for the shadow challenger beyond which requests are not
                                  shadowed (default 20,000; counted in kennel_shadow_skipped_rows)

The request schemas are generated from the model's card and data-set spec; GET /docs.json is an
OpenAPI 3.1 document that states them exactly (nullable fields, ranges, categories, closed objects).

/explain takes /predict's body and answers what /predict answers (logged the same way, endpoint
"/explain") plus the margin (log-odds), the bias and the KENNEL_EXPLAIN_TOP_K features with the
largest exact TreeSHAP contributions (XGBoost's own), one entry per spec feature, the others summed
as `rest`: bias + contributions + rest = margin. Latency bound: p99 at most 2x /predict's. Measured
(bench/serving.py --explain-only: demo model of 55 trees of depth 6, one worker, 1 connection, the
two routes alternating on the same records, 2 shared cores at load average 2.6-3.1): p50 1.3-1.4 ms,
p99 3.0-3.4 ms, against /predict's 0.9 ms and 2.0-2.8 ms (p99 1.2-1.5x); the explanation itself
costs ~0.3 ms of CPU per record.

A Bento may carry a challenger in shadow (its manifest's shadow_model_tag, kennel.serving.champion):
every scoring route answers with the champion alone, then queues the request's validated inputs for a
background thread that scores them with the challenger, through the challenger's own card and
encoder (what it would score served alone), into the shadow log (kennel.serving.prediction_log.
ShadowLog, joined to the prediction log by request_id). The challenger never changes an answer: a
full queue skips requests (counted), a failure is logged by its type and counted.

GET /model_card answers the champion's HTML model card when the Bento carries one (404 otherwise).
"""

import gc
import inspect
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from kennel.lake import LAKE_ROOT_ENV, DatasetLake, Lake, configured_root
from kennel.model import SPEC_FILE, Model, ModelCard, import_for_serving, record_columns, verify_checksums
from kennel.serving.api import (
    ARROW_MEDIA_TYPE,
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_BATCH_RECORDS,
    MAX_COLUMN_ROWS,
    ApiDoc,
    ArrowReader,
    ColumnarPredictions,
    Explanation,
    FeatureContribution,
    FeedbackReceipt,
    InputError,
    Prediction,
    RequestWarnings,
    answer_rows,
    example_record,
    input_field_names,
    labels_at,
    openapi_document,
    request_models,
    top_contributions,
    unseen_categories,
)
from kennel.serving.guard import (
    INLINE_BODY_BYTES,
    BodyScreen,
    RequestGuard,
    RouteRule,
    accept_guarded_input,
    api_key_from_env,
    env_int,
    log_refusal,
    refusal_body,
    refusal_from_problems,
    withhold_exception_messages,
)
from kennel.serving.model_store import BENTO_MANIFEST, MODEL_CARD_FILE, BentoManifest
from kennel.serving.prediction_log import FeedbackLog, PredictionLog, ShadowLog
from kennel.serving.request_ids import RequestIds
from kennel.serving.workers import WorkerLifecycle, prepare_serve_process
from kennel.spec import FeatureType, load_spec

logger = logging.getLogger("kennel.service")
# BentoML's server logging passes WARNING and above from other libraries; Kennel's INFO lines (one per
# refused request, start and stop) are part of what it promises.
logging.getLogger("kennel").setLevel(logging.INFO)

# Larger requests are scored in a worker thread so the event loop keeps answering probes meanwhile;
# smaller ones inline, where a thread hop (~0.2 ms) would cost more than the scoring.
INLINE_ROWS = 2_000
# Requests not answered within this many seconds get a 504. BentoML keeps a timer per request for
# that long, so a long timeout is not free: at 1,000 requests/s, 30 s of timers tripled the
# process's garbage-collection pauses.
REQUEST_TIMEOUT_S = env_int("KENNEL_REQUEST_TIMEOUT_S", 10)
# Adaptive batching of /predict_batch: requests arriving together are scored as one matrix of up to
# this many rows; a request that waited longer than the latency bound is answered 503.
BATCH_MAX_ROWS = 10_000
BATCH_MAX_LATENCY_MS = REQUEST_TIMEOUT_S * 1000 // 2
EXPLAIN_TOP_K = env_int("KENNEL_EXPLAIN_TOP_K", 5)
# Garbage collection and thread switching in a serving worker (see KennelService.__init__).
GC_YOUNG_THRESHOLD = 10_000
SWITCH_INTERVAL_S = 0.0005
# Request ids signed ahead in the background (kennel.serving.request_ids): two 10,000-row requests' worth.
REQUEST_IDS_READY = 20_000


def _manifest() -> BentoManifest:
    manifest = Path(__file__).with_name(BENTO_MANIFEST)
    if manifest.is_file():  # a built Bento: its own model, whatever the environment says
        return BentoManifest.model_validate_json(manifest.read_text())
    tag = os.environ.get("KENNEL_MODEL_TAG")
    if not tag:
        raise RuntimeError(f"no {manifest} and KENNEL_MODEL_TAG is unset: which model should be served?")
    return BentoManifest(model_tag=tag, lake_root=str(configured_root()))


def _lake() -> Lake:
    root = os.environ.get(LAKE_ROOT_ENV) or MANIFEST.lake_root
    if "://" in root:
        raise RuntimeError(f"{LAKE_ROOT_ENV}={root}: the prediction log needs a local folder (or a mounted volume)")
    return Lake(root)


MANIFEST = _manifest()
MODEL = bentoml.models.BentoModel(MANIFEST.model_tag)
MODEL_DIR = Path(MODEL.resolve().path)
verify_checksums(MODEL_DIR)  # before the card and spec are parsed: a damaged folder fails with its checksum
CARD = ModelCard.load(MODEL_DIR)
SPEC = load_spec(MODEL_DIR / SPEC_FILE)
SHADOW_MODEL = bentoml.models.BentoModel(MANIFEST.shadow_model_tag) if MANIFEST.shadow_model_tag else None
SHADOW_DIR = Path(SHADOW_MODEL.resolve().path) if SHADOW_MODEL else None
if SHADOW_DIR:
    verify_checksums(SHADOW_DIR)
MODEL_CARD_HTML = Path(__file__).with_name(MODEL_CARD_FILE)
FIELDS = input_field_names(SPEC, CARD)
# Categorical inputs whose unknown values are scored as "other" (and flagged): under `unknown_category:
# other`, and learned ones.
OTHER_FIELDS = [
    f.name
    for f in SPEC.features
    if f.name in FIELDS
    and f.type is FeatureType.categorical
    and (f.unknown_category == "other" or f.learned_categories is not None)
]
# Built at import, not in __init__, because the API signatures below need them as their types.
MODELS = request_models(SPEC, CARD)
Record, BatchRequest, Columns, Feedback = MODELS.record, MODELS.batch, MODELS.columns, MODELS.feedback
ARROW_READER = ArrowReader(SPEC, CARD)
# Large JSON bodies are validated in a child process of each worker (kennel.serving.guard).
SCREEN = BodyScreen(MODEL_DIR)
API_KEY = api_key_from_env()
withhold_exception_messages()

EXAMPLE = example_record(SPEC, CARD)
ARROW_ROUTE = "/predict_arrow"
APIS = [
    ApiDoc("/predict", "Score one record", Record, Prediction, EXAMPLE),
    ApiDoc(
        "/explain",
        f"Score one record and name the {EXPLAIN_TOP_K} features that moved its score most (exact TreeSHAP "
        "contributions to the log-odds; the others summed as rest)",
        Record,
        Explanation,
        EXAMPLE,
    ),
    ApiDoc(
        "/predict_batch",
        f"Score 1 to {MAX_BATCH_RECORDS:,} records (adaptive batching across requests)",
        BatchRequest,
        list[Prediction],
        {"records": [EXAMPLE]},
        extra_statuses=(503,),
    ),
    ApiDoc(
        "/predict_columns",
        "Score a large batch sent as columns (one list per field, all the same length)",
        Columns,
        ColumnarPredictions,
        {name: [value] for name, value in EXAMPLE.items()},
    ),
    ApiDoc(
        ARROW_ROUTE,
        f"Score a large batch sent as an Arrow IPC stream: columns named and checked like "
        f"the fields of {Record.__name__}, 1 to {MAX_COLUMN_ROWS:,} rows",
        {"type": "string", "contentMediaType": ARROW_MEDIA_TYPE},
        ColumnarPredictions,
        media_type=ARROW_MEDIA_TYPE,
    ),
    ApiDoc(
        "/feedback",
        "Record observed outcomes for earlier answers, by request_id",
        Feedback,
        FeedbackReceipt,
        {"labels": [{"request_id": "0123456789abcdef0123456789abcdef", "label": SPEC.label.positive}]},
    ),
]
ROUTES = {api.route: api.media_type for api in APIS}


@bentoml.service(
    name="kennel",
    workers=env_int("KENNEL_SERVE_WORKERS", 1),
    traffic={"timeout": REQUEST_TIMEOUT_S},
    # With no exporter configured, OpenTelemetry's middleware still builds spans for every request.
    tracing={"excluded_urls": None if os.environ.get("KENNEL_TRACE_REQUESTS") == "1" else list(ROUTES)},
    # Every answer is in the prediction log and /metrics counts requests by status, so the access
    # log line (~15% of a single-record request's CPU) is opt-in.
    logging={"access": {"enabled": os.environ.get("KENNEL_ACCESS_LOG") == "1"}},
)
class KennelService:
    """Scores records with one model (kennel.model); logs every answer to the lake for monitoring."""

    model = MODEL  # declared as a class attribute so the Bento build records the model
    shadow_model = SHADOW_MODEL  # likewise the challenger in shadow, when the manifest names one

    def __init__(self) -> None:
        self._ready = False
        # Runs in serving workers only (never in `bentoml build`, which imports this module).
        import_for_serving()
        self.scorer = Model.load(MODEL_DIR)
        self.model_version = str(MODEL.tag)
        self.lake = _lake()
        data = self.lake.dataset(SPEC.name)
        # Ids carry a MAC under the data set's key, so any worker can tell an id it issued (/feedback).
        self.ids = RequestIds.for_dataset(data)
        self.ids.keep_ready(REQUEST_IDS_READY)
        flush_s = env_int("KENNEL_PREDICTION_LOG_FLUSH_S", 60)
        self.log = PredictionLog(
            data, SPEC, model_tag=self.model_version, threshold=CARD.threshold, flush_interval_s=flush_s
        )
        self.feedback_log = FeedbackLog(data, verifier=self.ids, flush_interval_s=flush_s)
        self.shadow = self._shadow_log(SHADOW_DIR, data, flush_s) if SHADOW_DIR else None
        # Made here, in the worker: `bentoml build` imports this module, maybe more than once.
        self.unknown_feedback_ids = bentoml.metrics.Counter(
            name="kennel_feedback_unknown_request_ids",
            documentation="Outcomes sent to /feedback for request ids this service never issued (not recorded)",
        )
        # BentoML's HTTP endpoint looks each API up on this instance for every request, and the API
        # descriptor builds a new wrapper each time (inspect.signature, functools.wraps, two imports:
        # ~5% of a single record's CPU in a py-spy profile). An instance attribute shadows the
        # descriptor, so it is built once; it is the wrapper the descriptor returns before BentoML
        # attaches its self-proxy, whose `.local` (what the endpoint calls) is the same function.
        for name in KennelService.apis:
            setattr(self, name, getattr(self, name))
        self._warm_up()
        SCREEN.start()
        self.log.start()
        self.feedback_log.start()
        also_flush: list[Any] = [self.feedback_log]
        if self.shadow is not None:
            self.shadow.start()
            also_flush.append(self.shadow)
        # Stops with the main process; counts the deaths of this server's workers (kennel.serving.workers).
        self.lifecycle = WorkerLifecycle(self.log, also_flush=also_flush)
        self.lifecycle.start()
        logger.info("serving %s; prediction log and feedback under %s", self.model_version, self.lake.root)
        if self.shadow is not None:
            logger.info("challenger %s in shadow (its log: %s)", self.shadow.model_tag, self.shadow.folder)
        # Everything allocated so far (modules, schemas, the model) lives as long as the process:
        # keeping it out of the collector's full passes shortens their pauses severalfold.
        gc.freeze()
        # Measured (gc callbacks in a worker at ~700 single records/s): with the default thresholds a
        # young collection ran every ~10 requests and a full one every ~2 s, each full pass 25-55 ms of
        # CPU over the 20-40k objects requests had kept alive a moment (prediction-log rows waiting for
        # conversion), the largest stalls of the request path. Collecting young objects after
        # GC_YOUNG_THRESHOLD allocations instead of 700 lets most of them die before a collection sees
        # them: in the same measurement no full pass ran at all in 15 s of serving.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        # A thread that wants the interpreter lock waits for its holder's switch interval (5 ms by
        # default): the event loop, woken by a request while a background thread (the logs'
        # conversions, the shadow challenger) runs Python code, gets it back within 0.5 ms instead.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._ready = True

    def __is_ready__(self) -> bool:
        return self._ready

    def _shadow_log(self, folder: Path, data: DatasetLake, flush_s: int) -> ShadowLog:
        """The challenger, loaded with its own card, spec and encoder, behind a shadow log; warmed up
        on the example record like the champion."""
        challenger = Model.load(folder)
        fields = input_field_names(load_spec(folder / SPEC_FILE), challenger.card)

        def score(columns: Mapping[str, Any], n_rows: int) -> np.ndarray:
            return challenger.score_matrix(challenger.encoder.encode(columns, n_rows))

        score(record_columns([Record.model_validate(EXAMPLE)], fields), 1)
        skipped = bentoml.metrics.Counter(
            name="kennel_shadow_skipped_rows",
            documentation="Answered rows the shadow challenger did not score: its queue was full",
        )
        return ShadowLog(
            data,
            score=score,
            fields=fields,
            model_tag=str(SHADOW_MODEL.tag) if SHADOW_MODEL else "",
            champion_model_tag=self.model_version,
            threshold=challenger.card.threshold,
            max_queue_rows=env_int("KENNEL_SHADOW_QUEUE_ROWS", 20_000),
            flush_interval_s=flush_s,
            on_skip=skipped.inc,
        )

    def _to_shadow(self, endpoint: str, request_ids: list[str], columns: Any) -> None:
        """Hand an answered request's validated inputs to the challenger, if any; never fails the answer."""
        if self.shadow is None:
            return
        try:
            self.shadow.append(endpoint, request_ids, columns)
        except Exception as exc:
            logger.error("shadow: queueing a %s request failed (%s)", endpoint, type(exc).__name__)

    def _warm_up(self) -> None:
        """One prediction through the whole scoring path (not logged), so the first request does not
        pay for lazy initialisation in the model library, numpy and pydantic."""
        record = Record.model_validate(EXAMPLE)
        columns = record_columns([record], FIELDS)
        probabilities, warnings = self._score(columns, 1)
        answer = answer_rows(
            probabilities,
            self.ids.issue(1),
            threshold=CARD.threshold,
            model_version=self.model_version,
            warnings=warnings,
        )
        Prediction.model_validate(answer[0]).model_dump_json()
        explained, _ = self._explain(columns, self.ids.issue(1)[0])
        Explanation.model_validate(explained.model_dump()).model_dump_json()

    # Once, in the `bentoml serve` process before it starts the workers (kennel.serving.workers).
    serve_process_hook = bentoml.on_deployment(prepare_serve_process)

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        self.log.close()
        self.feedback_log.close()
        if self.shadow is not None:
            self.shadow.close()
        self.lifecycle.close()
        self.ids.close()
        SCREEN.close()

    def _score(self, columns: Mapping[str, Any], n_rows: int) -> tuple[np.ndarray, RequestWarnings]:
        """Probabilities for validated column lists, and the values to flag (unseen categories read as
        "other", values the model never saw in training)."""
        matrix = self.scorer.encoder.encode(columns, n_rows)
        return self.scorer.score_matrix(matrix), self._warnings(matrix, unseen_categories(columns, OTHER_FIELDS))

    def _score_numbers(self, values: Mapping[str, np.ndarray], unseen: dict[str, np.ndarray], n_rows: int) -> Any:
        matrix = self.scorer.encoder.encode_numbers(values, n_rows)
        return self.scorer.score_matrix(matrix), self._warnings(matrix, unseen)

    def _explain(self, columns: Mapping[str, Any], request_id: str) -> tuple[Explanation, RequestWarnings]:
        """One record's answer with its explanation (the same matrix scored, as /predict scores it, and
        explained), and its flags."""
        matrix = self.scorer.encoder.encode(columns, 1)
        probability = float(self.scorer.score_matrix(matrix)[0])
        warnings = self._warnings(matrix, unseen_categories(columns, OTHER_FIELDS))
        explained = top_contributions(self.scorer.explain_matrix(matrix), CARD, EXPLAIN_TOP_K)[0]
        answer = Explanation.model_construct(
            probability=probability,
            label=int(probability >= CARD.threshold),
            model_version=self.model_version,
            request_id=request_id,
            warnings=warnings.of_row(0) if warnings else [],
            margin=explained.margin,
            bias=explained.bias,
            contributions=[
                FeatureContribution.model_construct(feature=name, contribution=value)
                for name, value in explained.contributions
            ],
            rest=explained.rest,
        )
        return answer, warnings

    def _warnings(self, matrix: np.ndarray, unseen: dict[str, np.ndarray]) -> RequestWarnings:
        return RequestWarnings.find(
            len(matrix),
            unseen=unseen,
            out_of_distribution=self.scorer.encoder.out_of_distribution(matrix),
            features=CARD.feature_names,
        )

    async def _score_off_loop(self, columns: Mapping[str, Any], n_rows: int) -> tuple[np.ndarray, RequestWarnings]:
        if n_rows <= INLINE_ROWS:
            return self._score(columns, n_rows)
        return await anyio.to_thread.run_sync(self._score, columns, n_rows)

    def _columnar_answer(
        self, endpoint: str, probabilities: np.ndarray, warnings: RequestWarnings, logged: Any
    ) -> ColumnarPredictions:
        request_ids = self.ids.issue(len(probabilities))
        self.log.append(endpoint, request_ids, probabilities, logged, warnings=warnings.log_column())
        self._to_shadow(endpoint, request_ids, logged)
        return ColumnarPredictions.model_construct(
            probability=probabilities.tolist(),
            label=labels_at(probabilities, CARD.threshold).tolist(),
            request_id=request_ids,
            model_version=self.model_version,
            warnings=warnings.by_field(),
        )

    # Positional-only: the request body is the record itself, not {"record": {...}}.
    @bentoml.api(route="/predict")
    async def predict(self, record: Record, /) -> Prediction:  # type: ignore[valid-type]
        """Score one record."""
        columns = record_columns([record], FIELDS)
        probabilities, warnings = self._score(columns, 1)
        request_ids = self.ids.issue(1)
        self.log.append("/predict", request_ids, probabilities, columns, warnings=warnings.log_column())
        self._to_shadow("/predict", request_ids, columns)
        probability = float(probabilities[0])
        return Prediction.model_construct(
            probability=probability,
            label=int(probability >= CARD.threshold),
            model_version=self.model_version,
            request_id=request_ids[0],
            warnings=warnings.of_row(0) if warnings else [],
        )

    @bentoml.api(route="/explain")
    async def explain(self, record: Record, /) -> Explanation:  # type: ignore[valid-type]
        """Score one record, as /predict does, and explain the score (see Explanation)."""
        columns = record_columns([record], FIELDS)
        answer, warnings = self._explain(columns, self.ids.issue(1)[0])
        # Logged like /predict's answers (score and flags, not the explanation), so monitoring sees this traffic too.
        self.log.append(
            "/explain", [answer.request_id], np.array([answer.probability]), columns, warnings=warnings.log_column()
        )
        self._to_shadow("/explain", [answer.request_id], columns)
        return answer

    @bentoml.api(
        route="/predict_batch",
        input_spec=BatchRequest,
        batchable=True,
        max_batch_size=BATCH_MAX_ROWS,
        max_latency_ms=BATCH_MAX_LATENCY_MS,
    )
    # Answers are Prediction-shaped dicts (as /docs.json states): BentoML serialises them a third
    # faster than Prediction objects, which it would validate and dump twice.
    async def predict_batch(self, records: list[Record]) -> list[dict[str, Any]]:  # type: ignore[valid-type]
        """Score {"records": [...]}; concurrent requests are merged into one matrix (adaptive batching)."""
        columns = record_columns(records, FIELDS)
        probabilities, warnings = await self._score_off_loop(columns, len(records))
        request_ids = self.ids.issue(len(records))
        self.log.append("/predict_batch", request_ids, probabilities, columns, warnings=warnings.log_column())
        self._to_shadow("/predict_batch", request_ids, columns)
        return answer_rows(
            probabilities, request_ids, threshold=CARD.threshold, model_version=self.model_version, warnings=warnings
        )

    @bentoml.api(route="/predict_columns")
    async def predict_columns(self, body: Columns, /) -> ColumnarPredictions:  # type: ignore[valid-type]
        """Score rows sent as columns: {"age": [..], "region": [..], ...}; answers are columns too."""
        columns = {name: getattr(body, name) for name in FIELDS}
        probabilities, warnings = await self._score_off_loop(columns, body.n_rows)
        return self._columnar_answer("/predict_columns", probabilities, warnings, columns)

    async def predict_arrow(self, body: bytes) -> ColumnarPredictions:
        """Score an Arrow IPC stream (see ARROW_ROUTE); raises InputError for a body that breaks the schema."""
        if len(body) <= INLINE_BODY_BYTES:
            batch = ARROW_READER.read(body)
        else:  # Arrow's checks and conversions release the interpreter lock: keep the loop free meanwhile
            batch = await anyio.to_thread.run_sync(ARROW_READER.read, body)
        n_rows = batch.table.num_rows
        if n_rows <= INLINE_ROWS:
            probabilities, warnings = self._score_numbers(batch.values, batch.unseen, n_rows)
        else:
            probabilities, warnings = await anyio.to_thread.run_sync(
                self._score_numbers, batch.values, batch.unseen, n_rows
            )
        return self._columnar_answer(ARROW_ROUTE, probabilities, warnings, batch.table)

    @bentoml.api(route="/feedback")
    async def feedback(self, body: Feedback, /) -> FeedbackReceipt:  # type: ignore[valid-type]
        """Record observed outcomes by request_id (written with the feedback log's next flush); outcomes
        for ids this service never issued are refused and counted."""
        positive = SPEC.label.positive
        request_ids = [item.request_id for item in body.labels]
        actual = [int(item.label == positive) for item in body.labels]
        if len(request_ids) <= INLINE_ROWS:
            result = self.feedback_log.append(request_ids, actual)
        else:  # checking each id's tag costs ~1 µs: keep the loop free for a large body
            result = await anyio.to_thread.run_sync(self.feedback_log.append, request_ids, actual)
        if result.unknown_request_ids:
            self.unknown_feedback_ids.inc(result.unknown_request_ids)
        return FeedbackReceipt(recorded=result.recorded, unknown_request_ids=result.unknown_request_ids)


async def _whole_body(request: Request) -> bytes:
    """The request body without a copy where it arrives whole, as the request guard hands it on.
    Starlette's `request.body()` joins its chunks and an empty end marker: a copy of every body, which
    for a 30 MB stream cost ~40 ms of the event loop (py-spy, bench/serving_guard.py's random bytes)."""
    chunks = [chunk async for chunk in request.stream() if chunk]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _predict_arrow_endpoint(request: Request) -> Response:
    """POST /predict_arrow: BentoML's API layer only parses JSON and forms, so this route is a plain
    Starlette endpoint mounted into the service (behind the same middleware: size limit, metrics)."""
    try:
        answer = await bentoml.get_current_service().predict_arrow(await _whole_body(request))
    except InputError as exc:
        refusal = refusal_from_problems(exc.problems, "the Arrow table")
        request_id = os.urandom(16).hex()  # names the refusal, not an answer: not a feedback id
        log_refusal(ARROW_ROUTE, 400, refusal.problems, request_id)
        return JSONResponse(refusal_body(refusal, request_id), status_code=400)
    return Response(answer.model_dump_json(), media_type="application/json")


async def _model_card_endpoint(request: Request) -> Response:
    """GET /model_card: the champion's HTML model card as of its promotion, when the Bento carries one."""
    if MODEL_CARD_BYTES is None:
        return JSONResponse({"error": "this Bento carries no model card"}, status_code=404)
    return HTMLResponse(MODEL_CARD_BYTES)


MODEL_CARD_BYTES = MODEL_CARD_HTML.read_bytes() if MODEL_CARD_HTML.is_file() else None
KennelService.mount_asgi_app(
    Starlette(
        routes=[
            Route(ARROW_ROUTE, _predict_arrow_endpoint, methods=["POST"]),
            Route("/model_card", _model_card_endpoint, methods=["GET"]),
        ]
    ),
    path="/",
)

# The guard validates JSON bodies with the very classes BentoML's APIs take, and hands them over.
_JSON_INPUTS = {api.route: api.input_spec for api in KennelService.apis.values()}
for _input_spec in _JSON_INPUTS.values():
    accept_guarded_input(_input_spec)
ROUTE_RULES = {route: RouteRule(media_type, _JSON_INPUTS.get(route)) for route, media_type in ROUTES.items()}

KennelService.add_asgi_middleware(
    RequestGuard,
    max_body_bytes=env_int("KENNEL_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES),
    routes=ROUTE_RULES,
    timeout_s=REQUEST_TIMEOUT_S,
    screen=SCREEN,
    api_key=API_KEY,
    openapi=lambda: openapi_document(
        title=f"Kennel: {SPEC.name}",
        version=str(MODEL.tag),
        description=(
            f"{SPEC.description or SPEC.name}\n\nModel {MODEL.tag}, threshold {CARD.threshold}. "
            "Every answer is logged to the lake with its request_id; POST the observed outcome "
            "to /feedback with that id."
        ),
        apis=APIS,
        api_key=API_KEY is not None,
        model_card=MODEL_CARD_BYTES is not None,
    ),
)

# BentoML calls inspect.signature() on the API function for every request; a precomputed
# __signature__ (the same object inspect would build) turns that into an attribute read (~15% of a
# single-record request's CPU time).
for _api in KennelService.apis.values():
    _api.func.__signature__ = inspect.signature(_api.func)  # type: ignore[attr-defined]
