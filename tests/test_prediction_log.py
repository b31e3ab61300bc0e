"""The prediction log and feedback in the lake, in-process: buffering, flushing, failure, readers."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kennel.lake import DatasetLake, Lake
from kennel.serving.prediction_log import (
    COMPACTED_PREFIX,
    PREDICTION_COLUMNS,
    FeedbackLog,
    FeedbackResult,
    PredictionLog,
    compact_days,
    compact_logs,
    logged_fields,
    read_feedback,
    read_predictions,
)
from kennel.serving.request_ids import RequestIds
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
    feedback = FeedbackLog(lake, verifier=None)
    feedback.append(["r0", "r1"], [1, 0], at=datetime(2030, 1, 1, 10, tzinfo=UTC).timestamp())
    assert feedback.flush() == 2
    assert [p.parent for p in lake.feedback_dir().glob("*/*.parquet")] == [lake.feedback_dir() / "date=2030-01-01"]
    feedback.append(["r1", "unknown"], [1, 1], at=datetime(2030, 1, 2, 10, tzinfo=UTC).timestamp())
    feedback.close()

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


# --- the feedback log ------------------------------------------------------------------------------


def _files(folder: Path) -> list[str]:
    """Every published file under a log folder, as day/name (hidden temp files are not published)."""
    return sorted(f"{p.parent.name}/{p.name}" for p in folder.glob("*/*.parquet") if not p.name.startswith("."))


def test_feedback_is_buffered_one_file_per_flush(lake: DatasetLake) -> None:
    ids = RequestIds(b"k" * 32)
    log = FeedbackLog(lake, verifier=ids, flush_interval_s=3600)
    issued = ids.issue(1000)
    for i, rid in enumerate(issued):
        assert log.append([rid], [i % 2]) == FeedbackResult(recorded=1, unknown_request_ids=0)
    assert log.pending_rows == 1000 and _files(lake.feedback_dir()) == []  # nothing written on the request path
    assert log.flush() == 1000 and log.rows_written == 1000
    assert len(_files(lake.feedback_dir())) == 1
    log.append(issued[:10], [1] * 10)
    log.flush()
    assert len(_files(lake.feedback_dir())) == 2  # one more flush, one more file
    frame = read_feedback(lake).set_index("request_id")
    assert (
        len(frame) == 1000 and frame.loc[issued[0], "actual_label"] == 1 and frame.loc[issued[11], "actual_label"] == 1
    )
    assert str(frame["feedback_at"].dt.tz) == "UTC"


def test_feedback_log_close_flushes_what_the_interval_has_not(lake: DatasetLake) -> None:
    log = FeedbackLog(lake, verifier=None, flush_interval_s=3600)
    log.start()
    log.append(["a", "b"], [1, 0])
    time.sleep(0.2)
    assert log.rows_written == 0
    log.close()
    assert log.rows_written == 2 and log.pending_rows == 0
    assert sorted(read_feedback(lake)["request_id"]) == ["a", "b"]


def test_feedback_for_ids_never_issued_is_counted_and_not_written(lake: DatasetLake) -> None:
    ids = RequestIds(b"k" * 32)
    log = FeedbackLog(lake, verifier=ids)
    good = ids.issue(3)
    forged = [RequestIds(b"o" * 32).issue(1)[0], "0" * 32, good[0][:-1] + ("0" if good[0][-1] != "0" else "1"), "r1"]
    result = log.append([good[0], forged[0], good[1], forged[1], forged[2], good[2], forged[3]], [1, 0, 1, 0, 1, 0, 1])
    assert result == FeedbackResult(recorded=3, unknown_request_ids=4)
    assert log.append(forged[:2], [1, 1]) == FeedbackResult(recorded=0, unknown_request_ids=2)
    assert log.unknown_ids_total == 6 and log.pending_rows == 3
    log.flush()
    frame = read_feedback(lake)
    assert sorted(frame["request_id"]) == sorted(good)
    assert dict(zip(frame["request_id"], frame["actual_label"])) == {good[0]: 1, good[1]: 1, good[2]: 0}


def test_a_malformed_feedback_batch_is_refused_whole(lake: DatasetLake) -> None:
    log = FeedbackLog(lake, verifier=RequestIds(b"k" * 32))
    with pytest.raises(ValueError, match="2 request ids but 1 labels"):
        log.append(["a", "b"], [1])
    with pytest.raises(ValueError, match="0 or 1"):
        log.append(["a"], [2])
    assert log.pending_rows == 0 and log.unknown_ids_total == 0


# --- compaction ------------------------------------------------------------------------------------

PAST = (date(2020, 3, 1), date(2020, 3, 2))  # before today: days no log writes to any more
AFTER = date(2020, 3, 3)


def _at(day: date, hour: int, minute: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp()


def _populate(lake: DatasetLake, spec: DatasetSpec) -> None:
    """Two past days of several flushes each (predictions and feedback, with a corrected outcome),
    and today's rows, which compaction must leave alone."""
    log = _log(lake, spec)
    feedback = FeedbackLog(lake, verifier=None)
    n = 0
    for day in PAST:
        for flush in range(3):
            ids = [f"{day}-{flush}-{i}" for i in range(4)]
            log.append("/predict_batch", ids, np.linspace(0.1, 0.9, 4), _columns(4, offset=n), at=_at(day, 9, flush))
            log.flush()
            feedback.append(ids[:2], [flush % 2, 1], at=_at(day, 12, flush))
            feedback.append(ids[:1], [1 - flush % 2], at=_at(day, 13, flush))  # a correction, later the same day
            feedback.flush()
            n += 4
    log.append("/predict", ["today"], np.array([0.3]), _columns(1))
    log.close()
    feedback.append(["today"], [1])
    feedback.close()


