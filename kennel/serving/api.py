"""What a served model accepts and answers, derived from its model card and data-set spec.

The Bento service builds its request and answer schemas from these functions at import time, so the
OpenAPI document and the validation errors name the real features. Nothing here imports bentoml or
the model library; validated values are scored through kennel.model (its encoder's matrix).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Literal,
    NamedTuple,
)

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    create_model,
    model_validator,
)

from kennel.model import ModelCard
from kennel.spec import MAX_ID_LENGTH, DatasetSpec, Feature, FeatureType

if TYPE_CHECKING:
    import pyarrow as pa

# Upper bounds per request: they bound one request's memory and time on a worker; larger jobs belong
# in batch scoring. The byte limit (KENNEL_MAX_REQUEST_BYTES) is checked before any parsing.
MAX_BATCH_RECORDS = 10_000
MAX_COLUMN_ROWS = 100_000
MAX_FEEDBACK_LABELS = 10_000
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024  # a full columnar request of the demo spec is ~18 MB

REQUEST_ID_PATTERN = r"^[0-9a-f]{32}$"

# Strict: a JSON string is not a number and 1 is not a boolean; a typo'd or unknown field is an
# error rather than a silently missing feature; NaN/Infinity literals are refused (send null for a
# missing value where the spec allows one).
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Answer(BaseModel):
    # BentoML looks this up on every answer it serializes; without the class attribute the lookup
    # falls through to pydantic's __getattr__, which costs ~50 us per request raising AttributeError.
    multipart_fields: ClassVar[list[str]] = []


class Prediction(_Answer):
    """One answer: the positive-class probability and the label at the model card's threshold."""

    probability: float = Field(ge=0.0, le=1.0, description="Probability of the positive label")
    label: Literal[0, 1] = Field(description="1 when probability >= the model's threshold, else 0")
    model_version: str = Field(description="BentoML model tag (name:version) that answered")
    request_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="Unique id of this answer (32 random hex digits); "
        "send it back with POST /feedback once the outcome is known",
    )


class ColumnarPredictions(_Answer):
    """Answers for a columnar request: one list entry per input row, in input order."""

    probability: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        description="Probability of the positive label, per row"
    )
    label: list[Literal[0, 1]] = Field(description="1 when probability >= the model's threshold, per row")
    request_id: list[Annotated[str, Field(pattern=REQUEST_ID_PATTERN)]] = Field(
        description="Unique id per row, for POST /feedback"
    )
    model_version: str = Field(description="BentoML model tag (name:version) that answered")


class FeedbackReceipt(_Answer):
    recorded: int = Field(ge=1, description="Labels written to the lake")


class ErrorDetail(BaseModel):
    """One validation problem; the input value is never echoed."""

    type: str = Field(description="Problem kind, e.g. missing, extra_forbidden, less_than_equal")
    loc: list[str | int] = Field(description="Where: field name, list index, …")
    msg: str = Field(description="What is wrong, in words")


class ValidationErrorBody(BaseModel):
    error: str = Field(description="Summary: how many problems, in which input")
    detail: list[ErrorDetail]


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in words")


# --- request models ------------------------------------------------------------------------------


def _value_type(feature: Feature, type_: FeatureType, categories: tuple[str, ...] | None) -> Any:
    """The annotation of one non-missing value: range from the spec, categories from the card."""
    if type_ is FeatureType.categorical:
        return Literal[tuple(categories or ())]
    if type_ is FeatureType.boolean:
        return bool
    return Annotated[float, Field(ge=feature.min, le=feature.max)]


def _input_fields(spec: DatasetSpec, card: ModelCard) -> list[tuple[str, Any, bool, str]]:
    """(name, value type, required, description) per input field, in schema order.

    - one field per model feature (the card's list, so the schema matches what the booster saw);
      required unless the spec marks it nullable, in which case it may be omitted or null;
    - the spec's sensitive columns: optional, validated like their spec feature, not used by the
      model (kept in the prediction log for monitoring);
    - the spec's id column: optional string, ignored by the model, so callers can pass their id.
    """
    if card.spec_fingerprint != spec.fingerprint():
        raise ValueError(
            f"model card was trained for spec fingerprint {card.spec_fingerprint}, "
            f"but the spec given has {spec.fingerprint()}"
        )
    fields = [
        (
            spec.id_column,
            Annotated[str, Field(max_length=MAX_ID_LENGTH)],
            False,
            "Caller's record id; not used by the model, kept in the prediction log",
        )
    ]
    for feat in card.features:
        spec_feat = spec.feature(feat.name)
        fields.append(
            (
                feat.name,
                _value_type(spec_feat, feat.type, feat.categories),
                not spec_feat.nullable,
                spec_feat.description,
            )
        )
    for name in spec.sensitive_columns:
        spec_feat = spec.feature(name)
        description = spec_feat.description or "Sensitive attribute"
        fields.append(
            (
                name,
                _value_type(spec_feat, spec_feat.type, spec_feat.categories),
                False,
                f"{description} (not used by the model; kept for fairness monitoring)",
            )
        )
    return fields


