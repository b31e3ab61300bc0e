"""The shape of a data set's asset graph: every asset key, check name and the daily partitioning, in
one place. Sensors, jobs and assets refer to each other through these, never through another asset module."""

import dagster as dg

from kennel.spec import DatasetSpec


def daily_partitions(spec: DatasetSpec) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=spec.start_date.isoformat())


def landing_key(transport: str) -> dg.AssetKey:
    """The asset that lands a stream transport's messages as files (e.g. kafka_landing)."""
    return dg.AssetKey(f"{transport}_landing")


RAW = dg.AssetKey("raw_records")
CLEAN = dg.AssetKey("clean_records")
QUARANTINE = dg.AssetKey("quarantined_records")
FEATURES = dg.AssetKey("features")
TRAINING_SET = dg.AssetKey("training_set")
MODEL = dg.AssetKey("model")
EVALUATION = dg.AssetKey("model_evaluation")
CHAMPION = dg.AssetKey("champion")
BENTO = dg.AssetKey("bento")
DATA_DRIFT = dg.AssetKey("data_drift")
PERFORMANCE = dg.AssetKey("realized_performance")
PREDICTION_LOG = dg.AssetKey("prediction_log")
SERVING_DRIFT = dg.AssetKey("serving_drift")
DECISIONS = dg.AssetKey("retraining_decisions")

ROWS_RECONCILE = "rows_reconcile"
QUARANTINE_RATE = "quarantine_rate"
GATE_CHECK = "promotion_gate"
