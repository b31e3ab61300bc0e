"""Great Expectations 1.x validation of a clean partition, with the suite derived from the spec.

Expectations are grouped into named checks (not_null, ranges, categories, unique_id, row_count) so the
orchestrator can show one check per group while GX runs the whole suite in a single pass.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kennel.spec import DatasetSpec, FeatureType

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

CHECK_GROUPS = ("not_null", "ranges", "categories", "unique_id", "row_count")
CHECK_DESCRIPTIONS = {
    "not_null": "Id, timestamp, label and non-nullable features are never null",
    "ranges": "Numeric features lie within the spec's min/max; the label is 0 or 1",
    "categories": "Categorical features only take the spec's categories",
    "unique_id": "Each id appears once in the partition",
    "row_count": "The partition has at least the spec's minimum number of clean rows",
}


@dataclass
class ExpectationOutcome:
    group: str
    expectation: str
    column: str | None
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_sample: list[Any] = field(default_factory=list)


@dataclass
class GroupOutcome:
    group: str
    outcomes: list[ExpectationOutcome]

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)


def build_suite(spec: DatasetSpec) -> list[tuple[str, Any]]:
    """(group, GX expectation) pairs for the spec."""
    import great_expectations.expectations as gxe

    required = [spec.id_column, spec.timestamp_column, spec.label.column] + [
        f.name for f in spec.features if not f.nullable
    ]
    items: list[tuple[str, Any]] = [("not_null", gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in required]
    items.append(("ranges", gxe.ExpectColumnValuesToBeInSet(column=spec.label.column, value_set=[0, 1])))
    for f in spec.features:
        if f.type is FeatureType.numeric and (f.min is not None or f.max is not None):
            items.append(("ranges", gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.min, max_value=f.max)))
        if f.type is FeatureType.categorical:
            items.append(("categories", gxe.ExpectColumnValuesToBeInSet(column=f.name, value_set=list(f.categories or ()))))
    items.append(("unique_id", gxe.ExpectColumnValuesToBeUnique(column=spec.id_column)))
    items.append(("row_count", gxe.ExpectTableRowCountToBeBetween(min_value=spec.quality.min_rows_per_partition)))
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


def validate_dataframe(df: DataFrame, spec: DatasetSpec, name: str = "clean") -> list[GroupOutcome]:
    """Run the spec's suite on a Spark DataFrame inside GX (no conversion to pandas)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    items = build_suite(spec)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_spark(name=f"kennel_{name}")
        .add_dataframe_asset(name=name)
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    suite = gx.ExpectationSuite(name=f"{spec.name}_{name}", expectations=[e for _, e in items])
    result = batch.validate(suite, result_format="SUMMARY")
    outcomes: dict[str, list[ExpectationOutcome]] = {g: [] for g in CHECK_GROUPS}
    for res in result.results:
        cfg, body = res.expectation_config, res.result or {}
        group = cfg.meta["kennel_group"]
        outcomes[group].append(ExpectationOutcome(
            group=group,
            expectation=cfg.type,
            column=cfg.kwargs.get("column"),
            success=bool(res.success),
            observed=_jsonable(body.get("observed_value", body.get("unexpected_percent"))),
            unexpected_count=body.get("unexpected_count"),
            unexpected_sample=_jsonable(list(body.get("partial_unexpected_list") or [])[:10]),
        ))
    return [GroupOutcome(g, outcomes[g]) for g in CHECK_GROUPS]
