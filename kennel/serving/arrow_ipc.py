"""Reads Arrow IPC streams from untrusted clients: checked before decoding, fully validated after.

Why this exists: pyarrow's stream reader trusts what it is given. It decodes buffers without checking
offsets, UTF-8 or dictionary indices (that is `validate(full=True)`'s job), so a mutated stream became a
table whose string offsets pointed outside its buffer and crashed the worker in the first compute kernel
that read it. And it decompresses each compressed buffer into however many bytes the buffer's 8-byte
prefix declares: a 388 KB zstd/lz4 body expanded to 1 GB, while the request byte limit only ever saw the
compressed size.

So `read_stream` works in two passes over the same bytes, both zero-copy:

1. Walk the stream message by message with `MessageReader` and read each message's flatbuffer metadata with
   the small bounds-checked reader below, *before any body is decoded*: rows summed over record batches,
   messages, schema fields (with nesting depth and name length), dictionary batches, buffer regions inside
   their body, and, for compressed batches, the declared uncompressed length of every buffer summed against
   `max_decoded_bytes`. Arrow C++ decompresses into exactly the declared length and fails when the data does
   not fit, so the declared lengths bound the memory decompression can take. Uncompressed buffers are views
   of the request body; delta dictionaries are concatenated into new memory, so those count too.
2. Decode batch by batch and `validate(full=True)` each one (offsets, UTF-8, dictionary indices, null
   counts, nested children), so the caller only ever computes on validated arrays.

Every failure, whatever its exception type, becomes `ArrowStreamError` whose problems are shaped like
pydantic's errors. Their messages are fixed text, the limits, and at most an exception's class name: they
never echo body bytes, values or Arrow's error text, nor a field name except as the `loc` of a column that
failed validation (names are checked to be UTF-8 first; one that is not could not even be printed).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

# Limits on a stream's structure. A request to the model server has tens of columns and a handful of
# batches; these are far above that and far below what makes the Python walk or Arrow's decoder slow.
MAX_MESSAGES = 1_024  # schema, dictionary and record-batch messages together
MAX_FIELDS = 1_024  # schema fields, nested children included
MAX_NESTING = 32  # depth of nested types (Arrow C++ recurses per level)
MAX_DICTIONARY_BATCHES = 256
MAX_FIELD_NAME_BYTES = 1_024  # names are echoed by the caller's problems
MAX_BUFFERS_PER_FIELD = 16  # 3 for strings, plus variadic buffers of string views

# Message.fbs / Schema.fbs enums.
_METADATA_V5 = 4  # MetadataVersion: V1=0 ... V5=4 (Arrow >= 1.0); V4 allowed compression in custom metadata
_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3  # MessageHeader union: 4 Tensor, 5 SparseTensor
_LITTLE_ENDIAN = 0
_INTERVAL, _MONTH_DAY_NANO = 11, 2  # Type union member Interval; its unit: YEAR_MONTH=0, DAY_TIME=1
_CODECS = (0, 1)  # CompressionType: LZ4_FRAME, ZSTD
_BUFFER_METHOD = 0  # BodyCompressionMethod.BUFFER: each buffer compressed alone, int64 length prefix
_NOT_COMPRESSED = -1  # that prefix when the buffer's bytes follow uncompressed

_U8 = struct.Struct("<B")
_I16 = struct.Struct("<h")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_PAIR = struct.Struct("<qq")  # FieldNode {length, null_count} and Buffer {offset, length}


class ArrowStreamError(ValueError):
    """A request body refused as an Arrow IPC stream; `problems` are shaped like pydantic's errors
    ({"type", "loc", "msg"}) so the caller can answer them like any other validation error."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(p["msg"]) for p in problems))
        self.problems = problems


class _Refused(Exception):
    """One problem found while walking or decoding; becomes ArrowStreamError at the entry point."""

    def __init__(self, kind: str, msg: str, loc: list[Any] | None = None) -> None:
        super().__init__(msg)
        self.problem: dict[str, Any] = {"type": kind, "loc": loc or [], "msg": msg}


