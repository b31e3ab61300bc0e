"""kennel.serving.arrow_ipc: hostile Arrow IPC streams are refused as ArrowStreamError, never crash the
worker, never decompress past the budget; valid ones (compressed ones included) read unchanged.

The fuzz runs mutated streams (tests/arrow_mutations.py) in a subprocess, so a segfault fails the test
instead of killing pytest, and measures that process's peak memory."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from kennel.serving.arrow_ipc import ArrowStreamError, read_stream
from tests import arrow_mutations as am

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
PROBLEM_TYPES = {
    "arrow_invalid",
    "arrow_corrupt",
    "arrow_unsupported",
    "arrow_compressed_too_large",
    "arrow_too_large",
    "row_count",
}

# --- valid streams -----------------------------------------------------------------------------------


def _table(rows: int = 6, offset: int = 0) -> pa.Table:
    """Float, int, bool, string (non-ASCII too), dictionary-encoded strings, nullable columns."""
    cities = ["Zürich", "東京", "Lyon", None, "Québec", "Oslo"]
    colors = ["red", "green", "blue"]
    return pa.table(
        {
            "score": pa.array([None if (i + offset) % 5 == 3 else (i + offset) / 7 for i in range(rows)], pa.float64()),
            "count": pa.array([(i + offset) * 3 for i in range(rows)], pa.int64()),
            "small": pa.array([None if i % 4 == 1 else i for i in range(rows)], pa.int32()),
            "flag": pa.array([None if i % 6 == 5 else i % 2 == 0 for i in range(rows)], pa.bool_()),
            "city": pa.array([cities[(i + offset) % len(cities)] for i in range(rows)], pa.string()),
            "color": pa.array([colors[(i + offset) % 3] for i in range(rows)]).dictionary_encode(),
            "tier": pa.DictionaryArray.from_arrays(
                pa.array([None if i % 3 == 2 else i % 2 for i in range(rows)], pa.int8()), pa.array(["gold", "tin"])
            ),
        }
    )


def _nested() -> pa.RecordBatch:
    """Nested and view types: full validation must cover their children, views and type ids too."""
    return pa.record_batch(
        {
            "tags": pa.array([["a", "b"], None, [], ["ü"]], pa.list_(pa.string())),
            "point": pa.array(
                [{"x": 1, "s": "p"}, None, {"x": 3, "s": None}, {"x": 4, "s": "q"}],
                pa.struct([("x", pa.int32()), ("s", pa.string())]),
            ),
            "attrs": pa.array([[("k", 1)], None, [], [("a", 2), ("b", 3)]], pa.map_(pa.string(), pa.int64())),
            "big": pa.array(["x", None, "yy", "zzz"], pa.large_string()),
            "view": pa.array(["short", None, "a string longer than twelve bytes", "é"], pa.string_view()),
            "pair": pa.array([[1.0, 2.0], None, [3.0, 4.0], [5.0, 6.0]], pa.list_(pa.float32(), 2)),
            "runs": pa.RunEndEncodedArray.from_arrays(pa.array([2, 4], pa.int32()), pa.array(["u", "v"])),
            "spans": pa.array([[1], None, [2, 3], []], pa.list_view(pa.int16())),
            "either": pa.UnionArray.from_dense(
                pa.array([0, 1, 0, 1], pa.int8()),
                pa.array([0, 0, 1, 1], pa.int32()),
                [pa.array([1, 2]), pa.array(["s", "t"])],
            ),
            "codes": pa.array([["a"], ["b", "a"], None, []], pa.list_(pa.dictionary(pa.int32(), pa.string()))),
        }
    )


def _extensions() -> pa.RecordBatch:
    """Extension types pyarrow registers, read back from field metadata (tensor shapes are JSON)."""
    return pa.record_batch(
        {
            "id": pa.array([b"0123456789abcdef", b"fedcba9876543210"], pa.binary(16)).cast(pa.uuid()),
            "doc": pa.array(['{"a": 1}', "[1, 2]"], pa.json_()),
            "ok": pa.array([0, 1], pa.int8()).cast(pa.bool8()),
            "grid": pa.FixedShapeTensorArray.from_numpy_ndarray(np.arange(8, dtype=np.float32).reshape(2, 2, 2)),
        }
    )


def _write(batches: list[pa.RecordBatch], **options: object) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema, options=pa.ipc.IpcWriteOptions(**options)) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return bytes(sink.getvalue())


def valid_streams() -> list[bytes]:
    """One batch; three batches with replacement dictionaries; growing dictionaries sent as deltas;
    a zero-row batch; a different, small schema (for splicing); nested and view types; extension types."""
    one = _table(6).to_batches()[0]
    three = [_table(5, offset=k).to_batches()[0] for k in range(3)]
    grow = [
        pa.record_batch(
            [pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32()), pa.array(values)), pa.array(idx, pa.int64())],
            names=["color", "n"],
        )
        for idx, values in (([0, 1, 0], ["red", "green"]), ([2, 0, 2, 1], ["red", "green", "blåå"]))
    ]
    small = pa.record_batch([pa.array([1.5, None, 2.5]), pa.array(["x", "y", None])], names=["score", "city"])
    return [
        _write([one]),
        _write(three),
        _write(grow, emit_dictionary_deltas=True),
        _write([one.slice(0, 0)]),
        _write([small]),
        _write([_nested()]),
        _write([_extensions()]),
    ]


def _read(body: bytes, max_rows: int = 1_000, max_decoded_bytes: int = 64 * MIB) -> pa.Table:
    return read_stream(body, max_rows=max_rows, max_decoded_bytes=max_decoded_bytes)


def _refused(body: bytes, **limits: int) -> list[dict]:
    with pytest.raises(ArrowStreamError) as caught:
        _read(body, **limits)
    problems = caught.value.problems
    for problem in problems:
        assert set(problem) == {"type", "loc", "msg"} and problem["type"] in PROBLEM_TYPES, problem
        assert problem["msg"].isascii() and isinstance(problem["loc"], list), problem
    json.dumps(problems)
    return problems


def _patched(stream: bytes, find: bytes, replace: bytes, nth: int = 0) -> bytes:
    at = -1
    for _ in range(nth + 1):
        at = stream.index(find, at + 1)
    return stream[:at] + replace + stream[at + len(replace) :]


# --- valid streams read unchanged --------------------------------------------------------------------


def test_valid_streams_read_unchanged() -> None:
    for stream in valid_streams():
        assert _read(stream).equals(pa.ipc.open_stream(stream).read_all())


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_compressed_stream_under_the_cap_is_read(codec: str) -> None:
    table = pa.table({"x": pa.array([i % 7 for i in range(100_000)], pa.int64()), "s": pa.array(["ab"] * 100_000)})
    stream = am.recompressed(_write(table.to_batches()), codec)
    assert len(stream) < 500_000  # 1.4 MB decoded
    assert _read(stream, max_rows=100_000, max_decoded_bytes=2 * MIB).equals(table)
    [problem] = _refused(stream, max_rows=100_000, max_decoded_bytes=MIB)
    assert problem["type"] == "arrow_compressed_too_large"


def test_empty_stream_with_a_schema_reads_as_no_rows() -> None:
    assert _read(valid_streams()[3]).num_rows == 0


# --- refusals, one per kind --------------------------------------------------------------------------


_BOMBS = """
import json, re, sys
sys.path.insert(0, sys.argv[1])
from kennel.serving.arrow_ipc import ArrowStreamError, read_stream

