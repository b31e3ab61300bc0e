"""The shape of a data set's asset graph: every asset key, group, job, sensor and check name and the daily
partitioning, in one place. Sensors, jobs and assets refer to each other through a `DatasetGraph`, never
through another asset module.

In a deployment of several data sets each keeps its keys under its own name (kennel/deployment.py), so
one data set's automation never touches another's partitions."""

from dataclasses import dataclass

import dagster as dg

from kennel.deployment import scoped_name
from kennel.spec import DatasetSpec

ROWS_RECONCILE = "rows_reconcile"
QUARANTINE_RATE = "quarantine_rate"
GATE_CHECK = "promotion_gate"


def daily_partitions(spec: DatasetSpec) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=spec.start_date.isoformat())


@dataclass(frozen=True)
class DatasetGraph:
    dataset: str
    prefixed: bool = False

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([self.dataset, name]) if self.prefixed else dg.AssetKey(name)

    def name(self, base: str) -> str:
        """A group, job, sensor or schedule name of this data set."""
        return scoped_name(self.dataset, base, self.prefixed)

    def landing(self, transport: str) -> dg.AssetKey:
        """The asset that lands a stream transport's messages as files (e.g. kafka_landing)."""
        return self.key(f"{transport}_landing")

    @property
    def raw(self) -> dg.AssetKey:
        return self.key("raw_records")

    @property
    def clean(self) -> dg.AssetKey:
        return self.key("clean_records")

    @property
    def quarantine(self) -> dg.AssetKey:
        return self.key("quarantined_records")

    @property
    def late_labels(self) -> dg.AssetKey:
        """Labels landed after their records (only for a spec with label.late)."""
        return self.key("late_labels")

    @property
    def features(self) -> dg.AssetKey:
        return self.key("features")

    @property
    def training_set(self) -> dg.AssetKey:
        return self.key("training_set")

    @property
    def model(self) -> dg.AssetKey:
        return self.key("model")

    @property
    def evaluation(self) -> dg.AssetKey:
        return self.key("model_evaluation")

    @property
    def champion(self) -> dg.AssetKey:
        return self.key("champion")

    @property
    def bento(self) -> dg.AssetKey:
        return self.key("bento")

    @property
    def data_drift(self) -> dg.AssetKey:
        return self.key("data_drift")

    @property
    def performance(self) -> dg.AssetKey:
        return self.key("realized_performance")

    @property
    def prediction_log(self) -> dg.AssetKey:
        return self.key("prediction_log")

    @property
    def serving_drift(self) -> dg.AssetKey:
        return self.key("serving_drift")

    @property
    def estimated_performance(self) -> dg.AssetKey:
        return self.key("estimated_performance")

    @property
    def attribution_drift(self) -> dg.AssetKey:
        return self.key("attribution_drift")

    @property
    def decisions(self) -> dg.AssetKey:
        return self.key("retraining_decisions")

    @property
    def shadow_evaluation(self) -> dg.AssetKey:
        return self.key("shadow_evaluation")

    @property
    def model_card(self) -> dg.AssetKey:
        return self.key("model_card")

    @property
    def batch_scores(self) -> dg.AssetKey:
        return self.key("batch_scores")
