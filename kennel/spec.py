"""The data-set spec: the YAML file in which a user declares a tabular classification data set.

Everything downstream (cleaning, validation, dbt models, training, serving) is driven by this
spec; nothing hard-codes the demo's columns.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import unicodedata
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeGuard

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SPEC_ENV_VAR = "KENNEL_DATASET_SPEC"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC_PATH = PROJECT_ROOT / "datasets" / "credit_demo.yaml"

# The longest record id, in characters. Serving refuses a longer one and cleaning quarantines it
# (id_too_long): a record kept for training is one that could be sent to the Bento and logged by its id.
MAX_ID_LENGTH = 256

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# The served-model logs' own columns (kennel/serving/prediction_log.py): a prediction row holds the
# record's columns next to these, and feedback is joined onto it by request_id.
PREDICTION_LOG_COLUMNS = (
    "request_id",
    "predicted_at",
    "model_tag",
    "endpoint",
    "probability",
    "predicted_label",
    "warnings",
)
FEEDBACK_LOG_COLUMNS = ("request_id", "actual_label", "feedback_at")

# Column names that the lake, dbt or Kennel give a meaning of their own, each with its owner (named in
# the error). No spec column (id, timestamp, label or feature) may take one; names are compared
# ignoring case, as Spark and DuckDB resolve them.
RESERVED_COLUMNS: dict[str, str] = {
    name: owner
    for owner, names in (
        # The lake keeps each day of the clean, quarantine and prediction-log tables in a folder
        # date=<day>, and dbt reads the clean Parquet with hive_partitioning
        # (dbt/models/staging/sources.yml): a record column of this name would be silently replaced
        # by the partition's value.
        ("the lake's day partition", ("date",)),
        # The columns of dbt/models/staging/stg_records.sql and dbt/models/features/features.sql.
        (
            "the dbt feature models",
            ("record_id", "event_ts", "event_date", "label", "version_rank", "event_day_of_week", "event_hour"),
        ),
        # QUARANTINE_COLUMNS in kennel/ingestion/cleaning.py.
        ("the quarantine table", ("reason", "detail", "raw", "source_file", "partition_date")),
        ("the prediction log", tuple(dict.fromkeys(PREDICTION_LOG_COLUMNS + FEEDBACK_LOG_COLUMNS))),
        # kennel/serving/api.py builds its request models with one pydantic field per column, and
        # pydantic refuses these names as fields.
        (
            "pydantic (the serving request models)",
            (
                "model_config",
                "model_dump",
                "model_dump_json",
                "model_validate",
                "model_validate_json",
                "model_validate_strings",
            ),
        ),
    )
    for name in names
}
# Kennel's working columns start with "_": cleaning's (_corrupt_record, _raw, _source_file, _reason,
# _t_<column>, … in kennel/ingestion/cleaning.py) and the monitoring profile's __score__
# (kennel/monitoring/profile.py); pydantic also takes a leading "_" for a private attribute, which the
# serving request models would drop.
RESERVED_PREFIX = "_"

# Bounds on the spec file, checked before anything is built from it: a realistic spec is a few KiB,
# a few levels deep and a few hundred YAML values.
MAX_SPEC_BYTES = 1024 * 1024  # also bounds the text once ${VAR} references are expanded
MAX_SPEC_DEPTH = 32
MAX_SPEC_VALUES = 100_000  # every alias counted as a copy of what it names


# The checks built from the features themselves (kennel.ingestion.validation); user expectations may not reuse them.
BUILT_IN_CHECK_GROUPS = ("not_null", "ranges", "categories", "unique_id", "row_count")
OTHER_CATEGORY = "other"
# A learned categorical feature keeps at most this many categories (the rest are "other"), and cleaning
# quarantines a value of it longer than MAX_CATEGORY_LENGTH characters (invalid_category).
MAX_LEARNED_CATEGORIES = 10_000
MAX_CATEGORY_LENGTH = 128
# What cleaning trims from every landed value (ASCII whitespace, as Spark's btrim is given it); serving
# trims categories the same way.
WHITESPACE = " \t\n\r\x0b\x0c"
# What a learned category may not hold besides too many characters: control (Cc), format (Cf: U+200B,
# U+FEFF, …), private-use (Co) and surrogate (Cs) code points, line and paragraph separators, and every
# space but U+0020. Cleaning (Spark: Java regex), the Arrow reader (RE2) and JSON serving
# (`category_text_problem`) apply this one definition; unassigned code points are not judged, since the
# three know different Unicode versions.
UNPRINTABLE_CATEGORY_PATTERN = (
    r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}\p{Zl}\p{Zp}\x{00A0}\x{1680}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}]"
)
_UNPRINTABLE_GENERAL_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp", "Zs"})


def category_text_problem(text: str) -> str | None:
    """Why trimmed text cannot be a learned category's value (cleaning quarantines it as
    invalid_category, serving refuses it), or None when it can."""
    if len(text) > MAX_CATEGORY_LENGTH:
        return f"longer than {MAX_CATEGORY_LENGTH} characters"
    if text.isprintable():  # the common case: every character UNPRINTABLE_CATEGORY_PATTERN names is unprintable
        return None
    for position, character in enumerate(text, 1):
        if character != " " and unicodedata.category(character) in _UNPRINTABLE_GENERAL_CATEGORIES:
            return f"holds the unprintable character U+{ord(character):04X} at character {position}"
    return None


class SpecError(ValueError):
    """A data-set spec that cannot be used, with a message naming the file and the field."""


def column_name_problem(name: str) -> str | None:
    """Why `name` cannot name a spec column, or None when it can."""
    if not _IDENTIFIER.match(name):
        return "must be a plain identifier (letters, digits, _)"
    if name.startswith(RESERVED_PREFIX):
        return f"is reserved by Kennel: names starting with {RESERVED_PREFIX} are its working columns"
    owner = RESERVED_COLUMNS.get(name.lower())
    if owner:
        return f"is reserved by Kennel for {owner} (names are compared ignoring case)"
    return None


def _untrimmed(value: str) -> bool:
    """Cleaning trims landed values and reads a blank one as missing, so such a value never matches."""
    return not value.strip() or value != value.strip()


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _labels_collide(a: str | int | float | bool, b: str | int | float | bool) -> bool:
    """Whether one landed value would match both label values, and so be read as the positive label
    whatever it was: kennel/ingestion/cleaning.py compares a numeric label value with the landed
    value as a number, any other one as text ignoring case."""
    if str(a).lower() == str(b).lower():
        return True
    if not (_is_number(a) or _is_number(b)):
        return False
    try:
        return float(str(a)) == float(str(b))
    except ValueError:  # text (true included) that is no number never equals a number
        return False


def _readable_uri(field: str, uri: str) -> str:
    """`uri` when Kennel can read it: a local path or s3://. Any other scheme would be taken for a local
    folder named like it, found empty, and ingest nothing."""
    if _URI_SCHEME.match(uri) and not uri.startswith("s3://"):
        raise ValueError(f"{field} {uri!r}: only local paths and s3:// URIs can be read")
    return uri


class FeatureType(str, Enum):
    numeric = "numeric"
    categorical = "categorical"
    boolean = "boolean"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    name: str
    type: FeatureType
    description: str = ""
    nullable: bool = True
    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    categories: tuple[str, ...] | None = None
    # What cleaning does with a value outside `categories`: quarantine the row, or keep the row with
    # the value replaced by "other" (which must then be one of the categories, so every later stage
    # — GX, dbt, the model, the serving schema — knows it).
    unknown_category: Literal["quarantine", "other"] = "quarantine"
    # Open categories, learned instead of listed: cleaning keeps any value that passes the checks on
    # category text (length, printable characters), and training freezes the `learned_categories` most
    # frequent values of its train window into the model card; every other value is "other" for that
    # model. Clean tables never depend on which model is champion.
    learned_categories: int | None = Field(default=None, ge=1, le=MAX_LEARNED_CATEGORIES)

    @field_validator("name")
    @classmethod
    def _column_name(cls, v: str) -> str:
        problem = column_name_problem(v)
        if problem:
            raise ValueError(f"feature name {v!r} {problem}")
        return v

    @model_validator(mode="after")
    def _type_options(self) -> Feature:
        if self.type is not FeatureType.numeric and (self.min is not None or self.max is not None):
            raise ValueError(f"feature {self.name!r}: min/max apply to numeric features only")
        if self.type is not FeatureType.categorical and self.categories is not None:
            raise ValueError(f"feature {self.name!r}: categories apply to categorical features only")
        if self.learned_categories is not None:
            if self.type is not FeatureType.categorical:
                raise ValueError(f"feature {self.name!r}: learned_categories applies to categorical features only")
            if self.categories is not None:
                raise ValueError(
                    f"feature {self.name!r}: list its categories or learn them (learned_categories), not both"
                )
            if self.unknown_category != "quarantine":
                raise ValueError(
                    f"feature {self.name!r}: a learned feature maps every value outside its top "
                    f"{self.learned_categories} to {OTHER_CATEGORY!r} already; drop unknown_category"
                )
        elif self.type is FeatureType.categorical and not self.categories:
            raise ValueError(
                f"feature {self.name!r}: a categorical feature needs its list of categories, or "
                "learned_categories: N to learn the N most frequent ones from the training window"
            )
        for category in self.categories or ():
            if _untrimmed(category):
                raise ValueError(
                    f"feature {self.name!r}: category {category!r} is blank or has surrounding spaces; "
                    "cleaning trims values before comparing, so no value could match it"
                )
        categories = list(self.categories or ())
        twice = sorted({c for c in categories if categories.count(c) > 1})
        if twice:
            raise ValueError(f"feature {self.name!r}: categories listed twice: {twice}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        if self.unknown_category == "other":
            if self.type is not FeatureType.categorical:
                raise ValueError(f"feature {self.name!r}: unknown_category applies to categorical features only")
            if OTHER_CATEGORY not in (self.categories or ()):
                raise ValueError(
                    f"feature {self.name!r}: unknown_category: other maps unknown values to {OTHER_CATEGORY!r}, "
                    f"so {OTHER_CATEGORY!r} must be one of its categories"
                )
        return self

    def category_of(self, value: str) -> tuple[str, bool]:
        """The category a categorical value stands for, read as cleaning reads it: trimmed; a declared
        category is itself, any other value is "other" under `unknown_category: other` (second item
        True: the value was unseen). Raises ValueError for a blank value (cleaning: missing) and for an
        unknown one under `unknown_category: quarantine` (cleaning: quarantined)."""
        trimmed = value.strip(WHITESPACE)
        if not trimmed:
            raise ValueError("blank text is no category (send null for a missing value)")
        if trimmed in (self.categories or ()):
            return trimmed, False
        if self.unknown_category == "other":
            return OTHER_CATEGORY, True
        raise ValueError(f"not a declared category of {self.name} (the spec lists {len(self.categories or ())})")


class KafkaSource(_Strict):
    """A Kafka topic whose messages (one JSON object per record) are landed as daily JSON Lines files."""

    bootstrap_servers: str
    topic: str
    group_id: str = Field(default="", description="Consumer group; default kennel-<data-set name>")
    # Extra librdkafka settings (security.protocol, sasl.*, session.timeout.ms, …).
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)


class Source(_Strict):
    uri: str = Field(description="Folder of landed files; local path (relative to the spec file) or s3://")
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    options: dict[str, Any] = Field(default_factory=dict, description="Reader options, e.g. delimiter")
    kafka: KafkaSource | None = Field(
        default=None, description="Consume this topic into `uri` (as daily jsonl files) before ingestion"
    )

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    @field_validator("uri")
    @classmethod
    def _readable_scheme(cls, v: str) -> str:
        return _readable_uri("source.uri", v)

    @model_validator(mode="after")
    def _kafka_lands_jsonl(self) -> Source:
        if self.kafka is not None and self.format != "jsonl":
            raise ValueError("a kafka source lands JSON Lines files: set source.format to jsonl")
        return self


class LateLabels(_Strict):
    """Where labels that arrive after their records land: daily files holding the spec's id column and
    label column (the day in each file's path, as for the source), ingested by kennel.ingestion.labels."""

    uri: str = Field(description="Folder of landed label files; local path (relative to the spec file) or s3://")
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    options: dict[str, Any] = Field(default_factory=dict, description="Reader options, e.g. delimiter")

    @field_validator("uri")
    @classmethod
    def _readable_scheme(cls, v: str) -> str:
        return _readable_uri("label.late.uri", v)


class Label(_Strict):
    column: str
    positive: str | int | float | bool = Field(description="Label value meaning positive (e.g. 1, yes)")
    negative: str | int | float | bool = Field(description="Label value meaning negative (e.g. 0, no)")
    # Where the label files live is not what the pipeline does with them: kept out of the fingerprint
    # (a model served under the spec stays valid when the folder is added or moved) and out of the spec
    # copy stored with a model (serving never reads label files).
    late: LateLabels | None = Field(
        default=None, exclude=True, description="Labels landed later, as daily files of id and label"
    )

    @model_validator(mode="after")
    def _values_cleaning_can_tell_apart(self) -> Label:
        for field, value in (("label.positive", self.positive), ("label.negative", self.negative)):
            if _is_number(value) and not _is_finite(value):
                raise ValueError(f"{field} {value!r} must be a finite number")
            if isinstance(value, str) and _untrimmed(value):
                raise ValueError(
                    f"{field} {value!r} is blank or has surrounding spaces; cleaning trims values before "
                    "comparing, so no landed label could match it"
                )
        if _labels_collide(self.positive, self.negative):
            raise ValueError(
                f"label.positive and label.negative must differ as cleaning compares them (numbers as "
                f"numbers, text ignoring case): {self.positive!r} and {self.negative!r} match the same values"
            )
        return self


class Split(_Strict):
    """Time-based split: the most recent days are test, the ones before validation, then train."""

    train_days: int = Field(gt=0)
    validation_days: int = Field(gt=0)
    test_days: int = Field(gt=0)

    @property
    def total_days(self) -> int:
        return self.train_days + self.validation_days + self.test_days


class Quality(_Strict):
    """Partition-level thresholds; a partition outside them fails its blocking checks."""

    min_rows_per_partition: int = Field(default=1, ge=0)
    max_quarantine_fraction: float = Field(default=0.5, ge=0, le=1)


class UserExpectation(_Strict):
    """A Great Expectations expectation added by the user, run with the spec's own suite.

    `type` and `kwargs` are GX's own (e.g. expect_column_mean_to_be_between with column, min_value,
    max_value). `error` expectations are blocking asset checks: a failure stops downstream assets and
    fails the partition; `warn` ones are reported only.
    """

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["error", "warn"] = "error"
    name: str = Field(default="", description="Check name (gx_<name>); default: from the type and column")
    description: str = ""

    @field_validator("severity", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @field_validator("type")
    @classmethod
    def _gx_name(cls, v: str) -> str:
        if not re.match(r"^expect_[a-z0-9_]+$", v):
            raise ValueError(f"{v!r} is not a GX expectation name (snake case, starting with expect_)")
        return v

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if v and not re.match(r"^[a-z][a-z0-9_]*$", v):
            raise ValueError(f"expectation name {v!r} must be lower case letters, digits and _")
        return v

    @property
    def columns(self) -> list[str]:
        cols = [self.kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(self.kwargs.get(k), str)]
        for k in ("column_list", "column_set"):
            cols += [c for c in self.kwargs.get(k) or () if isinstance(c, str)]
        return cols

    @property
    def check_name(self) -> str:
        if self.name:
            return f"gx_{self.name}"
        stem = self.type.removeprefix("expect_").removeprefix("column_")
        return "_".join(["gx", stem, *self.columns])


class DatasetSpec(_Strict):
    name: str
    description: str = ""
    owner: str = "team:ml"
    source: Source
    start_date: date = Field(description="First daily partition")
    timestamp_column: str
    id_column: str
    label: Label
    features: tuple[Feature, ...] = Field(min_length=1)
    sensitive_columns: tuple[str, ...] = ()
    # Monitoring slices beyond the sensitive columns: drift and performance are also measured per value of
    # each of these (categorical or boolean features).
    segments: tuple[str, ...] = ()
    # Columns holding personal data (the id column or features): their values stay in the data tables
    # (raw, clean, quarantine); everywhere else (prediction log, check metadata, profiles, monitoring,
    # model cards, logs) kennel.privacy hashes a text value and drops a number or boolean.
    personal_columns: tuple[str, ...] = ()
    split: Split
    quality: Quality = Quality()
    expectations: tuple[UserExpectation, ...] = Field(
        default=(), description="GX expectations added to the suite built from the features"
    )
    spec_path: str = Field(default="", exclude=True, description="Where the spec was loaded from")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[a-z][a-z0-9_]*$", v):
            raise ValueError(f"data-set name {v!r} must be lower case letters, digits and _")
        return v

    @model_validator(mode="after")
    def _columns(self) -> DatasetSpec:
        roles = (
            ("id_column", self.id_column),
            ("timestamp_column", self.timestamp_column),
            ("label.column", self.label.column),
        )
        for role, col in roles:
            problem = column_name_problem(col)
            if problem:
                raise ValueError(f"{role} {col!r} {problem}")
        # Spark and DuckDB resolve column names ignoring case, so Age and age are one column to them.
        first_named: dict[str, str] = {}
        for field, col in (*((f"features.{i}.name", f.name) for i, f in enumerate(self.features)), *roles):
            first = first_named.setdefault(col.lower(), field)
            if first != field:
                what = f"a feature ({first})" if first.startswith("features.") else first
                raise ValueError(
                    f"{field} {col!r} cannot also be {what}: every column needs a name of its own, "
                    "compared ignoring case"
                )
        for col in self.sensitive_columns:
            if col not in self.feature_names:
                raise ValueError(
                    f"sensitive column {col!r} is not a declared feature; declare it under features "
                    "(it is excluded from the model if you list it in sensitive_columns only)"
                )
        if not self.model_features:
            raise ValueError("every feature is listed in sensitive_columns, which leaves the model no input")
        for col in self.segments:
            if col not in self.feature_names:
                raise ValueError(f"segment {col!r} is not a declared feature; a segment slices monitoring by a feature")
            if self.feature(col).type is FeatureType.numeric:
                raise ValueError(
                    f"segment {col!r} is numeric; monitoring slices by value, so a segment must be categorical or "
                    "boolean (declare a banded copy of the column as a categorical feature to slice by it)"
                )
        self._check_personal_columns()
        checks = [e.check_name for e in self.expectations]
        for e in self.expectations:
            unknown = [c for c in e.columns if c not in self.raw_columns]
            if unknown:
                raise ValueError(f"expectation {e.check_name}: unknown column(s) {unknown}")
            if checks.count(e.check_name) > 1:
                raise ValueError(f"two expectations are both named {e.check_name}; give them distinct names")
            if e.check_name.removeprefix("gx_") in BUILT_IN_CHECK_GROUPS:
                raise ValueError(f"expectation name {e.check_name} is taken by a built-in check; rename it")
        return self

    def _check_personal_columns(self) -> None:
        allowed = "personal_columns may list the id column and declared features"
        for col in self.personal_columns:
            if col in (self.label.column, self.timestamp_column):
                role = "the label" if col == self.label.column else "the timestamp column"
                raise ValueError(
                    f"personal column {col!r} is {role}; {allowed} (the label and the timestamp are what "
                    "monitoring measures by, so they cannot be hashed or dropped)"
                )
            if col != self.id_column and col not in self.feature_names:
                raise ValueError(f"personal column {col!r} is not a declared column; {allowed}")
            if self.personal_columns.count(col) > 1:
                raise ValueError(f"personal column {col!r} is listed twice")
            if col == self.id_column:
                continue
            feature = self.feature(col)
            if feature.type is not FeatureType.categorical and col in self.slice_columns:
                role = "sensitive column" if col in self.sensitive_columns else "segment"
                raise ValueError(
                    f"personal column {col!r} is a {feature.type.value} {role}: outside the data tables a personal "
                    "number or boolean is dropped, so monitoring could not slice by it; a personal column may be "
                    "a sensitive column or segment only when it is categorical (its values are then hashed)"
                )
            if feature.learned_categories is not None:
                raise ValueError(
                    f"personal column {col!r} uses learned_categories, which would keep its most frequent values "
                    "in the model card; list its categories in the spec instead (a personal categorical feature "
                    "may only take declared categories)"
                )

    @model_validator(mode="after")
    def _relative_source_stays_inside(self) -> DatasetSpec:
        """A relative source.uri stays inside the spec's folder, or inside the Kennel project for a spec
        kept in it (the demo lands in ../.kennel/landing); anywhere else takes an absolute path."""
        if self.source.is_s3 or not self.spec_path or Path(self.source.uri).is_absolute():
            return self
        folder = Path(self.spec_path).parent
        # As written, not resolved: a symbolic link placed inside the folder may lead anywhere.
        target = Path(os.path.normpath(folder / self.source.uri))
        bounds = [folder, PROJECT_ROOT] if folder.is_relative_to(PROJECT_ROOT) else [folder]
        if not any(target.is_relative_to(bound) for bound in bounds):
            raise ValueError(
                f"source.uri {self.source.uri!r} leads to {target}, outside {bounds[-1]}; a relative uri "
                "may not climb out of it (write an absolute path to read elsewhere)"
            )
        return self

    # --- derived views -------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def model_features(self) -> list[Feature]:
        """Features the model is trained on: sensitive columns are kept for fairness reports only."""
        return [f for f in self.features if f.name not in self.sensitive_columns]

    @property
    def raw_columns(self) -> list[str]:
        """Every column a landed file must carry."""
        return [self.id_column, self.timestamp_column, *self.feature_names, self.label.column]

    @property
    def slice_columns(self) -> list[str]:
        """The columns monitoring slices by: the sensitive columns, then the segments."""
        return list(dict.fromkeys((*self.sensitive_columns, *self.segments)))

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)

    def fingerprint(self) -> str:
        """Stable hash of everything that changes what the pipeline does (not where files live)."""
        # Segments only slice monitoring, and personal columns only change how values are redacted outside
        # the data tables: declaring either changes neither the data nor the model.
        payload = self.model_dump(
            mode="json",
            exclude={"spec_path", "source", "description", "owner", "segments", "personal_columns"},
        )
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def resolved_yaml(self) -> str:
        """The spec as loaded (environment references expanded, source made absolute), for copies that
        must stand alone, such as the one stored with a model."""
        data = self.model_dump(mode="json", exclude={"spec_path"})
        data["source"]["uri"] = self.source_location()
        return yaml.safe_dump(data, sort_keys=False)

    def source_location(self) -> str:
        """The source URI with a local relative path resolved against the spec file's folder."""
        if self.source.is_s3 or not self.spec_path:
            return self.source.uri
        base = Path(self.spec_path).parent
        return str((base / self.source.uri).resolve())


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _read_spec_text(path: Path) -> str:
    """The spec file's text; at most MAX_SPEC_BYTES + 1 bytes are read (a path may name a device
    that never ends)."""
    try:
        with path.open("rb") as spec_file:
            data = spec_file.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"data-set spec {path} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"data-set spec {path} is larger than {MAX_SPEC_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"data-set spec {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def _expand_env(text: str, path: Path) -> str:
    """Expand ${VAR} and ${VAR:-default} so a spec can point at per-environment locations.

    The expanded text is held to MAX_SPEC_BYTES characters as well: a large variable referenced many
    times would otherwise build a text of any size before YAML sees it."""
    room = MAX_SPEC_BYTES - len(text)

    def sub(m: re.Match[str]) -> str:
        nonlocal room
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name) or default
        if value is None:
            raise SpecError(f"data-set spec {path}: environment variable {name} is referenced but not set")
        room -= len(value) - len(m.group(0))
        if room < 0:
            raise SpecError(
                f"data-set spec {path}: expanding ${{{name}}} and the references before it makes the spec "
                f"longer than {MAX_SPEC_BYTES:,} characters"
            )
        return value

    return _ENV_REF.sub(sub, text)


class _SpecTooLarge(Exception):
    """A spec document past MAX_SPEC_DEPTH or MAX_SPEC_VALUES; the message names where."""


def _field(path: tuple[str | int | None, ...]) -> str:
    """A YAML path as a dotted field name; a long one (an alias cycle's is endless) shortened."""
    parts = [str(p) for p in path if p is not None]
    if len(parts) > 8:
        parts = [*parts[:6], "…", parts[-1]]
    return ".".join(parts) or "(top level)"


def _too_deep(path: tuple[str | int | None, ...]) -> _SpecTooLarge:
    return _SpecTooLarge(f"{_field(path)} is nested deeper than {MAX_SPEC_DEPTH} levels (aliases counted as copies)")


def _key_label(key: yaml.Node) -> str:
    return key.value if isinstance(key, yaml.ScalarNode) else "<key>"


def _children(node: yaml.Node) -> list[tuple[str | int, yaml.Node]]:
    """A collection's items, each with its field label (index, or the key's text)."""
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    if isinstance(node, yaml.MappingNode):
        return [(_key_label(key), child) for key, value in node.value for child in (key, value)]
    return []


def _expanded_extent(
    node: yaml.Node, path: tuple[str | int, ...], measured: dict[int, tuple[int, int]]
) -> tuple[int, int]:
    """The (values, levels) `node` stands for once every alias in it is expanded; raises _SpecTooLarge
    past MAX_SPEC_VALUES or MAX_SPEC_DEPTH. A node that aliases share is measured once (`measured`), so
    this takes time in proportion to the document, not to what it expands to."""
    if len(path) >= MAX_SPEC_DEPTH:  # also where an alias inside its own anchor ends up
        raise _too_deep(path)
    if id(node) not in measured:
        values, levels = 1, 1
        for label, child in _children(node):
            child_values, child_levels = _expanded_extent(child, (*path, label), measured)
            values += child_values
            levels = max(levels, child_levels + 1)
            if values > MAX_SPEC_VALUES:
                raise _SpecTooLarge(
                    f"{_field(path)} stands for more than {MAX_SPEC_VALUES:,} YAML values once its aliases "
                    "are expanded (an alias bomb?)"
                )
        measured[id(node)] = (values, levels)
    values, levels = measured[id(node)]
    if len(path) + levels > MAX_SPEC_DEPTH:
        raise _too_deep(path)
    return values, levels


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document nested deeper than MAX_SPEC_DEPTH or standing for more
    than MAX_SPEC_VALUES values, before any Python object is built from it.

    PyYAML gives every alias its anchor's object, so an alias bomb (billion laughs) loads cheaply; the
    copies are made later (pydantic, the fingerprint's JSON, GX's kwargs), where they would exhaust
    memory. So the bounds count each alias as a copy of what it names.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[str | int | None] = []

    def compose_node(self, parent: yaml.Node | None, index: yaml.Node | int | None) -> yaml.Node | None:
        # The composer recurses once per level: stop it before Python's recursion limit does. `index`
        # is the key node of a mapping value, the position of a sequence item, else None.
        self._path.append(_key_label(index) if isinstance(index, yaml.Node) else index)
        try:
            if len(self._path) > MAX_SPEC_DEPTH:
                raise _too_deep(tuple(self._path))
            return super().compose_node(parent, index)  # type: ignore[arg-type]  # the stubs say int only
        finally:
            self._path.pop()

    def compose_document(self) -> yaml.Node | None:
        document = super().compose_document()
        if document is not None:
            _expanded_extent(document, (), {})
        return document


def load_spec(path: str | os.PathLike[str] | None = None) -> DatasetSpec:
    """Load and validate a spec; errors name the file and each offending field."""
    path = Path(path or os.environ.get(SPEC_ENV_VAR) or DEFAULT_SPEC_PATH).resolve()
    if not path.exists():
        raise SpecError(f"data-set spec {path} does not exist (set {SPEC_ENV_VAR} to a spec file)")
    text = _expand_env(_read_spec_text(path), path)
    try:
        raw = yaml.load(text, Loader=_BoundedLoader)
    except _SpecTooLarge as exc:
        raise SpecError(f"data-set spec {path} is refused: {exc}") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date-like scalar that is no date (2026-13-45)
        raise SpecError(f"data-set spec {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"data-set spec {path} must be a YAML mapping, got {type(raw).__name__}")
    try:
        return DatasetSpec.model_validate({**raw, "spec_path": str(path)})
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"data-set spec {path} is invalid:\n{problems}") from None