def read_stream(
    body: bytes,
    *,
    max_rows: int,
    max_decoded_bytes: int,
    max_messages: int = MAX_MESSAGES,
    max_fields: int = MAX_FIELDS,
) -> pa.Table:
    """The record batches of an Arrow IPC stream as one table, every batch fully validated.

    Refused with ArrowStreamError, before any body is decoded, when the record batches declare more than
    `max_rows` rows in all ("row_count") or their compressed buffers would decode to more than
    `max_decoded_bytes` ("arrow_compressed_too_large"; delta dictionaries, concatenated into new memory,
    count too: "arrow_too_large"). Also refused: malformed framing or metadata ("arrow_invalid"); buffers,
    offsets, UTF-8, dictionary indices or null counts that fail full validation, and field names that are
    not UTF-8 ("arrow_corrupt"); more messages, fields, nesting, dictionary batches or longer names than the
    limits above ("arrow_too_large"); big-endian data, pre-1.0 (V4) metadata, tensor messages and the
    month / day-time interval types pyarrow cannot hand to Python ("arrow_unsupported"). Batches without
    rows are left out; a stream with a schema and no rows gives an empty table, the caller checking its
    row count against its own minimum."""
    import pyarrow as pa

    try:
        buffer = pa.py_buffer(body)
        walk = _Walk(max_rows, max_decoded_bytes, max_messages, max_fields)
        try:
            walk.run(buffer)
        except _Refused:
            raise
        except Exception as exc:  # Arrow's framing errors, and anything unforeseen in the walk
            raise _Refused("arrow_invalid", f"not a readable Arrow IPC stream ({_kind(exc)})") from None
        return _decode(buffer, walk)
    except _Refused as refused:
        raise ArrowStreamError([refused.problem]) from None
    except Exception as exc:  # unreachable by design; a refusal all the same, never an escaping error
        raise ArrowStreamError(
            [{"type": "arrow_invalid", "loc": [], "msg": f"not a readable Arrow IPC stream ({_kind(exc)})"}]
        ) from None


def _kind(exc: BaseException) -> str:
    """The exception's class name: tells a client what failed without repeating its text, which can
    carry offsets or bytes from the body."""
    return type(exc).__name__


# --- pass 1: metadata --------------------------------------------------------------------------------


class _Flatbuffer:
    """Reads tables, scalars and vectors of one flatbuffer; every read is bounds-checked, so metadata
    that lies about its own layout is refused instead of read past. Only what the walk needs."""

    __slots__ = ("data", "size")

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.size = len(data)

    def read(self, fmt: struct.Struct, pos: int) -> int:
        if pos < 0 or pos + fmt.size > self.size:
            raise _Refused("arrow_invalid", "message metadata refers outside itself")
        value: int = fmt.unpack_from(self.data, pos)[0]
        return value

    def deref(self, pos: int) -> int:
        """Target of the uoffset stored at `pos` (flatbuffer offsets are relative and point forward)."""
        target = pos + self.read(_U32, pos)
        if target >= self.size:
            raise _Refused("arrow_invalid", "message metadata refers outside itself")
        return target

    def root(self) -> int:
        return self.deref(0)

    def field(self, table: int, slot: int) -> int | None:
        """Position of field `slot` of the table at `table`, or None when absent (default value)."""
        vtable = table - self.read(_I32, table)
        entry = 4 + 2 * slot
        if entry + 2 > self.read(_U16, vtable):
            return None
        offset = self.read(_U16, vtable + entry)
        return table + offset if offset else None

    def scalar(self, table: int, slot: int, fmt: struct.Struct, default: int) -> int:
        pos = self.field(table, slot)
        return default if pos is None else self.read(fmt, pos)

    def table(self, table: int, slot: int) -> int | None:
        pos = self.field(table, slot)
        return None if pos is None else self.deref(pos)

    def vector(self, table: int, slot: int, item_size: int) -> tuple[int, int]:
        """(position of the first item, item count) of a vector field; (0, 0) when absent."""
        pos = self.field(table, slot)
        if pos is None:
            return 0, 0
        vector = self.deref(pos)
        count = self.read(_U32, vector)
        if vector + 4 + count * item_size > self.size:
            raise _Refused("arrow_invalid", "message metadata refers outside itself")
        return vector + 4, count

    def string(self, table: int, slot: int) -> memoryview | None:
        start, length = self.vector(table, slot, 1)
        return None if start == 0 else self.data[start : start + length]