def peak_kib():  # this process's own high-water mark (ru_maxrss starts at the forking parent's size)
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
from tests import arrow_mutations as am
from tests.test_arrow_ipc import valid_streams

results = []
for codec in ("zstd", "lz4"):
    for declared in (None, 1 << 20):  # the truth (1 GiB), a lie (1 MiB)
        body = am.compression_bomb(valid_streams()[0], codec, 1 << 30, declared=declared)
        before = peak_kib()
        try:
            read_stream(body, max_rows=1_000, max_decoded_bytes=64 << 20)
            problems = None
        except ArrowStreamError as exc:
            problems = exc.problems
        growth = peak_kib() - before
        results.append(
            {"codec": codec, "declared": declared, "body": len(body), "growth_kib": growth, "problems": problems}
        )
print(json.dumps(results))
"""


def test_compression_bomb_is_refused_before_decompression(tmp_path: Path) -> None:
    """1 GiB of zeros in a ~32 KB (zstd) / ~4 MB (lz4) body. Declared truthfully, it is over the budget and
    refused unread; declared as 1 MiB, Arrow stops decompressing at 1 MiB. Either way peak memory stays far
    below the bomb: measured in a fresh process, where its high-water mark (VmHWM) would show the first
    bomb to expand."""
    script = tmp_path / "bombs.py"
    script.write_text(_BOMBS)
    done = subprocess.run([sys.executable, str(script), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    assert len(results) == 4
    for result in results:
        assert result["body"] < 5 * MIB
        assert result["growth_kib"] < 64 * 1024, result  # a decompressed bomb: 1 GiB
        [problem] = result["problems"]
        expected = "arrow_compressed_too_large" if result["declared"] is None else "arrow_corrupt"
        assert problem["type"] == expected, result


def test_field_name_not_utf8_is_refused_without_echo() -> None:
    stream = valid_streams()[0]
    bad = _patched(stream, b"city", b"c\xffty")
    [problem] = _refused(bad)
    assert problem == {"type": "arrow_corrupt", "loc": [], "msg": "a field name is not valid UTF-8"}


def test_string_offsets_out_of_bounds_are_refused() -> None:
    table = pa.table({"city": pa.array(["Oslo", "Lyon", "Bern", "Rome", "Nice"])})
    stream = _write(table.to_batches())
    offsets = struct.pack("<6i", 0, 4, 8, 12, 16, 20)
    bad = _patched(stream, offsets, struct.pack("<6i", 0, 4, 8, 12, 16, 1 << 30))
    [problem] = _refused(bad)
    assert problem["type"] == "arrow_corrupt" and problem["loc"] == ["city"], problem
    bad = _patched(stream, offsets, struct.pack("<6i", 0, 4, 2, 12, 16, 20))  # decreasing
    assert _refused(bad)[0]["loc"] == ["city"]
    assert "Oslo" not in str(_refused(bad))


def test_dictionary_index_out_of_range_is_refused() -> None:
    color = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 1, 0], pa.int32()), pa.array(["r", "g", "b"]))
    stream = _write(pa.table({"color": color}).to_batches())
    bad = _patched(stream, struct.pack("<5i", 0, 1, 2, 1, 0), struct.pack("<5i", 0, 1, 3, 1, 0))
    [problem] = _refused(bad)
    assert problem["type"] == "arrow_corrupt" and problem["loc"] == ["color"], problem


def test_invalid_utf8_value_is_refused() -> None:
    stream = _write(pa.table({"city": pa.array(["Oslo", "Lyon"])}).to_batches())
    [problem] = _refused(_patched(stream, b"Lyon", b"Ly\xc3\x28"))
    assert problem["type"] == "arrow_corrupt" and problem["loc"] == ["city"]


@pytest.mark.parametrize(
    ("column", "find", "replace"),
    [
        # dictionary values (a separate dictionary batch), not just the indices
        (pa.array(["Oslo", "Lyon", "Oslo"]).dictionary_encode(), b"Lyon", b"Ly\xc3\x28"),
        # a list's child strings: offsets past the characters
        (
            pa.array([["abc", "def"], ["ghi"]], pa.list_(pa.string())),
            struct.pack("<4i", 0, 3, 6, 9),
            struct.pack("<4i", 0, 3, 6, 999),
        ),
        # the list's own offsets past its child
        (
            pa.array([["abc", "def"], ["ghi"]], pa.list_(pa.string())),
            struct.pack("<3i", 0, 2, 3),
            struct.pack("<3i", 0, 2, 30),
        ),
        # a struct's child string
        (pa.array([{"s": "Oslo"}, {"s": "Lyon"}], pa.struct([("s", pa.string())])), b"Lyon", b"Ly\xc3\x28"),
        # a string view pointing past its variadic buffer
        (
            pa.array(["a string longer than twelve", "x"], pa.string_view()),
            struct.pack("<i", 27) + b"a st" + struct.pack("<ii", 0, 0),
            struct.pack("<i", 9999) + b"a st" + struct.pack("<ii", 0, 0),
        ),
        # a dense union's type id naming no child
        (
            pa.UnionArray.from_dense(
                pa.array([3, 7], pa.int8()),
                pa.array([0, 0], pa.int32()),
                [pa.array([7]), pa.array(["s"])],
                type_codes=[3, 7],
            ),
            b"\x03\x07\x00\x00\x00\x00\x00\x00",
            b"\x03\x05\x00\x00\x00\x00\x00\x00",
        ),
    ],
    ids=[
        "dictionary-values",
        "list-child-offsets",
        "list-offsets",
        "struct-child-utf8",
        "string-view",
        "union-type-id",
    ],
)
def test_full_validation_covers_dictionaries_nested_and_view_types(
    column: pa.Array, find: bytes, replace: bytes
) -> None:
    stream = _write([pa.record_batch([column], names=["c"])])
    assert _read(stream).column("c").to_pylist() == column.to_pylist()
    [problem] = _refused(_patched(stream, find, replace))
    assert problem["type"] == "arrow_corrupt" and problem["loc"] == ["c"], problem


def test_too_many_rows_across_batches_are_refused_before_decoding() -> None:
    stream = valid_streams()[1]  # 3 batches of 5 rows
    assert _read(stream, max_rows=15).num_rows == 15
    [problem] = _refused(stream, max_rows=14)
    assert problem["type"] == "row_count"


def test_truncated_stream_is_refused() -> None:
    stream = valid_streams()[0]
    for cut in (0, 3, 8, 100, len(stream) // 2, len(stream) - 9):
        problems = _refused(stream[:cut])
        assert problems[0]["type"] in {"arrow_invalid", "arrow_corrupt"}, (cut, problems)


def test_structure_beyond_limits_is_refused() -> None:
    wide = _write([pa.record_batch([pa.array([1])] * 40, names=[f"c{i}" for i in range(40)])])
    assert read_stream(wide, max_rows=10, max_decoded_bytes=MIB, max_fields=40).num_columns == 40
    with pytest.raises(ArrowStreamError) as caught:
        read_stream(wide, max_rows=10, max_decoded_bytes=MIB, max_fields=39)
    assert caught.value.problems[0]["type"] == "arrow_too_large"
    many = valid_streams()[1]  # schema, 3 dictionaries... : 11 messages
    with pytest.raises(ArrowStreamError) as caught:
        read_stream(many, max_rows=100, max_decoded_bytes=MIB, max_messages=4)
    assert caught.value.problems[0]["type"] == "arrow_too_large"


def _schema_only_stream(endianness: int) -> bytes:
    """A stream of one hand-made schema message (one int32 column "x") and end-of-stream: pyarrow writes
    only little-endian, so a big-endian schema is built field by field (Message.fbs, Schema.fbs)."""

    def vtable(table_size: int, *entries: int) -> bytes:
        return struct.pack(f"<HH{len(entries)}H", 4 + 2 * len(entries), table_size, *entries).ljust(
            (4 + 2 * len(entries) + 3) // 4 * 4, b"\x00"
        )

    pieces: list[tuple[str, bytes]] = [
        ("root", b"\x00" * 4),
        ("message_vt", vtable(12, 4, 6, 8)),  # version, header_type, header
        ("message", struct.pack("<ihBxI", 0, 4, 1, 0)),  # V5, Schema
        ("schema_vt", vtable(12, 4, 8)),  # endianness, fields
        ("schema", struct.pack("<ihxxI", 0, endianness, 0)),
        ("fields", struct.pack("<II", 1, 0)),
        ("field_vt", vtable(20, 4, 8, 9, 12, 0, 16)),  # name, nullable, type_type, type, -, children
        ("field", struct.pack("<iIBBxxII", 0, 0, 1, 2, 0, 0)),  # nullable Int
        ("name", struct.pack("<I", 1) + b"x\x00\x00\x00"),
        ("children", struct.pack("<I", 0)),
        ("int_vt", vtable(12, 4, 8)),  # bitWidth, is_signed
        ("int", struct.pack("<iiBxxx", 0, 32, 1)),
    ]
    at, metadata = {}, b""
    for name, piece in pieces:
        at[name] = len(metadata)
        metadata += piece
    data = bytearray(metadata.ljust((len(metadata) + 7) // 8 * 8, b"\x00"))
    for table in ("message", "schema", "field", "int"):
        struct.pack_into("<i", data, at[table], at[table] - at[f"{table}_vt"])
    for where, target in [
        (at["root"], "message"),
        (at["message"] + 8, "schema"),
        (at["schema"] + 8, "fields"),
        (at["fields"] + 4, "field"),
        (at["field"] + 4, "name"),
        (at["field"] + 12, "int"),
        (at["field"] + 16, "children"),
    ]:
        struct.pack_into("<I", data, where, at[target] - where)
    return b"\xff\xff\xff\xff" + struct.pack("<i", len(data)) + bytes(data) + b"\xff\xff\xff\xff\x00\x00\x00\x00"


def test_big_endian_and_old_metadata_are_refused() -> None:
    little = _schema_only_stream(0)
    assert pa.ipc.open_stream(little).schema == pa.schema([("x", pa.int32())])  # the hand-made bytes are right
    assert _read(little).schema == pa.schema([("x", pa.int32())])
    [problem] = _refused(_schema_only_stream(1))
    assert problem["type"] == "arrow_unsupported" and "big-endian" in problem["msg"]
    # V4 (pre-1.0) metadata could declare compression in custom metadata, outside BodyCompression.
    messages = am.split(valid_streams()[0])
    version = am._Fb(messages[1].metadata).field(am._Fb(messages[1].metadata).root(), 0)
    assert version is not None
    struct.pack_into("<h", messages[1].metadata, version, 3)
    [problem] = _refused(bytes(am.join(messages)[0]))
    assert problem["type"] == "arrow_unsupported"


@pytest.mark.parametrize(("unit", "dtype"), [(0, pa.int32()), (1, pa.int64())], ids=["month", "day-time"])
def test_interval_types_pyarrow_cannot_wrap_are_refused(unit: int, dtype: pa.DataType) -> None:
    """An int column retyped as Interval(YEAR_MONTH / DAY_TIME): Arrow C++ decodes it, but pyarrow has no
    array class for it, so touching the column's chunks would raise KeyError in the caller."""
    messages = am.split(_write([pa.record_batch([pa.array([1, 2], dtype)], names=["x"])]))
    fb = am._Fb(messages[0].metadata)
    [field] = am._schema_fields(messages[0])
    type_type, type_table = fb.field(field, 2), fb.table(field, 3)
    assert type_type is not None and type_table is not None
    messages[0].metadata[type_type] = 11  # Interval
    unit_at = fb.field(type_table, 0)  # Int.bitWidth, read as Interval.unit
    assert unit_at is not None
    struct.pack_into("<h", messages[0].metadata, unit_at, unit)
    body = bytes(am.join(messages)[0])
    with pytest.raises(KeyError):
        pa.ipc.open_stream(body).read_all().column(0).chunk(0)
    [problem] = _refused(body)
    assert problem["type"] == "arrow_unsupported"


