"""The prediction log and the feedback it is joined with: what a served model answered, and what
really happened later. Monitoring reads both with `read_predictions` / `read_feedback`.

Layout in the data set's predictions and feedback folders of the lake (kennel.lake), one Parquet
file per flush and writer, each appearing atomically:

    date=<YYYY-MM-DD>/part-<YYYYmmddTHHMMSS>-<writer>-<seq>.parquet

A prediction row: request_id, predicted_at (UTC), model_tag, endpoint, probability,
predicted_label (at the model's threshold), then the record as it was sent: the spec's id column
and every spec feature (sensitive ones included; null where the caller left a value out). A
feedback row: request_id, actual_label (1 = the spec's positive label value), feedback_at (UTC).
The day folder is the UTC day of predicted_at / feedback_at.

The service appends to a `PredictionLog` on the request path (a list append); a background thread
converts the rows to Arrow every second and writes them every `flush_interval_s` seconds, sooner
when `max_buffer_rows` are waiting, and once more on close (the service's shutdown hook). A process
killed without shutdown loses at most what one interval buffered. Feedback is written before the
request is answered (`write_feedback`).

No numpy, pandas or pyarrow import at module level: Dagster code can import this module cheaply.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.lake import DatasetLake, day_partition, partition_day
from kennel.spec import DatasetSpec, FeatureType

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("request_id", "predicted_at", "model_tag", "endpoint", "probability", "predicted_label")
FEEDBACK_COLUMNS = ("request_id", "actual_label", "feedback_at")


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
        name = f"part-{stamp}-{self.writer}-{next(self._seq):06d}.parquet"
        tmp = folder / f".{name}.tmp"
        # Dictionary-encode only the low-cardinality text columns (not ids or numbers): faster and
        # smaller; zstd level 1 costs about what snappy does and writes a third less.
        pq.write_table(table, tmp, compression="zstd", compression_level=1, use_dictionary=self.dictionary_columns)
        os.replace(tmp, folder / name)
        return folder / name


@dataclass
class _Chunk:
    """What one request appended: rows answered at the same instant."""

    at: float  # seconds since the epoch
    endpoint: str
    request_ids: Sequence[str]
    probabilities: np.ndarray
    columns: Mapping[str, Sequence[Any] | None] | pa.Table

    @property
    def rows(self) -> int:
        return len(self.request_ids)


class PredictionLog:
    """Buffered, append-only log of served predictions (see the module docstring).

    Two stages keep the request path cheap and the process's heap small: appended rows are Python
    objects only until the next compaction (every `compact_interval_s`), which turns them into
    Arrow tables (memory the garbage collector never scans); the tables are written as one file
    per day every `flush_interval_s`, or sooner once `max_buffer_rows` are waiting.
    """

    def __init__(
        self,
        lake: DatasetLake,
        spec: DatasetSpec,
        *,
        model_tag: str,
        threshold: float,
        flush_interval_s: float = 60.0,
        max_buffer_rows: int = 100_000,
        compact_interval_s: float = 1.0,
    ) -> None:
        self.dataset = spec.name
        self.model_tag = model_tag
        self.threshold = threshold
        self.flush_interval_s = flush_interval_s
        self.compact_interval_s = min(compact_interval_s, flush_interval_s)
        self.max_buffer_rows = max_buffer_rows
        self.schema = prediction_schema(spec)
        self._fields = [name for name, _ in logged_fields(spec)]
        categorical = [f.name for f in spec.features if f.type is FeatureType.categorical]
        self._parts = _PartWriter(lake.predictions_dir(), ["model_tag", "endpoint", *categorical])
        self._chunks: list[_Chunk] = []  # appended, not yet compacted
        self._chunk_rows = 0
        self._tables: list[tuple[str, pa.Table]] = []  # (day, rows) compacted, not yet written
        self._table_rows = 0
        self._lock = threading.Lock()  # guards the buffers and their counts
        self._flush_lock = threading.Lock()  # one compaction or write at a time
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_write = time.monotonic()
        self.rows_written = 0
        self.rows_dropped = 0

    @property
    def folder(self) -> Path:
        return self._parts.root

    @property
    def pending_rows(self) -> int:
        return self._chunk_rows + self._table_rows

    def start(self) -> None:
        """Start the background writer; fails now if the log folder cannot be created."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._last_write = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="kennel-prediction-log", daemon=True)
        self._thread.start()

    def append(
        self,
        endpoint: str,
        request_ids: Sequence[str],
        probabilities: np.ndarray,
        columns: Mapping[str, Sequence[Any] | None] | pa.Table,
        *,
        at: float | None = None,
    ) -> None:
        """Queue one request's rows, answered at `at` (seconds since the epoch; default now);
        `columns` maps field names to per-row values, or is an Arrow table of them (a missing or
        None column is logged as nulls). Cheap: the rows are converted in the background."""
        chunk = _Chunk(time.time() if at is None else at, endpoint, request_ids, probabilities, columns)
        with self._lock:
            self._chunks.append(chunk)
            self._chunk_rows += chunk.rows
            full = self.pending_rows >= self.max_buffer_rows
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write everything buffered; returns the rows written. On a write error the rows stay
        buffered for the next attempt (up to 10 x max_buffer_rows; beyond that the oldest are
        dropped and counted in rows_dropped), and the error is logged."""
        with self._flush_lock:
            self._compact()
            return self._write_tables()

    def close(self) -> None:
        """Stop the background writer and write what is left (the service's shutdown hook)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        written = self.flush()
        logger.info(
            "prediction log closed: %d rows written in all (%d at close), %d dropped, %d unwritten",
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
                    self._compact()
                except Exception:  # a bug here must not stop logging for good
                    logger.exception("prediction log: converting buffered rows failed")
                due = time.monotonic() - self._last_write >= self.flush_interval_s
                if due or self.pending_rows >= self.max_buffer_rows:
                    self._write_tables()

    def _compact(self) -> None:
        """Buffered chunks → one Arrow table per day."""
        with self._lock:
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return
        by_day: dict[str, list[_Chunk]] = {}
        for chunk in chunks:
            by_day.setdefault(datetime.fromtimestamp(chunk.at, UTC).date().isoformat(), []).append(chunk)
        tables = [(day, self._table(day_chunks)) for day, day_chunks in sorted(by_day.items())]
        with self._lock:
            self._chunk_rows -= sum(c.rows for c in chunks)
            self._tables.extend(tables)
            self._table_rows += sum(t.num_rows for _, t in tables)

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
                    "prediction log: writing %d rows under %s failed; will retry", table.num_rows, self.folder
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
                    "prediction log: buffer over its limit while the lake is unwritable; dropped %d rows (%d in all)",
                    dropped.num_rows,
                    self.rows_dropped,
                )
        self.rows_written += written
        return written

    def _table(self, chunks: list[_Chunk]) -> pa.Table:
        import pyarrow as pa

        listed = [c for c in chunks if not isinstance(c.columns, pa.Table)]
        tables = [self._table_from_lists(listed)] if listed else []
        tables += [self._table_from_arrow(c) for c in chunks if isinstance(c.columns, pa.Table)]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _meta_arrays(
        self, request_ids: list[str], stamps_us: list[int], endpoints: list[str], probabilities: np.ndarray
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
        arrays = self._meta_arrays(request_ids, stamps, endpoints, probabilities)
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
        )
        for field in list(self.schema)[len(PREDICTION_COLUMNS) :]:
            arrays.append(
                pc.cast(table.column(field.name), field.type)
                if field.name in table.column_names
                else pa.nulls(n, field.type)
            )
        return pa.Table.from_arrays(arrays, schema=self.schema)


def write_feedback(
    lake: DatasetLake, request_ids: Sequence[str], actual_labels: Sequence[int], *, received_at: datetime | None = None
) -> Path:
    """Write one batch of outcomes (1 = positive) as a Parquet file; returns its path."""
    import pyarrow as pa

    if len(request_ids) != len(actual_labels):
        raise ValueError(f"{len(request_ids)} request ids but {len(actual_labels)} labels")
    if any(label not in (0, 1) for label in actual_labels):
        raise ValueError("actual labels must be 0 or 1")
    at = received_at or datetime.now(UTC)
    table = pa.Table.from_arrays(
        [
            pa.array(list(request_ids), pa.string()),
            pa.array(list(actual_labels), pa.int8()),
            pa.array([at] * len(request_ids), pa.timestamp("us", tz="UTC")),
        ],
        schema=_feedback_schema(),
    )
    return _PartWriter(lake.feedback_dir()).write(at.astimezone(UTC).date().isoformat(), table)


# --- readers -------------------------------------------------------------------------------------


def _as_date(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


def _part_files(root: Path, start: date | str | None, end: date | str | None) -> Iterator[Path]:
    """Parquet files of the day folders within [start, end] (inclusive; None = open), oldest first."""
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
        yield from sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def _read_parts(files: Sequence[Path], empty_schema: pa.Schema) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not files:
        return empty_schema.empty_table().to_pandas()
    # Schemas differ when models for different spec versions logged to one data set: union them.
    table = pa.concat_tables([pq.read_table(p) for p in files], promote_options="permissive")
    return table.to_pandas()


def read_feedback(lake: DatasetLake, *, start: date | str | None = None, end: date | str | None = None) -> pd.DataFrame:
    """Outcomes received on days in [start, end]: request_id, actual_label, feedback_at; the latest
    outcome per request id wins."""
    frame = _read_parts(list(_part_files(lake.feedback_dir(), start, end)), _feedback_schema())
    frame = frame.sort_values("feedback_at", kind="stable").drop_duplicates("request_id", keep="last")
    return frame.reset_index(drop=True)


def read_predictions(
    lake: DatasetLake, *, start: date | str | None = None, end: date | str | None = None, with_feedback: bool = True
) -> pd.DataFrame:
    """Predictions served on days in [start, end] (UTC; inclusive; None = unbounded), oldest first.

    Columns: PREDICTION_COLUMNS, then the record's columns (id column and features, as logged).
    With feedback, also actual_label (nullable Int8: 1 positive, 0 negative, <NA> not known yet)
    and feedback_at, from outcomes received on or after `start` (the latest per request id).
    """
    import pyarrow as pa

    base = pa.schema(
        [
            (name, t)
            for name, t in zip(
                PREDICTION_COLUMNS,
                (pa.string(), pa.timestamp("us", tz="UTC"), pa.string(), pa.string(), pa.float64(), pa.int8()),
                strict=True,
            )
        ]
    )
    frame = _read_parts(list(_part_files(lake.predictions_dir(), start, end)), base)
    frame = frame.sort_values("predicted_at", kind="stable").reset_index(drop=True)
    if with_feedback:
        outcomes = read_feedback(lake, start=start)
        frame = frame.merge(outcomes, on="request_id", how="left")
        frame["actual_label"] = frame["actual_label"].astype("Int8")
    return frame
