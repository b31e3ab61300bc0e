"""Batch scoring: a whole table scored by the champion on Spark, row for row as the service would score it.

Each Python worker loads the model once from its folder (`BatchScorer.for_model`) and takes its
partition's Arrow batches through exactly what /predict_arrow does with a request: the service's Arrow
reader (kennel.serving.api.ArrowReader: the stream checks, then every column checked and converted to
the encoder's numbers), the encoder's matrix, `Model.score_matrix`, and the same warnings
(unseen_category, out_of_distribution). Where the service refuses a whole request for one bad row, a
batch refuses that row alone: it goes to the rejected output with its reasons ("kind:field", the
service's problem kinds: `less_than_equal:age`, `literal_error:channel`, `null:age`, ...), never dropped.
Rows are screened with whole-column checks first (`_screen`); the service's reader then judges what
passed, and any row it still refuses is moved to the rejected output and the rest read again, so a
scored row is always one the service would have scored.

Layout, one folder per day of the scored data (its rows' day, not the scoring day):

    batch_scores/<dataset>/date=<YYYY-MM-DD>/version=<run>/outcome=scored/part-*.parquet
                                             version=<run>/outcome=rejected/part-*.parquet
                                             published.json   (which version is the day's)

Scored rows are in the prediction log's schema (kennel.serving.prediction_log.prediction_schema) with
endpoint "batch" and request ids issued under the data set's key (so /feedback can label them); they
carry one more column, `rejection`, null for scored rows. A re-run writes a new version and replaces
`published.json` atomically, then removes the other versions: readers see the old day or the new one,
never both, so a re-run never duplicates rows.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kennel.lake import DatasetLake, day_partition, exclusive, fsync_path, partition_day, write_atomically
from kennel.spec import PREDICTION_LOG_COLUMNS, DatasetSpec, FeatureType

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from kennel.model import Model
    from kennel.serving.api import ArrowBatch, ArrowReader
    from kennel.serving.request_ids import RequestIds

ENDPOINT = "batch"  # the prediction log's endpoint of batch-scored rows
REJECTION = "rejection"  # per row: the reasons it was not scored ("kind:field" joined by ";"), null when scored
OUTCOME = "outcome"  # Spark's partition column: "scored" or "rejected"
SCORED, REJECTED = "scored", "rejected"
PUBLISHED_FILE = "published.json"
_READ_ATTEMPTS = 20


@dataclass(frozen=True)
class PublishedScores:
    """A day's published batch scores (`published.json`): which version, by which model, when."""

    day: str
    version: str
    model_tag: str
    scored_at: str  # UTC ISO timestamp of the run
    rows_scored: int
    rows_rejected: int


@dataclass(frozen=True)
class BatchScoringResult:
    """What scoring one day came to (the batch_scores asset's metadata)."""

    published: PublishedScores
    path: Path  # the day's version folder
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # per "kind:field"
    warnings: dict[str, int] = field(default_factory=dict)  # per "kind:field", as the prediction log counts them
    mean_probability: float | None = None
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return (self.published.rows_scored + self.published.rows_rejected) / self.seconds if self.seconds else 0.0


# --- scoring one batch (in a Spark Python worker, or anywhere) ----------------------------------------