def test_not_a_stream_is_refused() -> None:
    for body in (b"", b"\x00" * 8, b"not arrow at all", b"\xff\xff\xff\xff\x10\x00\x00\x00" + b"\x00" * 16):
        assert _refused(body)[0]["type"] == "arrow_invalid"


def test_delta_dictionaries_are_charged_when_concatenated() -> None:
    stream = valid_streams()[2]
    assert _read(stream).column("color").to_pylist() == ["red", "green", "red", "blåå", "red", "blåå", "green"]
    [problem] = _refused(stream, max_decoded_bytes=8)
    assert problem["type"] == "arrow_too_large"


# --- fuzz ----------------------------------------------------------------------------------------------

_FUZZ = """
import json, re, sys, traceback
root, streams, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, root)
from pathlib import Path
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from kennel.serving.arrow_ipc import ArrowStreamError, read_stream
from tests.arrow_mutations import mutated_streams

TYPES = {types!r}
valid = [p.read_bytes() for p in sorted(Path(streams).glob("*.arrow"))]


def consume(table):
    # What the model server does with a table that passed: the computations that once crashed.
    for column in table.columns:  # by position: names may repeat
        column.null_count
        np.asarray(pc.is_null(column))
        value_type = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
            text = pc.cast(column, pa.string())
            pc.max(pc.utf8_length(text))
            pc.index_in(text, value_set=pa.array(["red", "Oslo", "gold"]))
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        elif pa.types.is_boolean(column.type):
            pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    try:
        table.to_pylist()
    except (OverflowError, NotImplementedError, ValueError):
        pass  # valid values Python cannot hold (dates past year 9999, some interval types): not a reader bug


outcomes = {{}}
for i, (kind, body) in enumerate(mutated_streams(valid, n, seed)):
    print(i, kind, file=sys.stderr, flush=True)
    counts = outcomes.setdefault(kind, [0, 0])
    try:
        table = read_stream(body, max_rows=100_000, max_decoded_bytes=64 << 20)
    except ArrowStreamError as exc:
        for p in exc.problems:
            ok = set(p) == {{"type", "loc", "msg"}} and p["type"] in TYPES and p["msg"].isascii()
            ok = ok and all(isinstance(x, int) or (isinstance(x, str) and x.isprintable()) for x in p["loc"])
            if not ok:
                print(json.dumps({{"case": i, "kind": kind, "bad_problem": repr(p)}}))
                sys.exit(3)
        counts[1] += 1
        continue
    except BaseException as exc:
        print(json.dumps({{"case": i, "kind": kind, "escaped": repr(exc)[:300]}}))
        sys.exit(3)
    try:
        table.validate(full=True)
        consume(table)
    except BaseException:
        print(json.dumps({{"case": i, "kind": kind, "consumer": traceback.format_exc()[-1500:]}}))
        sys.exit(3)
    counts[0] += 1
# this process's own high-water mark (ru_maxrss would start at the forking parent's size)
rss = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
print(json.dumps({{"outcomes": outcomes, "peak_rss": rss}}))
"""


