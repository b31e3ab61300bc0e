"""The door of the model server: everything about a request that is decided before scoring.

`RequestGuard` is ASGI middleware in front of the BentoML service. For each request it decides, in
this order: the API key (when one is configured), the route's media type (exactly one Content-Type
header), the body size, and for JSON routes the body itself, parsed and validated with the very
class BentoML would use. A valid body is handed to BentoML already validated (`accept_guarded_input`),
so nothing is parsed twice; a refused one gets a bounded answer and one INFO log line.

Why here and not in BentoML: BentoML validates on the event loop, answers every validation error
(a 100,000-value column of bad values became a 224 MB error body that took 20 s to build while every
other request waited), and logs each refusal at ERROR with a traceback that lists the rejected values.
Here the work per bad request is bounded: bodies up to INLINE_BODY_BYTES are validated in place (at
most a few thousand errors, milliseconds); larger ones are screened in a separate process (`BodyScreen`),
so however hostile a body, the event loop keeps answering and timeouts keep firing. Nothing a client
sent reaches a log line: not values, not field names, not headers.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import os
import signal
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from kennel.serving.api import OPEN_PATHS, request_models

logger = logging.getLogger("kennel.service")

API_KEY_ENV = "KENNEL_API_KEY"
# JSON bodies up to this size are validated on the event loop: the worst body of this size (every
# value wrong) costs a few milliseconds. Larger ones go to the screening process first.
INLINE_BODY_BYTES = 64 * 1024
MAX_ERRORS_SHOWN = 20
MAX_LOC_TEXT = 100  # characters of a client-chosen key (a field name it invented) echoed in `loc`
VALIDATED_INPUT = "kennel.validated_input"  # ASGI scope key: the body, validated, for BentoML's API

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    """An integer setting from the environment; a bad value stops start-up with a clear message."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def api_key_from_env() -> str | None:
    """KENNEL_API_KEY, or None when unset or empty (no key: every route is open)."""
    key = os.environ.get(API_KEY_ENV, "")
    if key and len(key) < 16:
        raise ValueError(f"{API_KEY_ENV} is {len(key)} characters long; use at least 16 random characters")
    return key or None


# --- bounded errors --------------------------------------------------------------------------------


class Refusal(NamedTuple):
    """Why a body was refused: how many problems in all, and the first ones (pydantic-shaped, no
    input values)."""

    problems: int
    first: list[dict[str, Any]]
    title: str


def _short(part: Any) -> Any:
    return part[:MAX_LOC_TEXT] if isinstance(part, str) else part


def refusal_of(exc: ValidationError, model: type[BaseModel], body: bytes) -> Refusal:
    """The first MAX_ERRORS_SHOWN problems of `model` refusing `body` (raising `exc`), without the
    values that caused them, and how many there were.

    pydantic lists its errors all at once: for 2 million bad values in a 30 MB body that took 4 s and
    2 GB. Past a few thousand, the first problems are found again on a copy of the body whose lists
    are cut to their first few items (the same problems come first), and only the count is the
    whole body's."""
    count = exc.error_count()
    if count > LISTED_AT_ONCE:
        shown = _first_problems(model, body)
        if not shown:  # all of them beyond the cut: say where, not what
            shown = [{"type": "many", "loc": [], "msg": f"{count:,} problems past the first {CUT_LISTS_AT} items"}]
        return Refusal(count, shown, exc.title)
    return Refusal(count, _problems(exc)[:MAX_ERRORS_SHOWN], exc.title)


LISTED_AT_ONCE = 2_000  # errors pydantic lists in a few milliseconds
CUT_LISTS_AT = 32


def _problems(exc: ValidationError) -> list[dict[str, Any]]:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return [{"type": e["type"], "loc": [_short(p) for p in e["loc"]], "msg": e["msg"]} for e in errors]


