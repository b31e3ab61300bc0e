"""Write-audit-publish in the lake: records publish versions, readers verify, concurrent publishers of a
day never leave a record that disagrees with its data. (Crashes at each commit instant:
tests/test_crash_points.py.)"""

import multiprocessing
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kennel.lake import Lake, LakeIntegrityError
from kennel.lake.records import QualityRecord, RowCount

DAY = "2026-01-05"
DATASET = "credit_demo"


def _write_version(lake: Lake, version: str, rows: int) -> QualityRecord:
    """What an ingestion run does before publishing: its own version of the day, and the record for it."""
    data = lake.dataset(DATASET)
    outputs = {}
    for table, folder in (
        ("clean", data.clean_version_dir(DAY, version)),
        ("quarantine", data.quarantine_version_dir(DAY, version)),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"id": [f"{version}-{i}" for i in range(rows)]}).to_parquet(folder / "part-00000.parquet")
        outputs[table] = data.digest(folder / "part-00000.parquet")
    return QualityRecord(
        dataset=DATASET,
        day=DAY,
        passed=True,
        run_id=version,
        written_at="2026-01-06T00:00:00",
        spec_fingerprint="f",
        rows_in=2 * rows,
        rows_clean=rows,
        rows_quarantined=rows,
        quarantine_rate=0.5,
        max_quarantine_fraction=1.0,
        row_count=RowCount(clean=rows),
        checks={"rows_reconcile": True},
        outputs=outputs,
    )


def test_a_published_day_is_read_only_through_its_verified_record(tmp_path):
    lake = Lake(tmp_path)
    data = lake.dataset(DATASET)
    assert data.published(DAY) is None
    data.publish_day(_write_version(lake, "first", 3))
    data.publish_day(_write_version(lake, "second", 5))
    assert len(pd.read_parquet(data.published(DAY))) == 5
    assert [p.name for p in data.clean_dir(DAY).iterdir()] == ["v-second"]  # the older version is gone
    assert data.published_clean_files() == [data.published(DAY)]

    # A file changed behind its record's back is refused, loudly and by name.
    pd.DataFrame({"id": ["tampered"]}).to_parquet(data.published(DAY, "quarantine"))
    with pytest.raises(LakeIntegrityError, match=r"quarantine table of credit_demo 2026-01-05.*sha256"):
        data.published(DAY, "quarantine")


def test_a_record_is_not_published_over_files_that_are_not_its_own(tmp_path):
    lake = Lake(tmp_path)
    record = _write_version(lake, "first", 3)
    pd.DataFrame({"id": ["other rows"]}).to_parquet(lake.root / record.outputs["clean"].file)
    with pytest.raises(LakeIntegrityError, match="new clean table"):
        lake.dataset(DATASET).publish_day(record)
    assert lake.dataset(DATASET).quality(DAY) is None


def test_records_of_the_previous_release_still_publish_their_files(tmp_path):
    """Version-2 records named a file in the day's folder itself; they stay readable."""
    lake = Lake(tmp_path)
    data = lake.dataset(DATASET)
    record = _write_version(lake, "old", 4)
    for folder in (data.clean_dir(DAY), data.quarantine_dir(DAY)):
        shutil.move(folder / "v-old" / "part-00000.parquet", folder / "part-00000.parquet")
        (folder / "v-old").rmdir()
    outputs = {t: d.model_copy(update={"file": "part-00000.parquet"}) for t, d in record.outputs.items()}
    data.write_quality(record.model_copy(update={"version": 2, "outputs": outputs}))
    assert len(pd.read_parquet(data.published(DAY))) == 4
    data.publish_day(_write_version(lake, "new", 6))  # a new version replaces the old layout's file
    assert [p.name for p in data.clean_dir(DAY).iterdir()] == ["v-new"]


def _publish_in_a_process(root: str, version: str, rows: int) -> str:
    lake = Lake(root)
    try:
        # A publisher removes the day's other versions, so a run still writing its own may lose its
        # folder under it: that run fails (as a Spark write would), it never publishes half a version.
        record = _write_version(lake, version, rows)
    except OSError:
        return "failed while writing"
    try:
        lake.dataset(DATASET).publish_day(record)
    except LakeIntegrityError:
        return "refused"
    return "published"


def test_concurrent_publishers_of_one_day_leave_one_consistent_version(tmp_path):
    """Runs of the same day at once: each publish is whole, the last one wins, none corrupts another."""
    versions = [(f"run{i}", 3 + i) for i in range(8)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_publish_in_a_process, [(str(tmp_path), v, n) for v, n in versions])
    assert "published" in results
    data = Lake(tmp_path).dataset(DATASET)
    record = data.quality(DAY)
    winner = dict(versions)[record.run_id]
    assert len(pd.read_parquet(data.published(DAY))) == winner == record.rows_clean
    assert len(pd.read_parquet(data.published(DAY, "quarantine"))) == winner
    assert [p.name for p in data.clean_dir(DAY).iterdir()] == [f"v-{record.run_id}"]
    assert Path(data.published(DAY)).parent.name == f"v-{record.run_id}"


def test_trailing_rows_read_once_agree_with_the_records_as_a_run_adds_days(tmp_path):
    """A backfill reads the quality records once (TrailingRows) and counts each day it records: every
    day's trailing mean equals the one computed afresh from the records on disk at that point, gaps,
    a rewritten day and a day older than every record included."""
    from kennel.ingestion.quality import TRAILING_DAYS, TrailingRows

    data = Lake(tmp_path).dataset(DATASET)

    def record(day: str, rows: int) -> QualityRecord:
        return _write_version(Lake(tmp_path), f"r{rows}", 1).model_copy(update={"day": day, "rows_clean": rows})

    def afresh(day: str) -> tuple[float | None, int]:
        before = [r.rows_clean for r in data.quality_records() if r.day < day][-TRAILING_DAYS:]
        return (sum(before) / len(before) if before else None), len(before)

    for day, rows in (("2026-01-02", 10), ("2026-01-03", 30), ("2026-01-09", 50)):
        data.write_quality(record(day, rows))
    trailing = TrailingRows(data)
    run = [("2026-01-01", 7), ("2026-01-03", 90), *((f"2026-01-{d:02d}", 100 * d) for d in range(4, 20, 2))]
    for day, rows in run:
        assert trailing.before(day) == afresh(day), day
        new = record(day, rows)
        data.write_quality(new)
        trailing.add(new)
    assert trailing.before("2026-02-01") == afresh("2026-02-01") and afresh("2026-02-01")[1] == TRAILING_DAYS
    assert TrailingRows(data).before("2026-01-01") == (None, 0)


def test_day_records_parsed_once_are_read_again_whenever_a_file_changes(tmp_path):
    """Quality records are parsed once per content (a sensor tick reads every day's): a record rewritten
    in place, with the same size, or replaced by rename is read anew; an unchanged one is not parsed again."""
    data = Lake(tmp_path).dataset(DATASET)
    first = _write_version(Lake(tmp_path), "aaaa", 1)
    data.write_quality(first)
    (read,) = data.quality_records()
    assert read == first
    (again,) = data.quality_records()
    assert again is read  # unchanged bytes: the record parsed before
    path = data.quality_path(DAY)
    same_size = path.read_text().replace('"run_id": "aaaa"', '"run_id": "bbbb"')
    path.write_text(same_size)  # in place, same size, within the file system's timestamp granularity
    (changed,) = data.quality_records()
    assert changed.run_id == "bbbb"
    data.write_quality(first.model_copy(update={"rows_clean": 7}))  # by rename, as the lake writes
    assert [r.rows_clean for r in data.quality_records()] == [7]
