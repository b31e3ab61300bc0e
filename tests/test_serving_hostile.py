"""A real `bentoml serve` against hostile clients: a seeded structure-aware fuzz of Arrow streams and
JSON bodies for every endpoint (no 5xx, no dropped connection, worker memory bounded), logs that hold
nothing a client sent, and a soak at c=16 (0 errors, memory flat).

`make test` runs 1,000 fuzz cases and a 20 s soak; `make test-full` 10,000 cases and 10 minutes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from arrow_mutations import mutated_streams
from json_mutations import PLANTED, mutated_bodies
from test_serving import BuiltBento, build_test_bento, start_server, stop_server

pytestmark = pytest.mark.serving

ARROW = "application/vnd.apache.arrow.stream"
MAX_REQUEST_BYTES = 4_000_000  # above the guard's inline limit: large bodies take the screening path
WORKER_RSS_LIMIT = 1024**3
# Arrow refusals decided before the columns are looked at (framing, buffers, size): the rest of the
# answers (200, or 400 naming a column) reached the schema's validation.
STREAM_LEVEL = {"arrow_invalid", "arrow_corrupt", "arrow_compressed_too_large", "arrow_too_large", "row_count"}


@dataclass(frozen=True)
class Hostile:
    built: BuiltBento
    base_url: str
    log_path: Path
    server_pid: int

    def workers(self) -> list[psutil.Process]:
        return [
            p
            for p in psutil.Process(self.server_pid).children(recursive=True)
            if "_bentoml_impl.worker.service" in " ".join(p.cmdline())
        ]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    built = build_test_bento(tmp_path_factory)
    run_dir = tmp_path_factory.mktemp("serve-hostile")
    proc, base_url, _, _ = start_server(
        built.bento_tag,
        run_dir,
        {
            "KENNEL_LAKE_ROOT": str(run_dir / "lake"),
            "KENNEL_PREDICTION_LOG_FLUSH_S": "1",
            "KENNEL_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        },
    )
    try:
        yield Hostile(built, base_url, run_dir / "server.log", proc.pid)
    finally:
        stop_server(proc)


def _arrow(records: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa

    table = pa.Table.from_pylist(records)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    return sink.getvalue().to_pybytes()


def _arrow_dictionary(records: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa

    table = pa.Table.from_pylist(records)
    for name in ("region", "home_ownership"):
        index = table.column_names.index(name)
        table = table.set_column(index, name, table.column(name).dictionary_encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _valid_json_bodies(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "/predict": records[0],
        "/explain": records[1],
        "/predict_batch": {"records": records[:5]},
        "/predict_columns": {name: [r[name] for r in records[:5]] for name in records[0]},
        "/feedback": {"labels": [{"request_id": "0" * 32, "label": 1}, {"request_id": "f" * 32, "label": 0}]},
    }


class _MemoryWatch:
    """Samples the workers' resident memory every 0.2 s while a block runs; keeps the peak."""

    def __init__(self, server: Hostile) -> None:
        self.server = server
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for worker in self.server.workers():
                try:
                    memory = sum(p.memory_info().rss for p in [worker, *worker.children(recursive=True)])
                except psutil.NoSuchProcess:
                    continue
                self.peak = max(self.peak, memory)
            self._stop.wait(0.2)

    def __enter__(self) -> _MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


def _post(session: requests.Session, url: str, body: bytes, media_type: str) -> tuple[int, Any]:
    """(status, parsed answer); status 0 for a dropped connection or a timeout."""
    try:
        resp = session.post(url, data=body, headers={"Content-Type": media_type}, timeout=60)
    except requests.RequestException as exc:
        return 0, repr(exc)
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, resp.text[:200]