def _cut(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        return value
    if isinstance(value, list):
        return [_cut(item, depth + 1) for item in value[:CUT_LISTS_AT]]
    if isinstance(value, dict):
        return {key: _cut(item, depth + 1) for key, item in value.items()}
    return value


def _first_problems(model: type[BaseModel], body: bytes) -> list[dict[str, Any]]:
    from pydantic_core import from_json

    try:
        model.model_validate(_cut(from_json(body)), strict=True)
    except ValidationError as exc:
        return _problems(exc)[:MAX_ERRORS_SHOWN]
    return []


def refusal_from_problems(problems: list[dict[str, Any]], title: str) -> Refusal:
    first = [{**p, "loc": [_short(part) for part in p["loc"]]} for p in problems[:MAX_ERRORS_SHOWN]]
    return Refusal(len(problems), first, title)


def refusal_body(refusal: Refusal, request_id: str) -> dict[str, Any]:
    """The 400 answer (ValidationErrorBody in the OpenAPI document)."""
    shown = "" if refusal.problems <= len(refusal.first) else f"; the first {len(refusal.first)} are listed"
    return {
        "error": f"{refusal.problems} validation error(s) for {refusal.title}{shown}",
        "detail": refusal.first,
        "error_count": refusal.problems,
        "request_id": request_id,
    }


def log_refusal(route: str, status: int, problems: int, request_id: str) -> None:
    """The one log line of a client error: no values, no field names, no headers."""
    logger.info("refused %s: %d, %d problem(s), request %s", route, status, problems, request_id)


# --- screening large bodies in another process ------------------------------------------------------

_SCREEN_MODELS: dict[str, type[BaseModel]] = {}


def _load_screen_models(model_dir: str) -> None:
    from kennel.model import SPEC_FILE, ModelCard
    from kennel.serving.workers import set_parent_death_signal
    from kennel.spec import load_spec

    set_parent_death_signal(signal.SIGKILL)  # nothing to flush here: go with the worker, however it ends

    folder = Path(model_dir)
    _SCREEN_MODELS.update(request_models(load_spec(folder / SPEC_FILE), ModelCard.load(folder)).by_route())


def _screen(route: str, body: bytes) -> Refusal | None:
    return screen_body(_SCREEN_MODELS[route], body)


ROWS_PER_SLICE = 1_024
EXTRA_KEYS_COUNTED = 64  # unknown keys in one object beyond which the object is refused unvalidated


def screen_body(model: type[BaseModel], body: bytes) -> Refusal | None:
    """Validate a large body with bounded memory: None when `model` accepts it, else its refusal.

    pydantic keeps every error of a body until it is done: 16 million for a 32 MiB list of wrong
    values, gigabytes. Here the body is parsed once, objects with far more keys than the model knows
    are refused on their key count, and top-level lists longer than ROWS_PER_SLICE (the rows of
    /predict_batch, /predict_columns, /feedback) are validated a slice of rows at a time: each
    slice's errors are counted and dropped, the first MAX_ERRORS_SHOWN kept (with their row numbers
    in the whole body)."""
    from pydantic_core import from_json

    try:
        data = from_json(body, allow_inf_nan=False)
    except ValueError:  # not JSON: pydantic says where, in one error
        return _refusal_of_json(model, body)
    too_wide = _too_many_keys(data, len(model.model_fields) + EXTRA_KEYS_COUNTED)
    if too_wide is not None:
        return too_wide
    long = (
        {key: value for key, value in data.items() if isinstance(value, list) and len(value) > ROWS_PER_SLICE}
        if isinstance(data, dict)
        else {}
    )
    lengths = {len(value) for value in long.values()}
    if len(lengths) != 1:  # nothing long (the body is small in rows), or lists of differing lengths
        try:
            model.model_validate(_cut(data) if long else data, strict=True)
        except ValidationError as exc:
            return refusal_of(exc, model, body)
        if long:  # the first rows are fine: the lengths are the problem
            sizes = ", ".join(f"{key} has {len(value):,}" for key, value in long.items())
            return Refusal(1, [{"type": "value_error", "loc": [], "msg": f"lists differ in length: {sizes}"}], "body")
        return None
    return _validate_slices(model, data, long, lengths.pop())


def _refusal_of_json(model: type[BaseModel], body: bytes) -> Refusal:
    try:
        model.model_validate_json(body)
    except ValidationError as exc:
        return refusal_of(exc, model, body)
    raise AssertionError("a body that is not JSON was accepted")


def _too_many_keys(data: Any, limit: int) -> Refusal | None:
    """A refusal for an object (the body, or an object in a top-level list) with more than `limit`
    keys: each would be one error to pydantic."""
    objects = [data] if isinstance(data, dict) else []
    if isinstance(data, dict):
        objects += [
            item for value in data.values() if isinstance(value, list) for item in value if isinstance(item, dict)
        ]
    for index, obj in enumerate(objects):
        if len(obj) > limit:
            where: list[Any] = [] if index == 0 else ["…"]
            msg = f"an object with {len(obj):,} keys; at most {limit:,} are looked at"
            return Refusal(len(obj), [{"type": "too_many_keys", "loc": where, "msg": msg}], "body")
    return None


def _validate_slices(
    model: type[BaseModel], data: dict[str, Any], long: dict[str, list[Any]], rows: int
) -> Refusal | None:
    limits = _max_items(model)
    too_long = [
        {"type": "too_long", "loc": [key], "msg": f"at most {limits[key]:,} items, not {len(value):,}"}
        for key, value in long.items()
        if key in limits and len(value) > limits[key]
    ]
    if too_long:  # as pydantic does, a list too long is one problem, its items unchecked
        try:
            model.model_validate(_cut(data), strict=True)
            others: list[dict[str, Any]] = []
        except ValidationError as exc:
            others = [p for p in _problems(exc) if not (p["loc"] and p["loc"][0] in long)]
        problems = too_long + others
        return Refusal(len(problems), problems[:MAX_ERRORS_SHOWN], model.__name__)
    shown: list[dict[str, Any]] = []
    count = 0
    repeated = 0  # errors outside the sliced lists: the same in every slice, counted once
    title = model.__name__
    for start in range(0, rows, ROWS_PER_SLICE):
        piece = {key: value[start : start + ROWS_PER_SLICE] if key in long else value for key, value in data.items()}
        try:
            model.model_validate(piece, strict=True)
        except ValidationError as exc:
            title = exc.title
            if start == 0 or len(shown) < MAX_ERRORS_SHOWN:
                problems = _problems(exc)
                if start == 0:
                    repeated = sum(1 for p in problems if not (p["loc"] and p["loc"][0] in long))
                    count += len(problems)
                else:
                    problems = [p for p in problems if p["loc"] and p["loc"][0] in long]
                    count += len(problems)
                for problem in problems:
                    if len(problem["loc"]) > 1 and problem["loc"][0] in long and isinstance(problem["loc"][1], int):
                        problem["loc"][1] += start
                shown += problems[: MAX_ERRORS_SHOWN - len(shown)]
            else:
                count += exc.error_count() - repeated
    return Refusal(count, shown, title) if count else None


@functools.cache
def _max_items(model: type[BaseModel]) -> dict[str, int]:
    """Per top-level list field, the most items the model allows (from its JSON schema)."""
    limits = {}
    for name, schema in model.model_json_schema().get("properties", {}).items():
        for option in [schema, *schema.get("anyOf", [])]:
            if "maxItems" in option:
                limits[name] = int(option["maxItems"])
    return limits


class BodyScreen:
    """Validates large JSON bodies in one child process, so the serving process's event loop never
    holds a hostile body's parse (pydantic holds the interpreter lock throughout, ~1 s for 30 MB of
    bad values; a thread would not help). A valid body is then parsed by the serving process as any
    other; a refused one never is. At most `max_waiting` bodies wait at once (more: 503)."""

    def __init__(self, model_dir: Path, *, max_waiting: int = 4) -> None:
        self.model_dir = str(model_dir)
        self.max_waiting = max_waiting
        self.waiting = 0
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        import multiprocessing

        # spawn, not fork: the serving process has threads (the prediction log's writer).
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load_screen_models,
            initargs=(self.model_dir,),
        )
        self._pool.submit(_screen, "", b"").exception()  # wait until it is up (an unknown route: KeyError)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def screen(self, route: str, body: bytes) -> Refusal | None:
        """None when the body is valid; raises BusyError when too many bodies are waiting."""
        if self.waiting >= self.max_waiting:
            raise BusyError
        if self._pool is None:
            await asyncio.to_thread(self.start)
        assert self._pool is not None
        self.waiting += 1
        future = self._pool.submit(_screen, route, body)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:  # the child died (killed, out of memory): a fresh one for the next body
            self._pool = None
            raise BusyError from None
        finally:
            self.waiting -= 1
            future.cancel()  # a request given up on (timed out, client gone) leaves no work queued


