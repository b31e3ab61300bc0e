"""The prediction log and the feedback it is joined with: what a served model answered, and what
really happened later. Monitoring reads both with `read_predictions` / `read_feedback`.

Layout in the data set's predictions and feedback folders of the lake (kennel.lake), one Parquet
file per flush and writer, each appearing atomically, until compaction merges a past day's files:

    date=<YYYY-MM-DD>/part-<YYYYmmddTHHMMSS>-<writer>-<seq>.parquet
    date=<YYYY-MM-DD>/compacted-<YYYYmmddTHHMMSS>-<token>.parquet   (see `compact_days`)

A prediction row: request_id, predicted_at (UTC), model_tag, endpoint, probability,
predicted_label (at the model's threshold), warnings (the answer's flags as "kind:field" joined by
";", null when none), then the record as it was scored: the spec's id column (as text) and every
spec feature (sensitive ones included; null where the caller left a value out; an unknown category
read as "other" logged as "other"). A
feedback row: request_id, actual_label (1 = the spec's positive label value), feedback_at (UTC).
The day folder is the UTC day of predicted_at / feedback_at.

The service appends to a `PredictionLog` and a `FeedbackLog` on the request path (a list append);
a background thread per log converts the rows to Arrow every 0.2 s and writes them every
`flush_interval_s` seconds, sooner when `max_buffer_rows` are waiting, and once more on close (the
service's shutdown hook). A process killed without shutdown loses at most what one interval
buffered. The feedback log keeps only outcomes for ids the service issued (kennel.serving.request_ids).

No numpy, pandas or pyarrow import at module level: Dagster code can import this module cheaply.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kennel.lake import DatasetLake, day_partition, exclusive, fsync_path, partition_day
from kennel.spec import FEEDBACK_LOG_COLUMNS, PREDICTION_LOG_COLUMNS, DatasetSpec, FeatureType

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from kennel.serving.request_ids import RequestIds

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = PREDICTION_LOG_COLUMNS  # defined with the spec, which keeps columns from taking them
FEEDBACK_COLUMNS = FEEDBACK_LOG_COLUMNS


def logged_fields(spec: DatasetSpec) -> list[tuple[str, FeatureType | None]]:
    """The record columns of a prediction row: the id column (type None: text), then every feature.

    Raises ValueError if a spec column would shadow one of PREDICTION_COLUMNS.
    """
    fields: list[tuple[str, FeatureType | None]] = [(spec.id_column, None)]
    fields += [(f.name, f.type) for f in spec.features]
    clash = sorted({name for name, _ in fields} & set(PREDICTION_COLUMNS))
    if clash:
        raise ValueError(f"spec {spec.name}: column(s) {clash} clash with the prediction log's own columns")
    return fields


def prediction_schema(spec: DatasetSpec) -> pa.Schema:
    import pyarrow as pa

    arrow_type = {
        None: pa.string(),
        FeatureType.categorical: pa.string(),
        FeatureType.boolean: pa.bool_(),
        FeatureType.numeric: pa.float64(),
    }
    return pa.schema(
        [
            ("request_id", pa.string()),
            ("predicted_at", pa.timestamp("us", tz="UTC")),
            ("model_tag", pa.string()),
            ("endpoint", pa.string()),
            ("probability", pa.float64()),
            ("predicted_label", pa.int8()),
            ("warnings", pa.string()),
            *[(name, arrow_type[type_]) for name, type_ in logged_fields(spec)],
        ]
    )


def _feedback_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [("request_id", pa.string()), ("actual_label", pa.int8()), ("feedback_at", pa.timestamp("us", tz="UTC"))]
    )


def _writer_id() -> str:
    """Host, process and a random token: unique per writer even when a pid is reused."""
    host = re.sub(r"[^A-Za-z0-9.-]+", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{os.urandom(3).hex()}"


PART_PREFIX = "part-"  # what a log writer writes: one file per flush
COMPACTED_PREFIX = "compacted-"  # what compaction writes: a past day's files merged (sorts before part-)


class _PartWriter:
    """Writes one Parquet file per call into <root>/date=<day>/, atomically (temp name, then rename)."""

    def __init__(self, root: Path, dictionary_columns: Sequence[str] = ()) -> None:
        self.root = root
        self.dictionary_columns = list(dictionary_columns)
        self.writer = _writer_id()
        self._seq = itertools.count()

    def write(self, day: str, table: pa.Table) -> Path:
        import pyarrow.parquet as pq

        folder = day_partition(self.root, day)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{PART_PREFIX}{stamp}-{self.writer}-{next(self._seq):06d}.parquet"
        tmp = folder / f".{name}.tmp"
        # Dictionary-encode only the low-cardinality text columns (not ids or numbers): faster and
        # smaller; zstd level 1 costs about what snappy does and writes a third less.
        pq.write_table(table, tmp, compression="zstd", compression_level=1, use_dictionary=self.dictionary_columns)
        os.replace(tmp, folder / name)
        return folder / name


class _Chunked(Protocol):
    """What one request appended: rows received at the same instant."""

    at: float  # seconds since the epoch: the row's day folder

    @property
    def rows(self) -> int: ...


class _BufferedLog[C: _Chunked]:
    """The machinery both logs share: chunks appended under a lock, converted to one Arrow table per
    day in the background every `compact_interval_s`, written as one file per day and flush every
    `flush_interval_s` (sooner once `max_buffer_rows` wait), and once more on close. Subclasses say
    how chunks become a table (`_table`).

    Two stages keep the request path cheap and the process's heap small: appended rows are Python
    objects only until the next conversion, which turns them into Arrow tables (memory the garbage
    collector never scans).
    """

    what = "log"  # in log messages and the thread's name

    def __init__(
        self,
        folder: Path,
        dictionary_columns: Sequence[str],
        *,
        flush_interval_s: float,
        max_buffer_rows: int,
        compact_interval_s: float,
    ) -> None:
        self.flush_interval_s = flush_interval_s
        self.compact_interval_s = min(compact_interval_s, flush_interval_s)
        self.max_buffer_rows = max_buffer_rows
        self._parts = _PartWriter(folder, dictionary_columns)
        self._chunks: list[C] = []  # appended, not yet converted
        self._chunk_rows = 0
        self._tables: list[tuple[str, pa.Table]] = []  # (day, rows) converted, not yet written
        self._table_rows = 0
        self._lock = threading.Lock()  # guards the buffers and their counts
        self._flush_lock = threading.Lock()  # one conversion or write at a time
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_write = time.monotonic()
        self.rows_written = 0
        self.rows_dropped = 0
        # Called with the row count of every append, on the appending thread, before the caller
        # answers: a worker's heartbeat counts what it answered (kennel.serving.workers).
        self.on_append: Callable[[int], None] | None = None

    @property
    def folder(self) -> Path:
        return self._parts.root

    @property
    def pending_rows(self) -> int:
        return self._chunk_rows + self._table_rows

    def start(self) -> None:
        """Start the background writer; fails now if the log folder cannot be created."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # pyarrow imports pandas lazily, on its first conversion of Python values: in the writer thread
        # that import raced the serving thread, where BentoML's batching looks pandas classes up in
        # sys.modules and found the module half-initialised (a 500 for the requests of that moment).
        # Import both here, on the thread that starts the log.
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401

        self._last_write = time.monotonic()
        name = f"kennel-{self.what.replace(' ', '-')}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _enqueue(self, chunk: C) -> None:
        with self._lock:
            self._chunks.append(chunk)
            self._chunk_rows += chunk.rows
            full = self.pending_rows >= self.max_buffer_rows
        if self.on_append is not None:
            self.on_append(chunk.rows)
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write everything buffered; returns the rows written. On a write error the rows stay
        buffered for the next attempt (up to 10 x max_buffer_rows; beyond that the oldest are
        dropped and counted in rows_dropped), and the error is logged."""
        with self._flush_lock:
            self._convert()
            return self._write_tables()

    def close(self) -> None:
        """Stop the background writer and write what is left (the service's shutdown hook)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        written = self.flush()
        logger.info(
            "%s closed: %d rows written in all (%d at close), %d dropped, %d unwritten",
            self.what,
            self.rows_written,
            written,
            self.rows_dropped,
            self.pending_rows,
        )

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.compact_interval_s)
            self._wake.clear()
            if self._stopping:
                return  # close() does the last flush
            with self._flush_lock:
                try:
                    self._convert()
                except Exception:  # a bug here must not stop logging for good
                    logger.exception("%s: converting buffered rows failed", self.what)
                due = time.monotonic() - self._last_write >= self.flush_interval_s
                if due or self.pending_rows >= self.max_buffer_rows:
                    self._write_tables()

    def _convert(self) -> None:
        """Buffered chunks → one Arrow table per day."""
        with self._lock:
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return
        by_day: dict[str, list[C]] = {}
        for chunk in chunks:
            by_day.setdefault(datetime.fromtimestamp(chunk.at, UTC).date().isoformat(), []).append(chunk)
        tables = [(day, self._table(day_chunks)) for day, day_chunks in sorted(by_day.items())]
        with self._lock:
            self._chunk_rows -= sum(c.rows for c in chunks)
            self._tables.extend(tables)
            self._table_rows += sum(t.num_rows for _, t in tables)

    def _table(self, chunks: list[C]) -> pa.Table:
        raise NotImplementedError

    def _write_tables(self) -> int:
        import pyarrow as pa

        with self._lock:
            tables, self._tables = self._tables, []
        self._last_write = time.monotonic()
        if not tables:
            return 0
        by_day: dict[str, list[pa.Table]] = {}
        for day, table in tables:
            by_day.setdefault(day, []).append(table)
        written = 0
        unwritten: list[tuple[str, pa.Table]] = []
        for day, day_tables in sorted(by_day.items()):
            table = pa.concat_tables(day_tables)
            try:
                self._parts.write(day, table)
            except Exception:
                logger.exception(
                    "%s: writing %d rows under %s failed; will retry", self.what, table.num_rows, self.folder
                )
                unwritten.extend((day, t) for t in day_tables)  # as they were, so the oldest can be dropped
                continue
            written += table.num_rows
        with self._lock:
            self._table_rows -= sum(t.num_rows for _, t in tables)
            self._tables[:0] = unwritten
            self._table_rows += sum(t.num_rows for _, t in unwritten)
            while self._table_rows > 10 * self.max_buffer_rows and len(self._tables) > 1:
                _, dropped = self._tables.pop(0)
                self._table_rows -= dropped.num_rows
                self.rows_dropped += dropped.num_rows
                logger.error(
                    "%s: buffer over its limit while the lake is unwritable; dropped %d rows (%d in all)",
                    self.what,
                    dropped.num_rows,
                    self.rows_dropped,
                )
        self.rows_written += written
        return written


