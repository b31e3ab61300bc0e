"""Seeded, structure-aware mutations of Arrow IPC streams, for fuzzing readers of untrusted streams.

Why structure-aware: random byte flips almost always break the framing or the flatbuffer metadata, which a
reader refuses early, so they never exercise what crashed the model server: buffers that decode fine but
lie (string offsets out of bounds, dictionary indices out of range, invalid UTF-8), lengths in the metadata
that disagree with the buffers, schemas that disagree with the batches, and compressed buffers that
decompress to far more than the body. So each stream is split into messages, each message's flatbuffer
metadata is located field by field (Message.fbs / Schema.fbs), and each buffer's role (validity, offsets,
characters, indices, numbers) is derived from the schema; mutations then edit one of those precisely, and
only a small share are plain random byte flips.

    for kind, body in mutated_streams(valid_streams, n=1_000, seed=7):
        ...  # kind: e.g. "buffer.offsets_out_of_bounds"; body: the mutated stream

Categories (CATEGORY_WEIGHTS): "values" (well-formed edits of numbers, characters, indices, offsets and
validity that reach a reader's own rules), "buffer" (corrupt buffers: offsets out of bounds, decreasing or
huge, indices out of range, invalid UTF-8, bad string views and union type ids, resized buffers, raw
flips), "meta" (lengths, null counts, buffer offsets/lengths, body length, vector counts, version, header
type), "schema" (names incl. invalid UTF-8, types and their parameters, nullability, dictionary encoding,
extension-type metadata, another stream's schema, columns dropped/added/cast/nested by pyarrow), "dict"
(ids, delta flags, dropped/duplicated/late/foreign dictionaries), "compression" (lying length prefixes,
codecs, garbage, and real 1 GiB bombs declared truly or falsely), "stream" (truncation, dropped, duplicated,
swapped, spliced or repeated messages, end-of-stream and length prefixes), and a small share of "random".

The same (valid_streams, n, seed) always gives the same cases, so a failing case is reproduced from its
index. Every valid stream is also re-encoded with LZ4 and ZSTD buffer compression (batch by batch, so its
dictionaries and batches stay as they were) so compression mutations apply whatever the input. The valid
streams should be little-endian streams as pyarrow writes them. Buffer roles are derived for flat, nested,
view, union, run-end-encoded and extension types; dictionaries nested inside other types are mutated only
by the structure-blind kinds.
"""

from __future__ import annotations

import functools
import inspect
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA, DICTIONARY_BATCH, RECORD_BATCH = 1, 2, 3  # MessageHeader union (Message.fbs)
_CONTINUATION = b"\xff\xff\xff\xff"
_EOS = _CONTINUATION + b"\x00\x00\x00\x00"
_CODEC_NAMES = {0: "lz4", 1: "zstd"}  # CompressionType: LZ4_FRAME, ZSTD
_TYPE_IDS = range(27)  # Schema.fbs Type union: NONE .. LargeListView
_INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82", b"\x80")
_BOMB_BYTES = 1 << 30

# --- framing and metadata ----------------------------------------------------------------------------


@dataclass
class Message:
    """One encapsulated IPC message: its flatbuffer metadata (padded as written) and its body."""

    metadata: bytearray
    body: bytearray

    def copy(self) -> Message:
        return Message(bytearray(self.metadata), bytearray(self.body))


class _Fb:
    """Locates fields in flatbuffers written by pyarrow (trusted input: no bounds checks)."""

    def __init__(self, data: bytearray) -> None:
        self.data = data

    def read(self, fmt: str, pos: int) -> int:
        value: int = struct.unpack_from(fmt, self.data, pos)[0]
        return value

    def field(self, table: int, slot: int) -> int | None:
        vtable = table - self.read("<i", table)
        if 4 + 2 * slot + 2 > self.read("<H", vtable):
            return None
        offset = self.read("<H", vtable + 4 + 2 * slot)
        return table + offset if offset else None

    def table(self, table: int, slot: int) -> int | None:
        pos = self.field(table, slot)
        return None if pos is None else pos + self.read("<I", pos)

    def vector(self, table: int, slot: int) -> tuple[int, int, int] | None:
        """(position of the length word, position of the first item, item count)."""
        pos = self.table(table, slot)
        return None if pos is None else (pos, pos + 4, self.read("<I", pos))

    def root(self) -> int:
        return self.read("<I", 0)


def split(stream: bytes) -> list[Message]:
    """The messages of a stream, up to its end-of-stream marker."""
    messages = []
    pos = 0
    while pos + 8 <= len(stream):
        (length,) = struct.unpack_from("<i", stream, pos)
        if stream[pos : pos + 4] == _CONTINUATION:
            (length,) = struct.unpack_from("<i", stream, pos + 4)
            pos += 8
        else:
            pos += 4
        if length <= 0:
            break
        metadata = bytearray(stream[pos : pos + length])
        pos += length
        fb = _Fb(metadata)
        body_length_pos = fb.field(fb.root(), 3)
        body_length = 0 if body_length_pos is None else fb.read("<q", body_length_pos)
        messages.append(Message(metadata, bytearray(stream[pos : pos + body_length])))
        pos += body_length
    return messages


def join(messages: list[Message], eos: bool = True) -> tuple[bytearray, list[int]]:
    """A stream of `messages`, and where each message's length prefix starts in it."""
    out = bytearray()
    starts = []
    for message in messages:
        starts.append(len(out))
        out += _CONTINUATION + struct.pack("<i", len(message.metadata)) + message.metadata + message.body
    if eos:
        out += _EOS
    return out, starts


def _header_type(message: Message) -> int:
    fb = _Fb(message.metadata)
    pos = fb.field(fb.root(), 1)
    return 0 if pos is None else message.metadata[pos]


def _header(message: Message) -> int | None:
    fb = _Fb(message.metadata)
    return fb.table(fb.root(), 2)


def _batch_table(message: Message) -> int | None:
    """The RecordBatch table of a record batch, or of a dictionary batch's data."""
    header = _header(message)
    kind = _header_type(message)
    if header is None or kind not in (RECORD_BATCH, DICTIONARY_BATCH):
        return None
    return header if kind == RECORD_BATCH else _Fb(message.metadata).table(header, 1)


def _struct_vector(message: Message, slot: int) -> tuple[int, int]:
    """(first item position, count) of the RecordBatch's nodes (slot 1) or buffers (slot 2)."""
    table = _batch_table(message)
    vector = None if table is None else _Fb(message.metadata).vector(table, slot)
    return (0, 0) if vector is None else (vector[1], vector[2])


def _buffers(message: Message) -> list[tuple[int, int]]:
    start, count = _struct_vector(message, 2)
    return [struct.unpack_from("<qq", message.metadata, start + 16 * i) for i in range(count)]


