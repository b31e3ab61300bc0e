"""The prediction log and feedback in the lake, in-process: buffering, flushing, failure, readers."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.lake import DatasetLake, Lake
from kennel.serving.prediction_log import (
    PREDICTION_COLUMNS,
    PredictionLog,
    logged_fields,
    read_feedback,
    read_predictions,
    write_feedback,
)
from kennel.spec import PROJECT_ROOT, DatasetSpec, load_spec

DEMO_SPEC = PROJECT_ROOT / "datasets" / "credit_demo.yaml"


@pytest.fixture
def spec() -> DatasetSpec:
    return load_spec(DEMO_SPEC)


@pytest.fixture
def lake(tmp_path: Path, spec: DatasetSpec) -> DatasetLake:
    return Lake(tmp_path).dataset(spec.name)


def _log(lake: DatasetLake, spec: DatasetSpec, **kwargs: object) -> PredictionLog:
    return PredictionLog(lake, spec, model_tag="clf:v1", threshold=0.5, **kwargs)  # type: ignore[arg-type]


def _columns(n: int, offset: int = 0) -> dict[str, list[object]]:
    return {
        "application_id": [f"a{offset + i}" for i in range(n)],
        "age": [30.0 + i for i in range(n)],
        "region": ["west"] * n,
        "is_repeat_customer": [i % 2 == 0 for i in range(n)],
        "annual_income": [None] * n,
    }


def test_rows_written_on_flush_are_read_back_with_their_features(lake: DatasetLake, spec: DatasetSpec) -> None:
    log = _log(lake, spec)
    log.append("/predict_batch", ["r0", "r1", "r2"], np.array([0.2, 0.5, 0.9]), _columns(3))
    log.append("/predict", ["r3"], np.array([0.4]), _columns(1, offset=3))
    assert log.pending_rows == 4
    assert read_predictions(lake).empty  # nothing before a flush
    assert log.flush() == 4 and log.pending_rows == 0

    frame = read_predictions(lake)
    assert list(frame.columns[: len(PREDICTION_COLUMNS)]) == list(PREDICTION_COLUMNS)
    assert list(frame.columns[len(PREDICTION_COLUMNS) : -2]) == [name for name, _ in logged_fields(spec)]
    assert list(frame["request_id"]) == ["r0", "r1", "r2", "r3"]
    assert list(frame["predicted_label"]) == [0, 1, 1, 0]  # at the threshold: >= 0.5
    assert list(frame["endpoint"]) == ["/predict_batch"] * 3 + ["/predict"]
    assert list(frame["age"]) == [30.0, 31.0, 32.0, 30.0]
    assert list(frame["is_repeat_customer"]) == [True, False, True, True]
    assert frame["annual_income"].isna().all() and frame["loan_amount"].isna().all()  # None / not sent
    assert (frame["model_tag"] == "clf:v1").all()
    assert str(frame["predicted_at"].dt.tz) == "UTC"
    assert frame["actual_label"].isna().all()


def test_feedback_is_joined_by_request_id_latest_wins(lake: DatasetLake, spec: DatasetSpec) -> None:
    log = _log(lake, spec)
    log.append("/predict_batch", ["r0", "r1", "r2"], np.array([0.2, 0.5, 0.9]), _columns(3))
    log.flush()
    written = write_feedback(lake, ["r0", "r1"], [1, 0], received_at=datetime(2030, 1, 1, 10, tzinfo=UTC))
    assert written.parent == lake.feedback_dir() / "date=2030-01-01"
    write_feedback(lake, ["r1", "unknown"], [1, 1], received_at=datetime(2030, 1, 2, 10, tzinfo=UTC))

    frame = read_predictions(lake).set_index("request_id")
    assert frame.loc["r0", "actual_label"] == 1
    assert frame.loc["r1", "actual_label"] == 1  # corrected the next day
    assert pd.isna(frame.loc["r2", "actual_label"])
    assert frame["actual_label"].dtype == "Int8"
    feedback = read_feedback(lake)
    assert set(feedback["request_id"]) == {"r0", "r1", "unknown"}  # unmatched outcomes are kept
    assert len(read_feedback(lake, start="2030-01-02")) == 2


def test_day_folders_and_date_filters(lake: DatasetLake, spec: DatasetSpec) -> None:
    log = _log(lake, spec)
    for day, rid in ((date(2030, 3, 1), "early"), (date(2030, 3, 2), "late")):
        at = datetime(day.year, day.month, day.day, 23, 59, tzinfo=UTC).timestamp()
        log.append("/predict", [rid], np.array([0.1]), _columns(1), at=at)
    log.flush()
    folders = sorted(p.name for p in lake.predictions_dir().iterdir())
    assert folders == ["date=2030-03-01", "date=2030-03-02"]
    assert list(read_predictions(lake, start="2030-03-02")["request_id"]) == ["late"]
    assert list(read_predictions(lake, end=date(2030, 3, 1))["request_id"]) == ["early"]
    assert read_predictions(lake, start="2031-01-01").empty


def test_background_thread_flushes_on_its_interval_and_close_flushes_the_rest(
    lake: DatasetLake, spec: DatasetSpec
) -> None:
    log = _log(lake, spec, flush_interval_s=0.2)
    log.start()
    log.append("/predict", ["a"], np.array([0.3]), _columns(1))
    deadline = time.monotonic() + 10
    while log.rows_written < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.rows_written == 1
    log.flush_interval_s = 3600  # the next rows wait for close()
    time.sleep(0.3)
    log.append("/predict", ["b"], np.array([0.3]), _columns(1))
    log.close()
    assert sorted(read_predictions(lake)["request_id"]) == ["a", "b"]


def test_a_full_buffer_is_flushed_early(lake: DatasetLake, spec: DatasetSpec) -> None:
    log = _log(lake, spec, flush_interval_s=3600, max_buffer_rows=5)
    log.start()
    log.append("/predict_batch", [f"r{i}" for i in range(6)], np.full(6, 0.5), _columns(6))
    deadline = time.monotonic() + 10
    while log.rows_written < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.rows_written == 6
    log.close()


def test_rows_survive_a_failed_write_and_go_out_with_the_next(lake: DatasetLake, spec: DatasetSpec) -> None:
    log = _log(lake, spec)
    day = datetime.now(UTC).date().isoformat()
    blocker = lake.predictions_dir() / f"date={day}"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the day folder should be")
    log.append("/predict", ["kept"], np.array([0.7]), _columns(1))
    assert log.flush() == 0 and log.pending_rows == 1
    blocker.unlink()
    assert log.flush() == 1
    assert list(read_predictions(lake)["request_id"]) == ["kept"]
    assert [p.name.startswith("part-") for p in blocker.iterdir()] == [True]  # no temp file left behind


def test_overflow_while_unwritable_drops_oldest_and_counts(tmp_path: Path, spec: DatasetSpec) -> None:
    blocked_root = tmp_path / "not-a-folder"
    blocked_root.write_text("x")
    log = _log(Lake(blocked_root).dataset(spec.name), spec, max_buffer_rows=2)
    for i in range(30):
        log.append("/predict", [f"r{i}"], np.array([0.1]), _columns(1))
        log.flush()
    assert log.rows_dropped == 10 and log.pending_rows == 20


def test_an_object_store_url_is_refused_clearly(spec: DatasetSpec) -> None:
    with pytest.raises(ValueError, match="not a local folder"):
        read_predictions(Lake("s3://bucket/lake").dataset(spec.name))


def test_a_spec_column_may_not_shadow_the_logs_own(spec: DatasetSpec) -> None:
    clashing = spec.model_copy(update={"id_column": "request_id"})
    with pytest.raises(ValueError, match="request_id"):
        logged_fields(clashing)