def _fuzz(tmp_path: Path, n: int, seed: int, timeout: float) -> dict:
    streams = tmp_path / "streams"
    streams.mkdir()
    for i, stream in enumerate(valid_streams()):
        (streams / f"{i}.arrow").write_bytes(stream)
    script = tmp_path / "fuzz.py"
    script.write_text(_FUZZ.format(types=PROBLEM_TYPES))
    done = subprocess.run(
        [sys.executable, str(script), str(ROOT), str(streams), str(n), str(seed)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    last = done.stderr.strip().splitlines()[-1:] if done.stderr else []
    assert done.returncode == 0, (
        f"fuzz process ended with {done.returncode} (negative: killed by that signal) during case {last}: "
        f"reproduce with mutated_streams(valid_streams(), {n}, {seed}) at that index\n"
        f"{done.stdout[-2000:]}\n{done.stderr[-1500:]}"
    )
    report = json.loads(done.stdout.splitlines()[-1])
    outcomes = report["outcomes"]
    passed = sum(a for a, _ in outcomes.values())
    share = passed / n
    print(
        f"\n{n} mutated streams, seed {seed}: {passed} ({share:.0%}) read and validated, {n - passed} refused; "
        f"peak RSS {report['peak_rss'] / MIB:.0f} MiB"
    )
    for kind, (accepted, refused) in sorted(outcomes.items()):
        print(f"  {kind:36} {accepted:5} read {refused:5} refused")
    assert report["peak_rss"] < 1 << 30
    assert set(outcomes) == set(am.MUTATION_KINDS) or n < 500, set(am.MUTATION_KINDS) - set(outcomes)
    assert share >= 0.30, share
    return report


def test_fuzz_mutated_streams_are_read_or_refused(tmp_path: Path) -> None:
    """Every mutated stream either reads to a table that validates (and survives what the model server
    computes on it) or is refused as ArrowStreamError; no other exception, no crash, peak RSS < 1 GiB."""
    _fuzz(tmp_path, n=1_000, seed=20_240_601, timeout=300)


@pytest.mark.full
def test_fuzz_mutated_streams_full(tmp_path: Path) -> None:
    _fuzz(tmp_path, n=10_000, seed=7, timeout=3_000)
