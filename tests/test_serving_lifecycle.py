"""The `bentoml serve` process tree under signals, as a process manager or a crash delivers them: the
main pid alone gets SIGTERM (systemd KillMode=process, a container runtime) or SIGKILL, or one worker
dies. Nothing of the tree may outlive the main process, no answered prediction may go missing
silently, and a dead worker is replaced and counted (kennel.serving.workers)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from test_serving import BuiltBento, build_test_bento, free_port, start_server, stop_server

from kennel.lake import Lake
from kennel.serving.prediction_log import read_predictions
from kennel.serving.workers import read_heartbeats

pytestmark = pytest.mark.serving

STOP_BOUND_S = 30  # the whole tree gone within this long of the signal
WORKER_SCRIPT = "_bentoml_impl.worker.service"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltBento:
    return build_test_bento(tmp_path_factory)


def _settings(lake: Path, workers: int) -> dict[str, str | None]:
    return {
        "KENNEL_LAKE_ROOT": str(lake),
        "KENNEL_SERVE_WORKERS": str(workers),
        "KENNEL_PREDICTION_LOG_FLUSH_S": "3600",  # nothing is written before the server stops
        "KENNEL_API_KEY": None,
    }


def _wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


def _tree(pid: int) -> list[psutil.Process]:
    """The process and everything below it (psutil.Process remembers each start time, so a reused
    pid does not count as the same process)."""
    main = psutil.Process(pid)
    return [main, *main.children(recursive=True)]


def _workers(pid: int) -> list[psutil.Process]:
    workers = []
    for process in psutil.Process(pid).children():
        with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):  # a dead one, not reaped yet
            if WORKER_SCRIPT in " ".join(process.cmdline()):
                workers.append(process)
    return workers


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def _port_answers(base_url: str) -> bool:
    host, port = base_url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def _kill_all(processes: list[psutil.Process]) -> None:
    for process in _running(processes):
        process.kill()


@dataclass
class Clients:
    """Threads that send /predict until stopped or refused; request ids of the 200s."""

    base_url: str
    records: list[dict[str, Any]]
    answered: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, n: int) -> Clients:
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, index: int) -> None:
        refused = 0
        with requests.Session() as session:
            while not self._stop.is_set() and refused < 3:
                record = self.records[(index * 37 + len(self.answered)) % len(self.records)]
                try:
                    resp = session.post(f"{self.base_url}/predict", json=record, timeout=30)
                except requests.RequestException:
                    refused += 1
                    continue
                if resp.status_code == 200:
                    self.answered.append(resp.json()["request_id"])

    def stop(self) -> list[str]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return list(self.answered)


@pytest.fixture
def server(built: BuiltBento, tmp_path: Path) -> Iterator[Callable[[int], tuple[subprocess.Popen[bytes], str, Path]]]:
    """Starts `bentoml serve` with n workers and a lake of its own; whatever a test leaves running is
    killed afterwards."""
    started: list[tuple[subprocess.Popen[bytes], list[psutil.Process]]] = []

    def start(workers: int) -> tuple[subprocess.Popen[bytes], str, Path]:
        run_dir = tmp_path / f"serve-{len(started)}"
        run_dir.mkdir()
        lake = run_dir / "lake"
        proc, base_url, _, _ = start_server(built.bento_tag, run_dir, _settings(lake, workers))
        started.append((proc, _tree(proc.pid)))
        return proc, base_url, lake

    yield start
    for proc, processes in started:
        stop_server(proc)
        _kill_all(processes)


def _logged_ids(lake: Path) -> set[str]:
    return set(read_predictions(Lake(lake).dataset("credit_demo"), with_feedback=False)["request_id"])


def _stop_and_check(
    proc: subprocess.Popen[bytes], base_url: str, lake: Path, clients: Clients, sig: signal.Signals
) -> float:
    """Sends `sig` to the main pid alone; the whole tree must be gone within STOP_BOUND_S and every
    answered request in the prediction log. Returns the seconds the tree took to go."""
    processes = _tree(proc.pid)
    assert len(processes) >= 3, processes  # the main process and its workers at least
    started = time.monotonic()
    os.kill(proc.pid, sig)
    _wait_for(lambda: not _running(processes), STOP_BOUND_S, f"every process of the tree gone after {sig.name}")
    took = time.monotonic() - started
    proc.wait(timeout=5)
    assert not _port_answers(base_url)
    answered = clients.stop()
    assert len(answered) >= 20
    missing = set(answered) - _logged_ids(lake)
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions are not in the log"
    print(f"{sig.name} to the main pid: {len(processes)} processes gone in {took:.2f} s")
    return took


def test_sigterm_to_the_main_process_alone_stops_the_whole_tree(server: Any, built: BuiltBento) -> None:
    proc, base_url, lake = server(2)
    clients = Clients(base_url, built.records).start(3)
    _wait_for(lambda: len(clients.answered) >= 30, 60, "30 answers")
    _stop_and_check(proc, base_url, lake, clients, signal.SIGTERM)
    assert proc.returncode == 0


def test_sigkill_to_the_main_process_stops_its_workers(server: Any, built: BuiltBento) -> None:
    # The main process cannot stop anything after SIGKILL: the workers notice their parent is gone
    # and stop gracefully, writing their prediction logs.
    proc, base_url, lake = server(2)
    clients = Clients(base_url, built.records).start(3)
    _wait_for(lambda: len(clients.answered) >= 30, 60, "30 answers")
    _stop_and_check(proc, base_url, lake, clients, signal.SIGKILL)


def test_sigterm_during_start_up_is_not_lost(built: BuiltBento, tmp_path: Path) -> None:
    # Circus drops a stop request that arrives while it is spawning the workers; the server must stop anyway.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and "dagster" not in k.lower()}
    env.update({k: v for k, v in _settings(tmp_path / "lake", 3).items() if v is not None})
    env.pop("KENNEL_API_KEY", None)
    bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [bentoml_cli, "serve", built.bento_tag, "--host", "127.0.0.1", "--port", str(free_port())],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    seen: set[psutil.Process] = set()

    def tree_gone() -> bool:
        with contextlib.suppress(psutil.NoSuchProcess):
            seen.update(_tree(proc.pid))  # workers spawned after the signal too
        return proc.poll() is not None and not _running(list(seen))

    try:
        main = psutil.Process(proc.pid)
        deadline = time.monotonic() + 90
        while not main.children() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)  # the first worker: the arbiter is spawning the others now
        assert proc.poll() is None, log_path.read_text()
        seen.update(_tree(proc.pid))
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        _wait_for(tree_gone, STOP_BOUND_S, "every process of the tree gone after SIGTERM at start-up")
        retried = "asking again" in log_path.read_text()  # the race this guards against was hit
        print(f"SIGTERM at start-up: {len(seen)} processes gone in {time.monotonic() - started:.2f} s ({retried=})")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _kill_all(list(seen))


def _metric(base_url: str, name: str) -> float | None:
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match[1]) if match else None


def test_a_dead_worker_is_replaced_and_its_losses_counted(server: Any, built: BuiltBento) -> None:
    proc, base_url, lake = server(2)
    assert _metric(base_url, "kennel_worker_deaths_total") == 0
    assert _metric(base_url, "kennel_prediction_log_rows_lost_total") == 0
    # The server is ready once one worker is; on a busy machine the second may still be starting.
    _wait_for(lambda: len(read_heartbeats(proc.pid)) == 2, 90, "both workers started")
    before = []
    for record in built.records[:40]:  # new connections, so both workers are likely to answer
        resp = requests.post(f"{base_url}/predict", json=record, timeout=30)
        assert resp.status_code == 200
        before.append(resp.json()["request_id"])
    beats = read_heartbeats(proc.pid)
    assert len(beats) == 2 and sum(b.answered for b in beats.values()) == 40, beats
    victim = max(beats.values(), key=lambda b: b.answered)
    assert victim.unwritten == victim.answered > 0  # nothing written yet (the log flushes hourly)
    workers = _workers(proc.pid)
    leftovers = [p for p in _tree(victim.pid) if p.pid != victim.pid]  # e.g. its body-screen process pool

    killed = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    _wait_for(
        lambda: requests.post(f"{base_url}/predict", json=built.records[0], timeout=30).status_code == 200,
        30,
        "an answer after the death",
    )
    answered_after = time.monotonic() - killed
    replacement = _wait_for(
        lambda: [p for p in _workers(proc.pid) if p not in workers], 30, "a replacement worker process"
    )[0]
    spawned_after = time.monotonic() - killed
    _wait_for(lambda: replacement.pid in read_heartbeats(proc.pid), 60, "the replacement worker started")
    ready_after = time.monotonic() - killed
    _wait_for(lambda: _metric(base_url, "kennel_worker_deaths_total") == 1, 30, "the death on /metrics")
    lost = _metric(base_url, "kennel_prediction_log_rows_lost_total")
    assert lost is not None and lost >= victim.unwritten
    _wait_for(lambda: not _running(leftovers), 30, "the dead worker's child processes gone")
    print(
        f"worker SIGKILL: answered again after {answered_after:.2f} s, replacement spawned after "
        f"{spawned_after:.2f} s, started after {ready_after:.2f} s; {lost:.0f} rows counted lost"
    )

    # counted once, however many workers looked since
    for _ in range(3):
        requests.post(f"{base_url}/predict", json=built.records[1], timeout=30)
    assert _metric(base_url, "kennel_worker_deaths_total") == 1
    stop_server(proc)
    log = (lake.parent / "server.log").read_text()
    errors = [line for line in log.splitlines() if "[ERROR]" in line and f"worker {victim.pid} died" in line]
    assert len(errors) == 1, log[-3000:]
    assert f"{victim.unwritten} answered prediction(s)" in errors[0]
    # what the victim answered is lost; everything the others answered is in the log
    assert len(_logged_ids(lake) & set(before)) == 40 - victim.answered


STUCK_WORKER = """
import os, signal, sys, time
from pathlib import Path