def _snapshot(lake: DatasetLake) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return read_predictions(lake), read_predictions(lake, with_feedback=False), read_feedback(lake)


def _assert_same(lake: DatasetLake, expected: tuple[pd.DataFrame, ...]) -> None:
    for got, want in zip(_snapshot(lake), expected, strict=True):
        pd.testing.assert_frame_equal(got, want)


def test_compaction_merges_each_past_day_into_one_file_with_the_same_rows(lake: DatasetLake, spec: DatasetSpec) -> None:
    _populate(lake, spec)
    expected = _snapshot(lake)
    today = datetime.now(UTC).date()
    assert len(_files(lake.predictions_dir())) == 7 and len(_files(lake.feedback_dir())) == 7

    predictions, feedback, shadow = compact_logs(lake, today)

    assert predictions.days_compacted == ("2020-03-01", "2020-03-02") == feedback.days_compacted
    assert (predictions.files_merged, predictions.rows_merged) == (6, 24)
    assert (feedback.files_merged, feedback.rows_merged) == (6, 18)
    assert predictions.leftovers_removed == 0 and "2 day(s) before" in str(predictions)
    assert shadow.days_compacted == ()  # no shadow challenger served these days
    for folder in (lake.predictions_dir(), lake.feedback_dir()):
        files = _files(folder)
        assert [f.split("/")[0] for f in files] == ["date=2020-03-01", "date=2020-03-02", f"date={today}"]
        assert all(f.split("/")[1].startswith(COMPACTED_PREFIX) for f in files[:2])
        assert files[2].split("/")[1].startswith("part-")  # today's file is left to its writers
        assert not [p for p in folder.rglob(".*.tmp")]
    _assert_same(lake, expected)
    assert list(read_predictions(lake, start="2020-03-02", end="2020-03-02")["request_id"])[:1] == ["2020-03-02-0-0"]


def test_compaction_is_idempotent_and_merges_late_files(lake: DatasetLake, spec: DatasetSpec) -> None:
    _populate(lake, spec)
    expected = _snapshot(lake)
    compact_logs(lake, PAST[1])  # only the first day is before the 2nd
    assert len(_files(lake.predictions_dir())) == 1 + 3 + 1
    files = _files(lake.predictions_dir())
    again = compact_days(lake.predictions_dir(), PAST[1].isoformat())
    assert again.days_compacted == () and again.days_already_compact == 1 and _files(lake.predictions_dir()) == files
    _assert_same(lake, expected)

    late = FeedbackLog(lake, verifier=None)  # an outcome for a compacted day, e.g. a correction
    late.append(["2020-03-01-0-1"], [0], at=_at(PAST[0], 23))
    late.close()
    assert len(list((lake.feedback_dir() / "date=2020-03-01").glob("*.parquet"))) == 2
    expected_feedback = read_feedback(lake)
    assert expected_feedback.set_index("request_id").loc["2020-03-01-0-1", "actual_label"] == 0
    report = compact_days(lake.feedback_dir(), PAST[1])
    assert report.days_compacted == ("2020-03-01",) and report.files_merged == 2
    assert len(list((lake.feedback_dir() / "date=2020-03-01").glob("*.parquet"))) == 1
    pd.testing.assert_frame_equal(read_feedback(lake), expected_feedback)


def day_dir(folder: Path, day: date) -> Path:
    return folder / f"date={day.isoformat()}"


