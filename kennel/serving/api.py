"""What a served model accepts and answers, derived from its model card and data-set spec.

The Bento service builds its request and answer schemas from these functions at import time, so the
OpenAPI document and the validation errors name the real features. Nothing here imports bentoml or
the model library; validated values are scored through kennel.model (its encoder's matrix).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    create_model,
    model_validator,
)

from kennel.model import ModelCard
from kennel.spec import (
    MAX_CATEGORY_LENGTH,
    MAX_ID_LENGTH,
    OTHER_CATEGORY,
    UNPRINTABLE_CATEGORY_PATTERN,
    WHITESPACE,
    DatasetSpec,
    Feature,
    FeatureType,
    category_text_problem,
)

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


WarningKind = Literal["unseen_category", "out_of_distribution"]
WARNING_KINDS: tuple[str, ...] = ("unseen_category", "out_of_distribution")


class InputWarning(BaseModel):
    """A value that was scored, but that the model never learned from."""

    field: str = Field(description="Input field")
    kind: WarningKind = Field(
        description="unseen_category: not a declared category, scored as 'other'; out_of_distribution: "
        "missing, a number outside the training range, or a category training never saw"
    )


class ColumnWarning(InputWarning):
    rows: list[int] = Field(description="Row positions (0-based) whose value in this field is flagged")


class Prediction(_Answer):
    """One answer: the positive-class probability and the label at the model card's threshold."""

    probability: float = Field(ge=0.0, le=1.0, description="Probability of the positive label")
    label: Literal[0, 1] = Field(description="1 when probability >= the model's threshold, else 0")
    model_version: str = Field(description="BentoML model tag (name:version) that answered")
    request_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="Unique id of this answer (32 hex digits); send it back with POST /feedback once "
        "the outcome is known",
    )
    warnings: list[InputWarning] = Field(default=[], description="Inputs scored but flagged")


class FeatureContribution(BaseModel):
    feature: str = Field(
        description="A model feature of the spec; a categorical one is one entry, never one per category"
    )
    contribution: float = Field(description="What it added to the margin (log-odds), exact TreeSHAP")


class Explanation(Prediction):
    """One answer (as /predict's) with the features that moved it: bias + contributions + rest ==
    margin, the log-odds of `probability`."""

    margin: float = Field(description="The model's log-odds, logit(probability) to float32 precision")
    bias: float = Field(description="The margin's expected value over the training data (TreeSHAP base value)")
    contributions: list[FeatureContribution] = Field(
        description="The features with the largest |contribution|, largest first (ties in model order)"
    )
    rest: float = Field(description="The sum of every other feature's contribution")


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
    warnings: list[ColumnWarning] = Field(default=[], description="Inputs scored but flagged, by field")


class FeedbackReceipt(_Answer):
    recorded: int = Field(ge=0, description="Outcomes accepted (written to the lake with the next flush)")
    unknown_request_ids: int = Field(
        default=0, ge=0, description="Outcomes refused because this service never issued their request_id"
    )


class ErrorDetail(BaseModel):
    """One validation problem; the input value is never echoed."""

    type: str = Field(description="Problem kind, e.g. missing, extra_forbidden, less_than_equal")
    loc: list[str | int] = Field(description="Where: field name, list index, …")
    msg: str = Field(description="What is wrong, in words")


class ValidationErrorBody(BaseModel):
    error: str = Field(description="Summary: how many problems, in which input")
    detail: list[ErrorDetail] = Field(description="The first problems found (at most 20)")
    error_count: int = Field(description="How many problems were found in all")
    request_id: str = Field(description="Id of this refusal, also in the server's log line")


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in words")


# --- request models ------------------------------------------------------------------------------


class UnseenCategory(str):
    """A value outside a categorical feature's categories, scored as "other" and flagged in the answer's
    warnings. Logged as cleaning keeps it: "other" under `unknown_category: other`; the value itself for
    a learned feature, whose clean table keeps every value (another model may know it)."""