def _class_name(spec: DatasetSpec, suffix: str) -> str:
    return "".join(part.title() for part in spec.name.split("_")) + suffix


def input_field_names(spec: DatasetSpec, card: ModelCard) -> list[str]:
    """Every field a record may carry: id column, model features, sensitive columns."""
    return [name for name, *_ in _input_fields(spec, card)]


def example_record(spec: DatasetSpec) -> dict[str, Any]:
    """A valid record with every feature set (first category, False, the lower bound or 0): the
    warm-up input and the OpenAPI example."""
    record: dict[str, Any] = {spec.id_column: "example-1"}
    for feature in spec.features:
        if feature.type is FeatureType.categorical:
            record[feature.name] = (feature.categories or ("",))[0]
        elif feature.type is FeatureType.boolean:
            record[feature.name] = False
        else:
            record[feature.name] = float(feature.min if feature.min is not None else 0.0)
    return record


def record_model(spec: DatasetSpec, card: ModelCard) -> type[BaseModel]:
    """The pydantic class of one input record for a model trained on `spec` (see `_input_fields`).

    Raises ValueError when the card was not made for this spec (fingerprint mismatch).
    """
    fields: dict[str, tuple[Any, Any]] = {}
    for name, value_type, required, description in _input_fields(spec, card):
        annotation = value_type if required else value_type | None
        fields[name] = (annotation, Field(default=... if required else None, description=description or None))
    return create_model(  # type: ignore[call-overload]
        _class_name(spec, "Record"),
        __config__=_STRICT,
        __doc__=f"One {spec.name} record. Nullable features may be omitted or null; unknown fields are refused.",
        **fields,
    )


def batch_request_model(record: type[BaseModel], max_records: int = MAX_BATCH_RECORDS) -> type[BaseModel]:
    """The body of POST /predict_batch: {"records": [record, …]} with 1..max_records records."""
    records = Annotated[
        list[record],  # type: ignore[valid-type]
        Field(
            min_length=1,
            max_length=max_records,
            description=f"1 to {max_records:,} records, answered in order",
        ),
    ]
    return create_model("PredictBatchRequest", __config__=_STRICT, records=(records, ...))


class _SameLengthColumns(BaseModel):
    """Columns given must all have the same number of rows."""

    model_config = _STRICT

    @model_validator(mode="after")
    def _same_length(self) -> _SameLengthColumns:
        lengths = {name: len(values) for name, values in self if values is not None}
        if not lengths:
            raise ValueError("no columns given")
        if len(set(lengths.values())) > 1:
            first, n = next(iter(lengths.items()))
            other, m = next((k, v) for k, v in lengths.items() if v != n)
            raise ValueError(f"columns differ in length: {first} has {n} rows, {other} has {m}")
        return self

    @property
    def n_rows(self) -> int:
        return next(len(values) for _, values in self if values is not None)


def columns_model(spec: DatasetSpec, card: ModelCard, max_rows: int = MAX_COLUMN_ROWS) -> type[_SameLengthColumns]:
    """The body of POST /predict_columns: one list per field, rows aligned by position.

    Each list holds 1..max_rows values validated like the record field; a nullable feature's list
    may hold nulls, or the column may be left out (all missing). All columns given have one length.
    """
    fields: dict[str, tuple[Any, Any]] = {}
    for name, value_type, required, description in _input_fields(spec, card):
        item = value_type if required else value_type | None
        column = Annotated[list[item], Field(min_length=1, max_length=max_rows)]  # type: ignore[valid-type]
        fields[name] = (
            column if required else column | None,
            Field(default=... if required else None, description=description or None),
        )
    return create_model(  # type: ignore[call-overload]
        _class_name(spec, "Columns"),
        __base__=_SameLengthColumns,
        __doc__=f"{spec.name} records as columns: one list per field, 1 to {max_rows:,} rows, all the same length.",
        **fields,
    )


def _exact_literal(*values: Any) -> Any:
    """Literal[values] that also refuses equal values of another JSON type (True for 1, 1.0 for 1),
    which pydantic's Literal accepts even in strict mode."""

    def same_type(value: Any) -> Any:
        if not any(type(value) is type(allowed) for allowed in values):
            raise ValueError(f"must be one of {list(values)!r}")
        return value

    return Annotated[Literal[values], BeforeValidator(same_type)]