class BatchScorer:
    """A model with the service's reader for its spec and card: scores Arrow batches (see `score`)."""

    def __init__(self, model: Model, spec: DatasetSpec) -> None:
        from kennel.serving.api import ArrowReader, input_field_names

        self.model = model
        self.spec = spec
        # Spark hands over at most spark.sql.execution.arrow.maxRecordsPerBatch rows at a time; the
        # service's own row limit is a request limit, not a check on the rows.
        self.reader: ArrowReader = ArrowReader(spec, model.card, max_rows=2**31 - 1, max_decoded_bytes=2**62)
        self.fields = input_field_names(spec, model.card)

    @classmethod
    def for_model(cls, model_dir: str | Path) -> BatchScorer:
        """The model folder's scorer, loaded once per process (a Spark Python worker is reused across tasks).
        The model library predicts on one thread inside a Spark task (kennel.model.threads): Spark already
        runs one task per core."""
        key = str(model_dir)
        scorer = _SCORERS.get(key)
        if scorer is None:
            from kennel.model import SPEC_FILE, Model
            from kennel.spec import load_spec

            scorer = _SCORERS[key] = cls(Model.load(model_dir), load_spec(Path(model_dir) / SPEC_FILE))
        return scorer

    def output_schema(self) -> pa.Schema:
        """The prediction log's schema, then `rejection` and `outcome`."""
        import pyarrow as pa

        from kennel.serving.prediction_log import prediction_schema

        schema = prediction_schema(self.spec)
        return schema.append(pa.field(REJECTION, pa.string())).append(pa.field(OUTCOME, pa.string()))

    def score(self, batch: pa.RecordBatch | pa.Table, *, ids: RequestIds, model_tag: str, at: float) -> pa.Table:
        """The rows of `batch` (columns named like the service's input fields; others ignored), scored or
        rejected, in `output_schema`: scored rows first, then rejected ones, each in input order."""
        import pyarrow as pa

        from kennel.serving.api import InputError

        table = pa.table(batch) if isinstance(batch, pa.RecordBatch) else batch
        table = table.select([name for name in table.column_names if name in self.reader.required])
        reasons = self._screen(table)
        while True:
            kept = np.flatnonzero([not r for r in reasons])
            if not len(kept):
                read = None
                break
            try:
                read = self.reader.read(_ipc_bytes(table.take(pa.array(kept))))
                break
            except InputError as exc:  # move the rows it names to the rejected output, read again
                for problem in exc.problems:
                    loc = problem["loc"]
                    reason = f"{problem['type']}:{loc[0] if loc else ''}"
                    rows = kept[[loc[1]]] if len(loc) > 1 else kept  # no row named: the whole column is at fault
                    for row in rows.tolist():
                        reasons[row].append(reason)
        parts = []
        if read is not None:
            parts.append(self._scored(read, ids=ids, model_tag=model_tag, at=at))
        rejected = [i for i, r in enumerate(reasons) if r]
        if rejected:
            parts.append(self._rejected(table, rejected, reasons, model_tag=model_tag, at=at))
        if not parts:
            return self.output_schema().empty_table()
        return pa.concat_tables(parts)

    def _screen(self, table: pa.Table) -> list[list[str]]:
        """Per row, the reasons the service's reader would refuse it, found with whole-column checks
        (the common ones: required values missing, numbers out of range or not finite, categories a
        spec quarantines); the reader itself catches anything left."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from kennel.spec import WHITESPACE

        n = table.num_rows
        reasons: list[list[str]] = [[] for _ in range(n)]

        def flag(mask: np.ndarray, reason: str) -> None:
            for row in np.flatnonzero(mask).tolist():
                reasons[row].append(reason)

        for name, needed in self.reader.required.items():
            if name not in table.column_names:
                if needed:
                    flag(np.ones(n, dtype=bool), f"missing:{name}")
                continue
            column = table.column(name)
            if needed and column.null_count:
                flag(np.asarray(pc.is_null(column)), f"null:{name}")
            feature = self.reader.features.get(name)
            if feature is None:
                continue
            if feature.type is FeatureType.numeric and (
                pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
            ):
                numbers = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                valid = np.asarray(pc.is_valid(column))
                flag(valid & ~np.isfinite(numbers), f"finite_number:{name}")
                with np.errstate(invalid="ignore"):
                    if feature.min is not None:
                        flag(numbers < feature.min, f"greater_than_equal:{name}")
                    if feature.max is not None:
                        flag(numbers > feature.max, f"less_than_equal:{name}")
            elif feature.type is FeatureType.categorical and pa.types.is_string(column.type):
                text = pc.utf8_trim(column, characters=WHITESPACE)
                blank = np.asarray(pc.fill_null(pc.equal(text, ""), False), dtype=bool)
                if needed:
                    flag(blank, f"missing:{name}")
                categories = self.reader.categories[name]
                if feature.learned_categories is None and feature.unknown_category != "other" and categories:
                    codes = pc.index_in(text, value_set=pa.array(categories, pa.string()))
                    unknown = np.asarray(pc.and_(pc.is_null(codes), pc.is_valid(text)), dtype=bool) & ~blank
                    flag(unknown, f"literal_error:{name}")
        return reasons

    def _scored(self, read: ArrowBatch, *, ids: RequestIds, model_tag: str, at: float) -> pa.Table:
        """The rows the reader accepted, scored as /predict_arrow scores a request (KennelService._score_numbers)."""
        import pyarrow as pa

        from kennel.serving.api import RequestWarnings

        n = read.table.num_rows
        encoder = self.model.encoder
        matrix = encoder.encode_numbers(read.values, n)
        probabilities = self.model.score_matrix(matrix)
        warnings = RequestWarnings.find(
            n,
            unseen=read.unseen,
            out_of_distribution=encoder.out_of_distribution(matrix),
            features=self.model.card.feature_names,
        )
        flags = warnings.log_column()
        meta = [
            pa.array(ids.issue(n), pa.string()),
            _stamps(at, n),
            pa.array([model_tag] * n, pa.string()),
            pa.array([ENDPOINT] * n, pa.string()),
            pa.array(probabilities, pa.float64()),
            pa.array((probabilities >= self.model.card.threshold).astype(np.int8), pa.int8()),
            pa.array(flags if flags is not None else [None] * n, pa.string()),
        ]
        return self._assemble(meta, read.table, n, None, SCORED)

    def _rejected(
        self, table: pa.Table, rows: list[int], reasons: list[list[str]], *, model_tag: str, at: float
    ) -> pa.Table:
        """Rows not scored: their values as far as the log's types hold them, and why."""
        import pyarrow as pa

        n = len(rows)
        taken = table.take(pa.array(rows))
        meta = [
            pa.nulls(n, pa.string()),
            _stamps(at, n),
            pa.array([model_tag] * n, pa.string()),
            pa.array([ENDPOINT] * n, pa.string()),
            pa.nulls(n, pa.float64()),
            pa.nulls(n, pa.int8()),
            pa.nulls(n, pa.string()),
        ]
        why = pa.array([";".join(sorted(set(reasons[i]))) for i in rows], pa.string())
        return self._assemble(meta, taken, n, why, REJECTED)

    def _assemble(self, meta: list[pa.Array], values: pa.Table, n: int, why: pa.Array | None, outcome: str) -> pa.Table:
        import pyarrow as pa
        import pyarrow.compute as pc

        schema = self.output_schema()
        arrays: list[Any] = list(meta)
        for f in list(schema)[len(PREDICTION_LOG_COLUMNS) : -2]:
            column = None
            if f.name in values.column_names:
                try:
                    column = pc.cast(values.column(f.name), f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a rejected column of another type
                    column = None
            arrays.append(pa.nulls(n, f.type) if column is None else column)
        arrays.append(why if why is not None else pa.nulls(n, pa.string()))
        arrays.append(pa.array([outcome] * n, pa.string()))
        return pa.Table.from_arrays(arrays, schema=schema)


_SCORERS: dict[str, BatchScorer] = {}
_IDS: dict[str, RequestIds] = {}


def _ipc_bytes(table: pa.Table) -> bytes:
    """The table as the Arrow IPC stream a client would send to /predict_arrow."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _stamps(at: float, n: int) -> pa.Array:
    import pyarrow as pa

    return pa.array([int(at * 1_000_000)] * n, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _request_ids(key_path: str) -> RequestIds:
    """The data set's request ids, its key read once per process."""
    ids = _IDS.get(key_path)
    if ids is None:
        from kennel.serving.request_ids import RequestIds, load_or_create_key

        ids = _IDS[key_path] = RequestIds(load_or_create_key(Path(key_path)))
    return ids


def _score_partition(
    model_dir: str, key_path: str, model_tag: str, personal: PersonalColumns
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The function mapInArrow runs on each partition: batches in, scored and rejected rows out, their
    personal columns redacted as the prediction log redacts them (kennel.privacy): batch scores are a
    log of answers, not a data table."""

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from kennel.privacy import Redactor

        scorer = BatchScorer.for_model(model_dir)
        ids = _request_ids(key_path)
        redactor = Redactor(personal.hashed, personal.dropped, personal.salt)
        for batch in batches:
            if batch.num_rows:
                scored = scorer.score(batch, ids=ids, model_tag=model_tag, at=time.time())
                yield from redactor.redact_table(scored).to_batches()

    return score


@dataclass(frozen=True)
class PersonalColumns:
    """What the executors need to build the data set's Redactor (which holds a keyed hash: not picklable)."""

    hashed: tuple[str, ...]
    dropped: tuple[str, ...]
    salt: bytes = field(repr=False)


# --- a day on Spark -------------------------------------------------------------------------------------


def score_day(
    frame: DataFrame,
    data: DatasetLake,
    day: str,
    *,
    model_dir: str | Path,
    model_tag: str,
    version: str | None = None,
    partitions: int | None = None,
) -> BatchScoringResult:
    """Score `frame` (a day's rows) with the model in `model_dir` on Spark and publish the result as the
    day's batch scores, replacing any earlier run's (see the module docstring). `partitions` spreads the
    rows over that many tasks first (a day's single file is read by one task). Raises ValueError when
    the frame has no column the model reads."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from kennel.privacy import Redactor, load_salt

    date.fromisoformat(day)
    started = time.monotonic()
    scorer = BatchScorer.for_model(model_dir)
    ids_key = data.request_id_key_path()
    _request_ids(str(ids_key))  # created here, once, before the workers read it
    columns = [name for name in frame.columns if name in scorer.reader.required]
    if not any(name in columns for name in scorer.model.card.feature_names):
        raise ValueError(f"the table to score has none of the model's features ({', '.join(scorer.fields)})")
    selected = frame.select(*columns)
    if partitions:
        selected = selected.repartition(partitions)
    version = version or uuid.uuid4().hex
    day_dir = day_partition(data.batch_scores_dir(), day)
    version_dir = day_dir / f"version={version}"
    schema = from_arrow_schema(scorer.output_schema())
    redactor = Redactor.for_spec(scorer.spec, data)
    personal = PersonalColumns(
        redactor.hashed_columns, redactor.dropped_columns, load_salt(data) if redactor.hashed_columns else b""
    )
    scored = selected.mapInArrow(_score_partition(str(model_dir), str(ids_key), model_tag, personal), schema)
    scored.write.mode("overwrite").partitionBy(OUTCOME).parquet(str(version_dir))
    counts = _summary(version_dir)
    published = PublishedScores(
        day=day,
        version=version,
        model_tag=model_tag,
        scored_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        rows_scored=counts.rows_scored,
        rows_rejected=sum(counts.rejected_by_reason_rows.values()),
    )
    _publish(day_dir, published)
    return BatchScoringResult(
        published=published,
        path=version_dir,
        rejected_by_reason=counts.rejected_by_reason,
        warnings=counts.warnings,
        mean_probability=counts.mean_probability,
        seconds=time.monotonic() - started,
    )


@dataclass(frozen=True)
class _Counts:
    rows_scored: int
    rejected_by_reason_rows: dict[str, int]  # per joined reasons value: rows
    rejected_by_reason: dict[str, int]  # per single reason: rows it names
    warnings: dict[str, int]
    mean_probability: float | None


def _summary(version_dir: Path) -> _Counts:
    """Counts of a written (not yet published) version, read back from its files."""
    import pyarrow.compute as pc

    from kennel.serving.prediction_log import count_warnings

    scored = _read_outcome(version_dir, SCORED, ["probability", "warnings"])
    rejected = _read_outcome(version_dir, REJECTED, [REJECTION])
    joined: dict[str, int] = {}
    single: dict[str, int] = {}
    if rejected is not None:
        for value, rows in zip(*_value_counts(rejected.column(REJECTION)), strict=True):
            joined[value] = rows
            for reason in value.split(";"):
                single[reason] = single.get(reason, 0) + rows
    if scored is None or not scored.num_rows:
        return _Counts(0, joined, dict(sorted(single.items())), {}, None)
    mean = pc.mean(scored.column("probability")).as_py()
    warnings = count_warnings(scored.select(["warnings"]).to_pandas())
    return _Counts(scored.num_rows, joined, dict(sorted(single.items())), warnings, mean)


def _value_counts(column: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    import pyarrow.compute as pc

    counts = pc.value_counts(column)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def _read_outcome(version_dir: Path, outcome: str, columns: list[str] | None = None) -> pa.Table | None:
    """One outcome's rows of a version folder (None when it has none); FileNotFoundError when the version
    is gone (a re-run replaced it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not version_dir.is_dir():
        raise FileNotFoundError(version_dir)
    folder = version_dir / f"{OUTCOME}={outcome}"
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    tables = [pq.read_table(path, columns=columns).replace_schema_metadata(None) for path in files]
    tables = [t for t in tables if t.num_rows] or tables[:1]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _publish(day_dir: Path, published: PublishedScores) -> None:
    """Make `published` the day's version (one atomic rename), then remove every other version. Publishers
    of one day take turns (a lock file in the lake)."""
    with exclusive(day_dir / ".publish.lock"):
        write_atomically(day_dir / PUBLISHED_FILE, json.dumps(asdict(published), indent=2))
        fsync_path(day_dir)
        for other in day_dir.glob("version=*"):
            if other.name != f"version={published.version}":
                shutil.rmtree(other, ignore_errors=True)


def published_scores(data: DatasetLake, day: str) -> PublishedScores | None:
    """The day's published batch scores, or None when the day was never batch scored."""
    path = day_partition(data.batch_scores_dir(), day) / PUBLISHED_FILE
    try:
        return PublishedScores(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None


# --- readers --------------------------------------------------------------------------------------------


def _read_published(data: DatasetLake, day: str, outcome: str) -> pa.Table | None:
    """A day's published rows of one outcome, re-read when a re-run replaced the version mid-read."""
    for _ in range(_READ_ATTEMPTS):
        published = published_scores(data, day)
        if published is None:
            return None
        try:
            return _read_outcome(day_partition(data.batch_scores_dir(), day) / f"version={published.version}", outcome)
        except FileNotFoundError:
            continue
    raise RuntimeError(f"the batch scores of {data.name} {day} kept changing while they were read; read them again")


def _days(data: DatasetLake, start: date | str | None, end: date | str | None) -> list[str]:
    first = date.fromisoformat(start) if isinstance(start, str) else start
    last = date.fromisoformat(end) if isinstance(end, str) else end
    root = data.batch_scores_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        day = partition_day(folder)
        if day is None:
            continue
        when = date.fromisoformat(day)
        if (first is None or when >= first) and (last is None or when <= last):
            found.append(day)
    return found


def _frame(tables: list[pa.Table], drop: list[str]) -> pd.DataFrame:
    import pyarrow as pa

    if not tables:
        return _base_schema().empty_table().to_pandas()
    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.drop_columns([c for c in drop if c in table.column_names])
    frame = table.to_pandas()
    return frame.sort_values("predicted_at", kind="stable").reset_index(drop=True)


def _base_schema() -> pa.Schema:
    import pyarrow as pa

    types = (pa.string(), pa.timestamp("us", tz="UTC"), pa.string(), pa.string(), pa.float64(), pa.int8(), pa.string())
    return pa.schema(list(zip(PREDICTION_LOG_COLUMNS, types, strict=True)))


def read_batch_scores(
    lake: DatasetLake, *, start: date | str | None = None, end: date | str | None = None
) -> pd.DataFrame:
    """Batch-scored rows of the days in [start, end] (the scored data's days; inclusive; None = open), as
    published, oldest scoring first, in the prediction log's schema: PREDICTION_COLUMNS (endpoint
    "batch"), then the id column and every spec feature, as `read_predictions` gives served rows."""
    tables = [t for day in _days(lake, start, end) if (t := _read_published(lake, day, SCORED)) is not None]
    return _frame(tables, [REJECTION])


def read_batch_rejections(
    lake: DatasetLake, *, start: date | str | None = None, end: date | str | None = None
) -> pd.DataFrame:
    """Rows batch scoring refused, with `rejection` (the reasons, "kind:field" joined by ";"), their
    values as far as the log's types hold them, model_tag and predicted_at (when they were judged)."""
    tables = [t for day in _days(lake, start, end) if (t := _read_published(lake, day, REJECTED)) is not None]
    return _frame(tables, ["request_id", "probability", "predicted_label", "warnings"])
