"""The data-set spec: the YAML file in which a user declares a tabular classification data set.

Everything downstream (cleaning, validation, dbt models, training, serving) is driven by this
spec; nothing hard-codes the demo's columns.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SPEC_ENV_VAR = "KENNEL_DATASET_SPEC"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC_PATH = PROJECT_ROOT / "datasets" / "credit_demo.yaml"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Column names the pipeline adds itself; a user column with one of these names would be shadowed.
RESERVED_COLUMNS = frozenset(
    {"record_id", "event_ts", "event_date", "label", "_reason", "_detail", "_raw", "_source_file"}
)


# The checks built from the features themselves (kennel.ingestion.validation); user expectations may not reuse them.
BUILT_IN_CHECK_GROUPS = ("not_null", "ranges", "categories", "unique_id", "row_count")
OTHER_CATEGORY = "other"


class SpecError(ValueError):
    """A data-set spec that cannot be used, with a message naming the file and the field."""


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
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    # What cleaning does with a value outside `categories`: quarantine the row, or keep the row with
    # the value replaced by "other" (which must then be one of the categories, so every later stage
    # — GX, dbt, the model, the serving schema — knows it).
    unknown_category: Literal["quarantine", "other"] = "quarantine"

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _IDENTIFIER.match(v):
            raise ValueError(f"feature name {v!r} must be a plain identifier (letters, digits, _)")
        if v in RESERVED_COLUMNS:
            raise ValueError(f"feature name {v!r} is reserved by Kennel")
        return v

    @model_validator(mode="after")
    def _type_options(self) -> Feature:
        if self.type is not FeatureType.numeric and (self.min is not None or self.max is not None):
            raise ValueError(f"feature {self.name!r}: min/max apply to numeric features only")
        if self.type is not FeatureType.categorical and self.categories is not None:
            raise ValueError(f"feature {self.name!r}: categories apply to categorical features only")
        if self.type is FeatureType.categorical and not self.categories:
            raise ValueError(f"feature {self.name!r}: a categorical feature needs its list of categories")
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

    @model_validator(mode="after")
    def _kafka_lands_jsonl(self) -> Source:
        if self.kafka is not None and self.format != "jsonl":
            raise ValueError("a kafka source lands JSON Lines files: set source.format to jsonl")
        return self


class Label(_Strict):
    column: str
    positive: str | int | float | bool = Field(description="Label value meaning positive (e.g. 1, yes)")
    negative: str | int | float | bool = Field(description="Label value meaning negative (e.g. 0, no)")

    @model_validator(mode="after")
    def _distinct(self) -> Label:
        if str(self.positive) == str(self.negative):
            raise ValueError("label.positive and label.negative must differ")
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
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features listed twice: {dupes}")
        for role, col in (
            ("timestamp_column", self.timestamp_column),
            ("id_column", self.id_column),
            ("label.column", self.label.column),
        ):
            if not _IDENTIFIER.match(col):
                raise ValueError(f"{role} {col!r} must be a plain identifier")
            if col in names:
                raise ValueError(f"{role} {col!r} cannot also be a feature")
            if col in RESERVED_COLUMNS:
                raise ValueError(f"{role} {col!r} is reserved by Kennel")
        for col in self.sensitive_columns:
            if col not in names:
                raise ValueError(
                    f"sensitive column {col!r} is not a declared feature; declare it under features "
                    "(it is excluded from the model if you list it in sensitive_columns only)"
                )
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

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)

    def fingerprint(self) -> str:
        """Stable hash of everything that changes what the pipeline does (not where files live)."""
        payload = self.model_dump(mode="json", exclude={"spec_path", "source", "description", "owner"})
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


def _expand_env(text: str) -> str:
    """Expand ${VAR} and ${VAR:-default} so a spec can point at per-environment locations."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise SpecError(f"environment variable {m.group(1)} is referenced by the spec but not set")

    return _ENV_REF.sub(sub, text)


def load_spec(path: str | os.PathLike[str] | None = None) -> DatasetSpec:
    """Load and validate a spec; errors name the file and each offending field."""
    path = Path(path or os.environ.get(SPEC_ENV_VAR) or DEFAULT_SPEC_PATH).resolve()
    if not path.exists():
        raise SpecError(f"data-set spec {path} does not exist (set {SPEC_ENV_VAR} to a spec file)")
    try:
        raw = yaml.safe_load(_expand_env(path.read_text()))
    except yaml.YAMLError as exc:
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