from kennel.serving.workers import WorkerLifecycle


class Log:
    rows_written = rows_dropped = pending_rows = 0
    on_append = None

    def append(self, endpoint, request_ids, *args, **kwargs):
        self.on_append(len(request_ids))  # as kennel.serving.prediction_log does

    def flush(self):
        Path(sys.argv[1]).write_text("flushed")
        return 0


signal.signal(signal.SIGTERM, lambda signum, frame: None)  # a server whose graceful stop never ends
lifecycle = WorkerLifecycle(Log(), runtime_root=Path(sys.argv[2]), force_exit_after_s=0.5)
lifecycle.start()
lifecycle.log.append("/predict", ["a", "b", "c"])
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(60)
"""


def test_a_worker_whose_stop_hangs_writes_its_log_and_exits(tmp_path: Path) -> None:
    marker, runtime = tmp_path / "flushed", tmp_path / "runtime"
    runtime.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.run(
        [sys.executable, "-c", STUCK_WORKER, str(marker), str(runtime)], env=env, timeout=30, capture_output=True
    )
    assert child.returncode == 1, child.stderr.decode()
    assert marker.read_text() == "flushed"
    assert "still stopping" in child.stderr.decode()
    # its heartbeat stays for a live sibling to count: 3 answered, none written (the fake log writes nothing)
    (beat,) = read_heartbeats(os.getpid(), runtime).values()  # this process is the child's parent
    assert (beat.answered, beat.settled, beat.unwritten) == (3, 0, 3)


HEAP_AFTER_A_PEAK = """
import os, sys, time
from pathlib import Path

