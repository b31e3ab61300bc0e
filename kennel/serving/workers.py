"""Serving processes: a `bentoml serve` tree that stops as a whole, and worker deaths that are counted.

`bentoml serve` is a circus arbiter (the main pid; it binds the listening socket) with one child per
worker; circus starts each worker in a session of its own, and each answers on its own copy of the
socket, so only the arbiter's stop sequence ends the workers. Two hooks close the gaps:

`prepare_serve_process()` (the service's on_deployment hook: once, in the main process, before the
workers start) tells the workers the main pid (KENNEL_SERVE_PID) and adjusts the arbiter:
  - a stop request (SIGTERM, SIGINT) that arrives while the arbiter runs another exclusive command
    (spawning the workers at start-up, a respawn) is asked again until it is taken; circus drops
    it otherwise, and the whole tree keeps serving;
  - the arbiter looks for dead workers every MANAGE_INTERVAL_S (circus as BentoML sets it up: every
    10 s), so a replacement starts within a second of a death (BentoML does not respawn at all when
    BENTOML_CONTAINERIZED is set: there the orchestrator restarts the container);
  - a worker still alive STOP_TIMEOUT_S after it was asked to stop is killed (BentoML: after a day).

`WorkerLifecycle` (started in each worker's service __init__, closed in its shutdown hook):
  - the worker stops when the main process is gone, however it went (SIGKILL, a crash): the kernel
    sends it SIGTERM (Linux PR_SET_PDEATHSIG) and a watch thread compares the parent pid every
    WATCH_INTERVAL_S as well; the graceful stop runs the shutdown hook, which writes the logs. A
    worker still stopping FORCE_EXIT_AFTER_S after its SIGTERM writes its logs itself and exits.
  - a heartbeat file per worker, <tmp>/kennel-serve-<main pid>-<main start>/worker-<pid>.hb: a
    memory-mapped record of the rows the worker answered (counted on every prediction-log append,
    before the answer is sent) and of the rows its log had written (refreshed every
    WATCH_INTERVAL_S). Live workers (and a new worker at start) claim the files of dead pids by
    renaming them, so each death is counted once, by a process that survived it: the Prometheus
    counters kennel_worker_deaths_total and kennel_prediction_log_rows_lost_total (answered rows the
    dead worker had not written: an upper bound, as its written count may be one interval old), one
    ERROR log line naming the pid, and SIGTERM to what is left of its process group (children of
    its own, which would outlive it). A worker that stops gracefully removes its file.
  - every HEAP_TRIM_INTERVAL_S the watch thread hands the C allocator's free pages back to the kernel
    (glibc's malloc_trim). glibc keeps freed memory inside its arenas, so a worker's RSS follows the
    highest memory its requests ever held at once, plus fragmentation: in a ten-minute soak of
    mixed requests it rose 14% while the memory in use did not grow. Trimmed, RSS follows what the
    worker holds, and a leak is told from the allocator's high-water mark.

Standard library only (and prometheus_client, a BentoML dependency, imported in the worker), so the
Bento ships it with the service.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, Protocol

logger = logging.getLogger(__name__)

SERVE_PID_ENV = "KENNEL_SERVE_PID"
MANAGE_INTERVAL_S = 1.0


# A stopping worker first finishes the requests it holds, each answered within the service's
# request timeout (KENNEL_REQUEST_TIMEOUT_S, default 10 s): the limits leave it that and more.
def _request_timeout_s() -> float:
    try:
        return float(os.environ.get("KENNEL_REQUEST_TIMEOUT_S", "").strip() or 10)
    except ValueError:  # the service refuses the setting at start, with its own message
        return 10.0


FORCE_EXIT_AFTER_S = max(20.0, _request_timeout_s() + 10)
STOP_TIMEOUT_S = FORCE_EXIT_AFTER_S + 10
WATCH_INTERVAL_S = 0.5
# Each trim holds an arena's lock while it walks it (measured: ~1 ms per 7 MB returned, 12 ms for
# 40 MB); trimming often keeps each one short.
HEAP_TRIM_INTERVAL_S = 10.0
RUNTIME_PREFIX = "kennel-serve-"

# The heartbeat record: magic, pid, start tick (pid reuse), rows answered, rows written or dropped,
# time of the last refresh. Little-endian, fixed offsets, so a write is one pack_into.
_MAGIC = b"KHB1"
_HEADER = struct.Struct("<4s4xQQ")  # magic, pid, start tick
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_ANSWERED, _SETTLED, _BEAT = 24, 32, 40
_SIZE = 48
_HEARTBEAT = re.compile(r"worker-(\d+)\.hb")
_RUNTIME_DIR = re.compile(re.escape(RUNTIME_PREFIX) + r"(\d+)-(\d+)")


class LogCounts(Protocol):
    """What WorkerLifecycle reads from the worker's prediction log (kennel.serving.prediction_log)."""

    rows_written: int
    rows_dropped: int
    on_append: Callable[[int], None] | None

    @property
    def pending_rows(self) -> int: ...

    def flush(self) -> int: ...