# --- the prediction log ------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """What one request appended: rows answered at the same instant."""

    at: float  # seconds since the epoch
    endpoint: str
    request_ids: Sequence[str]
    probabilities: np.ndarray
    columns: Mapping[str, Sequence[Any] | None] | pa.Table
    warnings: Sequence[str | None] | None  # per row: "kind:field" flags joined by ";", or None

    @property
    def rows(self) -> int:
        return len(self.request_ids)


class PredictionLog(_BufferedLog[_Chunk]):
    """Buffered, append-only log of served predictions (see the module docstring and `_BufferedLog`):
    appended rows become Arrow tables every `compact_interval_s`, written as one file per day every
    `flush_interval_s`, or sooner once `max_buffer_rows` are waiting.
    """

    what = "prediction log"

    def __init__(
        self,
        lake: DatasetLake,
        spec: DatasetSpec,
        *,
        model_tag: str,
        threshold: float,
        flush_interval_s: float = 60.0,
        max_buffer_rows: int = 100_000,
        compact_interval_s: float = 0.2,
    ) -> None:
        # Converting often keeps each conversion's hold on the interpreter lock short, and lets the
        # appended rows (Python objects) die before the garbage collector promotes them to the old
        # generation, whose full passes were the longest stalls of the request path.
        categorical = [f.name for f in spec.features if f.type is FeatureType.categorical]
        super().__init__(
            lake.predictions_dir(),
            ["model_tag", "endpoint", *categorical],
            flush_interval_s=flush_interval_s,
            max_buffer_rows=max_buffer_rows,
            compact_interval_s=compact_interval_s,
        )
        self.dataset = spec.name
        self.model_tag = model_tag
        self.threshold = threshold
        self.schema = prediction_schema(spec)
        self._fields = [name for name, _ in logged_fields(spec)]
        from kennel.privacy import Redactor

        # Personal columns are hashed or dropped in the background conversion, off the request path.
        self._redactor = Redactor.for_spec(spec, lake)

    def append(
        self,
        endpoint: str,
        request_ids: Sequence[str],
        probabilities: np.ndarray,
        columns: Mapping[str, Sequence[Any] | None] | pa.Table,
        *,
        warnings: Sequence[str | None] | None = None,
        at: float | None = None,
    ) -> None:
        """Queue one request's rows, answered at `at` (seconds since the epoch; default now);
        `columns` maps field names to per-row values, or is an Arrow table of them (a missing or
        None column is logged as nulls); `warnings` holds each row's flags (None: none). Cheap: the
        rows are converted in the background."""
        at = time.time() if at is None else at
        self._enqueue(_Chunk(at, endpoint, request_ids, probabilities, columns, warnings))

    def _table(self, chunks: list[_Chunk]) -> pa.Table:
        import pyarrow as pa

        listed = [c for c in chunks if not isinstance(c.columns, pa.Table)]
        tables = [self._table_from_lists(listed)] if listed else []
        tables += [self._table_from_arrow(c) for c in chunks if isinstance(c.columns, pa.Table)]
        return self._redactor.redact_table(tables[0] if len(tables) == 1 else pa.concat_tables(tables))

    def _meta_arrays(
        self,
        request_ids: list[str],
        stamps_us: list[int],
        endpoints: list[str],
        probabilities: np.ndarray,
        warnings: list[str | None],
    ) -> list[pa.Array]:
        import numpy as np
        import pyarrow as pa

        return [
            pa.array(request_ids, pa.string()),
            pa.array(stamps_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            pa.array([self.model_tag] * len(request_ids), pa.string()),
            pa.array(endpoints, pa.string()),
            pa.array(probabilities, pa.float64()),
            pa.array((probabilities >= self.threshold).astype(np.int8), pa.int8()),
            pa.array(warnings, pa.string()),
        ]

    def _table_from_lists(self, chunks: list[_Chunk]) -> pa.Table:
        import numpy as np
        import pyarrow as pa

        request_ids: list[str] = []
        stamps: list[int] = []
        endpoints: list[str] = []
        values: dict[str, list[Any]] = {name: [] for name in self._fields}
        for chunk in chunks:
            n = chunk.rows
            request_ids.extend(chunk.request_ids)
            stamps.extend([int(chunk.at * 1_000_000)] * n)
            endpoints.extend([chunk.endpoint] * n)
            for name in self._fields:
                column = chunk.columns.get(name)
                values[name].extend([None] * n if column is None else column)
        probabilities = np.concatenate([np.asarray(c.probabilities, dtype=np.float64) for c in chunks])
        warnings = [w for c in chunks for w in (c.warnings if c.warnings is not None else [None] * c.rows)]
        arrays = self._meta_arrays(request_ids, stamps, endpoints, probabilities, warnings)
        arrays += [pa.array(values[f.name], f.type) for f in list(self.schema)[len(PREDICTION_COLUMNS) :]]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _table_from_arrow(self, chunk: _Chunk) -> pa.Table:
        """A request that came as an Arrow table: its columns cast to the log's types, absent ones null."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        table: pa.Table = chunk.columns
        n = chunk.rows
        arrays: list[Any] = self._meta_arrays(
            list(chunk.request_ids),
            [int(chunk.at * 1_000_000)] * n,
            [chunk.endpoint] * n,
            np.asarray(chunk.probabilities, np.float64),
            list(chunk.warnings) if chunk.warnings is not None else [None] * n,
        )
        for field in list(self.schema)[len(PREDICTION_COLUMNS) :]:
            arrays.append(
                pc.cast(table.column(field.name), field.type)
                if field.name in table.column_names
                else pa.nulls(n, field.type)
            )
        return pa.Table.from_arrays(arrays, schema=self.schema)


# --- the shadow log ------------------------------------------------------------------------------

SHADOW_COLUMNS = (
    "request_id",
    "predicted_at",
    "endpoint",
    "model_tag",
    "champion_model_tag",
    "probability",
    "predicted_label",
)
SHADOW_WARNING_INTERVAL_S = 60.0  # at most one "queue full" warning per interval
# The scoring thread hands the interpreter lock back after every this many requests' rows gathered
# (and between gathering, scoring and building the table): a request arriving meanwhile waits at most
# that long (~0.3 ms) instead of the interpreter's 5 ms switch interval.
SHADOW_YIELD_CHUNKS = 64


def shadow_schema() -> pa.Schema:
    import pyarrow as pa

    types = (pa.string(), pa.timestamp("us", tz="UTC"), pa.string(), pa.string(), pa.string(), pa.float64(), pa.int8())
    return pa.schema(list(zip(SHADOW_COLUMNS, types, strict=True)))


@dataclass
class _ShadowChunk:
    """One answered request's inputs, waiting to be scored by the challenger."""

    at: float  # seconds since the epoch: when the champion answered
    endpoint: str
    request_ids: Sequence[str]
    columns: Mapping[str, Sequence[Any] | None] | pa.Table  # the validated inputs, as the champion got them

    @property
    def rows(self) -> int:
        return len(self.request_ids)


class ShadowLog(_BufferedLog[_ShadowChunk]):
    """A challenger served in shadow: the service answers with the champion, then queues the request's
    validated inputs here (a list append); the background thread scores them with `score` (the
    challenger's own encoding and booster) at each conversion and writes request_id, predicted_at,
    endpoint, model_tag (the challenger's), champion_model_tag, probability and predicted_label (at
    the challenger's `threshold`) like the prediction log (see `_BufferedLog`), under the data set's
    shadow_predictions folder. Join them to the prediction log by request_id.

    The queue of unscored rows is bounded by `max_queue_rows`: a request that would overflow it is
    skipped whole, counted in `rows_skipped` (and passed to `on_skip`), with a warning at most every
    SHADOW_WARNING_INTERVAL_S. Rows whose scoring fails are counted in `rows_failed` and not logged.
    Neither log line carries request content.
    """

    what = "shadow log"

    def __init__(
        self,
        lake: DatasetLake,
        *,
        score: Callable[[Mapping[str, Sequence[Any] | None], int], np.ndarray],
        fields: Sequence[str],
        model_tag: str,
        champion_model_tag: str,
        threshold: float,
        max_queue_rows: int = 20_000,
        flush_interval_s: float = 60.0,
        max_buffer_rows: int = 100_000,
        compact_interval_s: float = 0.2,
        on_skip: Callable[[int], None] | None = None,
    ) -> None:
        # Scoring happens at each conversion: a short interval keeps each burst (and its hold on the
        # interpreter lock, which the request path waits for) small.
        super().__init__(
            lake.shadow_predictions_dir(),
            ["endpoint", "model_tag", "champion_model_tag"],
            flush_interval_s=flush_interval_s,
            max_buffer_rows=max_buffer_rows,
            compact_interval_s=compact_interval_s,
        )
        self.score = score
        self.fields = list(fields)
        self.model_tag = model_tag
        self.champion_model_tag = champion_model_tag
        self.threshold = threshold
        self.max_queue_rows = max_queue_rows
        self.on_skip = on_skip
        self.schema = shadow_schema()
        self.rows_skipped = 0
        self.rows_failed = 0
        self._skipped_since_warning = 0
        self._last_warning = -SHADOW_WARNING_INTERVAL_S

    def append(
        self,
        endpoint: str,
        request_ids: Sequence[str],
        columns: Mapping[str, Sequence[Any] | None] | pa.Table,
        *,
        at: float | None = None,
    ) -> bool:
        """Queue one answered request's inputs (column lists by field name, or an Arrow table of
        them) for the challenger; False when the queue is full and the request is skipped."""
        n = len(request_ids)
        if self._chunk_rows + n > self.max_queue_rows:
            self._skip(n)
            return False
        self._enqueue(_ShadowChunk(time.time() if at is None else at, endpoint, request_ids, columns))
        return True

    def _skip(self, n: int) -> None:
        with self._lock:
            self.rows_skipped += n
            self._skipped_since_warning += n
            now = time.monotonic()
            warn = now - self._last_warning >= SHADOW_WARNING_INTERVAL_S
            if warn:
                skipped, self._skipped_since_warning, self._last_warning = self._skipped_since_warning, 0, now
        if self.on_skip is not None:
            self.on_skip(n)
        if warn:
            logger.warning(
                "%s: queue of %d rows full (or one request larger) for challenger %s; skipped %d rows "
                "since the last warning, %d in all",
                self.what,
                self.max_queue_rows,
                self.model_tag,
                skipped,
                self.rows_skipped,
            )

    def _columns(self, chunks: list[_ShadowChunk]) -> dict[str, list[Any]]:
        import pyarrow as pa

        lists: list[tuple[str, list[Any]]] = [(name, []) for name in self.fields]
        for i, chunk in enumerate(chunks):
            columns = chunk.columns
            if isinstance(columns, pa.Table):
                present = set(columns.column_names)
                columns = {name: columns.column(name).to_pylist() for name in self.fields if name in present}
            for name, values in lists:
                column = columns.get(name)
                values.extend([None] * chunk.rows if column is None else column)
            if i % SHADOW_YIELD_CHUNKS == SHADOW_YIELD_CHUNKS - 1:
                time.sleep(0)  # see SHADOW_YIELD_CHUNKS
        return dict(lists)

    def _table(self, chunks: list[_ShadowChunk]) -> pa.Table:
        import numpy as np
        import pyarrow as pa

        n = sum(c.rows for c in chunks)
        try:
            columns = self._columns(chunks)
            time.sleep(0)
            probabilities = np.asarray(self.score(columns, n), dtype=np.float64)
            time.sleep(0)
        except Exception as exc:
            # The exception's message may quote an input value: only its type is logged.
            with self._lock:
                self.rows_failed += n
            logger.error("%s: scoring %d rows with %s failed (%s)", self.what, n, self.model_tag, type(exc).__name__)
            return self.schema.empty_table()
        arrays = [
            pa.array([rid for c in chunks for rid in c.request_ids], pa.string()),
            pa.array([int(c.at * 1_000_000) for c in chunks for _ in range(c.rows)], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            pa.array([c.endpoint for c in chunks for _ in range(c.rows)], pa.string()),
            pa.array([self.model_tag] * n, pa.string()),
            pa.array([self.champion_model_tag] * n, pa.string()),
            pa.array(probabilities, pa.float64()),
            pa.array((probabilities >= self.threshold).astype(np.int8), pa.int8()),
        ]
        return pa.Table.from_arrays(arrays, schema=self.schema)


# --- feedback ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackResult:
    """What one batch of outcomes came to: the service's answer to /feedback."""

    recorded: int  # outcomes kept: in the lake after the log's next flush
    unknown_request_ids: int  # outcomes dropped: their id was never issued by this data set's service


@dataclass
class _FeedbackChunk:
    at: float  # seconds since the epoch: feedback_at
    request_ids: list[str]
    labels: list[int]

    @property
    def rows(self) -> int:
        return len(self.request_ids)


class FeedbackLog(_BufferedLog[_FeedbackChunk]):
    """Buffered log of observed outcomes, written like the prediction log (one file per flush and
    writer, at most `flush_interval_s` after they arrive; see `_BufferedLog`).

    Only outcomes whose request id `verifier` recognises are kept; the others are counted (per call in
    the returned `FeedbackResult`, in all in `unknown_ids_total`) and dropped. `verifier=None` keeps
    every outcome: for tests and imports, never for a served endpoint.
    """

    what = "feedback log"

    def __init__(
        self,
        lake: DatasetLake,
        *,
        verifier: RequestIds | None,
        flush_interval_s: float = 10.0,
        max_buffer_rows: int = 100_000,
        compact_interval_s: float = 1.0,
    ) -> None:
        super().__init__(
            lake.feedback_dir(),
            (),
            flush_interval_s=flush_interval_s,
            max_buffer_rows=max_buffer_rows,
            compact_interval_s=compact_interval_s,
        )
        self.verifier = verifier
        self.unknown_ids_total = 0  # outcomes dropped for an unknown request id since the log was made

    def append(
        self, request_ids: Sequence[str], actual_labels: Sequence[int], *, at: float | None = None
    ) -> FeedbackResult:
        """Queue one batch of outcomes (1 = positive) received at `at` (seconds since the epoch;
        default now). Raises ValueError, keeping none of them, when the lengths differ or a label is
        not 0 or 1. Cost on the caller's thread: about a microsecond per id for the check."""
        if len(request_ids) != len(actual_labels):
            raise ValueError(f"{len(request_ids)} request ids but {len(actual_labels)} labels")
        if any(label not in (0, 1) for label in actual_labels):
            raise ValueError("actual labels must be 0 or 1")
        if self.verifier is None:
            ids, labels = list(request_ids), [int(label) for label in actual_labels]
        else:
            known = self.verifier.was_issued
            kept = [(rid, int(label)) for rid, label in zip(request_ids, actual_labels, strict=True) if known(rid)]
            ids, labels = [rid for rid, _ in kept], [label for _, label in kept]
        unknown = len(request_ids) - len(ids)
        if ids:
            self._enqueue(_FeedbackChunk(time.time() if at is None else at, ids, labels))
        if unknown:
            with self._lock:
                self.unknown_ids_total += unknown
        return FeedbackResult(recorded=len(ids), unknown_request_ids=unknown)

    def _table(self, chunks: list[_FeedbackChunk]) -> pa.Table:
        import pyarrow as pa

        request_ids: list[str] = []
        labels: list[int] = []
        stamps: list[int] = []
        for chunk in chunks:
            request_ids.extend(chunk.request_ids)
            labels.extend(chunk.labels)
            stamps.extend([int(chunk.at * 1_000_000)] * chunk.rows)
        return pa.Table.from_arrays(
            [
                pa.array(request_ids, pa.string()),
                pa.array(labels, pa.int8()),
                pa.array(stamps, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            ],
            schema=_feedback_schema(),
        )


# --- readers -------------------------------------------------------------------------------------

_REPLACES_KEY = b"kennel.compaction.replaces"  # a compacted file's metadata: the files it holds the rows of
_READ_ATTEMPTS = 20


def _as_date(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


def _day_folders(root: Path, start: date | str | None, end: date | str | None) -> Iterator[Path]:
    """The day folders within [start, end] (inclusive; None = open), oldest first."""
    first, last = _as_date(start), _as_date(end)
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        name = partition_day(folder)
        if name is None or not folder.is_dir():
            continue
        day = date.fromisoformat(name)
        if (first and day < first) or (last and day > last):
            continue
        yield folder


def _listing(folder: Path) -> list[str]:
    """The names of a day folder's published files, sorted (a hidden name is a file being written)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(".parquet") and not n.startswith("."))


def _encode_names(names: Sequence[str]) -> bytes:
    return base64.b64encode(zlib.compress(json.dumps(sorted(names)).encode()))  # part names compress ~10x


def _replaced_by(path: Path) -> set[str]:
    """The files whose rows the compacted file `path` holds."""
    import pyarrow.parquet as pq

    value = (pq.read_schema(path).metadata or {}).get(_REPLACES_KEY)
    return set(json.loads(zlib.decompress(base64.b64decode(value)))) if value else set()


def _live(folder: Path, names: list[str]) -> list[str]:
    """`names` less the files whose rows a compacted file among them holds: what a reader reads.
    (Reads the lists of replaced files only while there is something to skip: once a compaction has
    finished, a day folder holds its compacted file alone.)"""
    compacted = [n for n in names if n.startswith(COMPACTED_PREFIX)]
    if not compacted or len(names) == 1:
        return names
    replaced = set().union(*(_replaced_by(folder / n) for n in compacted))
    return [n for n in names if n not in replaced]


def _read_day(folder: Path) -> list[pa.Table]:
    """The rows of one day folder, each once, even while `compact_days` replaces its files.

    A listing may be out of date by the time its files are opened (compaction published a merged file
    and removed the parts: FileNotFoundError), and a listing made while files come and go may miss some
    of them; so the day is read again until a listing taken after the reads shows nothing removed and no
    new compacted file. (New part files are rows appended after the read began: they may be left out.)
    """
    import pyarrow.parquet as pq

    for _ in range(_READ_ATTEMPTS):
        names = _listing(folder)
        try:
            tables = [pq.read_table(folder / name).replace_schema_metadata(None) for name in _live(folder, names)]
        except FileNotFoundError:
            continue
        after = set(_listing(folder))
        if after >= set(names) and not any(n.startswith(COMPACTED_PREFIX) for n in after - set(names)):
            return tables
    raise RuntimeError(f"{folder} kept changing while it was read ({_READ_ATTEMPTS} attempts); read it again")


def _read_parts(root: Path, start: date | str | None, end: date | str | None, empty_schema: pa.Schema) -> pd.DataFrame:
    import pyarrow as pa

    tables = [table for folder in _day_folders(root, start, end) for table in _read_day(folder)]
    if not tables:
        return empty_schema.empty_table().to_pandas()
    # Schemas differ when models for different spec versions logged to one data set: union them.
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def count_warnings(predictions: pd.DataFrame) -> dict[str, int]:
    """How many logged rows carry each warning ("kind:field", as served) in a frame of predictions."""
    if "warnings" not in predictions.columns:  # logged before warnings were
        return {}
    flags = predictions["warnings"].dropna().str.split(";").explode()
    return {str(k): int(v) for k, v in flags.value_counts().sort_index().items()}


def read_feedback(lake: DatasetLake, *, start: date | str | None = None, end: date | str | None = None) -> pd.DataFrame:
    """Outcomes received on days in [start, end]: request_id, actual_label, feedback_at; the latest
    outcome per request id wins."""
    frame = _read_parts(lake.feedback_dir(), start, end, _feedback_schema())
    frame = frame.sort_values("feedback_at", kind="stable").drop_duplicates("request_id", keep="last")
    return frame.reset_index(drop=True)


def read_predictions(
    lake: DatasetLake,
    *,
    start: date | str | None = None,
    end: date | str | None = None,
    with_feedback: bool = True,
    with_batch: bool = True,
) -> pd.DataFrame:
    """Predictions served on days in [start, end] (UTC; inclusive; None = unbounded), oldest first.

    Columns: PREDICTION_COLUMNS, then the record's columns (id column and features, as logged).
    With batch, also the rows batch scoring scored for the data days in [start, end] (endpoint
    "batch", kennel.serving.batch): monitoring sees them as it sees served traffic.
    With feedback, also actual_label (nullable Int8: 1 positive, 0 negative, <NA> not known yet)
    and feedback_at, from outcomes received on or after `start` (the latest per request id).
    """
    import pandas as pd
    import pyarrow as pa

    from kennel.serving.batch import read_batch_scores

    base = pa.schema(
        [
            (name, t)
            for name, t in zip(
                PREDICTION_COLUMNS,
                (
                    pa.string(),
                    pa.timestamp("us", tz="UTC"),
                    pa.string(),
                    pa.string(),
                    pa.float64(),
                    pa.int8(),
                    pa.string(),
                ),
                strict=True,
            )
        ]
    )
    frame = _read_parts(lake.predictions_dir(), start, end, base)
    batch = read_batch_scores(lake, start=start, end=end) if with_batch else None
    if batch is not None and len(batch):
        frame = pd.concat([frame, batch], ignore_index=True) if len(frame) else batch
    frame = frame.sort_values("predicted_at", kind="stable").reset_index(drop=True)
    if with_feedback:
        outcomes = read_feedback(lake, start=start)
        frame = frame.merge(outcomes, on="request_id", how="left")
        frame["actual_label"] = frame["actual_label"].astype("Int8")
    return frame


def read_shadow_predictions(
    lake: DatasetLake, *, start: date | str | None = None, end: date | str | None = None
) -> pd.DataFrame:
    """A shadow challenger's scores of requests served on days in [start, end] (UTC; inclusive; None =
    unbounded), oldest first: SHADOW_COLUMNS (see `ShadowLog`). Join to `read_predictions` by request_id."""
    frame = _read_parts(lake.shadow_predictions_dir(), start, end, shadow_schema())
    return frame.sort_values("predicted_at", kind="stable").reset_index(drop=True)


# --- compaction ----------------------------------------------------------------------------------

_COMPACTION_ROW_GROUP = 256_000  # rows gathered before a row group is written: bounds the memory a merge takes
_STALE_TEMP_S = 3600.0  # a log writer's temp file this old in a past day belongs to a writer that died


@dataclass(frozen=True)
class CompactionReport:
    """What `compact_days` did to one log folder (predictions or feedback)."""

    folder: Path
    before: date
    days_compacted: tuple[str, ...] = ()  # days whose files were merged into one by this run
    files_merged: int = 0  # the files those merged files replaced
    rows_merged: int = 0  # the rows the merged files hold
    days_already_compact: int = 0  # days before `before` that hold one file or none: nothing to do
    leftovers_removed: int = 0  # what an interrupted run or a dead writer left: merged files, temp files

    def __str__(self) -> str:
        return (
            f"{self.folder}: {len(self.days_compacted)} day(s) before {self.before} compacted "
            f"({self.files_merged} files, {self.rows_merged} rows merged), {self.days_already_compact} "
            f"already compact, {self.leftovers_removed} leftover file(s) removed"
        )


def _remove_temp_files(folder: Path, stale_temp_s: float) -> int:
    """A crashed compaction's temp files, and log writers' temp files old enough to be a dead writer's."""
    removed = 0
    now = time.time()
    for entry in os.scandir(folder):
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        ours = name.startswith(f".{COMPACTED_PREFIX}")  # no other compaction runs: we hold the lock
        dead_writer = name.startswith(f".{PART_PREFIX}") and now - entry.stat().st_mtime > stale_temp_s
        if ours or dead_writer:
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    n = table.num_rows
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type) for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _merge(folder: Path, names: list[str]) -> int:
    """Write the rows of `names` (in that order: the order readers read them) into one new compacted
    file that lists them as replaced, and publish it; returns its rows. Nothing is removed here."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [folder / name for name in names]
    schema = pa.unify_schemas([pq.read_schema(p).remove_metadata() for p in paths], promote_options="permissive")
    expected = sum(pq.read_metadata(p).num_rows for p in paths)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    final = folder / f"{COMPACTED_PREFIX}{stamp}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = folder / f".{final.name}.tmp"  # hidden: readers skip it
    try:
        with pq.ParquetWriter(
            tmp, schema.with_metadata({_REPLACES_KEY: _encode_names(names)}), compression="zstd", compression_level=3
        ) as writer:
            batch: list[pa.Table] = []
            for path in paths:
                batch.append(_conform(pq.read_table(path), schema))
                if sum(t.num_rows for t in batch) >= _COMPACTION_ROW_GROUP:
                    writer.write_table(pa.concat_tables(batch))
                    batch = []
            if batch:
                writer.write_table(pa.concat_tables(batch))
        written = pq.read_metadata(tmp).num_rows
        if written != expected:
            raise RuntimeError(f"compacting {folder}: wrote {written} rows, its {len(names)} files hold {expected}")
        fsync_path(tmp)
        os.rename(tmp, final)  # published: readers now skip the files it lists
        fsync_path(folder)  # durable before any of the files it replaces is removed
    finally:
        tmp.unlink(missing_ok=True)
    return written


def _compact_day(folder: Path, stale_temp_s: float) -> tuple[int, int, int]:
    """Merge one day folder's files into one; returns (files merged, rows merged, leftovers removed)."""
    leftovers = _remove_temp_files(folder, stale_temp_s)
    names = _listing(folder)
    live = _live(folder, names)
    # Finish what an interrupted run started: files a published compacted file already holds. Parts go
    # before compacted files, so a compacted file is never gone while parts it lists remain.
    done = sorted(set(names) - set(live), key=lambda n: n.startswith(COMPACTED_PREFIX))
    for name in done:
        (folder / name).unlink(missing_ok=True)
    if done:
        fsync_path(folder)
    leftovers += len(done)
    if len(live) < 2:
        return 0, 0, leftovers
    rows = _merge(folder, live)
    for name in sorted(live, key=lambda n: n.startswith(COMPACTED_PREFIX)):
        (folder / name).unlink()
    fsync_path(folder)
    return len(live), rows, leftovers


def compact_days(folder: Path, before: date | str, *, stale_temp_s: float = _STALE_TEMP_S) -> CompactionReport:
    """Merge the files of every day folder of a log folder (`lake.predictions_dir()` or
    `lake.feedback_dir()`) for days before `before` into one file per day. Pass a day no log still
    writes to: yesterday at the latest (a writer's buffer may hold yesterday's rows for one flush
    interval after midnight). Rows that reach a compacted day later land in a new part file, merged by
    the next run; readers are correct either way.

    Crash-safe and idempotent; readers (`read_predictions`, `read_feedback`) see every row exactly once
    at every instant, with no locking on their side:
    1. the merged file is written under a hidden name (readers skip it), checked to hold as many rows
       as the files it replaces, fsynced, and published by a rename; its Parquet metadata lists the
       files it replaces, and readers skip any file a published compacted file lists;
    2. only then are the listed files removed (parts before compacted files);
    3. a run that finds a compacted file whose listed files remain (a crash during step 2) removes them
       before anything else; temp files of a crash during step 1 are removed; a day already in one file
       is left alone.
    Runs on one log folder exclude each other with a lock file in it (`kennel.lake.exclusive`); writers
    never wait, and a part file written during a run is not touched by it.
    """
    cutoff = before if isinstance(before, date) else date.fromisoformat(before)
    compacted: list[str] = []
    merged = rows = already = leftovers = 0
    if folder.is_dir():
        with exclusive(folder / ".compaction.lock"):
            for day_folder in _day_folders(folder, None, cutoff - timedelta(days=1)):
                files, day_rows, removed = _compact_day(day_folder, stale_temp_s)
                leftovers += removed
                if files:
                    compacted.append(partition_day(day_folder) or day_folder.name)
                    merged += files
                    rows += day_rows
                else:
                    already += 1
    report = CompactionReport(folder, cutoff, tuple(compacted), merged, rows, already, leftovers)
    if compacted or leftovers:
        logger.info("compaction: %s", report)
    return report


def compact_logs(lake: DatasetLake, before: date | str) -> list[CompactionReport]:
    """`compact_days` on the data set's prediction log, feedback and shadow scores: what the housekeeping
    sensor calls."""
    return [
        compact_days(folder, before)
        for folder in (lake.predictions_dir(), lake.feedback_dir(), lake.shadow_predictions_dir())
    ]