def run_fuzz(server: Hostile, cases: int, seed: int) -> None:
    records = server.built.records[:20]
    arrow_cases = cases // 2
    streams = [_arrow(records[:5]), _arrow(records[5:6]), _arrow_dictionary(records[6:12])]
    statuses: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    reached_validation = 0
    with _MemoryWatch(server) as memory, requests.Session() as session:
        for i, (kind, body) in enumerate(mutated_streams(streams, arrow_cases, seed)):
            status, answer = _post(session, f"{server.base_url}/predict_arrow", body, ARROW)
            statuses["/predict_arrow", status] += 1
            if status == 0 or status >= 500:
                failures.append(f"arrow case {i} ({kind}): {status} {answer}")
            elif status == 200 or (status == 400 and not {e["type"] for e in answer["detail"]} <= STREAM_LEVEL):
                reached_validation += 1
        for i, (route, kind, body) in enumerate(mutated_bodies(_valid_json_bodies(records), cases - arrow_cases, seed)):
            status, answer = _post(session, f"{server.base_url}{route}", body, "application/json")
            statuses[route, status] += 1
            if status == 0 or status >= 500:
                failures.append(f"json case {i} {route} ({kind}): {status} {str(answer)[:300]}")
            elif status == 400:
                assert len(answer["detail"]) <= 20 and answer["error_count"] >= len(answer["detail"]), answer
    share = reached_validation / arrow_cases
    print(f"fuzz: {cases} cases, statuses {dict(statuses)}; Arrow cases reaching validation: {share:.0%}")
    print(f"fuzz: worker peak RSS {memory.peak / 1e6:.0f} MB")
    assert not failures, "\n".join(failures[:20])
    assert memory.peak < WORKER_RSS_LIMIT
    assert share >= 0.3, f"only {share:.0%} of the mutated Arrow streams got past framing"
    assert requests.get(f"{server.base_url}/readyz", timeout=10).status_code == 200


def test_fuzz_finds_no_server_errors(hostile: Hostile) -> None:
    run_fuzz(hostile, cases=1_000, seed=1)


@pytest.mark.full
def test_fuzz_long(hostile: Hostile) -> None:
    run_fuzz(hostile, cases=10_000, seed=2)


def test_logs_hold_nothing_a_client_sent(hostile: Hostile) -> None:
    """Bad requests carrying a planted value in every place a client controls: values, field names,
    ids, Arrow column names and strings. The server's log (every worker's) never holds it."""
    import pyarrow as pa

    record = hostile.built.records[0]
    url = hostile.base_url
    planted_bodies: list[tuple[str, bytes, str]] = [
        ("/predict", json.dumps({**record, "age": PLANTED}).encode(), "application/json"),
        ("/predict", json.dumps({**record, PLANTED: 1}).encode(), "application/json"),
        ("/predict", json.dumps({**record, "region": PLANTED}).encode(), "application/json"),
        ("/predict", json.dumps({**record, "application_id": PLANTED * 30}).encode(), "application/json"),
        ("/predict", (json.dumps(record)[:-1] + f', "{PLANTED}').encode(), "application/json"),
        ("/predict", PLANTED.encode(), "text/plain"),
        ("/predict_batch", json.dumps({"records": [{**record, "age": PLANTED}] * 3}).encode(), "application/json"),
        ("/predict_columns", json.dumps({"age": [PLANTED] * 50_000}).encode(), "application/json"),
        ("/feedback", json.dumps({"labels": [{"request_id": PLANTED, "label": PLANTED}]}).encode(), "application/json"),
        ("/predict_arrow", PLANTED.encode() * 10, ARROW),
    ]
    for name_or_value in ("name", "value"):
        table = pa.table({PLANTED if name_or_value == "name" else "region": [PLANTED]})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        planted_bodies.append(("/predict_arrow", sink.getvalue().to_pybytes(), ARROW))
    with requests.Session() as session:
        for route, body, media_type in planted_bodies:
            resp = session.post(f"{url}{route}", data=body, headers={"Content-Type": media_type}, timeout=60)
            assert 400 <= resp.status_code < 500, (route, resp.status_code)
        # Headers are client input too.
        resp = session.get(f"{url}/readyz", headers={"X-Planted": PLANTED, "User-Agent": PLANTED}, timeout=10)
        assert resp.status_code == 200
    # Each refusal is one INFO line; the log is written by other processes: wait for the last one.
    deadline = time.monotonic() + 30
    while hostile.log_path.read_text(errors="replace").count("refused /predict_arrow: 400") < 3:
        assert time.monotonic() < deadline, hostile.log_path.read_text()[-3000:]
        time.sleep(0.2)
    text = hostile.log_path.read_text(errors="replace")
    assert PLANTED not in text
    assert "Traceback" not in text and "input_value" not in text