class Flushable(Protocol):
    def flush(self) -> int: ...


# --- the main process --------------------------------------------------------------------------


def prepare_serve_process() -> None:
    """In the `bentoml serve` process, before it starts the workers (see the module docstring)."""
    os.environ[SERVE_PID_ENV] = str(os.getpid())
    try:
        _adjust_circus()
    except Exception:  # another circus than the one this was written for: serve as BentoML does
        logger.warning("could not adjust the circus arbiter; serving with its defaults", exc_info=True)


def _adjust_circus() -> None:
    from circus.client import make_json
    from circus.commands.quit import Quit
    from circus.controller import Controller
    from circus.exc import ConflictError

    if getattr(Controller.start, "_kennel", False):
        return
    quit_execute = Quit.execute
    controller_start = Controller.start

    def execute(self: Any, arbiter: Any, props: Any) -> Any:
        try:
            return quit_execute(self, arbiter, props)
        except ConflictError:
            if arbiter._stopping:  # already stopping
                raise
            logger.warning(
                "stop requested while the arbiter runs %s; asking again in 0.1 s",
                arbiter._exclusive_running_command or "another command",
            )
            arbiter.loop.call_later(0.1, arbiter.ctrl.dispatch, (None, make_json("quit")))
            return None

    def start(self: Any) -> None:
        self.check_delay = min(self.check_delay, MANAGE_INTERVAL_S * 1000)  # milliseconds
        for watcher in self.arbiter.watchers:
            watcher.graceful_timeout = min(watcher.graceful_timeout, STOP_TIMEOUT_S)
        controller_start(self)

    start._kennel = True  # type: ignore[attr-defined]
    Quit.execute = execute
    Controller.start = start


# --- processes -----------------------------------------------------------------------------------


def _start_tick(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux; elsewhere 0: started some time);
    None when the process is gone or a zombie."""
    if os.name != "posix":
        return 0  # (Windows: os.kill(pid, 0) would send CTRL_C_EVENT)
    if not sys.platform.startswith("linux"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (name) ": state is field 3
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])  # field 22, starttime


def _alive(pid: int, start_tick: int = 0) -> bool:
    tick = _start_tick(pid)
    return tick is not None and (not start_tick or not tick or tick == start_tick)


def _serve_pid() -> int:
    """The main process's pid: KENNEL_SERVE_PID if it names a process that is gone (it died before
    this worker looked), else this process's parent."""
    parent = os.getppid()
    named = os.environ.get(SERVE_PID_ENV, "")
    if named.isdigit() and int(named) != parent and not _alive(int(named)):
        return int(named)
    return parent  # (a live process other than the parent: a stale value from elsewhere)


def _end_orphans(pid: int) -> None:
    """SIGTERM to what is left of a dead worker's process group (circus starts each worker as a
    session leader, so its group id is its pid): children it started, e.g. a process pool, which
    outlive it otherwise. Only while no live process has that pid; the kernel does not hand out a
    pid that still names a process group, so the group can only be the dead worker's."""
    if not sys.platform.startswith("linux") or _start_tick(pid) is not None:
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)