def _codec(message: Message) -> int | None:
    """The message's compression codec, None when uncompressed."""
    table = _batch_table(message)
    if table is None:
        return None
    fb = _Fb(message.metadata)
    compression = fb.table(table, 3)
    if compression is None:
        return None
    pos = fb.field(compression, 0)
    return 0 if pos is None else message.metadata[pos]


def _decode(raw: bytes, codec: int | None) -> bytes:
    if codec is None or len(raw) < 8:
        return raw
    (declared,) = struct.unpack_from("<q", raw)
    if declared == -1:
        return raw[8:]
    if declared == 0:
        return b""
    return pa.Codec(_CODEC_NAMES[codec]).decompress(raw[8:], decompressed_size=declared, asbytes=True)


def _encode(data: bytes, codec: int | None) -> bytes:
    if codec is None or not data:
        return data
    return struct.pack("<q", len(data)) + pa.Codec(_CODEC_NAMES[codec]).compress(data, asbytes=True)


def _set_buffers(message: Message, contents: list[bytes]) -> bool:
    """Rewrites the body from raw buffer contents (each padded to 8 bytes), with the buffer offsets and
    lengths and the message's bodyLength to match. False when the metadata has no bodyLength to set."""
    fb = _Fb(message.metadata)
    body_length_pos = fb.field(fb.root(), 3)
    start, count = _struct_vector(message, 2)
    if body_length_pos is None or count != len(contents):
        return False
    body = bytearray()
    for i, content in enumerate(contents):
        struct.pack_into("<qq", message.metadata, start + 16 * i, len(body), len(content))
        body += content + b"\x00" * (-len(content) % 8)
    message.body = body
    struct.pack_into("<q", message.metadata, body_length_pos, len(body))
    return True


def _raw_buffers(message: Message) -> list[bytes]:
    return [bytes(message.body[offset : offset + length]) for offset, length in _buffers(message)]


def _schema_fields(message: Message) -> list[int]:
    """Top-level Field tables of a schema message."""
    fb = _Fb(message.metadata)
    header = _header(message)
    vector = None if header is None else fb.vector(header, 1)
    if vector is None:
        return []
    _, start, count = vector
    return [start + 4 * i + fb.read("<I", start + 4 * i) for i in range(count)]


@functools.lru_cache(maxsize=4)
def _bomb(codec: str, size: int) -> bytes:
    """`size` zero bytes as one LZ4 frame or ZSTD frame, compressed chunk by chunk: ~32 KB (zstd) or
    ~4 MB (lz4) for 1 GiB, without ever holding the expanded bytes."""
    sink = pa.BufferOutputStream()
    chunk = bytes(min(size, 1 << 20))
    with pa.CompressedOutputStream(sink, codec) as out:
        left = size
        while left > 0:
            out.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
    return bytes(sink.getvalue())


# --- the valid streams, parsed -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Role:
    """What one buffer of a batch message holds: e.g. "validity", "offsets4", "chars", "indices1",
    "number8", "views", "type_ids"; the field node it belongs to; the dictionary id of its column."""

    kind: str
    node: int
    dictionary_id: int = -1


@dataclass
class _Base:
    """A valid stream, split, with the roles of each batch message's buffers (None: not modelled)."""

    stream: bytes
    messages: list[Message]
    schema: pa.Schema
    roles: list[list[_Role] | None]
    dictionary_lengths: dict[int, int]
    codec: str | None

    def copy(self) -> list[Message]:
        return [m.copy() for m in self.messages]


class _Unmodelled(Exception):
    pass


def _layout(dtype: pa.DataType, node: int, variadic: Iterator[int], out: list[_Role], dictionary_id: int) -> int:
    """Appends the roles of the buffers of a column of `dtype` and its children, in IPC order (one field
    node per type, preorder), and returns the next node index."""
    t = pa.types
    if isinstance(dtype, pa.BaseExtensionType):
        dtype = dtype.storage_type
    if t.is_dictionary(dtype):
        own = ["validity", f"indices{dtype.index_type.bit_width // 8}"]
    elif t.is_null(dtype) or t.is_run_end_encoded(dtype):
        own = []
    elif t.is_boolean(dtype):
        own = ["validity", "bits"]
    elif t.is_string(dtype) or t.is_binary(dtype):
        own = ["validity", "offsets4", "chars"]
    elif t.is_large_string(dtype) or t.is_large_binary(dtype):
        own = ["validity", "offsets8", "chars"]
    elif t.is_string_view(dtype) or t.is_binary_view(dtype):
        own = ["validity", "views"] + ["chars"] * next(variadic)
    elif t.is_decimal(dtype) or t.is_integer(dtype) or t.is_floating(dtype) or t.is_temporal(dtype):
        own = ["validity", f"number{dtype.bit_width // 8}"]
    elif t.is_fixed_size_binary(dtype):
        own = ["validity", "chars"]
    elif t.is_list(dtype) or t.is_map(dtype):
        own = ["validity", "offsets4"]
    elif t.is_large_list(dtype):
        own = ["validity", "offsets8"]
    elif t.is_list_view(dtype):
        own = ["validity", "offsets4", "sizes4"]
    elif t.is_large_list_view(dtype):
        own = ["validity", "offsets8", "sizes8"]
    elif t.is_fixed_size_list(dtype) or t.is_struct(dtype):
        own = ["validity"]
    elif t.is_union(dtype):
        own = ["type_ids"] + (["uoffsets4"] if dtype.mode == "dense" else [])
    else:
        raise _Unmodelled(str(dtype))
    out.extend(_Role(kind, node, dictionary_id) for kind in own)
    node += 1
    if not t.is_dictionary(dtype):
        for i in range(dtype.num_fields):
            node = _layout(dtype.field(i).type, node, variadic, out, -1)
    return node


def _roles(message: Message, types: list[tuple[pa.DataType, int]]) -> list[_Role] | None:
    """Roles of a batch message's buffers, for columns of these (type, dictionary id)."""
    table = _batch_table(message)
    if table is None:
        return None
    fb = _Fb(message.metadata)
    vector = fb.vector(table, 4)  # variadicBufferCounts: one per view-type column, preorder
    counts = [] if vector is None else [fb.read("<q", vector[1] + 8 * i) for i in range(vector[2])]
    out: list[_Role] = []
    node = 0
    try:
        for dtype, dictionary_id in types:
            node = _layout(dtype, node, iter(counts), out, dictionary_id)
    except (_Unmodelled, StopIteration):
        return None
    return out if len(out) == len(_buffers(message)) else None