@dataclass(frozen=True)
class Window:
    """Worker RSS through a stretch of the soak, in bytes."""

    floor: int
    peak: int

    def __str__(self) -> str:
        return f"{self.floor / 1e6:.0f} ({self.peak / 1e6:.0f})"


def run_soak(server: Hostile, seconds: float) -> None:
    """c=16 clients, a mix of valid requests on every endpoint, for `seconds`: every answer a 200,
    the workers' memory settles during a warm-up, the lowest floor of the last 30 s is within 10% of
    the warm-up's highest, and the peak stays under WORKER_RSS_LIMIT throughout."""
    records = server.built.records
    bodies = [
        ("/predict", json.dumps(records[1]).encode(), "application/json"),
        ("/predict_batch", json.dumps({"records": records[:20]}).encode(), "application/json"),
        (
            "/predict_columns",
            json.dumps({k: [r[k] for r in records[:50]] for k in records[0]}).encode(),
            "application/json",
        ),
        ("/predict_arrow", _arrow(records[:50]), ARROW),
    ]
    errors: Counter[str] = Counter()
    answered = Counter[str]()

    def client(index: int, until: float) -> None:
        with requests.Session() as session:
            i = index
            while time.monotonic() < until:
                route, body, media_type = bodies[i % len(bodies)]
                i += 1
                status, _ = _post(session, f"{server.base_url}{route}", body, media_type)
                if status == 200:
                    answered[route] += 1
                else:
                    errors[f"{route} {status}"] += 1

    def rss() -> int:
        return sum(w.memory_info().rss for w in server.workers())

    def run(duration: float) -> Window:
        """The workers' RSS through `duration` seconds of load, sampled every 0.5 s."""
        until = time.monotonic() + duration
        samples = [rss()]
        with ThreadPoolExecutor(16) as pool:
            clients = [pool.submit(client, i, until) for i in range(16)]
            while not all(c.done() for c in clients):
                time.sleep(0.5)
                samples.append(rss())
            for c in clients:
                c.result()
        return Window(min(samples), max(samples))

    # What a single RSS sample shows swings with the memory the requests of that moment hold (glibc's
    # heap in use went from 50 to 107 MB and back within a minute): a window's floor is what the
    # worker keeps between them, where a leak shows. Floors still vary with where the worker's heap
    # trim (every 10 s) falls in a window (296-350 MB in a ten-minute soak with no trend), so the end
    # is judged by the lowest of its last three; a leak lifts them all. Peaks stay bounded too.
    # Warm-up: buffers, caches, Arrow's pool and the allocator's arenas grow to their working set.
    # A fixed time was not enough on a busy CI machine (fewer requests answered in it, memory still
    # rising afterwards), so it runs until a 5 s window's floor is no more than 3% above the highest
    # before it. A leak never settles: 12 windows (≥ 38% growth in a row) fail here, slower ones in the soak.
    warm_up = [run(10.0)]
    while len(warm_up) < 13 and (len(warm_up) == 1 or warm_up[-1].floor >= max(w.floor for w in warm_up[:-1]) * 1.03):
        warm_up.append(run(5.0))
    steps = max(1, round(seconds / 10))
    series = [run(seconds / steps) for _ in range(steps)]
    print(
        f"soak: {dict(answered)} answered, errors {dict(errors)}; worker RSS floor (peak) in the warm-up: "
        + " → ".join(str(w) for w in warm_up)
        + f" MB; then every {seconds / steps:.0f} s: "
        + " → ".join(str(w) for w in series)
        + " MB"
    )
    assert len(warm_up) < 13 or warm_up[-1].floor < max(w.floor for w in warm_up[:-1]) * 1.03, (
        "worker memory never settled"
    )
    assert not errors
    assert all(answered[route] > 0 for route, _, _ in bodies)
    assert max(w.peak for w in warm_up + series) < WORKER_RSS_LIMIT
    assert min(w.floor for w in series[-3:]) < max(w.floor for w in warm_up) * 1.10


def test_soak_short(hostile: Hostile) -> None:
    run_soak(hostile, float(os.environ.get("KENNEL_SOAK_S", "20")))


@pytest.mark.full
def test_soak_ten_minutes(hostile: Hostile) -> None:
    run_soak(hostile, 600.0)