def set_parent_death_signal(signum: int) -> bool:
    """Have the kernel send this process `signum` when its parent dies (Linux; False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_pdeathsig = 1
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def heap_trimmer() -> Callable[[], object] | None:
    """glibc's malloc_trim(0): returns the free pages of every arena, inside the heap as well as at
    its top, to the kernel. None where the C library has none (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return lambda: malloc_trim(0)


def runtime_dir(serve_pid: int, root: Path | None = None) -> Path:
    """The folder of the heartbeat files of the workers of the server whose main pid is `serve_pid`."""
    return (root or Path(tempfile.gettempdir())) / f"{RUNTIME_PREFIX}{serve_pid}-{_start_tick(serve_pid) or 0}"


def _remove_stale_runtime_dirs(root: Path) -> None:
    """Folders of servers that are gone (killed before their workers could clean up)."""
    try:
        folders = list(root.iterdir())
    except OSError:
        return
    for folder in folders:
        match = _RUNTIME_DIR.fullmatch(folder.name)
        if match and not _alive(int(match[1]), int(match[2])):
            shutil.rmtree(folder, ignore_errors=True)


class Heartbeat(NamedTuple):
    pid: int
    answered: int  # rows the worker answered (prediction-log appends), up to the moment it read
    settled: int  # rows its prediction log had written or dropped, at its last beat
    beat_at: float  # seconds since the epoch

    @property
    def unwritten(self) -> int:
        """Answered rows not yet written: what the worker's death would lose (at most)."""
        return max(0, self.answered - self.settled)


def _parse_heartbeat(data: bytes) -> Heartbeat | None:
    if len(data) < _SIZE or data[:4] != _MAGIC:
        return None
    return Heartbeat(
        _HEADER.unpack_from(data)[1],
        _U64.unpack_from(data, _ANSWERED)[0],
        _U64.unpack_from(data, _SETTLED)[0],
        _F64.unpack_from(data, _BEAT)[0],
    )


def read_heartbeats(serve_pid: int, root: Path | None = None) -> dict[int, Heartbeat]:
    """The heartbeats of the live workers of the server whose main pid is `serve_pid`, by pid."""
    folder = runtime_dir(serve_pid, root)
    beats = {}
    for path in folder.glob("worker-*.hb") if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            if beat := _parse_heartbeat(path.read_bytes()):
                beats[beat.pid] = beat
    return beats


# --- metrics -------------------------------------------------------------------------------------

_counters: tuple[Any, Any] | None = None


def _death_counters() -> tuple[Any, Any]:
    """(deaths, rows lost): created in the worker, where PROMETHEUS_MULTIPROC_DIR is set, so /metrics
    on any worker sums every worker's counts, dead ones' included."""
    global _counters
    if _counters is None:
        from prometheus_client import Counter

        _counters = (
            Counter("kennel_worker_deaths", "Serving workers that died without stopping gracefully", registry=None),
            Counter(
                "kennel_prediction_log_rows_lost",
                "Answered predictions that dead workers had not written to the prediction log (upper bound)",
                registry=None,
            ),
        )
    return _counters


# --- the worker ----------------------------------------------------------------------------------


class WorkerLifecycle:
    """One serving worker's watch thread and heartbeat (see the module docstring); `start()` in the
    service's __init__ (on the event loop's thread, after the server installed its signal
    handlers), `close()` in its shutdown hook after the prediction log is closed."""

    def __init__(
        self,
        log: LogCounts,
        *,
        also_flush: Sequence[Flushable] = (),
        runtime_root: Path | None = None,
        watch_interval_s: float = WATCH_INTERVAL_S,
        force_exit_after_s: float = FORCE_EXIT_AFTER_S,
        heap_trim_interval_s: float = HEAP_TRIM_INTERVAL_S,
    ) -> None:
        self.log = log
        self.also_flush = list(also_flush)
        self.pid = os.getpid()
        self.serve_pid = _serve_pid()
        self.runtime_root = runtime_root or Path(tempfile.gettempdir())
        self.folder = runtime_dir(self.serve_pid, self.runtime_root)
        self.heartbeat = self.folder / f"worker-{self.pid}.hb"
        self.watch_interval_s = watch_interval_s
        self.force_exit_after_s = force_exit_after_s
        self.heap_trim_interval_s = heap_trim_interval_s
        self._trim_heap = heap_trimmer()
        self._heap_trimmed_at = time.monotonic()
        self._lock = threading.Lock()
        self._answered = 0
        self._record: mmap.mmap | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_requested_at: float | None = None
        self._parent_gone = False

    # start and stop

    def start(self) -> None:
        set_parent_death_signal(signal.SIGTERM)
        self._note_stop_requests()
        _remove_stale_runtime_dirs(self.runtime_root)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._record = self._create_heartbeat()
        self._count_appends()
        _death_counters()  # the counters show 0 until a death
        self.claim_dead_workers()
        self._thread = threading.Thread(target=self._watch, name="kennel-worker-watch", daemon=True)
        self._thread.start()
        self._check_parent()  # gone before the thread's first look: stop now

    def close(self) -> None:
        """The worker stops gracefully: its log is written, so its death is not one to count."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self.heartbeat.unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # the last worker out removes the folder

    # heartbeat

    def _create_heartbeat(self) -> mmap.mmap:
        tmp = self.folder / f".worker-{self.pid}.hb.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _SIZE)
            record = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)
        _HEADER.pack_into(record, 0, _MAGIC, self.pid, _start_tick(self.pid) or 0)
        self._beat(record)
        os.replace(tmp, self.heartbeat)
        return record

    def _beat(self, record: mmap.mmap) -> None:
        _U64.pack_into(record, _SETTLED, self.log.rows_written + self.log.rows_dropped)
        _F64.pack_into(record, _BEAT, time.time())

    def _count_appends(self) -> None:
        """Counts the rows of every prediction-log append in the heartbeat record, before the answer
        is sent."""
        record = self._record
        assert record is not None

        def count(rows: int) -> None:
            with self._lock:
                self._answered += rows
                _U64.pack_into(record, _ANSWERED, self._answered)

        self.log.on_append = count

    # the watch thread

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_interval_s):
            try:
                self._check_parent()
                self._check_stop_deadline()
                if self._record is not None:
                    self._beat(self._record)
                self.claim_dead_workers()
                self._release_free_heap()
            except Exception:  # keep watching whatever one round hit
                logger.exception("worker watch: a check failed")

    def _release_free_heap(self) -> None:
        if self._trim_heap is None or time.monotonic() - self._heap_trimmed_at < self.heap_trim_interval_s:
            return
        self._trim_heap()
        self._heap_trimmed_at = time.monotonic()

    def _check_parent(self) -> None:
        if self._parent_gone or os.getppid() == self.serve_pid:
            return
        self._parent_gone = True
        logger.error(
            "the server's main process %d is gone; worker %d writes its prediction log and stops",
            self.serve_pid,
            self.pid,
        )
        self._stop_requested_at = self._stop_requested_at or time.monotonic()
        self._flush()
        os.kill(self.pid, signal.SIGTERM)  # the server's graceful stop, which runs the shutdown hook

    def _check_stop_deadline(self) -> None:
        started = self._stop_requested_at
        if started is None or time.monotonic() - started < self.force_exit_after_s:
            return
        logger.error(
            "worker %d still stopping %.0f s after it was asked to; writing its prediction log and exiting",
            self.pid,
            time.monotonic() - started,
        )
        self._flush()
        self._stop.set()
        if self._record is not None:  # the file stays: a live sibling counts what was answered since
            self._beat(self._record)
        os._exit(1)

    def _flush(self) -> None:
        for log in [self.log, *self.also_flush]:
            try:
                log.flush()
            except Exception:
                logger.exception("worker %d: writing %s failed", self.pid, getattr(log, "what", "a log"))

    def _note_stop_requests(self) -> None:
        """Wraps the server's SIGTERM handler to note when the worker was asked to stop."""
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            self._stop_requested_at = self._stop_requested_at or time.monotonic()
            previous(signum, frame)

        try:
            signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:  # not the main thread: no deadline, the arbiter's kill remains
            pass

    # deaths

    def claim_dead_workers(self) -> int:
        """Counts every worker of this server that died since the last look; returns how many."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return 0
        found = 0
        for name in names:
            match = _HEARTBEAT.fullmatch(name)
            if not match or int(match[1]) == self.pid:
                continue
            pid = int(match[1])
            path = self.folder / name
            try:
                data = path.read_bytes()
            except OSError:
                continue
            start_tick = _HEADER.unpack_from(data)[2] if len(data) >= _SIZE and data[:4] == _MAGIC else 0
            if _alive(pid, start_tick):
                continue
            claimed = self.folder / f"dead-{pid}.{self.pid}.hb"
            try:
                os.rename(path, claimed)  # one claimant wins; the others see the file gone
            except OSError:
                continue
            try:
                self._count_death(pid, claimed.read_bytes())
            finally:
                with contextlib.suppress(OSError):
                    claimed.unlink()
            _end_orphans(pid)
            found += 1
        return found

    def _count_death(self, pid: int, data: bytes) -> None:
        deaths, rows_lost = _death_counters()
        deaths.inc()
        beat = _parse_heartbeat(data)
        if beat is None:
            logger.error("serving worker %d died; its heartbeat file is unreadable, so its losses are unknown", pid)
            return
        rows_lost.inc(beat.unwritten)
        logger.error(
            "serving worker %d died (noticed by worker %d): %d answered prediction(s) it had not written "
            "to the prediction log are lost (%d answered in all; written count from its heartbeat %.1f s earlier)",
            pid,
            self.pid,
            beat.unwritten,
            beat.answered,
            time.time() - beat.beat_at,
        )
