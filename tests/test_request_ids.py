"""Verifiable request ids: their format, uniqueness, what passes `was_issued`, and the key in the lake."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kennel.lake import Lake
from kennel.serving.request_ids import (
    KEY_BYTES,
    RequestIdKeyError,
    RequestIds,
    load_or_create_key,
)

ROOT = Path(__file__).resolve().parent.parent
ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def ids() -> RequestIds:
    return RequestIds(os.urandom(KEY_BYTES))


def test_ids_keep_the_format_of_32_lower_case_hex_digits(ids: RequestIds) -> None:
    assert ids.issue(0) == []
    one = ids.issue(1)
    assert len(one) == 1 and ID.match(one[0])
    assert all(ID.match(rid) for rid in ids.issue(1000))


def test_ids_are_unique_and_all_recognised(ids: RequestIds) -> None:
    issued = ids.issue(50_000) + ids.issue(50_000)
    assert len(set(issued)) == 100_000
    assert all(ids.was_issued(rid) for rid in issued)


def test_ids_signed_ahead_are_unique_valid_and_issued_once_across_threads(ids: RequestIds) -> None:
    """keep_ready: ids come from the pool while it holds enough, are signed on the spot beyond it, and
    no id is handed out twice while requests on several threads take them and the pool refills."""
    from concurrent.futures import ThreadPoolExecutor

    ids.keep_ready(2_000)
    try:
        deadline = time.monotonic() + 30
        while len(ids._ready) < 2_000:  # the pool's thread filling it: a condition, not a fixed wait
            assert time.monotonic() < deadline, "the pool never filled"
            time.sleep(0.01)
        with ThreadPoolExecutor(4) as pool:
            batches = list(pool.map(ids.issue, [997] * 10 + [1] * 200 + [5_000]))
    finally:
        ids.close()
    issued = [rid for batch in batches for rid in batch]
    assert [len(b) for b in batches] == [997] * 10 + [1] * 200 + [5_000]
    assert len(set(issued)) == len(issued) == 10 * 997 + 200 + 5_000
    assert all(ID.match(rid) and ids.was_issued(rid) for rid in issued)
    assert ids._pool_thread is not None and not ids._pool_thread.is_alive()
    assert not RequestIds(os.urandom(KEY_BYTES)).was_issued(issued[0])


def test_ids_not_issued_with_the_key_are_refused(ids: RequestIds) -> None:
    issued = ids.issue(1)[0]
    assert not any(ids.was_issued(os.urandom(16).hex()) for _ in range(10_000))  # random, and the old format
    assert not RequestIds(os.urandom(KEY_BYTES)).was_issued(issued)  # another data set's key
    assert not any(RequestIds(os.urandom(KEY_BYTES)).was_issued(rid) for rid in ids.issue(100))
    for position in range(32):  # every single-digit change, in the random part and in the tag
        digit = issued[position]
        for other in "0123456789abcdef".replace(digit, ""):
            assert not ids.was_issued(issued[:position] + other + issued[position + 1 :])


@pytest.mark.parametrize(
    "value",
    ["", "abc", "g" * 32, " " * 32, None, 123, b"0" * 32],
)
def test_anything_but_an_id_is_refused(ids: RequestIds, value: object) -> None:
    assert not ids.was_issued(value)


def test_spellings_other_than_the_issued_one_are_refused(ids: RequestIds) -> None:
    issued = ids.issue(1)[0]
    assert ids.was_issued(issued)
    for variant in (issued.upper(), issued + "\n", " " + issued, issued + "0", issued[:-1]):
        if variant != issued:
            assert not ids.was_issued(variant)


def test_the_key_is_kept_once_per_data_set_in_the_lake_and_never_shown(tmp_path: Path) -> None:
    data = Lake(tmp_path).dataset("credit_demo")
    first = RequestIds.for_dataset(data)
    path = data.request_id_key_path()
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size == KEY_BYTES
    assert path.is_relative_to(tmp_path) and "credit_demo" in path.parts
    again = RequestIds.for_dataset(data)  # a restart, or another worker: the same key
    assert all(again.was_issued(rid) for rid in first.issue(100))
    key = path.read_bytes()
    assert key.hex() not in repr(first) and str(key) not in repr(first)
    other = RequestIds.for_dataset(Lake(tmp_path).dataset("other_data"))
    assert not any(other.was_issued(rid) for rid in first.issue(100))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_a_damaged_key_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "request_id.key"
    path.write_bytes(b"short")
    with pytest.raises(RequestIdKeyError, match="5 bytes"):
        load_or_create_key(path)
    assert path.read_bytes() == b"short"
    with pytest.raises(ValueError, match="32 bytes"):
        RequestIds(b"short")


def test_the_key_is_created_where_hard_links_are_not_supported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "serving" / "request_id.key"
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES and load_or_create_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [".request_id.key.lock", "request_id.key"]


RACER = """
import hashlib, os, sys, time
from pathlib import Path
from kennel.lake import Lake
from kennel.serving.request_ids import RequestIds
real_urandom = os.urandom
def slow_urandom(n):  # widens the window between "no key yet" and "key in place", as a loaded host would
    time.sleep(0.05)
    return real_urandom(n)
os.urandom = slow_urandom
root, go = sys.argv[1], Path(sys.argv[2])
data = Lake(root).dataset("credit_demo")
(go.parent / f"ready-{sys.argv[3]}").touch()
while not go.exists():
    time.sleep(0.001)
ids = RequestIds.for_dataset(data)
print(hashlib.sha256(data.request_id_key_path().read_bytes()).hexdigest(), ids.issue(1)[0])
"""


def test_workers_starting_at_once_end_up_with_one_key(tmp_path: Path) -> None:
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    racers = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "lake"), str(go), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < len(racers) and time.monotonic() < deadline:
        time.sleep(0.01)  # all imported and waiting at the line: then they start together
    go.touch()
    answers = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        answers.append(out.split())
    assert len({digest for digest, _ in answers}) == 1  # one key for all
    data = Lake(tmp_path / "lake").dataset("credit_demo")
    ids = RequestIds.for_dataset(data)
    assert all(ids.was_issued(rid) for _, rid in answers)  # each worker's ids are every worker's
    assert [p.name for p in data.request_id_key_path().parent.iterdir()] == ["request_id.key"]