class _Crash(BaseException):
    """The process dies here: nothing after it runs (not even cleanup in finally blocks)."""


def _crash_after(monkeypatch: pytest.MonkeyPatch, allowed: int) -> list[str]:
    """Let `allowed` renames and removals of files happen, then die at the next one (and at any later)."""
    done: list[str] = []
    real = {"rename": os.rename, "unlink": os.unlink}

    def mutation(kind: str) -> Callable[..., Any]:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            if len(done) >= allowed:
                raise _Crash(f"{kind} {path}")
            done.append(f"{kind} {Path(path).name}")
            return real[kind](path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "rename", mutation("rename"))
    monkeypatch.setattr(os, "unlink", mutation("unlink"))
    return done


def test_a_crash_at_any_step_of_compaction_leaves_readers_correct(
    tmp_path: Path, spec: DatasetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = Lake(tmp_path / "template").dataset(spec.name)
    _populate(template, spec)
    expected = _snapshot(template)
    steps = 0
    while True:  # crash after 0, 1, 2, ... file operations, until a run completes
        lake = Lake(tmp_path / f"crash-{steps}").dataset(spec.name)
        shutil.copytree(template.lake.root, lake.lake.root)
        with monkeypatch.context() as patched:
            done = _crash_after(patched, steps)
            try:
                compact_logs(lake, AFTER)
                completed = True
            except _Crash:
                completed = False
        _assert_same(lake, expected)  # whatever the crash left, readers see every row once
        reports = compact_logs(lake, AFTER)  # the next run finishes the job
        _assert_same(lake, expected)
        for folder in (lake.predictions_dir(), lake.feedback_dir()):
            for day in PAST:
                assert [p.name[: len(COMPACTED_PREFIX)] for p in day_dir(folder, day).iterdir()] == [COMPACTED_PREFIX]
        if completed:
            assert all(r.days_compacted == () and r.leftovers_removed == 0 for r in reports)
            break
        assert steps < 50, done
        steps += 1
    assert steps >= 2 * 2 * (1 + 3)  # at least: publish + 3 removals per day and folder


def test_a_reader_racing_a_compaction_reads_every_row_once(
    lake: DatasetLake, spec: DatasetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kennel.serving.prediction_log as prediction_log

    _populate(lake, spec)
    expected = _snapshot(lake)
    real_live = prediction_log._live
    ran: list[int] = []

    def live_then_compact(folder: Path, names: list[str]) -> list[str]:
        chosen = real_live(folder, names)
        if not ran:  # the files this reader listed are replaced before it opens them
            ran.append(0)
            ran[0] = compact_logs(lake, AFTER)[0].files_merged
        return chosen

    monkeypatch.setattr(prediction_log, "_live", live_then_compact)
    pd.testing.assert_frame_equal(read_predictions(lake, with_feedback=False), expected[1])
    assert ran == [6]


def test_compaction_removes_temp_files_a_crash_left(lake: DatasetLake, spec: DatasetSpec) -> None:
    _populate(lake, spec)
    expected = _snapshot(lake)
    day = day_dir(lake.predictions_dir(), PAST[0])
    (day / f".{COMPACTED_PREFIX}20200302T000000-abc.parquet.tmp").write_bytes(b"PAR1 half a file")
    (day / ".part-20200301T235959-host-1-abcdef-000007.parquet.tmp").write_bytes(b"a writer died here")
    _assert_same(lake, expected)  # readers never look at temp files
    report = compact_days(lake.predictions_dir(), AFTER, stale_temp_s=0)
    assert report.leftovers_removed == 2 and report.days_compacted == ("2020-03-01", "2020-03-02")
    assert [p.name.startswith(COMPACTED_PREFIX) for p in day.iterdir()] == [True]
    _assert_same(lake, expected)


def test_starting_a_log_imports_what_its_writer_thread_would_import_lazily(tmp_path: Path) -> None:
    """A lazy import of pandas in the writer thread raced the serving thread (BentoML's batching found
    a half-imported pandas: 500s). Once `start` returns, nothing is left for the thread to import."""
    import subprocess
    import sys

    script = tmp_path / "start.py"
    script.write_text(
        f"""
import sys
sys.path[:0] = [{str(Path(__file__).resolve().parents[1])!r}]
from kennel.lake import Lake
from kennel.serving.prediction_log import FeedbackLog
assert "pandas" not in sys.modules
log = FeedbackLog(Lake({str(tmp_path / "lake")!r}).dataset("d"), verifier=None)
log.start()
print("pandas" in sys.modules and "pyarrow" in sys.modules)
log.close()
"""
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "True"