def feedback_model(spec: DatasetSpec, max_labels: int = MAX_FEEDBACK_LABELS) -> type[BaseModel]:
    """The body of POST /feedback: {"labels": [{"request_id", "label"}, …]}; label is the spec's
    positive or negative label value, of the same JSON type. A request id may be sent again (a
    corrected outcome): readers keep the latest."""
    positive, negative = spec.label.positive, spec.label.negative
    item = create_model(
        "FeedbackLabel",
        __config__=_STRICT,
        request_id=(
            Annotated[str, Field(pattern=REQUEST_ID_PATTERN)],
            Field(description="request_id of the answer this outcome belongs to"),
        ),
        label=(
            _exact_literal(positive, negative),
            Field(
                description=f"Observed value of {spec.label.column}: {positive!r} is positive, {negative!r} negative"
            ),
        ),
    )
    labels = Annotated[
        list[item],  # type: ignore[valid-type]
        Field(
            min_length=1,
            max_length=max_labels,
            description=f"1 to {max_labels:,} outcomes; for a request_id given more than once, the last counts",
        ),
    ]
    return create_model("FeedbackRequest", __config__=_STRICT, labels=(labels, ...))


# --- answers ---------------------------------------------------------------------------------------


def new_request_ids(n: int) -> list[str]:
    """n unique ids, 128 random bits each as 32 hex digits (one urandom call for the lot)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def labels_at(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    return (np.asarray(probabilities) >= threshold).astype(np.int8)


def answer_rows(
    probabilities: np.ndarray, request_ids: Sequence[str], *, threshold: float, model_version: str
) -> list[dict[str, Any]]:
    """One Prediction-shaped dict per probability (plain Python values)."""
    labels = labels_at(probabilities, threshold).tolist()
    return [
        {"probability": p, "label": label, "model_version": model_version, "request_id": rid}
        for p, label, rid in zip(np.asarray(probabilities).tolist(), labels, request_ids, strict=True)
    ]


# --- Arrow ---------------------------------------------------------------------------------------

ARROW_MEDIA_TYPE = "application/vnd.apache.arrow.stream"
_MAX_PROBLEMS = 20


class InputError(ValueError):
    """Input refused outside pydantic; `problems` are shaped like pydantic's errors (type, loc, msg)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(problems)} validation error(s)")
        self.problems = problems


class ArrowBatch(NamedTuple):
    table: pa.Table  # as received (logged as is)
    values: dict[str, np.ndarray]  # per model feature: float64, categories as codes, NaN = missing


class ArrowReader:
    """Reads Arrow IPC streams of records for one spec and model card (see `read`)."""

    def __init__(self, spec: DatasetSpec, card: ModelCard, max_rows: int = MAX_COLUMN_ROWS) -> None:
        self.spec = spec
        self.max_rows = max_rows
        self.required = {name: needed for name, _, needed, _ in _input_fields(spec, card)}
        self.features = {f.name: f for f in spec.features}
        # Category codes must be the card's (the encoder's); sensitive columns only have the spec's.
        self.categories = {f.name: list(f.categories or ()) for f in spec.features}
        self.categories.update({f.name: list(f.categories or ()) for f in card.features})

    def read(self, body: bytes) -> ArrowBatch:
        """The fields of `record_model` as columns, checked with the same rules as the JSON schemas:
        numbers as integer or floating point, finite and in range; booleans; categories and the id
        as text or dictionary-encoded text; required ones present and without nulls; nothing else;
        1..max_rows rows. Raises InputError naming each column (and first row) at fault. Each column
        is converted once, to the numbers the encoder needs, and checked on those."""
        return _read_arrow(body, self.required, self.features, self.categories, self.max_rows)


