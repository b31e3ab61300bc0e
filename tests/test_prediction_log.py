"""The prediction log and feedback in the lake, in-process: buffering, flushing, failure, readers."""

from __future__ import annotations

import time
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kennel.prediction_log import (
    PREDICTION_COLUMNS,
    PredictionLog,
    logged_fields,
    predictions_dir,
    read_feedback,
    read_predictions,
    write_feedback,
)
from kennel.spec import PROJECT_ROOT, DatasetSpec, load_spec

DEMO_SPEC = PROJECT_ROOT / "datasets" / "credit_demo.yaml"


@pytest.fixture
def spec() -> DatasetSpec:
    return load_spec(DEMO_SPEC)


def _log(lake: Path, spec: DatasetSpec, **kwargs: object) -> PredictionLog:
    return PredictionLog(lake, spec, model_tag="clf:v1", threshold=0.5, **kwargs)  # type: ignore[arg-type]


def _columns(n: int, offset: int = 0) -> dict[str, list[object]]:
    return {
        "application_id": [f"a{offset + i}" for i in range(n)],
        "age": [30.0 + i for i in range(n)],
        "region": ["west"] * n,
        "is_repeat_customer": [i % 2 == 0 for i in range(n)],
        "annual_income": [None] * n,
    }


def test_rows_written_on_flush_are_read_back_with_their_features(tmp_path: Path, spec: DatasetSpec) -> None:
    log = _log(tmp_path, spec)
    log.append("/predict_batch", ["r0", "r1", "r2"], np.array([0.2, 0.5, 0.9]), _columns(3))
    log.append("/predict", ["r3"], np.array([0.4]), _columns(1, offset=3))
    assert log.pending_rows == 4
    assert read_predictions(tmp_path, spec.name).empty  # nothing before a flush
    assert log.flush() == 4 and log.pending_rows == 0

    frame = read_predictions(tmp_path, spec.name)
    assert list(frame.columns[:len(PREDICTION_COLUMNS)]) == list(PREDICTION_COLUMNS)
    assert list(frame.columns[len(PREDICTION_COLUMNS):-2]) == [name for name, _ in logged_fields(spec)]
    assert list(frame["request_id"]) == ["r0", "r1", "r2", "r3"]
    assert list(frame["predicted_label"]) == [0, 1, 1, 0]  # at the threshold: >= 0.5
    assert list(frame["endpoint"]) == ["/predict_batch"] * 3 + ["/predict"]
    assert list(frame["age"]) == [30.0, 31.0, 32.0, 30.0]
    assert list(frame["is_repeat_customer"]) == [True, False, True, True]
    assert frame["annual_income"].isna().all() and frame["loan_amount"].isna().all()  # None / not sent
    assert (frame["model_tag"] == "clf:v1").all()
    assert str(frame["predicted_at"].dt.tz) == "UTC"
    assert frame["actual_label"].isna().all()


def test_feedback_is_joined_by_request_id_latest_wins(tmp_path: Path, spec: DatasetSpec) -> None:
    log = _log(tmp_path, spec)
    log.append("/predict_batch", ["r0", "r1", "r2"], np.array([0.2, 0.5, 0.9]), _columns(3))
    log.flush()
    write_feedback(tmp_path, spec.name, ["r0", "r1"], [1, 0],
                   received_at=datetime(2030, 1, 1, 10, tzinfo=timezone.utc))
    write_feedback(tmp_path, spec.name, ["r1", "unknown"], [1, 1],
                   received_at=datetime(2030, 1, 2, 10, tzinfo=timezone.utc))

    frame = read_predictions(tmp_path, spec.name).set_index("request_id")
    assert frame.loc["r0", "actual_label"] == 1
    assert frame.loc["r1", "actual_label"] == 1  # corrected the next day
    assert pd.isna(frame.loc["r2", "actual_label"])
    assert frame["actual_label"].dtype == "Int8"
    feedback = read_feedback(tmp_path, spec.name)
    assert set(feedback["request_id"]) == {"r0", "r1", "unknown"}  # unmatched outcomes are kept
    assert len(read_feedback(tmp_path, spec.name, start="2030-01-02")) == 2


def test_day_folders_and_date_filters(tmp_path: Path, spec: DatasetSpec) -> None:
    log = _log(tmp_path, spec)
    for day, rid in ((date(2030, 3, 1), "early"), (date(2030, 3, 2), "late")):
        at = datetime(day.year, day.month, day.day, 23, 59, tzinfo=timezone.utc).timestamp()
        log.append("/predict", [rid], np.array([0.1]), _columns(1), at=at)
    log.flush()
    folders = sorted(p.name for p in predictions_dir(tmp_path, spec.name).iterdir())
    assert folders == ["date=2030-03-01", "date=2030-03-02"]
    assert list(read_predictions(tmp_path, spec.name, start="2030-03-02")["request_id"]) == ["late"]
    assert list(read_predictions(tmp_path, spec.name, end=date(2030, 3, 1))["request_id"]) == ["early"]
    assert read_predictions(tmp_path, spec.name, start="2031-01-01").empty


def test_background_thread_flushes_on_its_interval_and_close_flushes_the_rest(tmp_path: Path,
                                                                                spec: DatasetSpec) -> None:
    log = _log(tmp_path, spec, flush_interval_s=0.2)
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
    assert sorted(read_predictions(tmp_path, spec.name)["request_id"]) == ["a", "b"]


def test_a_full_buffer_is_flushed_early(tmp_path: Path, spec: DatasetSpec) -> None:
    log = _log(tmp_path, spec, flush_interval_s=3600, max_buffer_rows=5)
    log.start()
    log.append("/predict_batch", [f"r{i}" for i in range(6)], np.full(6, 0.5), _columns(6))
    deadline = time.monotonic() + 10
    while log.rows_written < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.rows_written == 6
    log.close()


def test_rows_survive_a_failed_write_and_go_out_with_the_next(tmp_path: Path, spec: DatasetSpec) -> None:
    log = _log(tmp_path, spec)
    day = datetime.now(timezone.utc).date().isoformat()
    blocker = predictions_dir(tmp_path, spec.name) / f"date={day}"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the day folder should be")
    log.append("/predict", ["kept"], np.array([0.7]), _columns(1))
    assert log.flush() == 0 and log.pending_rows == 1
    blocker.unlink()
    assert log.flush() == 1
    assert list(read_predictions(tmp_path, spec.name)["request_id"]) == ["kept"]
    assert [p.name.startswith("part-") for p in blocker.iterdir()] == [True]  # no temp file left behind


def test_overflow_while_unwritable_drops_oldest_and_counts(tmp_path: Path, spec: DatasetSpec) -> None:
    blocked_root = tmp_path / "not-a-folder"
    blocked_root.write_text("x")
    log = _log(blocked_root, spec, max_buffer_rows=2)
    for i in range(30):
        log.append("/predict", [f"r{i}"], np.array([0.1]), _columns(1))
        log.flush()
    assert log.rows_dropped == 10 and log.pending_rows == 20


def test_an_object_store_url_is_refused_clearly(spec: DatasetSpec) -> None:
    with pytest.raises(ValueError, match="local lake folder"):
        read_predictions("s3://bucket/lake", spec.name)


def test_a_spec_column_may_not_shadow_the_logs_own(spec: DatasetSpec) -> None:
    clashing = spec.model_copy(update={"id_column": "request_id"})
    with pytest.raises(ValueError, match="request_id"):
        logged_fields(clashing)