from kennel.serving.workers import WorkerLifecycle


class Log:
    rows_written = rows_dropped = pending_rows = 0
    on_append = None

    def flush(self):
        return 0


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


base = rss()
# A peak of ~100 MB in 2 KiB objects (above Python's small-object allocator: they come from malloc),
# freed but for the last one, which pins the top of the heap: glibc keeps all of it.
blocks = [bytes(2048) + bytes([i % 256]) for i in range(50_000)]
last = blocks[-1]
del blocks
held = rss() - base
lifecycle = WorkerLifecycle(Log(), runtime_root=Path(sys.argv[1]), watch_interval_s=0.05, heap_trim_interval_s=0.1)
lifecycle.start()
deadline = time.monotonic() + 20
while rss() - base > held / 4 and time.monotonic() < deadline:
    time.sleep(0.05)
lifecycle.close()
print(held, rss() - base)
"""


def test_a_worker_returns_the_heap_a_peak_left_to_the_kernel(tmp_path: Path) -> None:
    """The watch thread trims the C heap: RSS follows what the worker holds, not its highest peak."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.run(
        [sys.executable, "-c", HEAP_AFTER_A_PEAK, str(tmp_path)], env=env, timeout=60, capture_output=True
    )
    assert child.returncode == 0, child.stderr.decode()
    held, after = map(int, child.stdout.split())
    assert held > 80_000_000  # glibc kept the freed peak (else this test shows nothing)
    assert after < held / 4