def _parse(stream: bytes, codec: str | None) -> _Base:
    messages = split(stream)
    schema = pa.ipc.open_stream(stream).schema
    fb = _Fb(messages[0].metadata)
    field_ids = []  # dictionary id per top-level field, -1 when not dictionary-encoded
    for field in _schema_fields(messages[0]):
        encoding = fb.table(field, 4)
        pos = None if encoding is None else fb.field(encoding, 0)
        field_ids.append(-1 if encoding is None else 0 if pos is None else fb.read("<q", pos))
    value_types = {i: schema.field(n).type.value_type for n, i in enumerate(field_ids) if i >= 0}
    roles: list[list[_Role] | None] = []
    lengths: dict[int, int] = {}
    for message in messages:
        kind = _header_type(message)
        if kind == RECORD_BATCH:
            roles.append(_roles(message, [(schema.field(n).type, i) for n, i in enumerate(field_ids)]))
        elif kind == DICTIONARY_BATCH:
            header = _header(message)
            table = _batch_table(message)
            assert header is not None and table is not None
            pos = fb_pos = _Fb(message.metadata).field(header, 0)
            dictionary_id = 0 if pos is None else _Fb(message.metadata).read("<q", pos)
            dtype = value_types.get(dictionary_id)
            roles.append(None if dtype is None else _roles(message, [(dtype, -1)]))
            fb_pos = _Fb(message.metadata).field(table, 0)
            lengths.setdefault(dictionary_id, 0 if fb_pos is None else _Fb(message.metadata).read("<q", fb_pos))
        else:
            roles.append(None)
    return _Base(stream, messages, schema, roles, lengths, codec)