def _category_type(feature: Feature, categories: tuple[str, ...], *, required: bool) -> Any:
    """A categorical value, read like cleaning reads it (`Feature.category_of`): trimmed, a declared
    category, or "other" for an unknown one where the spec says so; refused otherwise. Blank text is
    a missing value, as in a landed file: null where the field may be missing, refused where not."""
    declared = {c: c for c in categories}

    def read(value: str | None) -> str | None:
        # BentoML's copy of the record class applies this to the whole `str | None` field, null included.
        if value is None:
            return None
        category = declared.get(value)  # the common case, without the trimming
        if category is not None:
            return category
        if not value.strip(WHITESPACE):
            if required:
                raise ValueError("Field required: blank text is no value")
            return None
        category, unseen = feature.category_of(value)
        return UnseenCategory(category) if unseen else category

    blank = {"type": "string", "pattern": "^[ \\t\\n\\r\\v\\f]*$", "description": "blank: a missing value"}
    if feature.unknown_category == "other":
        # Any text: a value outside the list is scored as "other".
        schema: dict[str, Any] = {
            "type": "string",
            "examples": list(categories),
            "description": f"One of {list(categories)}; any other value is scored as {OTHER_CATEGORY!r} "
            "and flagged in the answer's warnings" + ("" if required else "; blank text is a missing value"),
        }
        if required:
            schema["pattern"] = "[^ \\t\\n\\r\\v\\f]"
    else:
        schema = {"type": "string", "enum": list(categories)}
        if not required:
            schema = {"anyOf": [schema, blank]}
    return Annotated[str, AfterValidator(read), WithJsonSchema(schema)]


def _learned_category_type(categories: tuple[str, ...] | None, *, required: bool) -> Any:
    """A learned categorical value, read like cleaning reads it: trimmed, any text of at most
    MAX_CATEGORY_LENGTH characters without a control or invisible character (`category_text_problem`),
    refused otherwise; blank text is a missing value. Kept as sent (trimmed); one outside the model's
    frozen `categories` is an UnseenCategory (scored as "other"). `categories` None: a sensitive column,
    which the model does not read, so no value is flagged."""
    known = frozenset(categories or ())

    def read(value: str | None) -> str | None:
        if value is None:  # see _category_type
            return None
        if value in known:  # the common case, without the trimming
            return value
        text = value.strip(WHITESPACE)
        if not text:
            if required:
                raise ValueError("Field required: blank text is no value")
            return None
        problem = category_text_problem(text)
        if problem:
            raise ValueError(f"not a category: {problem}")
        return text if categories is None or text in known else UnseenCategory(text)

    schema: dict[str, Any] = {
        "type": "string",
        "maxLength": MAX_CATEGORY_LENGTH,
        "description": f"Any category of at most {MAX_CATEGORY_LENGTH} characters without control or invisible "
        "characters"
        + (
            ""
            if categories is None
            else f"; one the model did not learn (its {len(known) - 1} most frequent) is scored as "
            f"{OTHER_CATEGORY!r} and flagged in the answer's warnings"
        )
        + ("" if required else "; blank text is a missing value"),
    }
    if categories:
        schema["examples"] = list(categories[:5])
    if required:
        schema["pattern"] = "[^ \\t\\n\\r\\v\\f]"
    return Annotated[str, AfterValidator(read), WithJsonSchema(schema)]


def _id_type() -> Any:
    """The caller's record id, text or a whole number as it is in the data (kept as text, as cleaning
    keeps it), trimmed, at most MAX_ID_LENGTH characters."""

    def read(value: str | int | None) -> str | None:
        if value is None:  # see _category_type
            return None
        text = str(value).strip(WHITESPACE)
        if len(text) > MAX_ID_LENGTH:
            raise ValueError(f"at most {MAX_ID_LENGTH} characters")
        return text or None

    # Whole numbers as data files hold them: 64-bit.
    whole = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
    return Annotated[
        str | whole,
        AfterValidator(read),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "maxLength": MAX_ID_LENGTH},
                    {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
                ]
            }
        ),
    ]


