"""Great Expectations 1.x validation of clean data: a suite built from the spec plus the user's own
expectations, run by GX on the Spark DataFrame (never collected to pandas).

Expectations are grouped into named checks so the orchestrator can show one check per group while GX
runs the whole suite in a single pass: the built-in groups (not_null, ranges, categories, unique_id,
row_count) are severity error; each user expectation is its own check with the severity the spec gives.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kennel.spec import BUILT_IN_CHECK_GROUPS, MAX_CATEGORY_LENGTH, DatasetSpec, FeatureType, SpecError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

CHECK_GROUPS = BUILT_IN_CHECK_GROUPS
CHECK_DESCRIPTIONS = {
    "not_null": "Id, timestamp and non-nullable features are never null (the label may be: not known yet)",
    "ranges": "Numeric features lie within the spec's min/max; a known label is 0 or 1",
    "categories": "Categorical features only take the spec's categories; learned ones no longer than "
    f"{MAX_CATEGORY_LENGTH} characters",
    "unique_id": "Each id appears once in the partition",
    "row_count": "The partition has at least the spec's minimum number of clean rows",
}
SAMPLE_SIZE = 10  # failing values kept per expectation: enough to see the problem, small in metadata
# What stands in an outcome for a value of a personal column (spec: personal_columns): outcomes go into
# quality records and Dagster metadata, which hold no personal values. Validation runs without the lake
# (and so without the salt kennel.privacy hashes with): the values are dropped, not hashed.
REDACTED = "(personal value redacted)"
_COLUMN_KWARGS = ("column", "column_A", "column_B")
_COLUMN_LIST_KWARGS = ("column_list", "column_set")


@dataclass(frozen=True)
class CheckDefinition:
    """One check the orchestrator declares: `error` checks block downstream, `warn` ones report."""

    name: str  # without the gx_ prefix
    description: str
    severity: str  # error | warn


def check_definitions(spec: DatasetSpec) -> list[CheckDefinition]:
    checks = [CheckDefinition(g, CHECK_DESCRIPTIONS[g], "error") for g in CHECK_GROUPS]
    for e in spec.expectations:
        text = e.description or f"{e.type}({', '.join(f'{k}={v!r}' for k, v in e.kwargs.items())})"
        checks.append(CheckDefinition(e.check_name.removeprefix("gx_"), text, e.severity))
    return checks


@dataclass
class ExpectationOutcome:
    group: str
    expectation: str
    column: str | None
    success: bool
    severity: str = "error"
    kwargs: dict[str, Any] = field(default_factory=dict)
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    unexpected_sample: list[Any] = field(default_factory=list)


@dataclass
class GroupOutcome:
    group: str
    outcomes: list[ExpectationOutcome]
    severity: str = "error"

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)


def build_suite(spec: DatasetSpec) -> list[tuple[str, Any]]:
    """(group, GX expectation) pairs for the spec: its features' rules, then the user's expectations."""
    import great_expectations.expectations as gxe
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.registry import get_expectation_impl

    # Not the label: an unlabelled row is clean (null label); the 0/1 set check below ignores nulls.
    required = [spec.id_column, spec.timestamp_column] + [f.name for f in spec.features if not f.nullable]
    items: list[tuple[str, Any]] = [("not_null", gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in required]
    items.append(("ranges", gxe.ExpectColumnValuesToBeInSet(column=spec.label.column, value_set=[0, 1])))
    for f in spec.features:
        if f.type is FeatureType.numeric and (f.min is not None or f.max is not None):
            items.append(("ranges", gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.min, max_value=f.max)))
        if f.learned_categories is not None:
            # Any text may be a learned category (a model freezes its own list); cleaning bounds its length.
            items.append(
                ("categories", gxe.ExpectColumnValueLengthsToBeBetween(column=f.name, max_value=MAX_CATEGORY_LENGTH))
            )
        elif f.type is FeatureType.categorical:
            items.append(
                ("categories", gxe.ExpectColumnValuesToBeInSet(column=f.name, value_set=list(f.categories or ())))
            )
    items.append(("unique_id", gxe.ExpectColumnValuesToBeUnique(column=spec.id_column)))
    items.append(("row_count", gxe.ExpectTableRowCountToBeBetween(min_value=spec.quality.min_rows_per_partition)))
    for user in spec.expectations:
        where = f"data-set spec {spec.spec_path or spec.name}, expectation {user.check_name}"
        try:
            items.append((user.check_name.removeprefix("gx_"), get_expectation_impl(user.type)(**user.kwargs)))
        except ExpectationNotFoundError:
            raise SpecError(f"{where}: Great Expectations has no expectation {user.type!r}") from None
        except ValueError as exc:  # GX validates kwargs with pydantic
            raise SpecError(f"{where}: invalid kwargs for {user.type}: {exc}") from None
    # GX reports results in its own order: the group travels in each expectation's meta.
    for group, expectation in items:
        expectation.meta = {"kennel_group": group}
    return items


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _is_row_level(expectation: Any) -> bool:
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    return isinstance(expectation, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation))


def _names_personal_column(kwargs: dict[str, Any], personal: set[str]) -> bool:
    named = [kwargs.get(k) for k in _COLUMN_KWARGS]
    named += [c for k in _COLUMN_LIST_KWARGS for c in kwargs.get(k) or ()]
    return any(isinstance(c, str) and c in personal for c in named)


def validate_dataframe(df: DataFrame, spec: DatasetSpec, name: str = "clean") -> list[GroupOutcome]:
    """Run the spec's suite on a Spark DataFrame inside GX (no conversion to pandas).

    Two passes: every expectation with GX's BOOLEAN_ONLY result (its unexpected counts computed
    together), then full results (observed value, failing-value sample) only for the expectations
    that failed and for aggregate ones, whose observed value is cheap. Asking GX for samples of every
    row-level expectation costs one more scan each, even when nothing fails: 3-4x the time.
    Cache `df` first when it is read from files: GX runs several Spark jobs over it.

    An expectation on a personal column keeps its counts and share of failing rows, but its failing-value
    sample and an observed value of the column's own (a min, a max, a set of values) read REDACTED.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_spark(name=f"kennel_{name}")
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )

    def run(indices: list[int], result_format: Any) -> dict[int, Any]:
        # A fresh suite per pass: GX binds expectations to the suite they are added to.
        items = build_suite(spec)
        for i in indices:
            items[i][1].meta = {**items[i][1].meta, "kennel_index": i}
        suite = gx.ExpectationSuite(name=f"{spec.name}_{name}", expectations=[items[i][1] for i in indices])
        results = batch.validate(suite, result_format=result_format).results
        return {r.expectation_config.meta["kennel_index"]: r for r in results if r.expectation_config is not None}

    items = build_suite(spec)
    quick = run(list(range(len(items))), "BOOLEAN_ONLY")
    needs_detail = [
        i
        for i, (_, e) in enumerate(items)
        if not quick[i].success or not _is_row_level(e) or "mostly" in (e.configuration.kwargs or {})
    ]
    detailed = (
        run(needs_detail, {"result_format": "BASIC", "partial_unexpected_count": SAMPLE_SIZE}) if needs_detail else {}
    )

    severity = {c.name: c.severity for c in check_definitions(spec)}
    personal = set(spec.personal_columns)
    outcomes: dict[str, list[ExpectationOutcome]] = {c: [] for c in severity}
    for i, (group, _expectation) in enumerate(items):
        res = detailed.get(i, quick[i])
        body = res.result or {}
        kwargs = {k: v for k, v in res.expectation_config.kwargs.items() if k not in ("batch_id", "result_format")}
        if i in detailed:
            observed = body.get("observed_value", body.get("unexpected_percent"))
            count = body.get("unexpected_count")
        else:  # a row-level expectation that passed with mostly = 1: nothing was unexpected
            observed, count = 0.0, 0
        sample = list(body.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]
        if _names_personal_column(kwargs, personal):
            sample = [REDACTED] * len(sample)
            if "observed_value" in body:  # a row-level expectation's observed share of failing rows stays
                observed = REDACTED
        outcomes[group].append(
            ExpectationOutcome(
                group=group,
                expectation=res.expectation_config.type,
                column=kwargs.get("column"),
                success=bool(res.success),
                severity=severity[group],
                kwargs=_jsonable(kwargs),
                observed=_jsonable(observed),
                unexpected_count=count,
                unexpected_percent=_jsonable(body.get("unexpected_percent", 0.0 if i not in detailed else None)),
                unexpected_sample=_jsonable(sample),
            )
        )
    return [GroupOutcome(g, outcomes[g], severity[g]) for g in severity]