class BusyError(Exception):
    """The screening process cannot take this body now."""


# --- the middleware -----------------------------------------------------------------------------------


class RouteRule(NamedTuple):
    media_type: str
    # JSON routes: the class of the input BentoML's API function receives, which validates the body.
    # None: the endpoint reads the body itself (Arrow).
    model: type[BaseModel] | None = None


def accept_guarded_input(input_spec: Any) -> None:
    """Make BentoML take the input RequestGuard validated, instead of parsing the body again.

    BentoML builds each API's input with `input_spec.from_http_request(request, serde)`; the guard
    left the object, built by the same class, in the request's scope."""
    parse = input_spec.from_http_request

    async def from_http_request(cls: Any, request: Any, serde: Any) -> Any:
        validated = request.scope.pop(VALIDATED_INPUT, None)
        return validated if validated is not None else await parse(request, serde)

    input_spec.from_http_request = classmethod(from_http_request)


def _json_response(
    status: int, payload: Any, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    return _json_bytes_response(status, json.dumps(payload).encode(), extra_headers)


def _json_bytes_response(
    status: int, body: bytes, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra_headers,
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class RequestGuard:
    """ASGI middleware in front of the service (see the module docstring).

    - With an API key, every path but OPEN_PATHS needs `Authorization: Bearer <key>` (or
      `X-API-Key: <key>`), compared in constant time; 401 without detail otherwise.
    - POST bodies of `routes` need exactly one Content-Type header, of the route's media type (415),
      and at most `max_body_bytes` (413, decided from Content-Length before reading, or while reading
      a chunked body).
    - JSON bodies are validated here (see the module docstring); a refusal is a 400 with the first
      MAX_ERRORS_SHOWN problems and their count, and one INFO log line.
    - GET `openapi_path` answers `openapi()`.
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        max_body_bytes: int,
        routes: Mapping[str, RouteRule],
        timeout_s: float,
        screen: BodyScreen | None = None,
        api_key: str | None = None,
        openapi: Callable[[], dict[str, Any]] | None = None,
        openapi_path: str = "/docs.json",
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.routes = {path: (rule.media_type.encode(), rule.model) for path, rule in routes.items()}
        self.timeout_s = timeout_s
        self.screen = screen
        self.api_key = api_key.encode() if api_key else None
        self.openapi = openapi
        self.openapi_path = openapi_path
        self._openapi_bytes: bytes | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if self.api_key is not None and path not in OPEN_PATHS and not self._authorized(scope["headers"]):
            # Any path may get here, and a path is what the client wrote: only a known route is logged.
            route = path if path in self.routes else "another path"
            return await self._reject(send, route, 401, "unauthorized", [(b"www-authenticate", b"Bearer")])
        if method == "GET" and path == self.openapi_path and self.openapi is not None:
            return await self._send_openapi(send)
        rule = self.routes.get(path)
        if method != "POST" or rule is None:
            return await self.app(scope, receive, send)
        required, model = rule

        media_types = [value for name, value in scope["headers"] if name.lower() == b"content-type"]
        if len(media_types) != 1 or media_types[0].split(b";")[0].strip().lower() != required:
            return await self._reject(
                send, path, 415, f"the request body needs exactly one header Content-Type: {required.decode()}"
            )
        lengths = [value for name, value in scope["headers"] if name.lower() == b"content-length"]
        if lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                return await self._reject(send, path, 400, "Content-Length is not one number")
            if int(lengths[0]) > self.max_body_bytes:
                return await self._too_large(send, path, int(lengths[0]))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await self._too_large(send, path, None)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        # Joining a large body copies all of it (~25 ms for 30 MB here); bytes.join lets go of the
        # interpreter lock for large joins, so in a thread it leaves the event loop to other requests.
        body = b"".join(chunks) if size <= INLINE_BODY_BYTES else await asyncio.to_thread(b"".join, chunks)
        if model is not None:
            try:
                refusal, validated = await self._validate(path, model, body)
            except Exception:  # a bug in a validator: a 500, logged without the exception's message
                logger.exception("checking a body for %s failed", path)
                return await self._reject(send, path, 500, "An unexpected error has occurred, see the server log")
            if refusal is not None:
                request_id = os.urandom(16).hex()
                log_refusal(path, 400, refusal.problems, request_id)
                start, answer = _json_response(400, refusal_body(refusal, request_id))
                await send(start)
                return await send(answer)
            if validated is None:  # busy or timed out: answered
                return await self._reject(send, path, 503, "too many large requests are being checked; retry")
            scope[VALIDATED_INPUT] = validated
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _validate(self, path: str, model: type[BaseModel], body: bytes) -> tuple[Refusal | None, Any]:
        """(refusal, None) for a bad body, (None, input) for a good one, (None, None) when a large
        body could not be screened in time."""
        if len(body) > INLINE_BODY_BYTES and self.screen is not None:
            try:
                # Three quarters of the service's timeout: the 503 must beat BentoML's 504, and the
                # worker still has to parse a body the screen passed.
                async with asyncio.timeout(0.75 * self.timeout_s):
                    refusal = await self.screen.screen(path, body)
            except (BusyError, TimeoutError):
                return None, None
            if refusal is not None:
                return refusal, None
        try:
            return None, model.model_validate_json(body)
        except ValidationError as exc:
            return refusal_of(exc, model, body), None

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        assert self.api_key is not None
        offered = [
            value.removeprefix(b"Bearer ").strip() if name.lower() == b"authorization" else value.strip()
            for name, value in headers
            if name.lower() in (b"authorization", b"x-api-key")
        ]
        return len(offered) == 1 and hmac.compare_digest(offered[0], self.api_key)

    async def _too_large(self, send: Send, path: str, declared: int | None) -> None:
        size = f"{declared:,} bytes" if declared is not None else "more than that"
        await self._reject(
            send,
            path,
            413,
            f"request body too large: the limit is {self.max_body_bytes:,} bytes "
            f"(KENNEL_MAX_REQUEST_BYTES), this one is {size}; split it into smaller requests",
        )

    @staticmethod
    async def _reject(
        send: Send, path: str, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        request_id = os.urandom(16).hex()
        log_refusal(path, status, 1, request_id)
        start, body = _json_response(status, {"error": message, "request_id": request_id}, headers)
        await send(start)
        await send(body)

    async def _send_openapi(self, send: Send) -> None:
        if self._openapi_bytes is None:
            assert self.openapi is not None
            self._openapi_bytes = json.dumps(self.openapi()).encode()
        start, body = _json_bytes_response(200, self._openapi_bytes)
        await send(start)
        await send(body)


# --- logs ------------------------------------------------------------------------------------------------


class WithholdExceptionMessages(logging.Filter):
    """For records that carry an exception (BentoML's and uvicorn's error logs): keep the traceback's
    frames and the exception type, drop its message, which may quote what a client sent (pydantic's
    messages list rejected values)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _, tb = record.exc_info
            frames = "".join(traceback.format_tb(tb))
            record.exc_info = None
            record.exc_text = f"Traceback (most recent call last):\n{frames}{exc_type.__name__} (message withheld)"
        return True


WITHHELD_LOGGERS = (
    "kennel.service",
    "bentoml",
    "bentoml.serve",
    "bentoml._internal.server.http_app",
    "uvicorn.error",
    "uvicorn",
)


def withhold_exception_messages() -> None:
    """Install WithholdExceptionMessages on the loggers that log request exceptions (a filter on a
    logger applies to its own records only, so each is named)."""
    for name in WITHHELD_LOGGERS:
        logging.getLogger(name).addFilter(WithholdExceptionMessages())
