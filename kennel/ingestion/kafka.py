"""Kafka → daily JSON Lines files in the landing folder, by each record's event time.

No loss, no duplicates, whatever point a run is killed at:

1. Messages are read from where the last run stopped: the later of the group's committed offset and
   the offset after the last message already landed (file names carry the offsets they cover), so a
   run killed after landing but before committing does not land the same messages twice.
2. A batch is written as hidden files (`_`-prefixed: ignored by ingestion and sensors), fsynced, then
   a batch manifest is written: the commit point. The hidden files are then renamed to their final
   names and the manifest removed. A run that finds a manifest finishes its renames (the batch is
   complete on disk); hidden files without a manifest are an unfinished batch and are deleted, and
   their messages are read again.
3. Offsets are committed only after every file of the batch is in place.

Each message should be one JSON object holding the spec's columns. A message is landed as its own
text when that is one line; a JSON message spread over lines is re-serialised on one line, and
anything else (not JSON, a tombstone) is landed as a JSON string literal holding its text, which
cleaning quarantines as unparsable_line with that text as the original record.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kennel.ingestion.streams import LandingReport
from kennel.lake import fsync_path
from kennel.spec import DatasetSpec

PENDING_DIR = "_kafka_batches"
# <day>/kafka-<topic>-<partition>-<first offset>-<last offset>.jsonl: the batch's offsets for that partition.
_LANDED = re.compile(r"^kafka-(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d{12})-(?P<last>\d{12})\.jsonl$")


def consumer_config(spec: DatasetSpec, bootstrap_servers: str = "") -> dict[str, Any]:
    """librdkafka settings for the spec's topic; offsets are committed by drain_topic, never automatically."""
    kafka = spec.source.kafka
    if kafka is None:
        raise ValueError(f"data set {spec.name} has no kafka source")
    return {
        "bootstrap.servers": bootstrap_servers or kafka.bootstrap_servers,
        "group.id": kafka.group_id or f"kennel-{spec.name}",
        "auto.offset.reset": "earliest",
        **kafka.options,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
    }


def _file_name(topic: str, partition: int, first: int, last: int) -> str:
    return f"kafka-{topic}-{partition}-{first:012d}-{last:012d}.jsonl"


def landed_next_offsets(landing: Path, topic: str) -> dict[int, int]:
    """Partition → the offset after the last message landed in final files."""
    nxt: dict[int, int] = {}
    for path in landing.glob("*/kafka-*.jsonl"):
        m = _LANDED.match(path.name)
        if m and m["topic"] == topic:
            p = int(m["partition"])
            nxt[p] = max(nxt.get(p, 0), int(m["last"]) + 1)
    return nxt


def recover(landing: Path) -> None:
    """Finish batches whose manifest was written; drop the files of batches that never got one."""
    pending = landing / PENDING_DIR
    if not pending.exists():
        return
    committed = set()
    for manifest in sorted(pending.glob("*.json")):
        for move in json.loads(manifest.read_text())["files"]:
            hidden, final = landing / move["hidden"], landing / move["final"]
            if hidden.exists():
                os.replace(hidden, final)
            committed.add(move["hidden"])
        manifest.unlink()
    for orphan in landing.glob("*/_kafka-*.jsonl"):
        if orphan.relative_to(landing).as_posix() not in committed:
            orphan.unlink()


def _event_day(spec: DatasetSpec, record: Any, fallback: datetime) -> str:
    """The UTC day of the record's event time; the message's own time when that does not parse
    (cleaning then quarantines the record for its timestamp)."""
    if isinstance(record, dict) and isinstance(record.get(spec.timestamp_column), str):
        try:
            ts = datetime.fromisoformat(record[spec.timestamp_column].strip())
            if ts.tzinfo is not None:
                ts = ts.astimezone(UTC)
            return ts.date().isoformat()
        except ValueError:
            pass
    return fallback.date().isoformat()


def _line(value: bytes | None) -> tuple[str, Any]:
    """The JSON Lines line for a message value, and the parsed record (None when not JSON)."""
    text = "null" if value is None else value.decode("utf-8", errors="replace")
    try:
        record = json.loads(text)
    except ValueError:
        return json.dumps(text, ensure_ascii=False), None
    if "\n" in text or "\r" in text:
        return json.dumps(record, ensure_ascii=False), record
    return text, record


