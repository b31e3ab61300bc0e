"""A seeded, structure-aware mutator of JSON request bodies, for fuzzing the model server.

It parses a valid body and changes its structure where a validator has to look: a value replaced by
one of another JSON type or by an extreme of its own, a key removed, added or duplicated, a list
emptied, grown or nested deep, text made huge or odd (lone surrogates, NUL, right-to-left marks);
then, for a share of cases, the serialized bytes themselves (truncated, a byte flipped, invalid UTF-8,
a NaN literal). Every body stays under `max_bytes`.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

Json = Any
PLANTED = "PLANTED-7c1e"  # a value no log line may ever hold (see the serving log test)

_ODD_TEXT = [
    "",
    " ",
    "\u0000",
    "\ud800",  # a lone surrogate: valid JSON escape, not valid Unicode
    "\u202e" + PLANTED,
    PLANTED * 50,
    "🐕" * 10,
    "1e400",
    "NaN",
    "null",
    "true",
    "0x10",
]
_ODD_NUMBERS: list[Json] = [0, -1, 1e308, -1e308, 2**63, -(2**63) - 1, 10**400, 1e-320, 0.1, 3.5, -0.0]
_ODD_VALUES: list[Json] = [None, True, False, [], {}, [None], {"a": 1}, [[[]]]]


def _paths(value: Json, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a JSON value (lists sampled: first, last and one in the middle)."""
    found = [prefix]
    if len(prefix) > 12:  # deep enough for every request schema; a nested mutation goes far deeper
        return found
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list) and value:
        for index in sorted({0, len(value) // 2, len(value) - 1}):
            found += _paths(value[index], (*prefix, index))
    return found


def _get(value: Json, path: tuple[Any, ...]) -> Json:
    for part in path:
        value = value[part]
    return value


def _set(value: Json, path: tuple[Any, ...], new: Json) -> Json:
    if not path:
        return new
    _get(value, path[:-1])[path[-1]] = new
    return value


def _odd_value(rng: random.Random, old: Json) -> Json:
    pool = rng.choice([_ODD_TEXT, _ODD_NUMBERS, _ODD_VALUES])
    choice = copy.deepcopy(rng.choice(pool))  # a fresh object: later mutations must not change the pool
    if isinstance(old, str) and rng.random() < 0.3:
        return old + rng.choice(_ODD_TEXT)
    return choice


def _replace(rng: random.Random, body: Json) -> Json:
    path = rng.choice(_paths(body))
    return _set(body, path, _odd_value(rng, _get(body, path)))


def _drop_key(rng: random.Random, body: Json) -> Json:
    objects = [p for p in _paths(body) if isinstance(_get(body, p), dict) and _get(body, p)]
    if objects:
        target = _get(body, rng.choice(objects))
        del target[rng.choice(list(target))]
    return body


def _add_key(rng: random.Random, body: Json) -> Json:
    objects = [p for p in _paths(body) if isinstance(_get(body, p), dict)]
    if objects:
        target = _get(body, rng.choice(objects))
        target[rng.choice([PLANTED, "x" * 5000, "", "__proto__", "records", "age"])] = _odd_value(rng, None)
    return body


def _grow_list(rng: random.Random, body: Json) -> Json:
    lists = [p for p in _paths(body) if isinstance(_get(body, p), list) and _get(body, p)]
    if lists:
        path = rng.choice(lists)
        items = _get(body, path)
        item = items[0] if rng.random() < 0.5 else _odd_value(rng, items[0])
        # Shared references, not copies: an item may be nested hundreds deep.
        _set(body, path, items + [item] * rng.choice([10, 1_000, 20_000]))
    return body


def _empty_list(rng: random.Random, body: Json) -> Json:
    lists = [p for p in _paths(body) if isinstance(_get(body, p), list)]
    if lists:
        _set(body, rng.choice(lists), [])
    return body


def _nest(rng: random.Random, body: Json) -> Json:
    path = rng.choice(_paths(body))
    deep: Json = _get(body, path)
    for _ in range(rng.choice([50, 300])):  # deeper nesting is made in bytes (_byte_level)
        deep = [deep]
    return _set(body, path, deep)


def _wrap(rng: random.Random, body: Json) -> Json:
    return rng.choice([[body], {"records": body}, {"body": body}, json.dumps(body)])


_STRUCTURAL: list[Callable[[random.Random, Json], Json]] = [
    _replace,
    _replace,
    _replace,
    _drop_key,
    _add_key,
    _grow_list,
    _empty_list,
    _nest,
    _wrap,
]


def _serialize(rng: random.Random, body: Json) -> bytes:
    try:
        text = json.dumps(body, allow_nan=True)
    except (ValueError, RecursionError):
        text = json.dumps(str(type(body)))
    return text.encode("utf-8", "surrogatepass")


def _byte_level(rng: random.Random, raw: bytes) -> bytes:
    choice = rng.randrange(7)
    if choice == 0 and raw:
        return raw[: rng.randrange(len(raw))]
    if choice == 1 and raw:
        i = rng.randrange(len(raw))
        return raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :]
    if choice == 2:
        return raw.replace(b'"', b"\xff", 1)  # invalid UTF-8
    if choice == 3:
        return raw.replace(b"0", b"NaN", 1) if b"0" in raw else raw + b"NaN"
    if choice == 4 and raw.startswith(b"{"):
        return b'{"age": 1, "age": "x", ' + raw[1:]  # a duplicate key
    if choice == 5:
        depth = rng.choice([1_000, 100_000])
        return b"[" * depth + raw + b"]" * depth if rng.random() < 0.5 else b"\xef\xbb\xbf" + raw
    return raw + b" " * rng.randrange(3) + rng.choice([b"", b"}", b"]", b",", b"\x00"])


def mutated_bodies(
    valid: dict[str, Json], n: int, seed: int, *, max_bytes: int = 900_000
) -> Iterator[tuple[str, str, bytes]]:
    """n (route, mutation kind, body) from valid bodies per route; seeded, so a failure replays."""
    rng = random.Random(seed)
    routes = sorted(valid)
    for _ in range(n):
        route = rng.choice(routes)
        body = copy.deepcopy(valid[route])
        kinds = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            mutation = rng.choice(_STRUCTURAL)
            try:
                body = mutation(rng, body)
            except (RecursionError, ValueError):  # nested too deep for Python itself: leave it as it is
                continue
            kinds.append(mutation.__name__.strip("_"))
        raw = _serialize(rng, body)
        if rng.random() < 0.25:
            kinds.append("bytes")
            raw = _byte_level(rng, raw)
        yield route, "+".join(kinds), raw[:max_bytes]