class _Walk:
    """Pass 1: every message's metadata checked against the limits before any body is decoded."""

    def __init__(self, max_rows: int, max_decoded_bytes: int, max_messages: int, max_fields: int) -> None:
        self.max_rows = max_rows
        self.max_decoded_bytes = max_decoded_bytes
        self.max_messages = max_messages
        self.max_fields = max_fields
        self.rows = 0
        self.record_batches = 0
        self.dictionary_batches = 0
        self.decoded_bytes = 0  # memory decoding will allocate beyond the body: decompression, deltas
        self.dictionary_bytes: dict[int, int] = {}  # per dictionary id: size once deltas are appended

    def run(self, buffer: pa.Buffer) -> None:
        import pyarrow as pa

        reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(buffer))
        messages = 0
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                break
            messages += 1
            if messages > self.max_messages:
                raise _Refused("arrow_too_large", f"at most {self.max_messages:,} IPC messages allowed")
            fb = _Flatbuffer(memoryview(message.metadata))
            root = fb.root()
            if fb.scalar(root, 0, _I16, 0) != _METADATA_V5:
                raise _Refused("arrow_unsupported", "only Arrow IPC metadata version V5 (Arrow >= 1.0) is read")
            header_type = fb.scalar(root, 1, _U8, 0)
            header = fb.table(root, 2)
            if header is None:
                raise _Refused("arrow_invalid", "an IPC message has no header")
            if (messages == 1) != (header_type == _SCHEMA):
                raise _Refused("arrow_invalid", "an Arrow IPC stream has one schema message, first")
            body = message.body
            body_view = memoryview(body) if body is not None else memoryview(b"")
            if header_type == _SCHEMA:
                self.schema(fb, header)
            elif header_type == _RECORD_BATCH:
                self.record_batches += 1
                self.rows += self.batch(fb, header, body_view)
                if self.rows > self.max_rows:
                    raise _Refused("row_count", f"1 to {self.max_rows:,} rows allowed, the stream has more")
            elif header_type == _DICTIONARY_BATCH:
                self.dictionary(fb, header, body_view)
            else:
                raise _Refused("arrow_unsupported", "only schema, dictionary and record batch messages are read")
        if messages == 0:
            raise _Refused("arrow_invalid", "an Arrow IPC stream starts with a schema message")

    def schema(self, fb: _Flatbuffer, schema: int) -> None:
        """Schema table: 0 endianness, 1 fields; Field table: 0 name, 2 type_type, 3 type, 5 children.
        Fields are counted before Arrow parses them (it recurses per nesting level), their names must be
        UTF-8, and their types ones pyarrow can hand to Python."""
        if fb.scalar(schema, 0, _I16, _LITTLE_ENDIAN) != _LITTLE_ENDIAN:
            # Reading would byte-swap every buffer before validation, sized by unvalidated lengths.
            raise _Refused("arrow_unsupported", "big-endian Arrow data is not read; send little-endian")
        pending = self.children(fb, schema, 1, 1)
        seen = 0
        while pending:
            field, depth = pending.pop()
            seen += 1
            if depth > MAX_NESTING:
                raise _Refused("arrow_too_large", f"types nested at most {MAX_NESTING} levels deep allowed")
            name = fb.string(field, 0)
            if name is not None:
                if len(name) > MAX_FIELD_NAME_BYTES:
                    raise _Refused("arrow_too_large", f"field names of at most {MAX_FIELD_NAME_BYTES:,} bytes allowed")
                try:
                    bytes(name).decode("utf-8")
                except UnicodeDecodeError:
                    raise _Refused("arrow_corrupt", "a field name is not valid UTF-8") from None
            if fb.scalar(field, 2, _U8, 0) == _INTERVAL:
                interval = fb.table(field, 3)
                if interval is None or fb.scalar(interval, 0, _I16, 0) != _MONTH_DAY_NANO:
                    # Arrow C++ decodes them, but pyarrow has no array class for them: any access to such
                    # a column's chunks raises KeyError.
                    raise _Refused("arrow_unsupported", "month and day-time interval types are not read")
            pending.extend(self.children(fb, field, 5, depth + 1))
            if seen + len(pending) > self.max_fields:
                raise _Refused("arrow_too_large", f"at most {self.max_fields:,} fields (nested ones included) allowed")

    def children(self, fb: _Flatbuffer, table: int, slot: int, depth: int) -> list[tuple[int, int]]:
        start, count = fb.vector(table, slot, 4)
        if count > self.max_fields:
            raise _Refused("arrow_too_large", f"at most {self.max_fields:,} fields (nested ones included) allowed")
        return [(fb.deref(start + 4 * i), depth) for i in range(count)]

    def dictionary(self, fb: _Flatbuffer, header: int, body: memoryview) -> None:
        """DictionaryBatch table: 0 id, 1 data (a RecordBatch), 2 isDelta. A delta is concatenated onto
        the dictionary so far, into new memory, when the next batch needs it: that size is charged."""
        self.dictionary_batches += 1
        if self.dictionary_batches > MAX_DICTIONARY_BATCHES:
            raise _Refused("arrow_too_large", f"at most {MAX_DICTIONARY_BATCHES:,} dictionary batches allowed")
        data = fb.table(header, 1)
        if data is None:
            raise _Refused("arrow_invalid", "a dictionary batch has no data")
        dictionary_id = fb.scalar(header, 0, _I64, 0)
        size = self.batch_bytes(fb, data, body)
        if fb.scalar(header, 2, _U8, 0):
            size += self.dictionary_bytes.get(dictionary_id, 0)
            self.charge(size, "arrow_too_large", "delta dictionaries")
        self.dictionary_bytes[dictionary_id] = size

    def batch(self, fb: _Flatbuffer, header: int, body: memoryview) -> int:
        """Rows of a record batch, after checking its buffers (see batch_bytes)."""
        self.batch_bytes(fb, header, body)
        return self.length(fb, header)

    @staticmethod
    def length(fb: _Flatbuffer, record_batch: int) -> int:
        length = fb.scalar(record_batch, 0, _I64, 0)
        if length < 0:
            raise _Refused("arrow_corrupt", "a record batch declares a negative length")
        return length

    def batch_bytes(self, fb: _Flatbuffer, record_batch: int, body: memoryview) -> int:
        """RecordBatch table: 0 length, 1 nodes [FieldNode], 2 buffers [Buffer], 3 compression. Checks
        node counts and that every buffer lies inside the body, and returns the bytes the buffers will
        take decoded; compressed ones are charged to the decoded-bytes budget *before* decompression."""
        self.length(fb, record_batch)
        start, count = fb.vector(record_batch, 1, _PAIR.size)
        if count > self.max_fields:
            raise _Refused("arrow_too_large", f"at most {self.max_fields:,} fields (nested ones included) allowed")
        for length, null_count in _PAIR.iter_unpack(fb.data[start : start + count * _PAIR.size]):
            if length < 0 or null_count < 0:
                raise _Refused("arrow_corrupt", "a column declares a negative length or null count")
        start, count = fb.vector(record_batch, 2, _PAIR.size)
        if count > MAX_BUFFERS_PER_FIELD * self.max_fields:
            raise _Refused("arrow_too_large", "too many buffers in one batch")
        regions = list(_PAIR.iter_unpack(fb.data[start : start + count * _PAIR.size]))
        for offset, length in regions:
            if offset < 0 or length < 0 or offset + length > len(body):
                raise _Refused("arrow_corrupt", "a buffer lies outside its message body")
        compression = fb.table(record_batch, 3)
        if compression is None:
            return sum(length for _, length in regions)  # views of the body: no new memory
        if fb.scalar(compression, 0, _U8, 0) not in _CODECS or fb.scalar(compression, 1, _U8, 0) != _BUFFER_METHOD:
            raise _Refused("arrow_unsupported", "only LZ4_FRAME and ZSTD buffer compression are read")
        total = 0
        for offset, length in regions:
            if length == 0:
                continue  # Arrow leaves empty buffers alone
            if length < _I64.size:
                raise _Refused("arrow_corrupt", "a compressed buffer is shorter than its length prefix")
            declared = _I64.unpack_from(body, offset)[0]
            if declared == _NOT_COMPRESSED:
                total += length - _I64.size
                continue
            if declared < 0:
                raise _Refused("arrow_corrupt", "a compressed buffer declares a negative length")
            total += declared
            self.charge(declared, "arrow_compressed_too_large", "compressed buffers")
        return total

    def charge(self, size: int, kind: str, what: str) -> None:
        self.decoded_bytes += size
        if self.decoded_bytes > self.max_decoded_bytes:
            raise _Refused(kind, f"{what} would decode to more than {self.max_decoded_bytes:,} bytes")