def _read_arrow(
    body: bytes,
    required: dict[str, bool],
    features: dict[str, Feature],
    categories_of: dict[str, list[str]],
    max_rows: int,
) -> ArrowBatch:
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(
            [{"type": "arrow_invalid", "loc": [], "msg": f"not an Arrow IPC stream: {str(exc)[:200]}"}]
        ) from None
    problems: list[dict[str, Any]] = []

    def problem(kind: str, loc: list[Any], msg: str) -> None:
        problems.append({"type": kind, "loc": loc, "msg": msg})

    if not 1 <= table.num_rows <= max_rows:
        problem("row_count", [], f"1 to {max_rows:,} rows allowed, got {table.num_rows:,}")
    names = table.column_names
    for name in sorted({n for n in names if names.count(n) > 1}):
        problem("duplicate_column", [name], "column given more than once")
    for name in names:
        if name not in required:
            problem("extra_forbidden", [name], "Extra inputs are not permitted")
    values: dict[str, np.ndarray] = {}
    for name, needed in required.items():
        if name not in names:
            if needed:
                problem("missing", [name], "Field required")
            continue
        if names.count(name) > 1:
            continue
        column = table.column(name)
        feature = features.get(name)  # None: the id column
        if needed and column.null_count:
            problem("null", [name, _first(np.asarray(pc.is_null(column)))], "Field required: null is not allowed")
        if feature is not None and feature.type is FeatureType.numeric:
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
                problem("float_type", [name], f"Input should be numbers, got Arrow type {column.type}")
                continue
            numbers = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)  # nulls: NaN
            missing = np.isnan(numbers)
            if pa.types.is_floating(column.type) and (missing.sum() > column.null_count or np.isinf(numbers).any()):
                bad = ~np.isfinite(numbers) & np.asarray(pc.is_valid(column))
                problem("finite_number", [name, _first(bad)], "Input should be a finite number")
                continue
            with np.errstate(invalid="ignore"):
                if feature.min is not None and (numbers < feature.min).any():
                    problem(
                        "greater_than_equal",
                        [name, _first(numbers < feature.min)],
                        f"Input should be greater than or equal to {feature.min}",
                    )
                if feature.max is not None and (numbers > feature.max).any():
                    problem(
                        "less_than_equal",
                        [name, _first(numbers > feature.max)],
                        f"Input should be less than or equal to {feature.max}",
                    )
            values[name] = numbers
        elif feature is not None and feature.type is FeatureType.boolean:
            if not pa.types.is_boolean(column.type):
                problem("bool_type", [name], f"Input should be booleans, got Arrow type {column.type}")
                continue
            values[name] = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        else:
            text_type = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
            if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
                problem("string_type", [name], f"Input should be text, got Arrow type {column.type}")
                continue
            text = pc.cast(column, pa.string())
            if feature is None:
                if (pc.max(pc.utf8_length(text)).as_py() or 0) > MAX_ID_LENGTH:
                    problem("string_too_long", [name], f"at most {MAX_ID_LENGTH} characters")
                continue
            categories = categories_of[name]
            codes = pc.index_in(text, value_set=pa.array(categories, pa.string()))
            if codes.null_count > text.null_count:
                bad = np.asarray(pc.is_null(codes)) & np.asarray(pc.is_valid(text))
                problem("literal_error", [name, _first(bad)], "Input should be " + ", ".join(map(repr, categories)))
                continue
            values[name] = pc.cast(codes, pa.float64()).to_numpy(zero_copy_only=False)
    if problems:
        raise InputError(problems[:_MAX_PROBLEMS])
    return ArrowBatch(table, values)


def _first(mask: np.ndarray) -> int:
    """Row index of the first true value."""
    return int(np.argmax(mask))


# --- HTTP ----------------------------------------------------------------------------------------


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    """An integer setting from the environment; a bad value stops start-up with a clear message."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def _json_response(status: int, payload: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    body = json.dumps(payload).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class RequestGuard:
    """ASGI middleware in front of the service: what BentoML does not do on its own.

    - POST bodies of `routes` must have the route's media type (415 otherwise: for the JSON routes,
      another type would reach BentoML's form or pickle parser) and be at most `max_body_bytes`
      long (413, decided from Content-Length before reading, or while reading a chunked body);
      errors never echo the body.
    - GET `openapi_path` answers `openapi()` (BentoML's generated document flattens nullable
      fields and documents error bodies that it does not send).
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        max_body_bytes: int,
        routes: Mapping[str, str],
        openapi: Callable[[], dict[str, Any]] | None = None,
        openapi_path: str = "/docs.json",
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.routes = {path: media_type.encode() for path, media_type in routes.items()}
        self.openapi = openapi
        self.openapi_path = openapi_path
        self._openapi_bytes: bytes | None = None

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == self.openapi_path and self.openapi is not None:
            return await self._send_openapi(send)
        required = self.routes.get(path)
        if method != "POST" or required is None:
            return await self.app(scope, receive, send)

        headers = dict(scope["headers"])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type != required:
            return await self._reject(send, 415, f"the request body must be Content-Type: {required.decode()}")
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await self._reject(send, 400, "Content-Length is not a number")
            if int(declared) > self.max_body_bytes:
                return await self._too_large(send, int(declared))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await self._too_large(send, None)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send: Callable[..., Awaitable[None]], declared: int | None) -> None:
        size = f"{declared:,} bytes" if declared is not None else "more than that"
        await self._reject(
            send,
            413,
            f"request body too large: the limit is {self.max_body_bytes:,} bytes "
            f"(KENNEL_MAX_REQUEST_BYTES), this one is {size}; split it into "
            "smaller requests",
        )

    @staticmethod
    async def _reject(send: Callable[..., Awaitable[None]], status: int, message: str) -> None:
        start, body = _json_response(status, {"error": message})
        await send(start)
        await send(body)

    async def _send_openapi(self, send: Callable[..., Awaitable[None]]) -> None:
        if self._openapi_bytes is None:
            assert self.openapi is not None
            self._openapi_bytes = json.dumps(self.openapi()).encode()
        body = self._openapi_bytes
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