def _write_batch(spec: DatasetSpec, landing: Path, topic: str, messages: list[Any]) -> list[Path]:
    """Land one batch (all or nothing, see the module doc); returns the final file paths."""
    by_file: dict[tuple[str, int], list[str]] = {}
    ranges: dict[int, tuple[int, int]] = {}
    for msg in messages:
        line, record = _line(msg.value())
        _, ms = msg.timestamp()
        sent = datetime.fromtimestamp(ms / 1000, UTC) if ms and ms > 0 else datetime.now(UTC)
        p, off = msg.partition(), msg.offset()
        by_file.setdefault((_event_day(spec, record, sent), p), []).append(line)
        lo, hi = ranges.get(p, (off, off))
        ranges[p] = (min(lo, off), max(hi, off))
    moves = []
    for (day, p), lines in sorted(by_file.items()):
        final = Path(day) / _file_name(topic, p, *ranges[p])
        hidden = Path(day) / f"_{final.name}"
        (landing / day).mkdir(parents=True, exist_ok=True)
        with open(landing / hidden, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        moves.append({"hidden": hidden.as_posix(), "final": final.as_posix()})
    for day in {day for day, _ in by_file}:
        fsync_path(landing / day)
    pending = landing / PENDING_DIR
    pending.mkdir(parents=True, exist_ok=True)
    manifest = pending / f"batch-{uuid.uuid4().hex}.json"
    tmp = pending / f".{manifest.name}"
    tmp.write_text(json.dumps({"files": moves}))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, manifest)  # the commit point: from here on the batch is landed
    fsync_path(pending)
    recover(landing)
    for day in {day for day, _ in by_file}:
        fsync_path(landing / day)
    return [landing / m["final"] for m in moves]


def drain_topic(
    spec: DatasetSpec,
    config: dict[str, Any],
    landing_dir: str | Path,
    *,
    max_messages: int = 100_000,
    batch_size: int = 10_000,
    join_timeout_s: float = 60.0,
    idle_timeout_s: float = 10.0,
) -> LandingReport:
    """Land every message available now (up to max_messages), batch by batch, and commit after each."""
    if spec.source.kafka is None:
        raise ValueError(f"data set {spec.name} has no kafka source")
    landing = Path(landing_dir)
    (landing / PENDING_DIR).mkdir(parents=True, exist_ok=True)
    with open(landing / PENDING_DIR / ".lock", "w") as lock:
        # One drain at a time per landing folder: recovery deletes files of batches it does not know.
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _drain(spec, config, landing, max_messages, batch_size, join_timeout_s, idle_timeout_s)


def _drain(
    spec: DatasetSpec,
    config: dict[str, Any],
    landing: Path,
    max_messages: int,
    batch_size: int,
    join_timeout_s: float,
    idle_timeout_s: float,
) -> LandingReport:
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    kafka = spec.source.kafka
    assert kafka is not None
    recover(landing)
    report = LandingReport()
    consumer = Consumer(config)
    assigned: set[int] = set()
    at_end: set[int] = set()
    # When messages last arrived, or partitions were last assigned: the idle timer starts at assignment,
    # so a slow group join (a loaded machine) cannot use up the idle time before any message could come.
    last_activity = [time.monotonic()]

    def on_assign(c: Any, partitions: list[Any]) -> None:
        landed = landed_next_offsets(landing, kafka.topic)
        committed = {tp.partition: tp.offset for tp in c.committed(partitions, timeout=30)}
        for tp in partitions:
            start = max(committed.get(tp.partition, -1), landed.get(tp.partition, -1))
            if start >= 0:
                tp.offset = start
        c.assign(partitions)
        assigned.update(tp.partition for tp in partitions)
        last_activity[0] = time.monotonic()

    def on_revoke(c: Any, partitions: list[Any]) -> None:
        assigned.difference_update(tp.partition for tp in partitions)

    consumer.subscribe([kafka.topic], on_assign=on_assign, on_revoke=on_revoke)
    try:
        started = time.monotonic()
        batch: list[Any] = []
        while report.messages + len(batch) < max_messages:
            msg = consumer.poll(0.5)
            now = time.monotonic()
            if msg is None:
                if not assigned and now - started > join_timeout_s:
                    raise TimeoutError(f"no partition of {kafka.topic} was assigned within {join_timeout_s:.0f} s")
                if assigned and now - last_activity[0] > idle_timeout_s:
                    break
                continue
            error, partition = msg.error(), msg.partition()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                    at_end.add(partition)
                    if assigned and assigned <= at_end:
                        break
                    continue
                raise KafkaException(error)
            assert partition is not None  # a message (not an error event) always has its partition
            at_end.discard(partition)
            last_activity[0] = now
            batch.append(msg)
            if len(batch) >= batch_size:
                _land(spec, landing, kafka.topic, batch, consumer, report, TopicPartition)
                batch = []
        if batch:
            _land(spec, landing, kafka.topic, batch, consumer, report, TopicPartition)
    finally:
        consumer.close()
    return report


def _land(
    spec: DatasetSpec,
    landing: Path,
    topic: str,
    batch: list[Any],
    consumer: Any,
    report: LandingReport,
    topic_partition: Any,
) -> None:
    files = _write_batch(spec, landing, topic, batch)
    nxt: dict[int, int] = {}
    for msg in batch:
        nxt[msg.partition()] = max(nxt.get(msg.partition(), 0), msg.offset() + 1)
    consumer.commit(offsets=[topic_partition(topic, p, o) for p, o in sorted(nxt.items())], asynchronous=False)
    report.messages += len(batch)
    report.files.extend(files)
    report.positions.update({str(partition): offset for partition, offset in nxt.items()})
    for f in files:
        day = f.parent.name
        with open(f, "rb") as fh:
            report.per_day[day] = report.per_day.get(day, 0) + sum(1 for _ in fh)