# --- pass 2: decode and validate ---------------------------------------------------------------------


def _decode(buffer: pa.Buffer, walk: _Walk) -> pa.Table:
    """Pass 2: batches decoded one at a time and each validated in full before the next is read, so a
    corrupt batch is refused before anything computes on it."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(buffer)
        schema = reader.schema
        names = schema.names  # decodes them (checked UTF-8 in the walk)
    except Exception as exc:
        raise _Refused("arrow_invalid", f"the stream's schema could not be read ({_kind(exc)})") from None
    batches: list[pa.RecordBatch] = []
    decoded = rows = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except MemoryError as exc:
            raise _Refused("arrow_too_large", f"record batch {decoded} does not fit ({_kind(exc)})") from None
        except Exception as exc:
            raise _Refused("arrow_corrupt", f"record batch {decoded} could not be decoded ({_kind(exc)})") from None
        try:
            batch.validate(full=True)
        except Exception:
            raise _Refused(*_invalid_column(batch, decoded, names)) from None
        decoded += 1
        rows += batch.num_rows
        if batch.num_rows:  # an empty batch adds nothing, and full validation checks little of an empty array
            batches.append(batch)
    if decoded != walk.record_batches or rows != walk.rows:
        raise _Refused("arrow_invalid", "the stream's framing is inconsistent")
    try:
        return pa.Table.from_batches(batches, schema=schema)
    except Exception as exc:
        raise _Refused("arrow_corrupt", f"the record batches do not form one table ({_kind(exc)})") from None


def _invalid_column(batch: pa.RecordBatch, index: int, names: list[str]) -> tuple[str, str, list[Any]]:
    """(type, msg, loc) for a batch that failed full validation, naming the first column at fault."""
    for position, column in enumerate(batch.columns):
        try:
            column.validate(full=True)
        except Exception:
            loc: list[Any] = [names[position]] if position < len(names) else []
            msg = "column data failed full validation (offsets, UTF-8, dictionary indices, null counts or sizes)"
            return "arrow_corrupt", f"record batch {index}: {msg}", loc
    return "arrow_corrupt", f"record batch {index} failed validation (column lengths or types)", []