def _value_type(feature: Feature, type_: FeatureType, categories: tuple[str, ...] | None, *, required: bool) -> Any:
    """The annotation of one non-missing value: range from the spec, categories from the card."""
    if feature.learned_categories is not None:
        return _learned_category_type(categories, required=required)
    if type_ is FeatureType.categorical:
        return _category_type(feature, categories or (), required=required)
    if type_ is FeatureType.boolean:
        return bool
    return Annotated[float, Field(ge=feature.min, le=feature.max)]


def _input_fields(spec: DatasetSpec, card: ModelCard) -> list[tuple[str, Any, bool, str]]:
    """(name, value type, required, description) per input field, in schema order.

    - one field per model feature (the card's list, so the schema matches what the booster saw);
      required unless the spec marks it nullable, in which case it may be omitted or null;
    - the spec's sensitive columns: optional, validated like their spec feature, not used by the
      model (kept in the prediction log for monitoring);
    - the spec's id column: optional text or whole number, ignored by the model, so callers can
      pass their id.
    """
    if card.spec_fingerprint != spec.fingerprint():
        raise ValueError(
            f"model card was trained for spec fingerprint {card.spec_fingerprint}, "
            f"but the spec given has {spec.fingerprint()}"
        )
    fields = [
        (
            spec.id_column,
            _id_type(),
            False,
            "Caller's record id; not used by the model, kept in the prediction log",
        )
    ]
    for feat in card.features:
        spec_feat = spec.feature(feat.name)
        fields.append(
            (
                feat.name,
                _value_type(spec_feat, feat.type, feat.categories, required=not spec_feat.nullable),
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
                _value_type(spec_feat, spec_feat.type, spec_feat.categories, required=False),
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


def example_record(spec: DatasetSpec, card: ModelCard) -> dict[str, Any]:
    """A valid record with every feature set (first category — a learned one's most frequent in the
    card —, False, the lower bound or 0): the warm-up input and the OpenAPI example."""
    card_categories = {f.name: f.categories for f in card.features}
    record: dict[str, Any] = {spec.id_column: "example-1"}
    for feature in spec.features:
        if feature.type is FeatureType.categorical:
            # A learned sensitive column has no list: any category text will do.
            record[feature.name] = (card_categories.get(feature.name) or feature.categories or (OTHER_CATEGORY,))[0]
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


class RequestModels(NamedTuple):
    """The request bodies of one served model's JSON routes."""

    record: type[BaseModel]
    batch: type[BaseModel]
    columns: type[_SameLengthColumns]
    feedback: type[BaseModel]

    def by_route(self) -> dict[str, type[BaseModel]]:
        return {
            "/predict": self.record,
            "/explain": self.record,
            "/predict_batch": self.batch,
            "/predict_columns": self.columns,
            "/feedback": self.feedback,
        }


def request_models(spec: DatasetSpec, card: ModelCard) -> RequestModels:
    """Every JSON request body for a model trained on `spec` (see the *_model functions)."""
    record = record_model(spec, card)
    return RequestModels(record, batch_request_model(record), columns_model(spec, card), feedback_model(spec))


# --- answers ---------------------------------------------------------------------------------------


def new_request_ids(n: int) -> list[str]:
    """n unique ids, 128 random bits each as 32 hex digits (one urandom call for the lot)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def labels_at(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    return (np.asarray(probabilities) >= threshold).astype(np.int8)


class RequestWarnings:
    """The flagged values of one request: (field, kind, row mask) per field and kind that has any.

    Found with a few whole-column operations, so a request without flags costs microseconds."""

    def __init__(self, flags: list[tuple[str, str, np.ndarray]], n_rows: int) -> None:
        self.flags = flags
        self.n_rows = n_rows

    @classmethod
    def find(
        cls,
        n_rows: int,
        *,
        unseen: Mapping[str, np.ndarray],
        out_of_distribution: np.ndarray | None,
        features: Sequence[str],
    ) -> RequestWarnings:
        """`unseen`: per field, the rows whose category was read as "other"; `out_of_distribution`:
        the model's cells (rows x `features`) that training never saw such values in (None: none)."""
        flags = [(name, "unseen_category", mask) for name, mask in unseen.items() if mask.any()]
        if out_of_distribution is not None and out_of_distribution.any():
            for j in np.flatnonzero(out_of_distribution.any(axis=0)).tolist():
                flags.append((features[j], "out_of_distribution", out_of_distribution[:, j]))
        return cls(flags, n_rows)

    def __bool__(self) -> bool:
        return bool(self.flags)

    def per_row(self) -> list[list[dict[str, str]]]:
        """InputWarning-shaped dicts per row (the answers of /predict and /predict_batch)."""
        rows: list[list[dict[str, str]]] = [[] for _ in range(self.n_rows)]
        for name, kind, mask in self.flags:
            for i in np.flatnonzero(mask).tolist():
                rows[i].append({"field": name, "kind": kind})
        return rows

    def of_row(self, row: int) -> list[InputWarning]:
        """The warnings of one row (the answer of /predict)."""
        return [InputWarning.model_construct(field=name, kind=kind) for name, kind, mask in self.flags if mask[row]]

    def by_field(self) -> list[ColumnWarning]:
        """The warnings of the columnar endpoints' answers."""
        return [
            ColumnWarning.model_construct(field=name, kind=kind, rows=np.flatnonzero(mask).tolist())
            for name, kind, mask in self.flags
        ]

    def log_column(self) -> list[str | None] | None:
        """Per row, the prediction log's `warnings` value: "kind:field" entries joined by ";", or None;
        None for the whole column when nothing was flagged (the log writes nulls)."""
        if not self.flags:
            return None
        rows: list[list[str]] = [[] for _ in range(self.n_rows)]
        for name, kind, mask in self.flags:
            for i in np.flatnonzero(mask).tolist():
                rows[i].append(f"{kind}:{name}")
        return [";".join(row) if row else None for row in rows]


def unseen_categories(columns: Mapping[str, Sequence[Any] | None], fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Per field in `fields` (categoricals under `unknown_category: other`, learned ones), the rows whose
    value is an unknown category, scored as "other" (validated JSON values)."""
    found = {}
    for name in fields:
        values = columns.get(name)
        if values is not None and any(type(v) is UnseenCategory for v in values):
            found[name] = np.fromiter((type(v) is UnseenCategory for v in values), dtype=bool, count=len(values))
    return found


def answer_rows(
    probabilities: np.ndarray,
    request_ids: Sequence[str],
    *,
    threshold: float,
    model_version: str,
    warnings: RequestWarnings | None = None,
) -> list[dict[str, Any]]:
    """One Prediction-shaped dict per probability (plain Python values)."""
    labels = labels_at(probabilities, threshold).tolist()
    flagged = warnings.per_row() if warnings else [[] for _ in request_ids]
    return [
        {"probability": p, "label": label, "model_version": model_version, "request_id": rid, "warnings": flags}
        for p, label, rid, flags in zip(np.asarray(probabilities).tolist(), labels, request_ids, flagged, strict=True)
    ]


class TopContributions(NamedTuple):
    """One row's explanation per spec feature: the `k` largest contributions by absolute value, the sum
    of the others, the bias; contributions + rest + bias == margin (float64 sums of float32 values)."""

    margin: float
    bias: float
    contributions: list[tuple[str, float]]  # (feature, contribution), largest |contribution| first
    rest: float


def top_contributions(contributions: np.ndarray, card: ModelCard, k: int) -> list[TopContributions]:
    """Per row of `Model.explain_matrix` (rows x card features + bias), its `TopContributions`.

    One entry per feature of the card, i.e. per model feature of the spec: categorical features are
    native categoricals, one model column of codes each, so a feature's contribution is its column's
    and no category ever appears as an entry of its own. Raises ValueError for another width or k < 1.
    """
    names = card.feature_names
    if contributions.ndim != 2 or contributions.shape[1] != len(names) + 1:
        raise ValueError(f"contributions of shape {contributions.shape}: expected rows x {len(names) + 1}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    values = contributions[:, :-1].astype(np.float64)
    bias = contributions[:, -1].astype(np.float64)
    # Stable: equal magnitudes keep the card's order, so an answer does not shuffle between calls.
    ranked = np.argsort(-np.abs(values), axis=1, kind="stable")
    explained = []
    for row, order, base in zip(values, ranked, bias.tolist(), strict=True):
        top, others = order[:k], order[k:]
        explained.append(
            TopContributions(
                margin=float(row.sum()) + base,
                bias=base,
                contributions=[(names[j], value) for j, value in zip(top.tolist(), row[top].tolist(), strict=True)],
                rest=float(row[others].sum()),
            )
        )
    return explained


# --- Arrow ---------------------------------------------------------------------------------------

ARROW_MEDIA_TYPE = "application/vnd.apache.arrow.stream"
# Decoded Arrow data per request: a compressed stream may expand to at most this (the body limit
# bounds an uncompressed one).
MAX_ARROW_DECODED_BYTES = 256 * 1024 * 1024


class InputError(ValueError):
    """Input refused outside pydantic; `problems` are shaped like pydantic's errors (type, loc, msg)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(problems)} validation error(s)")
        self.problems = problems


class ArrowBatch(NamedTuple):
    # As logged: unknown categories read as "other" (a learned feature's kept as sent), ids as text.
    table: pa.Table
    values: dict[str, np.ndarray]  # per model feature: float64, categories as codes, NaN = missing
    unseen: dict[str, np.ndarray]  # per categorical field: rows whose unknown value was read as "other"


class ArrowReader:
    """Reads Arrow IPC streams of records for one spec and model card (see `read`)."""

    def __init__(
        self,
        spec: DatasetSpec,
        card: ModelCard,
        max_rows: int = MAX_COLUMN_ROWS,
        max_decoded_bytes: int = MAX_ARROW_DECODED_BYTES,
    ) -> None:
        self.max_rows = max_rows
        self.max_decoded_bytes = max_decoded_bytes
        self.required = {name: needed for name, _, needed, _ in _input_fields(spec, card)}
        self.features = {f.name: f for f in spec.features}
        # Category codes must be the card's (the encoder's); sensitive columns only have the spec's, and a
        # learned sensitive column none (None: any category text is kept as sent, never flagged).
        self.categories: dict[str, list[str] | None] = {
            f.name: None if f.learned_categories is not None else list(f.categories or ()) for f in spec.features
        }
        self.categories.update({f.name: list(f.categories or ()) for f in card.features})

    def read(self, body: bytes) -> ArrowBatch:
        """The fields of `record_model` as columns, checked with the same rules as the JSON schemas:
        numbers as integer or floating point, finite and in range; booleans; categories as text or
        dictionary-encoded text, read like `Feature.category_of`; the id as text or integers;
        required ones present and without nulls; nothing else; 1..max_rows rows. The stream itself is
        checked first, whole (kennel.serving.arrow_ipc: framing, buffers, offsets, UTF-8, decoded
        size), so no compute touches a malformed buffer. Raises InputError naming each column (and
        first row) at fault. Each column is converted once, to the numbers the encoder needs, and
        checked on those."""
        from kennel.serving.arrow_ipc import ArrowStreamError, read_stream

        try:
            table = read_stream(body, max_rows=self.max_rows, max_decoded_bytes=self.max_decoded_bytes)
        except ArrowStreamError as exc:
            raise InputError(exc.problems) from None
        return _check_columns(
            table, self.required, self.features, self.categories, self.max_rows, self.max_decoded_bytes
        )


def _check_columns(
    table: pa.Table,
    required: dict[str, bool],
    features: dict[str, Feature],
    categories_of: dict[str, list[str] | None],
    max_rows: int,
    max_text_bytes: int,
) -> ArrowBatch:
    import pyarrow as pa
    import pyarrow.compute as pc

    problems: list[dict[str, Any]] = []

    def problem(kind: str, loc: list[Any], msg: str) -> None:
        problems.append({"type": kind, "loc": loc, "msg": msg})

    if not 1 <= table.num_rows <= max_rows:
        problem("row_count", [], f"1 to {max_rows:,} rows allowed, got {table.num_rows:,}")
    names = table.column_names
    for name in sorted({n for n in names if names.count(n) > 1}):
        problem("duplicate_column", [name[:100]], "column given more than once")
    for name in names:
        if name not in required:
            problem("extra_forbidden", [name[:100]], "Extra inputs are not permitted")
    values: dict[str, np.ndarray] = {}
    unseen: dict[str, np.ndarray] = {}
    replaced: dict[str, pa.Array] = {}
    clean_numbers = _clean_numeric_columns(table, [features[n] for n in required if n in features])
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
        if feature is None:
            if pa.types.is_integer(column.type):
                replaced[name] = pc.cast(column, pa.string())
                continue
            if not _is_text(column.type):
                problem("string_type", [name], f"Input should be text or integers, got Arrow type {column.type}")
                continue
            if _expanded_text_bytes(column) > max_text_bytes:
                problem("arrow_too_large", [name], f"the column's text would exceed {max_text_bytes:,} bytes")
                continue
            text = pc.utf8_trim(pc.cast(column, pa.string()), characters=WHITESPACE)
            if (pc.max(pc.utf8_length(text)).as_py() or 0) > MAX_ID_LENGTH:
                problem("string_too_long", [name], f"at most {MAX_ID_LENGTH} characters")
            continue
        if feature.type is FeatureType.numeric:
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
                problem("float_type", [name], f"Input should be numbers, got Arrow type {column.type}")
                continue
            if name in clean_numbers:
                values[name] = clean_numbers[name]
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
        elif feature.type is FeatureType.boolean:
            if not pa.types.is_boolean(column.type):
                problem("bool_type", [name], f"Input should be booleans, got Arrow type {column.type}")
                continue
            values[name] = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        else:
            if not _is_text(column.type):
                problem("string_type", [name], f"Input should be text, got Arrow type {column.type}")
                continue
            categories = categories_of[name]
            value_set = pa.array(categories or [], pa.string())
            if _expanded_text_bytes(column) > max_text_bytes:
                problem("arrow_too_large", [name], f"the column's text would exceed {max_text_bytes:,} bytes")
                continue
            text = pc.cast(column, pa.string())
            codes = pc.index_in(text, value_set=value_set)
            if codes.null_count > text.null_count:  # unknown at first sight: read as cleaning reads it
                text = pc.utf8_trim(text, characters=WHITESPACE)
                blank = pc.fill_null(pc.equal(text, ""), False)
                if pc.any(blank).as_py():  # a missing value, as in a landed file
                    if needed:
                        problem("missing", [name, _first(np.asarray(blank))], "Field required: blank text is no value")
                        continue
                    text = pc.if_else(blank, pa.scalar(None, pa.string()), text)
                codes = pc.index_in(text, value_set=value_set)
                unknown = np.asarray(pc.and_(pc.is_null(codes), pc.is_valid(text)), dtype=bool)
                if unknown.any() and feature.learned_categories is not None:
                    invalid = _invalid_category_text(text)
                    if invalid is not None:
                        problem("value_error", [name, invalid[0]], f"not a category: {invalid[1]}")
                        continue
                    if categories is not None:  # kept as sent (as cleaning keeps it), scored as "other"
                        unseen[name] = unknown
                        codes = pc.if_else(pa.array(unknown), categories.index(OTHER_CATEGORY), codes)
                elif unknown.any():
                    assert categories is not None  # only a learned feature has no list
                    if feature.unknown_category != "other":
                        problem(
                            "literal_error",
                            [name, _first(unknown)],
                            f"not a declared category of {name} (the spec lists {len(categories)})",
                        )
                        continue
                    unseen[name] = unknown
                    mask = pa.array(unknown)
                    codes = pc.if_else(mask, categories.index(OTHER_CATEGORY), codes)
                    text = pc.if_else(mask, OTHER_CATEGORY, text)
                replaced[name] = text
            values[name] = pc.cast(codes, pa.float64()).to_numpy(zero_copy_only=False)
    if problems:
        raise InputError(problems)
    for name, column in replaced.items():
        table = table.set_column(names.index(name), name, column)
    return ArrowBatch(table, values, unseen)


def _clean_numeric_columns(table: pa.Table, features: Sequence[Feature]) -> dict[str, np.ndarray]:
    """The numeric columns among `features` that pass `_check_columns`'s checks of numbers (finite
    where floating point, within the feature's range; nulls are NaN), as float64: all of them checked
    at once as the columns of one matrix, a few whole-matrix operations instead of a dozen per column.
    A column given twice, of another type, or failing a check is left out: `_check_columns` checks it
    on its own and names its problem."""
    import pyarrow as pa

    names = table.column_names
    numeric = []
    for feature in features:
        if feature.type is not FeatureType.numeric or names.count(feature.name) != 1:
            continue
        column = table.column(feature.name)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            numeric.append((feature, column))
    if not numeric:
        return {}
    matrix = np.empty((table.num_rows, len(numeric)), dtype=np.float64, order="F")  # columns contiguous
    for j, (_, column) in enumerate(numeric):
        matrix[:, j] = column.to_numpy(zero_copy_only=False)  # nulls: NaN
    floating = np.array([pa.types.is_floating(column.type) for _, column in numeric])
    nulls = np.array([column.null_count for _, column in numeric])
    lowest = np.array([-np.inf if f.min is None else f.min for f, _ in numeric], dtype=np.float64)
    highest = np.array([np.inf if f.max is None else f.max for f, _ in numeric], dtype=np.float64)
    not_finite = floating & ((np.isnan(matrix).sum(axis=0) > nulls) | np.isinf(matrix).any(axis=0))
    with np.errstate(invalid="ignore"):  # NaN compares False: a missing value is in range
        out_of_range = (matrix < lowest).any(axis=0) | (matrix > highest).any(axis=0)
    clean = ~(not_finite | out_of_range)
    return {feature.name: matrix[:, j] for j, (feature, _) in enumerate(numeric) if clean[j]}


def _invalid_category_text(text: pa.ChunkedArray) -> tuple[int, str] | None:
    """The first row of trimmed text that can be no learned category (`category_text_problem`'s rules,
    as one whole-column pass), and why; None when every row can be one."""
    import pyarrow.compute as pc

    too_long = pc.greater(pc.utf8_length(text), MAX_CATEGORY_LENGTH)
    unprintable = pc.match_substring_regex(text, UNPRINTABLE_CATEGORY_PATTERN)
    invalid = np.asarray(pc.fill_null(pc.or_(too_long, unprintable), False), dtype=bool)
    if not invalid.any():
        return None
    row = _first(invalid)
    # RE2 and Python may know different Unicode versions: the pattern's judgement stands.
    return row, category_text_problem(text[row].as_py()) or "holds a control or invisible character"


def _expanded_text_bytes(column: pa.ChunkedArray) -> int:
    """The bytes a text column takes as plain strings: for a dictionary-encoded one, each row's value
    counted again (a few rows may name one huge value: decoding it per row must be refused first)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_dictionary(column.type):
        return sum(chunk.nbytes for chunk in column.chunks)
    total = 0
    for chunk in column.chunks:
        lengths = pc.binary_length(chunk.dictionary)
        total += int(pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0)
    return total


def _is_text(type_: pa.DataType) -> bool:
    import pyarrow as pa

    text_type = type_.value_type if pa.types.is_dictionary(type_) else type_
    return bool(pa.types.is_string(text_type) or pa.types.is_large_string(text_type))


def _first(mask: np.ndarray) -> int:
    """Row index of the first true value."""
    return int(np.argmax(mask))


# Paths open without the API key: probes (a load balancer has no key) and the API's description.
OPEN_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/docs.json"})

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
    extra_statuses: tuple[int, ...] = ()  # beyond 400, 413, 415, 500, 504 (and 401 with an API key)


def openapi_document(
    *,
    title: str,
    version: str,
    description: str,
    apis: Sequence[ApiDoc],
    api_key: bool = False,
    model_card: bool = False,
) -> dict[str, Any]:
    """An OpenAPI 3.1 document for the service (JSON Schema 2020-12, as pydantic writes it, so
    nullable fields, ranges, categories and closed objects are stated exactly).

    Every endpoint may answer 400 (validation, with details), 413, 415, 500 and 504 (and 401 with
    `api_key`); extra statuses
    add e.g. 503 for the adaptive-batching queue. GET /model_card is listed when the Bento carries a
    card (`model_card`).
    """
    schemas = _Schemas()
    errors = {
        400: (
            "Invalid request: a body that does not parse, or a field that breaks the schema (named in detail)",
            schemas.ref(ValidationErrorBody),
        ),
        401: ("The service requires an API key (KENNEL_API_KEY) and none or another was sent", schemas.ref(ErrorBody)),
        413: ("Request body larger than KENNEL_MAX_REQUEST_BYTES", schemas.ref(ErrorBody)),
        415: ("Request body of another media type, or not exactly one Content-Type header", schemas.ref(ErrorBody)),
        500: ("Unexpected server error (details in the server log)", schemas.ref(ErrorBody)),
        503: ("Overloaded: the request waited too long in the batching queue", schemas.ref(ErrorBody)),
        504: ("Not answered within the service's timeout", schemas.ref(ErrorBody)),
    }
    paths: dict[str, Any] = {}
    for api in apis:
        responses: dict[str, Any] = {
            "200": {"description": "Answer", "content": _json_content(schemas.ref(api.answer))}
        }
        for status in sorted({400, 413, 415, 500, 504, *api.extra_statuses, *((401,) if api_key else ())}):
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
        (
            "/metrics",
            "Prometheus metrics",
            {"401": {"description": "API key required", "content": plain}} if api_key else {},
        ),
    ):
        paths[route] = {
            "get": {
                "operationId": route.strip("/"),
                "summary": summary,
                "tags": ["Infrastructure"],
                "responses": {"200": {"description": "OK", "content": plain}, **extra},
            }
        }
    if model_card:
        card_responses: dict[str, Any] = {
            "200": {"description": "The card", "content": {"text/html": {"schema": {"type": "string"}}}}
        }
        if api_key:
            text, schema = errors[401]
            card_responses["401"] = {"description": text, "content": _json_content(schema)}
        paths["/model_card"] = {
            "get": {
                "operationId": "model_card",
                "summary": "The champion's model card as of its promotion: one self-contained HTML page",
                "tags": ["Service APIs"],
                "responses": card_responses,
            }
        }
    document: dict[str, Any] = {
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
    if api_key:  # every operation but the probes and this document needs it
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <KENNEL_API_KEY>"}
        }
        for route, operations in paths.items():
            if route not in OPEN_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"apiKey": []}]
    return document