_COMPONENTS_REF = "#/components/schemas/{model}"


class _Schemas:
    """Collects JSON schemas of pydantic types into OpenAPI components and hands out references."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, type_: Any) -> dict[str, Any]:
        schema = TypeAdapter(type_).json_schema(ref_template=_COMPONENTS_REF)
        self.components.update(schema.pop("$defs", {}))
        if isinstance(type_, type) and issubclass(type_, BaseModel):
            self.components[type_.__name__] = schema
            return {"$ref": _COMPONENTS_REF.format(model=type_.__name__)}
        return schema


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


class ApiDoc(NamedTuple):
    """One endpoint for `openapi_document`."""

    route: str
    summary: str
    request: Any  # a pydantic type, or a JSON schema (dict) for a non-JSON body
    answer: Any  # a pydantic type
    example: Any = None
    media_type: str = "application/json"
    extra_statuses: tuple[int, ...] = ()  # beyond 400, 413, 415, 500, 504


def openapi_document(*, title: str, version: str, description: str, apis: Sequence[ApiDoc]) -> dict[str, Any]:
    """An OpenAPI 3.1 document for the service (JSON Schema 2020-12, as pydantic writes it, so
    nullable fields, ranges, categories and closed objects are stated exactly).

    Every endpoint may answer 400 (validation, with details), 413, 415, 500 and 504; extra statuses
    add e.g. 503 for the adaptive-batching queue.
    """
    schemas = _Schemas()
    errors = {
        400: (
            "Invalid request: a body that does not parse, or a field that breaks the schema (named in detail)",
            schemas.ref(ValidationErrorBody),
        ),
        413: ("Request body larger than KENNEL_MAX_REQUEST_BYTES", schemas.ref(ErrorBody)),
        415: ("Request body of another media type", schemas.ref(ErrorBody)),
        500: ("Unexpected server error (details in the server log)", schemas.ref(ErrorBody)),
        503: ("Overloaded: the request waited too long in the batching queue", schemas.ref(ErrorBody)),
        504: ("Not answered within the service's timeout", schemas.ref(ErrorBody)),
    }
    paths: dict[str, Any] = {}
    for api in apis:
        responses: dict[str, Any] = {
            "200": {"description": "Answer", "content": _json_content(schemas.ref(api.answer))}
        }
        for status in sorted({400, 413, 415, 500, 504, *api.extra_statuses}):
            text, schema = errors[status]
            responses[str(status)] = {"description": text, "content": _json_content(schema)}
        body: dict[str, Any] = {"schema": api.request if isinstance(api.request, dict) else schemas.ref(api.request)}
        if api.example is not None:
            body["example"] = api.example
        paths[api.route] = {
            "post": {
                "operationId": api.route.strip("/"),
                "summary": api.summary,
                "tags": ["Service APIs"],
                "requestBody": {"required": True, "content": {api.media_type: body}},
                "responses": responses,
            }
        }
    plain = {"text/plain": {"schema": {"type": "string"}}}
    for route, summary, extra in (
        (
            "/readyz",
            "Ready: the model is loaded and a warm-up prediction has run",
            {"503": {"description": "Not ready yet", "content": plain}},
        ),
        ("/livez", "The process is alive", {}),
        ("/healthz", "Same as /livez", {}),
        ("/metrics", "Prometheus metrics", {}),
    ):
        paths[route] = {
            "get": {
                "operationId": route.strip("/"),
                "summary": summary,
                "tags": ["Infrastructure"],
                "responses": {"200": {"description": "OK", "content": plain}, **extra},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": "."}],
        "tags": [
            {"name": "Service APIs", "description": "Predictions and feedback"},
            {"name": "Infrastructure", "description": "Probes and metrics"},
        ],
        "paths": paths,
        "components": {"schemas": schemas.components},
    }
