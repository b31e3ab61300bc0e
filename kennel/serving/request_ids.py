"""Request ids the service can recognise later: /feedback accepts only ids this data set's service issued.

An id keeps the format callers already store, 32 lower-case hex digits (16 bytes), laid out as

    random (10 bytes, 80 bits) | tag (6 bytes, 48 bits) = keyed BLAKE2b(key, random)

The split (see `RANDOM_BYTES`):
- Uniqueness rests on the random part alone. By the birthday bound, n ids collide with odds of about
  n² / 2^81: 4e-7 for a billion ids, 4e-5 for ten billion (a collision only makes one prediction's
  feedback ambiguous). 8 random bytes would already give 3% at a billion; 12 would leave 4 tag bytes.
- Forging needs the tag. Without the key, a guessed id passes with odds 2^-48 (3.6e-15): a million
  guesses a second for a year (far beyond what /feedback answers) expect 0.1 successes, and a forged id
  names no real prediction anyway, so the worst it does is store one unjoinable outcome. 4 tag bytes
  (2^-32) would let a patient caller through within days.

The tag is keyed BLAKE2b (RFC 7693's keyed mode, a MAC by design; its output length is a parameter of
the hash, not a truncation) with a personalization string that versions the layout: 0.7 µs an id
against 1.9 µs for HMAC-SHA256 truncated to 6 bytes, which matters on /predict_arrow's 10,000-row
batches. Checks compare in constant time (`hmac.compare_digest`).

Signing costs ~0.9 ms per 1,000 ids, as much as checking a 1,000-row Arrow request: a service calls
`keep_ready(n)` and a background thread then keeps up to n ids signed ahead, in slices that hold the
interpreter lock ~0.25 ms each, so `issue` on the request path takes ready ids (a list slice) and only
signs on the spot what the pool cannot cover.

The key is 32 random bytes, one per data set, in the lake (`DatasetLake.request_id_key_path()`, mode
0600), created once by whichever worker process comes first (`load_or_create_key`): every worker, on
every host sharing the lake, signs and checks with the same key. It is never logged nor shown by repr.
Removing the key file makes every id issued so far unknown.

Ids issued before this scheme (128 random bits, `new_request_ids`) and ids of another data set's
service fail `was_issued`: they are reported as unknown.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import re
import stat
import threading
import time
import uuid
from pathlib import Path

from kennel.lake import DatasetLake, exclusive, fsync_path

logger = logging.getLogger(__name__)

KEY_BYTES = 32
RANDOM_BYTES = 10  # 80 bits: uniqueness (see the module docstring)
TAG_BYTES = 6  # 48 bits: forgery odds 2^-48 per guess
ID_BYTES = RANDOM_BYTES + TAG_BYTES  # 16: the 32 hex digits ids always had
_PERSON = b"kennel.reqid.v1"  # BLAKE2b personalization (<= 16 bytes): this use of the key, layout version 1
_ID = re.compile(r"[0-9a-f]{32}")
POOL_SLICE = 256  # ids the pool's thread signs per hold of the interpreter lock (~0.25 ms)


class RequestIdKeyError(RuntimeError):
    """The key file exists but cannot be used (wrong size): refuse rather than replace it silently,
    which would turn every id issued so far into an unknown one."""


def _read_key(path: Path) -> bytes:
    with open(path, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        key = fh.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise RequestIdKeyError(
            f"{path} holds {len(key)} bytes, not the {KEY_BYTES} of a request-id key; "
            "restore it (or remove it to start a new key, which makes every id issued so far unknown)"
        )
    if stat.S_IMODE(mode) & 0o077:
        logger.warning("request-id key %s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`; created first (32 random bytes, mode 0600) when there is none.

    Safe for any number of processes starting at once, on one host or several sharing the folder: each
    writes a complete key to a temporary file of its own (O_EXCL) and hard-links it to `path`, which
    succeeds for exactly one of them; everyone then reads what `path` holds. No process ever sees a
    partial key. (Where hard links are not supported, a lock next to the key serializes the same
    check-and-rename.)
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, os.urandom(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        try:
            os.link(tmp, path)  # atomic, and fails if another process linked its key first
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            with exclusive(path.with_name(f".{path.name}.lock")):
                if not path.exists():
                    os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


class RequestIds:
    """Issues request ids and recognises the ones it issued (see the module docstring).

    `issue` and `was_issued` are thread-safe (the key is only read).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a request-id key is {KEY_BYTES} bytes, not {len(key)}")
        self._key = key
        self._keyed = hashlib.blake2b(key=key, digest_size=TAG_BYTES, person=_PERSON)
        self._ready: list[str] = []  # signed ahead by the pool's thread (see keep_ready)
        self._ready_target = 0
        self._ready_lock = threading.Lock()
        self._wanted = threading.Event()
        self._closed = False
        self._pool_thread: threading.Thread | None = None

    @classmethod
    def for_dataset(cls, lake: DatasetLake) -> RequestIds:
        """The data set's ids: its key in the lake, created on first use (every worker gets the same)."""
        return cls(load_or_create_key(lake.request_id_key_path()))

    def __repr__(self) -> str:
        return "RequestIds(<key hidden>)"

    def _tag(self, random_part: bytes) -> bytes:
        keyed = self._keyed.copy()  # the key block is already absorbed: cheaper than hashing it again
        keyed.update(random_part)
        return keyed.digest()

    def keep_ready(self, n: int) -> None:
        """Start a background thread that keeps up to `n` ids signed ahead for `issue` (see the
        module docstring); `close` stops it."""
        if n < 1:
            raise ValueError(f"keep_ready needs at least 1 id, got {n}")
        if self._pool_thread is not None:
            raise RuntimeError("the request-id pool is already running")
        self._ready_target = n
        self._wanted.set()
        self._pool_thread = threading.Thread(target=self._refill, name="kennel-request-ids", daemon=True)
        self._pool_thread.start()

    def close(self) -> None:
        """Stop the pool's thread, if any (ids issued so far stay valid)."""
        self._closed = True
        self._wanted.set()
        if self._pool_thread is not None:
            self._pool_thread.join(timeout=5)

    def _refill(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            while not self._closed and len(self._ready) < self._ready_target:
                signed = self._sign(POOL_SLICE)
                with self._ready_lock:
                    self._ready.extend(signed)
                time.sleep(0)  # hand the interpreter lock to a waiting request (see POOL_SLICE)
            if self._closed:
                return

    def issue(self, n: int) -> list[str]:
        """n new ids, 32 lower-case hex digits each: taken from the ids signed ahead when there are
        enough (keep_ready), signed here otherwise."""
        if n < 0:
            raise ValueError(f"cannot issue {n} ids")
        if self._ready_target:
            with self._ready_lock:
                taken = self._ready[:n] if len(self._ready) >= n else None
                if taken is not None:
                    del self._ready[:n]
                low = len(self._ready) < self._ready_target // 2
            if low:
                self._wanted.set()
            if taken is not None:
                return taken
        return self._sign(n)

    def _sign(self, n: int) -> list[str]:
        """n new ids signed now (one urandom call for the lot)."""
        raw = os.urandom(RANDOM_BYTES * n)
        keyed, step = self._keyed, RANDOM_BYTES
        signed = []
        for i in range(0, step * n, step):
            random_part = raw[i : i + step]
            tag = keyed.copy()
            tag.update(random_part)
            signed.append(random_part + tag.digest())
        text = b"".join(signed).hex()
        width = 2 * ID_BYTES
        return [text[i : i + width] for i in range(0, width * n, width)]

    def was_issued(self, request_id: object) -> bool:
        """Whether `request_id` carries this key's tag: True for every id `issue` returned (by any
        worker sharing the key); False for anything else, including ids from before this scheme,
        upper-case spellings and non-strings. The tag is compared in constant time."""
        if not isinstance(request_id, str) or not _ID.fullmatch(request_id):
            return False
        raw = bytes.fromhex(request_id)
        return hmac.compare_digest(self._tag(raw[:RANDOM_BYTES]), raw[RANDOM_BYTES:])