def _write(batches: list[pa.RecordBatch], schema: pa.Schema, codec: str | None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=codec, emit_dictionary_deltas=True)
    with pa.ipc.new_stream(sink, schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return bytes(sink.getvalue())


def recompressed(stream: bytes, codec: str) -> bytes:
    """The same batches and dictionaries, with each buffer compressed ("lz4" or "zstd")."""
    reader = pa.ipc.open_stream(stream)
    return _write(list(reader), reader.schema, codec)


def compression_bomb(stream: bytes, codec: str = "zstd", size: int = _BOMB_BYTES, declared: int | None = None) -> bytes:
    """`stream` compressed with `codec`, its first record batch's largest buffer replaced by `size` zero
    bytes compressed (~32 KB zstd, ~4 MB lz4 for 1 GiB) behind a prefix declaring `declared` (default:
    the true size). Rows and schema stay as they were: only decompression sees the bomb."""
    messages = split(recompressed(stream, codec))
    message = next(m for m in messages if _header_type(m) == RECORD_BATCH)
    raws = _raw_buffers(message)
    largest = max(range(len(raws)), key=lambda i: len(raws[i]))
    raws[largest] = struct.pack("<q", size if declared is None else declared) + _bomb(codec, size)
    assert _set_buffers(message, raws)
    return _stream(messages)


# --- mutations ---------------------------------------------------------------------------------------

Mutation = Callable[[random.Random, _Base, list[_Base]], bytes | None]
_MUTATIONS: dict[str, tuple[str, Mutation]] = {}


def _mutation(category: str) -> Callable[[Callable[..., bytes | None]], Callable[..., bytes | None]]:
    """Registers a mutation as "category.name"; it takes (rng, base) or (rng, base, all bases) and
    returns the mutated stream, or None when it does not apply to that base."""

    def register(fn: Callable[..., bytes | None]) -> Callable[..., bytes | None]:
        wants_bases = len(inspect.signature(fn).parameters) == 3

        def mutation(rng: random.Random, base: _Base, bases: list[_Base]) -> bytes | None:
            return fn(rng, base, bases) if wants_bases else fn(rng, base)

        _MUTATIONS[f"{category}.{fn.__name__.lstrip('_')}"] = (category, mutation)
        return fn

    return register


def _int_variant(rng: random.Random, value: int, bits: int = 64) -> int:
    """A boundary value near or far from `value`, within a signed integer of `bits` bits."""
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    choices = [0, 1, -1, value + 1, value - 1, value * 2, value + 8, value - 8, value + 1024]
    choices += [2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, -(2**31), -(2**63), high, low]
    return min(max(rng.choice(choices), low), high)


def _stream(messages: list[Message], eos: bool = True) -> bytes:
    return bytes(join(messages, eos)[0])


@dataclass
class _Target:
    """One buffer being edited: its message (a copy, free to patch), all its buffers decoded, its index
    and role, and the stream it came from."""

    message: Message
    decoded: list[bytes]
    index: int
    role: _Role
    base: _Base

    @property
    def width(self) -> int:
        return int(self.role.kind[-1])

    def node(self) -> tuple[int, int, int]:
        """(metadata position, length, null count) of the buffer's field node."""
        start, _ = _struct_vector(self.message, 1)
        pos = start + 16 * self.role.node
        length, null_count = struct.unpack_from("<qq", self.message.metadata, pos)
        return pos, length, null_count


Edit = Callable[[random.Random, bytearray, _Target], bytearray | None]
_INT = {1: "<b", 2: "<h", 4: "<i", 8: "<q"}


def _edit_buffer(rng: random.Random, base: _Base, wanted: Callable[[str], bool], edit: Edit) -> bytes | None:
    """Applies `edit(rng, content, target) -> new content` to one buffer whose role is wanted,
    decompressing and recompressing it when the message is compressed."""
    candidates = [
        (m, b)
        for m, roles in enumerate(base.roles)
        if roles
        for b, role in enumerate(roles)
        if wanted(role.kind) and base.messages[m].body
    ]
    if not candidates:
        return None
    m, b = rng.choice(candidates)
    messages = base.copy()
    message = messages[m]
    codec = _codec(message)
    raws = _raw_buffers(message)
    decoded = [_decode(raw, codec) for raw in raws]
    roles = base.roles[m]
    assert roles is not None
    new = edit(rng, bytearray(decoded[b]), _Target(message, decoded, b, roles[b], base))
    if new is None:
        return None
    raws[b] = _encode(bytes(new), codec)
    return _stream(messages) if _set_buffers(message, raws) else None


def _is_offsets(kind: str) -> bool:
    return kind.startswith(("offsets", "sizes", "uoffsets"))


@_mutation("buffer")
def _validity(rng: random.Random, base: _Base) -> bytes | None:
    """Validity bits flipped, cleared or set, the null count in the metadata left as it was."""

    def edit(rng: random.Random, data: bytearray, _target: _Target) -> bytearray | None:
        if not data:
            return None
        op = rng.randrange(3)
        if op == 0:
            for _ in range(rng.randint(1, 4)):
                bit = rng.randrange(len(data) * 8)
                data[bit // 8] ^= 1 << (bit % 8)
        else:
            data[:] = (b"\x00" if op == 1 else b"\xff") * len(data)
        return data

    return _edit_buffer(rng, base, lambda r: r == "validity", edit)


@_mutation("values")
def _validity_consistent(rng: random.Random, base: _Base) -> bytes | None:
    """Validity bits flipped and the node's null count updated to match: valid, with nulls elsewhere
    (where a reader's own rules may refuse them)."""

    def edit(rng: random.Random, data: bytearray, target: _Target) -> bytearray | None:
        pos, length, _ = target.node()
        if not data or length == 0 or len(data) * 8 < length:
            return None
        for _ in range(rng.randint(1, 3)):
            bit = rng.randrange(length)
            data[bit // 8] ^= 1 << (bit % 8)
        valid = sum((data[i // 8] >> (i % 8)) & 1 for i in range(length))
        struct.pack_into("<q", target.message.metadata, pos + 8, length - valid)
        return data

    return _edit_buffer(rng, base, lambda r: r == "validity", edit)


def _offset_edit(choose: Callable[[random.Random, list[int], int], None]) -> Edit:
    def edit(rng: random.Random, data: bytearray, target: _Target) -> bytearray | None:
        fmt, width = _INT[target.width], target.width
        count = len(data) // width
        if count < 2:
            return None
        values = [struct.unpack_from(fmt, data, width * i)[0] for i in range(count)]
        following = target.decoded[target.index + 1 :]
        choose(rng, values, len(following[0]) if following else 0)
        high = (1 << (8 * width - 1)) - 1
        for i, value in enumerate(values):
            struct.pack_into(fmt, data, width * i, max(min(value, high), -high - 1))
        return data

    return edit


@_mutation("buffer")
def _offsets_out_of_bounds(rng: random.Random, base: _Base) -> bytes | None:
    def choose(rng: random.Random, values: list[int], chars: int) -> None:
        i = rng.choice([len(values) - 1, rng.randrange(len(values))])
        values[i] = chars + rng.choice([1, 7, 64, 4096, 1 << 20])

    return _edit_buffer(rng, base, _is_offsets, _offset_edit(choose))


@_mutation("buffer")
def _offsets_decreasing(rng: random.Random, base: _Base) -> bytes | None:
    def choose(rng: random.Random, values: list[int], chars: int) -> None:
        i = rng.randrange(1, len(values))
        if rng.random() < 0.5:
            values[i - 1], values[i] = values[i], values[i - 1] + 1
        else:
            values[i] = values[i - 1] - rng.choice([1, 2, 1000])

    return _edit_buffer(rng, base, _is_offsets, _offset_edit(choose))


@_mutation("buffer")
def _offsets_huge(rng: random.Random, base: _Base) -> bytes | None:
    def choose(rng: random.Random, values: list[int], chars: int) -> None:
        values[rng.randrange(len(values))] = rng.choice([2**31 - 1, 2**31, -1, -(2**31), 2**62, -(2**62), 2**63 - 1])

    return _edit_buffer(rng, base, _is_offsets, _offset_edit(choose))


@_mutation("values")
def _offsets_shift(rng: random.Random, base: _Base) -> bytes | None:
    """Offsets that stay in bounds and ordered: the values change, maybe splitting a UTF-8 sequence."""

    def choose(rng: random.Random, values: list[int], chars: int) -> None:
        i = rng.randrange(len(values))
        low = values[i - 1] if i else 0
        high = values[i + 1] if i + 1 < len(values) else chars
        if high >= low:
            values[i] = rng.randint(low, high)

    return _edit_buffer(rng, base, lambda r: r.startswith("offsets"), _offset_edit(choose))


def _index_edit(out_of_range: bool) -> Edit:
    def edit(rng: random.Random, data: bytearray, target: _Target) -> bytearray | None:
        fmt, width = _INT[target.width], target.width
        count = len(data) // width
        if count == 0:
            return None
        size = target.base.dictionary_lengths.get(target.role.dictionary_id, 1)
        high = (1 << (8 * width - 1)) - 1
        for _ in range(rng.randint(1, 3)):
            if out_of_range:
                value = rng.choice([size, size + 1, size + 100, -1, -high - 1, high])
            else:
                value = rng.randrange(max(size, 1))
            struct.pack_into(fmt, data, width * rng.randrange(count), min(max(value, -high - 1), high))
        return data

    return edit


@_mutation("buffer")
def _indices_out_of_range(rng: random.Random, base: _Base) -> bytes | None:
    return _edit_buffer(rng, base, lambda r: r.startswith("indices"), _index_edit(True))


@_mutation("values")
def _indices_in_range(rng: random.Random, base: _Base) -> bytes | None:
    return _edit_buffer(rng, base, lambda r: r.startswith("indices"), _index_edit(False))


@_mutation("buffer")
def _chars_invalid_utf8(rng: random.Random, base: _Base) -> bytes | None:
    def edit(rng: random.Random, data: bytearray, _target: _Target) -> bytearray | None:
        if not data:
            return None
        bad = rng.choice(_INVALID_UTF8)
        at = rng.randrange(len(data))
        data[at : at + len(bad)] = bad[: len(data) - at]
        return data

    return _edit_buffer(rng, base, lambda r: r == "chars", edit)


@_mutation("values")
def _chars_ascii(rng: random.Random, base: _Base) -> bytes | None:
    def edit(rng: random.Random, data: bytearray, _target: _Target) -> bytearray | None:
        ascii_at = [i for i, c in enumerate(data) if c < 0x80]
        if not ascii_at:
            return None
        for _ in range(rng.randint(1, 4)):
            data[rng.choice(ascii_at)] = rng.randrange(0x20, 0x7F)
        return data

    return _edit_buffer(rng, base, lambda r: r == "chars", edit)


@_mutation("values")
def _numbers(rng: random.Random, base: _Base) -> bytes | None:
    """Values change (NaN, infinities, extremes included); the structure stays valid."""

    def edit(rng: random.Random, data: bytearray, _target: _Target) -> bytearray | None:
        if not data:
            return None
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        return data

    return _edit_buffer(rng, base, lambda r: r.startswith("number") or r == "bits", edit)


@_mutation("buffer")
def _views(rng: random.Random, base: _Base) -> bytes | None:
    """A string view's length, variadic buffer index or offset (16-byte views: length, prefix, index,
    offset; inline up to 12 bytes)."""

    def edit(rng: random.Random, data: bytearray, _target: _Target) -> bytearray | None:
        if len(data) < 16:
            return None
        at = 16 * rng.randrange(len(data) // 16) + rng.choice([0, 8, 12])
        struct.pack_into("<i", data, at, rng.choice([13, 64, 2**31 - 1, -1, 1, 99]))
        return data

    return _edit_buffer(rng, base, lambda r: r == "views", edit)


@_mutation("buffer")
def _type_ids(rng: random.Random, base: _Base) -> bytes | None:
    """Union type ids naming no child."""

    def edit(rng: random.Random, data: bytearray, _target: _Target) -> bytearray | None:
        if not data:
            return None
        data[rng.randrange(len(data))] = rng.choice([2, 5, 127, 128, 255])
        return data

    return _edit_buffer(rng, base, lambda r: r == "type_ids", edit)


@_mutation("buffer")
def _resize(rng: random.Random, base: _Base) -> bytes | None:
    """A buffer made shorter or longer than its column needs, its metadata length to match."""

    def edit(rng: random.Random, data: bytearray, _target: _Target) -> bytearray | None:
        if rng.random() < 0.5 and data:
            return data[: rng.randrange(len(data))]
        return data + bytes(rng.randrange(256) for _ in range(rng.choice([1, 8, 64])))

    return _edit_buffer(rng, base, lambda r: True, edit)


@_mutation("buffer")
def _body_flip(rng: random.Random, base: _Base) -> bytes | None:
    """Raw byte flips inside one message body: buffers and compressed frames alike."""
    candidates = [i for i, m in enumerate(base.messages) if m.body]
    if not candidates:
        return None
    messages = base.copy()
    body = messages[rng.choice(candidates)].body
    for _ in range(rng.randint(1, 8)):
        body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    return _stream(messages)


def _meta_edit(base: _Base, rng: random.Random, where: Callable[[Message], list[tuple[int, int]]]) -> bytes | None:
    """Overwrites one metadata integer among `where(message) -> [(position, bits)]` with a variant."""
    messages = base.copy()
    candidates = [(m, p, bits) for m, message in enumerate(messages) for p, bits in where(message)]
    if not candidates:
        return None
    m, pos, bits = rng.choice(candidates)
    fmt = {8: "<b", 16: "<h", 32: "<i", 64: "<q"}[bits]
    metadata = messages[m].metadata
    struct.pack_into(fmt, metadata, pos, _int_variant(rng, struct.unpack_from(fmt, metadata, pos)[0], bits))
    return _stream(messages)


@_mutation("meta")
def _batch_length(rng: random.Random, base: _Base) -> bytes | None:
    def where(message: Message) -> list[tuple[int, int]]:
        table = _batch_table(message)
        pos = None if table is None else _Fb(message.metadata).field(table, 0)
        return [] if pos is None else [(pos, 64)]

    return _meta_edit(base, rng, where)


@_mutation("meta")
def _node_length(rng: random.Random, base: _Base) -> bytes | None:
    def where(message: Message) -> list[tuple[int, int]]:
        start, count = _struct_vector(message, 1)
        return [(start + 16 * i, 64) for i in range(count)]

    return _meta_edit(base, rng, where)


@_mutation("meta")
def _node_null_count(rng: random.Random, base: _Base) -> bytes | None:
    def where(message: Message) -> list[tuple[int, int]]:
        start, count = _struct_vector(message, 1)
        return [(start + 16 * i + 8, 64) for i in range(count)]

    return _meta_edit(base, rng, where)


@_mutation("meta")
def _buffer_offset(rng: random.Random, base: _Base) -> bytes | None:
    def where(message: Message) -> list[tuple[int, int]]:
        start, count = _struct_vector(message, 2)
        return [(start + 16 * i, 64) for i in range(count)]

    return _meta_edit(base, rng, where)


@_mutation("meta")
def _buffer_length(rng: random.Random, base: _Base) -> bytes | None:
    def where(message: Message) -> list[tuple[int, int]]:
        start, count = _struct_vector(message, 2)
        return [(start + 16 * i + 8, 64) for i in range(count)]

    return _meta_edit(base, rng, where)


@_mutation("meta")
def _body_length(rng: random.Random, base: _Base) -> bytes | None:
    def where(message: Message) -> list[tuple[int, int]]:
        fb = _Fb(message.metadata)
        pos = fb.field(fb.root(), 3)
        return [] if pos is None else [(pos, 64)]

    return _meta_edit(base, rng, where)


@_mutation("meta")
def _vector_count(rng: random.Random, base: _Base) -> bytes | None:
    """The item count of a nodes, buffers or schema-fields vector."""

    def where(message: Message) -> list[tuple[int, int]]:
        fb = _Fb(message.metadata)
        table = _batch_table(message)
        found = []
        if table is not None:
            found = [fb.vector(table, 1), fb.vector(table, 2)]
        elif _header_type(message) == SCHEMA and (header := _header(message)) is not None:
            found = [fb.vector(header, 1)]
        return [(v[0], 32) for v in found if v is not None]

    return _meta_edit(base, rng, where)


@_mutation("meta")
def _version(rng: random.Random, base: _Base) -> bytes | None:
    messages = base.copy()
    message = rng.choice(messages)
    fb = _Fb(message.metadata)
    pos = fb.field(fb.root(), 0)
    if pos is None:
        return None
    struct.pack_into("<h", message.metadata, pos, rng.choice([0, 1, 2, 3, 5, -1]))
    return _stream(messages)


@_mutation("meta")
def _header_type_change(rng: random.Random, base: _Base) -> bytes | None:
    messages = base.copy()
    message = rng.choice(messages)
    fb = _Fb(message.metadata)
    pos = fb.field(fb.root(), 1)
    if pos is None:
        return None
    message.metadata[pos] = rng.choice([v for v in range(7) if v != message.metadata[pos]] + [255])
    return _stream(messages)


@_mutation("meta")
def _flip(rng: random.Random, base: _Base) -> bytes | None:
    messages = base.copy()
    metadata = rng.choice(messages).metadata
    for _ in range(rng.randint(1, 4)):
        metadata[rng.randrange(len(metadata))] ^= 1 << rng.randrange(8)
    return _stream(messages)


@_mutation("meta")
def _rows_shrunk(rng: random.Random, base: _Base) -> bytes | None:
    """A record batch's length and its columns' node lengths lowered together: extra data is ignored,
    unless a column's null count no longer matches."""
    messages = base.copy()
    batches = [m for m in messages if _header_type(m) == RECORD_BATCH]
    if not batches:
        return None
    message = rng.choice(batches)
    table = _batch_table(message)
    assert table is not None
    fb = _Fb(message.metadata)
    pos = fb.field(table, 0)
    if pos is None:
        return None
    rows = fb.read("<q", pos)
    if rows < 2:
        return None
    new = rng.randrange(1, rows)
    struct.pack_into("<q", message.metadata, pos, new)
    start, count = _struct_vector(message, 1)
    for i in range(count):
        if fb.read("<q", start + 16 * i) == rows:
            struct.pack_into("<q", message.metadata, start + 16 * i, new)
    return _stream(messages)


def _schema_edit(rng: random.Random, base: _Base, edit: Callable[[random.Random, _Fb, int], bool]) -> bytes | None:
    messages = base.copy()
    schema = messages[0]
    fields = _schema_fields(schema)
    if not fields:
        return None
    rng.shuffle(fields)
    for field in fields:
        if edit(rng, _Fb(schema.metadata), field):
            return _stream(messages)
    return None


def _name(fb: _Fb, field: int) -> tuple[int, int] | None:
    """(position of the name's length word, length) of a Field."""
    pos = fb.table(field, 0)
    return None if pos is None else (pos, fb.read("<I", pos))


@_mutation("schema")
def _name_invalid_utf8(rng: random.Random, base: _Base) -> bytes | None:
    def edit(rng: random.Random, fb: _Fb, field: int) -> bool:
        name = _name(fb, field)
        if name is None or name[1] == 0:
            return False
        pos, length = name
        bad = rng.choice(_INVALID_UTF8)[:length]
        at = pos + 4 + rng.randrange(length - len(bad) + 1)
        fb.data[at : at + len(bad)] = bad
        return True

    return _schema_edit(rng, base, edit)


@_mutation("schema")
def _name_length(rng: random.Random, base: _Base) -> bytes | None:
    def edit(rng: random.Random, fb: _Fb, field: int) -> bool:
        name = _name(fb, field)
        if name is None:
            return False
        value = rng.choice([name[1] + 1, name[1] + 64, 0, 2**31 - 1, 2**32 - 1])
        struct.pack_into("<I", fb.data, name[0], value)
        return True

    return _schema_edit(rng, base, edit)


@_mutation("schema")
def _rename(rng: random.Random, base: _Base) -> bytes | None:
    """A valid new name (maybe a duplicate of another column's): reaches the caller's schema checks."""

    def edit(rng: random.Random, fb: _Fb, field: int) -> bool:
        name = _name(fb, field)
        if name is None or name[1] == 0:
            return False
        pos, length = name
        names = [bytes(f.name, "utf-8") for f in base.schema if len(bytes(f.name, "utf-8")) == length]
        new = (
            rng.choice(names) if names and rng.random() < 0.3 else bytes(rng.choice(b"abcxyz_") for _ in range(length))
        )
        fb.data[pos + 4 : pos + 4 + length] = new
        return True

    return _schema_edit(rng, base, edit)


@_mutation("schema")
def _type(rng: random.Random, base: _Base) -> bytes | None:
    def edit(rng: random.Random, fb: _Fb, field: int) -> bool:
        pos = fb.field(field, 2)
        if pos is None:
            return False
        fb.data[pos] = rng.choice([v for v in _TYPE_IDS if v != fb.data[pos]] + [200])
        return True

    return _schema_edit(rng, base, edit)


@_mutation("schema")
def _type_params(rng: random.Random, base: _Base) -> bytes | None:
    """Int bitWidth / signedness, FloatingPoint precision, FixedSizeBinary width and the like: the first
    one or two fields of the type table."""

    def edit(rng: random.Random, fb: _Fb, field: int) -> bool:
        table = fb.table(field, 3)
        if table is None:
            return False
        width = fb.field(table, 0)
        signed = fb.field(table, 1)
        if width is not None and (signed is None or rng.random() < 0.7):
            type_pos = fb.field(field, 2)
            if type_pos is not None and fb.data[type_pos] == 3:  # FloatingPoint.precision: short
                struct.pack_into("<h", fb.data, width, rng.choice([0, 1, 2, 3, -1]))
            else:
                struct.pack_into("<i", fb.data, width, rng.choice([8, 16, 32, 64, 0, 7, 128, -8]))
            return True
        if signed is not None:
            fb.data[signed] ^= 1
            return True
        return False

    return _schema_edit(rng, base, edit)


@_mutation("schema")
def _nullable(rng: random.Random, base: _Base) -> bytes | None:
    def edit(rng: random.Random, fb: _Fb, field: int) -> bool:
        pos = fb.field(field, 1)
        if pos is None:
            return False
        fb.data[pos] ^= 1
        return True

    return _schema_edit(rng, base, edit)


@_mutation("schema")
def _dictionary_encoding(rng: random.Random, base: _Base) -> bytes | None:
    """A dictionary-encoded field's dictionary id, index type width or signedness."""

    def edit(rng: random.Random, fb: _Fb, field: int) -> bool:
        encoding = fb.table(field, 4)
        if encoding is None:
            return False
        index_type = fb.table(encoding, 1)
        choice = rng.randrange(3)
        if choice == 0 and (pos := fb.field(encoding, 0)) is not None:
            struct.pack_into("<q", fb.data, pos, rng.choice([1, 2, 7, -1, 2**40]))
        elif choice == 1 and index_type is not None and (pos := fb.field(index_type, 0)) is not None:
            struct.pack_into("<i", fb.data, pos, rng.choice([8, 16, 64, 3]))
        elif index_type is not None and (pos := fb.field(index_type, 1)) is not None:
            fb.data[pos] ^= 1
        else:
            return False
        return True

    return _schema_edit(rng, base, edit)


_EXTENSION_NAMES = (b"arrow.uuid", b"arrow.json", b"arrow.bool8", b"arrow.opaque", b"arrow.fixed_shape_tensor")


@_mutation("schema")
def _custom_metadata(rng: random.Random, base: _Base) -> bytes | None:
    """A field's custom metadata, where extension types live ("ARROW:extension:name" / "...:metadata"):
    another extension name of the same length, or the metadata (JSON for tensors) edited in place."""

    def edit(rng: random.Random, fb: _Fb, field: int) -> bool:
        vector = fb.vector(field, 6)
        if vector is None or vector[2] == 0:
            return False
        _, start, count = vector
        pair = start + 4 * rng.randrange(count)
        pair += fb.read("<I", pair)
        value = fb.table(pair, 1)
        if value is None:
            return False
        length = fb.read("<I", value)
        data = fb.data
        current = bytes(data[value + 4 : value + 4 + length])
        names = [n for n in _EXTENSION_NAMES if len(n) == length and n != current]
        if names and rng.random() < 0.5:
            data[value + 4 : value + 4 + length] = rng.choice(names)
        elif length and rng.random() < 0.8:
            for _ in range(rng.randint(1, 3)):
                at = value + 4 + rng.randrange(length)
                data[at] = rng.choice(b'9-0,[]{}"x\xff' if data[at] in b"0123456789" else b'9,[]{}"\xff')
        else:
            struct.pack_into("<I", data, value, rng.choice([0, length + 1, 2**31]))
        return True

    return _schema_edit(rng, base, edit)


@_mutation("schema")
def _swap(rng: random.Random, base: _Base, bases: list[_Base]) -> bytes | None:
    """Another stream's schema in front of these batches."""
    others = [b for b in bases if bytes(b.messages[0].metadata) != bytes(base.messages[0].metadata)]
    if not others:
        return None
    messages = base.copy()
    messages[0] = rng.choice(others).messages[0].copy()
    return _stream(messages)


@_mutation("schema")
def _columns(rng: random.Random, base: _Base) -> bytes | None:
    """The stream rewritten by pyarrow with other columns: one dropped, added, repeated, moved, cast to
    another type, given nulls or nested in a list; or fewer or more rows, in batches of other sizes.
    Valid streams, whose schema and values only a reader's own rules can refuse."""
    table = pa.ipc.open_stream(base.stream).read_all()
    if table.num_columns == 0:
        return None
    i = rng.randrange(table.num_columns)
    column, name, rows = table.column(i), table.column_names[i], table.num_rows
    op = rng.randrange(7)
    try:
        if op == 0:
            table = table.remove_column(i)
        elif op == 1:
            extra = pa.array([rng.choice([None, rng.random()]) for _ in range(rows)], pa.float64())
            table = table.append_column(rng.choice(["extra", name, "", "é"]), extra)
        elif op == 2:
            order = list(range(table.num_columns))
            rng.shuffle(order)
            table = table.select(order)
        elif op == 3:
            targets = [pa.float32(), pa.int8(), pa.uint64(), pa.string(), pa.large_string(), pa.string_view()]
            targets += [pa.bool_(), pa.dictionary(pa.int16(), pa.string()), pa.null(), pa.timestamp("s")]
            table = table.set_column(i, name, pc.cast(column, rng.choice(targets), safe=False))
        elif op == 4:
            mask = pa.array([rng.random() < 0.3 for _ in range(rows)])
            table = table.set_column(i, name, pc.if_else(mask, pa.scalar(None, column.type), column))
        elif op == 5:
            values = column.combine_chunks()
            offsets = pa.array(range(rows + 1), pa.int32())
            table = table.set_column(i, name, pa.ListArray.from_arrays(offsets, values))
        else:
            table = table.slice(rng.randrange(rows + 1)) if rng.random() < 0.5 else pa.concat_tables([table] * 3)
        batches = table.to_batches(max_chunksize=rng.choice([None, 1, 2, 4]))
        return _write(batches, table.schema, base.codec)
    except (pa.ArrowException, ValueError, TypeError):
        return None  # not every column casts or combines to every type


def _dictionaries(messages: list[Message]) -> list[int]:
    return [i for i, m in enumerate(messages) if _header_type(m) == DICTIONARY_BATCH]


@_mutation("dict")
def _id(rng: random.Random, base: _Base) -> bytes | None:
    messages = base.copy()
    found = _dictionaries(messages)
    if not found:
        return None
    message = messages[rng.choice(found)]
    header = _header(message)
    assert header is not None
    pos = _Fb(message.metadata).field(header, 0)
    if pos is None:
        return None
    struct.pack_into("<q", message.metadata, pos, rng.choice([0, 1, 2, 3, 99, -1, 2**62]))
    return _stream(messages)


@_mutation("dict")
def _delta_flag(rng: random.Random, base: _Base) -> bytes | None:
    messages = base.copy()
    found = []
    for i in _dictionaries(messages):
        header = _header(messages[i])
        assert header is not None
        pos = _Fb(messages[i].metadata).field(header, 2)
        if pos is not None:
            found.append((i, pos))
    if not found:
        return None
    i, pos = rng.choice(found)
    messages[i].metadata[pos] ^= 1
    return _stream(messages)


@_mutation("dict")
def _drop(rng: random.Random, base: _Base) -> bytes | None:
    messages = base.copy()
    found = _dictionaries(messages)
    if not found:
        return None
    del messages[rng.choice(found)]
    return _stream(messages)


@_mutation("dict")
def _duplicate(rng: random.Random, base: _Base) -> bytes | None:
    """A dictionary sent again (a replacement or a second delta), right away or later."""
    messages = base.copy()
    found = _dictionaries(messages)
    if not found:
        return None
    i = rng.choice(found)
    messages.insert(rng.randint(i + 1, len(messages)), messages[i].copy())
    return _stream(messages)


@_mutation("dict")
def _after_batch(rng: random.Random, base: _Base) -> bytes | None:
    """A dictionary moved behind the first record batch that needs it."""
    messages = base.copy()
    found = _dictionaries(messages)
    batches = [i for i, m in enumerate(messages) if _header_type(m) == RECORD_BATCH]
    if not found or not batches:
        return None
    i = rng.choice(found)
    message = messages.pop(i)
    messages.insert(min(batches[0] + 1, len(messages)), message)
    return _stream(messages)


@_mutation("dict")
def _from_other(rng: random.Random, base: _Base, bases: list[_Base]) -> bytes | None:
    """A dictionary batch from another stream in place of one of these (same id, other values)."""
    messages = base.copy()
    found = _dictionaries(messages)
    donors = [m for b in bases if b is not base for m in b.messages if _header_type(m) == DICTIONARY_BATCH]
    if not found or not donors:
        return None
    messages[rng.choice(found)] = rng.choice(donors).copy()
    return _stream(messages)


def _compressed_buffer(rng: random.Random, messages: list[Message]) -> tuple[Message, int, int] | None:
    """(message, buffer index, codec) of a nonempty compressed buffer."""
    candidates = [
        (m, b, codec)
        for m in messages
        if (codec := _codec(m)) is not None
        for b, (_, length) in enumerate(_buffers(m))
        if length >= 8
    ]
    return rng.choice(candidates) if candidates else None


@_mutation("compression")
def _declared_length(rng: random.Random, base: _Base) -> bytes | None:
    """The 8-byte uncompressed-length prefix of a compressed buffer, lying."""
    messages = base.copy()
    found = _compressed_buffer(rng, messages)
    if found is None:
        return None
    message, b, _ = found
    offset = _buffers(message)[b][0]
    (declared,) = struct.unpack_from("<q", message.body, offset)
    value = rng.choice([declared - 1, declared + 1, declared * 2, 0, -1, -2, 2**40, 2**62, 2**63 - 1, -(2**63)])
    struct.pack_into("<q", message.body, offset, value)
    return _stream(messages)


@_mutation("compression")
def _codec_change(rng: random.Random, base: _Base) -> bytes | None:
    messages = base.copy()
    found = []
    for m in messages:
        table = _batch_table(m)
        compression = None if table is None else _Fb(m.metadata).table(table, 3)
        if compression is not None:
            for slot in (0, 1):
                if (pos := _Fb(m.metadata).field(compression, slot)) is not None:
                    found.append((m, pos))
    if not found:
        return None
    message, pos = rng.choice(found)
    message.metadata[pos] = rng.choice([0, 1, 2, 127, 255])
    return _stream(messages)


def _with_bomb(rng: random.Random, base: _Base, lie: bool) -> bytes | None:
    messages = base.copy()
    found = _compressed_buffer(rng, messages)
    if found is None:
        return None
    message, b, codec = found
    bomb = _bomb(_CODEC_NAMES[codec], _BOMB_BYTES)
    declared = rng.choice([1, 4096, 1 << 20, _BOMB_BYTES // 2, _BOMB_BYTES - 1]) if lie else _BOMB_BYTES
    raws = _raw_buffers(message)
    raws[b] = struct.pack("<q", declared) + bomb
    return _stream(messages) if _set_buffers(message, raws) else None


@_mutation("compression")
def _bomb_declared(rng: random.Random, base: _Base) -> bytes | None:
    """A real bomb: ~32 KB (zstd) or ~4 MB (lz4) that truly decompresses to 1 GiB, and says so."""
    return _with_bomb(rng, base, lie=False)


@_mutation("compression")
def _bomb_lying(rng: random.Random, base: _Base) -> bytes | None:
    """The same bomb declaring a smaller size: decompression must stop at the declared size."""
    return _with_bomb(rng, base, lie=True)


@_mutation("compression")
def _garbage(rng: random.Random, base: _Base) -> bytes | None:
    """Compressed bytes replaced by random ones behind an honest-looking prefix."""
    messages = base.copy()
    found = _compressed_buffer(rng, messages)
    if found is None:
        return None
    message, b, _ = found
    offset, length = _buffers(message)[b]
    for i in range(offset + 8, offset + length):
        if rng.random() < 0.3:
            message.body[i] = rng.randrange(256)
    return _stream(messages)


@_mutation("stream")
def _truncate(rng: random.Random, base: _Base) -> bytes | None:
    stream = _stream(base.messages)
    return stream[: rng.randrange(len(stream))]


@_mutation("stream")
def _truncate_at_message(rng: random.Random, base: _Base) -> bytes | None:
    """Cut after a message: no end-of-stream marker, maybe no batches."""
    return _stream(base.copy()[: rng.randint(1, len(base.messages))], eos=False)


@_mutation("stream")
def _drop_message(rng: random.Random, base: _Base) -> bytes | None:
    messages = base.copy()
    del messages[rng.randrange(len(messages))]
    return _stream(messages)


@_mutation("stream")
def _duplicate_message(rng: random.Random, base: _Base) -> bytes | None:
    messages = base.copy()
    i = rng.randrange(len(messages))
    messages.insert(rng.randint(0, len(messages)), messages[i].copy())
    return _stream(messages)


@_mutation("stream")
def _swap_messages(rng: random.Random, base: _Base) -> bytes | None:
    messages = base.copy()
    if len(messages) < 2:
        return None
    i, j = rng.sample(range(len(messages)), 2)
    messages[i], messages[j] = messages[j], messages[i]
    return _stream(messages)


@_mutation("stream")
def _reverse_batches(rng: random.Random, base: _Base) -> bytes | None:
    """Record batches in reverse order (valid: same rows, other order)."""
    messages = base.copy()
    at = [i for i, m in enumerate(messages) if _header_type(m) == RECORD_BATCH]
    for i, message in zip(at, [messages[i] for i in reversed(at)], strict=True):
        messages[i] = message
    return _stream(messages)


@_mutation("stream")
def _splice(rng: random.Random, base: _Base, bases: list[_Base]) -> bytes | None:
    """A message of another stream inserted among these."""
    messages = base.copy()
    donor = rng.choice(bases).messages
    messages.insert(rng.randint(1, len(messages)), rng.choice(donor).copy())
    return _stream(messages)


@_mutation("stream")
def _repeat_batch(rng: random.Random, base: _Base) -> bytes | None:
    """One record batch sent many times: more rows than a reader allows, or just more batches."""
    messages = base.copy()
    at = [i for i, m in enumerate(messages) if _header_type(m) == RECORD_BATCH]
    if not at:
        return None
    i = rng.choice(at)
    messages[i + 1 : i + 1] = [messages[i].copy() for _ in range(rng.choice([1, 10, 100, 2_000]))]
    return _stream(messages)


@_mutation("stream")
def _end(rng: random.Random, base: _Base) -> bytes | None:
    """No end-of-stream marker, or garbage (another stream, random bytes) after it."""
    choice = rng.randrange(3)
    if choice == 0:
        return _stream(base.messages, eos=False)
    tail = _stream(base.messages) if choice == 1 else bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return _stream(base.messages) + tail


@_mutation("stream")
def _length_prefix(rng: random.Random, base: _Base) -> bytes | None:
    """A message's metadata length prefix: early end-of-stream (0), off by some, negative, huge."""
    stream, starts = join(base.copy())
    start = rng.choice(starts)
    (length,) = struct.unpack_from("<i", stream, start + 4)
    struct.pack_into("<i", stream, start + 4, _int_variant(rng, length, 32))
    return bytes(stream)


@_mutation("stream")
def _continuation(rng: random.Random, base: _Base) -> bytes | None:
    """A broken 0xFFFFFFFF continuation marker (read as a pre-0.15 length prefix)."""
    stream, starts = join(base.copy())
    stream[rng.choice(starts) + rng.randrange(4)] = rng.randrange(256)
    return bytes(stream)


@_mutation("random")
def _random_flip(rng: random.Random, base: _Base) -> bytes | None:
    stream = bytearray(_stream(base.messages))
    for _ in range(rng.randint(1, 16)):
        stream[rng.randrange(len(stream))] = rng.randrange(256)
    return bytes(stream)


@_mutation("random")
def _random_bytes(rng: random.Random, base: _Base) -> bytes | None:
    """Not a stream at all; sometimes behind a valid-looking first length prefix."""
    noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 512)))
    return (_CONTINUATION + noise) if rng.random() < 0.5 else noise


# Share of cases per category: most mutations are structure-aware; random bytes are a small share.
CATEGORY_WEIGHTS = {
    "values": 20,  # well-formed, other values: reach a reader's own rules (where the server once crashed)
    "buffer": 20,
    "meta": 14,
    "schema": 14,
    "dict": 10,
    "compression": 10,
    "stream": 12,
    "random": 5,
}
MUTATION_KINDS: tuple[str, ...] = tuple(_MUTATIONS)


def mutated_streams(valid_streams: list[bytes], n: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """`n` mutated streams as (mutation kind, stream), the same ones for the same arguments.

    `valid_streams` are Arrow IPC streams that read and validate (pyarrow-written, little-endian); each is
    also re-encoded with LZ4 and ZSTD compression, so every kind of mutation has a stream it applies to."""
    bases = []
    for stream in valid_streams:
        bases.append(_parse(stream, None))
        for codec in ("lz4", "zstd"):
            bases.append(_parse(recompressed(stream, codec), codec))
    rng = random.Random(seed)
    categories = list(CATEGORY_WEIGHTS)
    weights = [CATEGORY_WEIGHTS[c] for c in categories]
    by_category = {c: [k for k, (cat, _) in _MUTATIONS.items() if cat == c] for c in categories}
    for _ in range(n):
        for _attempt in range(20):
            kind = rng.choice(by_category[rng.choices(categories, weights)[0]])
            fn = _MUTATIONS[kind][1]
            pool = [b for b in bases if b.codec] if kind.startswith("compression.") else list(bases)
            rng.shuffle(pool)
            out = next((out for base in pool[:8] if (out := fn(rng, base, bases)) is not None), None)
            if out is not None:
                yield kind, out
                break
        else:
            raise RuntimeError("no mutation applies to these streams")
