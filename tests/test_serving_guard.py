"""The request guard in front of the model server (kennel.serving.guard), driven as ASGI in-process:
API key, media type, size, validation with bounded errors, and logs that hold nothing a client sent."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from kennel.serving.guard import (
    MAX_ERRORS_SHOWN,
    VALIDATED_INPUT,
    RequestGuard,
    RouteRule,
    WithholdExceptionMessages,
    api_key_from_env,
    env_int,
)

KEY = "k" * 24


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    values: list[float] = Field(max_length=100_000)


def _guard(**kwargs: Any) -> RequestGuard:
    settings: dict[str, Any] = {
        "max_body_bytes": 10_000_000,
        "routes": {
            "/predict": RouteRule("application/json", Body),
            "/predict_arrow": RouteRule("application/vnd.apache.arrow.stream"),
        },
        "timeout_s": 10,
    }
    return RequestGuard(None, **(settings | kwargs))  # type: ignore[arg-type]


def _call(
    guard: RequestGuard,
    *,
    method: str = "POST",
    path: str = "/predict",
    headers: list[tuple[str, str]] | None = None,
    chunks: list[bytes] = (),  # type: ignore[assignment]
) -> tuple[int, dict[str, Any] | bytes, dict[str, Any] | None]:
    """(status, answer (parsed when JSON), what the wrapped app got: its body and the validated input)."""
    seen: dict[str, Any] = {}
    sent: list[dict[str, Any]] = []
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: dict[str, Any], receive_: Any, send_: Any) -> None:
        body = b""
        while True:
            message = await receive_()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.update(body=body, validated=scope.get(VALIDATED_INPUT))
        await send_({"type": "http.response.start", "status": 200, "headers": []})
        await send_({"type": "http.response.body", "body": b"ok"})

    guard.app = app
    default = [("content-type", "application/json")] if method == "POST" else []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (default if headers is None else headers)],
    }
    asyncio.run(guard(scope, receive, send))
    body = sent[1]["body"]
    answer = json.loads(body) if (b"content-type", b"application/json") in sent[0].get("headers", []) else body
    return sent[0]["status"], answer, seen or None


def test_a_valid_body_reaches_the_service_validated_once() -> None:
    status, _, seen = _call(_guard(), chunks=[b'{"values":', b" [1.5, 2]}"])
    assert status == 200 and seen is not None
    assert seen["body"] == b'{"values": [1.5, 2]}'
    assert seen["validated"] == Body(values=[1.5, 2.0])


def test_an_invalid_body_gets_bounded_errors_and_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    planted = "PLANTED-VALUE-7f3a"
    body = json.dumps({"values": [planted] * 50_000, planted: 1}).encode()
    with caplog.at_level(logging.DEBUG):
        status, answer, seen = _call(_guard(), chunks=[body])
    assert status == 400 and seen is None
    assert isinstance(answer, dict)
    assert answer["error_count"] == 50_001 and len(answer["detail"]) == MAX_ERRORS_SHOWN
    assert "first 20 are listed" in answer["error"]
    assert len(json.dumps(answer)) < 5_000
    assert planted not in json.dumps(answer["detail"][0]) and "input" not in answer["detail"][0]
    records = [r for r in caplog.records if r.name.startswith("kennel")]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    line = records[0].getMessage()
    assert "/predict" in line and "400" in line and "50001" in line and answer["request_id"] in line
    assert planted not in caplog.text


def test_a_long_invented_field_name_is_cut_short_in_the_answer() -> None:
    status, answer, _ = _call(_guard(), chunks=[json.dumps({"values": [], "x" * 10_000: 1}).encode()])
    assert status == 400 and isinstance(answer, dict)
    assert max(len(str(part)) for err in answer["detail"] for part in err["loc"]) <= 100


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("content-type", "text/plain")],
        [("content-type", "application/json"), ("content-type", "application/json")],
        [("content-type", "application/json"), ("content-type", "text/plain")],
        [("content-type", "text/plain"), ("content-type", "application/json")],
    ],
)
def test_exactly_one_content_type_of_the_routes_media_type(headers: list[tuple[str, str]]) -> None:
    status, answer, seen = _call(_guard(), headers=headers, chunks=[b'{"values": []}'])
    assert status == 415 and seen is None
    assert isinstance(answer, dict) and "exactly one header Content-Type: application/json" in answer["error"]


def test_two_content_lengths_are_refused() -> None:
    headers = [("content-type", "application/json"), ("content-length", "14"), ("content-length", "99")]
    status, _, seen = _call(_guard(), headers=headers, chunks=[b'{"values": []}'])
    assert status == 400 and seen is None


def test_oversize_bodies_are_refused_without_echoing_them() -> None:
    secret = b'{"values": ["' + b"s" * 200 + b'"]}'
    guard = _guard(max_body_bytes=100)
    headers = [("content-type", "application/json"), ("content-length", str(len(secret)))]
    status, answer, seen = _call(guard, headers=headers, chunks=[secret])
    assert status == 413 and seen is None and isinstance(answer, dict)
    assert "limit is 100 bytes" in answer["error"] and "sss" not in json.dumps(answer)
    status, answer, seen = _call(guard, chunks=[secret[:60], secret[60:]])  # chunked: no length declared
    assert status == 413 and seen is None and "sss" not in json.dumps(answer)


def test_other_routes_and_arrow_bodies_pass_unvalidated() -> None:
    status, _, seen = _call(_guard(), path="/other", headers=[], chunks=[b"x" * 500])
    assert status == 200 and seen == {"body": b"x" * 500, "validated": None}
    arrow = [("content-type", "application/vnd.apache.arrow.stream")]
    status, _, seen = _call(_guard(), path="/predict_arrow", headers=arrow, chunks=[b"\xff" * 10])
    assert status == 200 and seen == {"body": b"\xff" * 10, "validated": None}


@pytest.mark.parametrize(
    ("auth", "allowed"),
    [
        ([("authorization", f"Bearer {KEY}")], True),
        ([("x-api-key", KEY)], True),
        ([], False),
        ([("authorization", f"Bearer {KEY[:-1]}")], False),
        ([("authorization", f"Bearer {KEY}x")], False),
        ([("authorization", KEY.upper())], False),
        ([("authorization", f"Bearer {KEY}"), ("x-api-key", KEY)], False),  # one credential, not two
    ],
)
def test_the_api_key_guards_every_route_but_the_open_ones(auth: list[tuple[str, str]], allowed: bool) -> None:
    guard = _guard(api_key=KEY, openapi=lambda: {"openapi": "3.1.0"})
    for method, path in (("POST", "/predict"), ("GET", "/metrics"), ("GET", "/some_later_route")):
        headers = auth + ([("content-type", "application/json")] if method == "POST" else [])
        status, answer, seen = _call(guard, method=method, path=path, headers=headers, chunks=[b'{"values": []}'])
        if allowed:
            assert status == 200, (path, answer)
        else:
            assert status == 401 and seen is None and isinstance(answer, dict)
            assert answer["error"] == "unauthorized"
    for path in ("/readyz", "/livez", "/healthz", "/docs.json"):
        status, _, _ = _call(guard, method="GET", path=path, headers=[], chunks=[b""])
        assert status == 200, path


def test_a_refused_unknown_path_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    planted = "/PLANTED-PATH-5d2e"
    with caplog.at_level(logging.DEBUG):
        status, _, _ = _call(_guard(api_key=KEY), method="GET", path=planted, headers=[], chunks=[b""])
    assert status == 401
    assert "refused another path: 401" in caplog.text and planted not in caplog.text


def test_api_key_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KENNEL_API_KEY", raising=False)
    assert api_key_from_env() is None
    monkeypatch.setenv("KENNEL_API_KEY", "")
    assert api_key_from_env() is None
    monkeypatch.setenv("KENNEL_API_KEY", "short")
    with pytest.raises(ValueError, match="at least 16"):
        api_key_from_env()
    monkeypatch.setenv("KENNEL_API_KEY", KEY)
    assert api_key_from_env() == KEY


def test_env_int_names_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNEL_X", "many")
    with pytest.raises(ValueError, match="KENNEL_X='many' is not an integer"):
        env_int("KENNEL_X", 1)
    monkeypatch.setenv("KENNEL_X", "0")
    with pytest.raises(ValueError, match="at least 1"):
        env_int("KENNEL_X", 1)
    monkeypatch.setenv("KENNEL_X", "")
    assert env_int("KENNEL_X", 7) == 7


def test_exception_messages_are_withheld_from_logs_but_the_traceback_stays(tmp_path: Path) -> None:
    planted = "PLANTED-VALUE-91c2"
    logger = logging.getLogger("test.withheld")
    logger.addFilter(WithholdExceptionMessages())
    handler = logging.FileHandler(tmp_path / "log.txt")
    logger.addHandler(handler)
    try:
        try:
            Body.model_validate({"values": [planted]})
        except Exception:
            logger.exception("Exception on /predict [POST]")
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = (tmp_path / "log.txt").read_text()
    assert "Exception on /predict" in text and "ValidationError (message withheld)" in text
    assert "test_exception_messages_are_withheld" in text  # the frames are kept
    assert planted not in text


def test_large_bodies_are_screened_in_another_process(tmp_path: Path, model_dir: Path) -> None:
    """A large bad body is refused by the screening process; the serving process never parses it."""
    from kennel.model import ModelCard
    from kennel.serving.api import request_models
    from kennel.serving.guard import INLINE_BODY_BYTES, BodyScreen
    from kennel.spec import load_spec

    spec = load_spec(model_dir / "spec.yaml")
    columns = request_models(spec, ModelCard.load(model_dir)).columns
    parsed: list[int] = []

    class Counted(columns):  # type: ignore[valid-type, misc]
        """Counts the bodies the serving process parses itself."""

        @classmethod
        def model_validate_json(cls, body: Any, **kwargs: Any) -> Any:
            parsed.append(len(body))
            return super().model_validate_json(body, **kwargs)

    screen = BodyScreen(model_dir)
    screen.start()
    try:
        guard = _guard(routes={"/predict_columns": RouteRule("application/json", Counted)}, screen=screen)
        bad = json.dumps({"age": ["old"] * 100_000}).encode()
        assert len(bad) > INLINE_BODY_BYTES
        status, answer, seen = _call(guard, path="/predict_columns", chunks=[bad])
        assert status == 400 and seen is None and parsed == []
        assert isinstance(answer, dict) and answer["error_count"] >= 100_000 and len(answer["detail"]) == 20
        assert ["age", 0] in [e["loc"] for e in answer["detail"]]  # the first problems, found again on a cut copy
    finally:
        screen.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    from test_serving_unit import DEMO_SPEC, synthetic_records, train_model_folder

    from kennel.spec import load_spec

    spec = load_spec(DEMO_SPEC)
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("guard-model") / "m"
    train_model_folder(folder, spec, synthetic_records(spec, 200, rng), rng, rounds=3)
    return folder


# --- screening large bodies: bounded memory, exact counts -----------------------------------------


@pytest.fixture(scope="module")
def columns_model(model_dir: Path) -> Any:
    from kennel.model import ModelCard
    from kennel.serving.api import request_models
    from kennel.spec import load_spec

    return request_models(load_spec(model_dir / "spec.yaml"), ModelCard.load(model_dir)).columns


def _pydantic_refusal(model: Any, body: bytes) -> tuple[int, list[Any]]:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as exc:
        model.model_validate_json(body)
    return exc.value.error_count(), [e["loc"] for e in exc.value.errors()][:20]


def test_screening_in_slices_counts_and_locates_like_pydantic(columns_model: Any, model_dir: Path) -> None:
    from test_serving_unit import synthetic_records

    from kennel.serving.guard import screen_body
    from kennel.spec import load_spec

    records = synthetic_records(load_spec(model_dir / "spec.yaml"), 5_000, __import__("numpy").random.default_rng(1))
    columns = {name: [r[name] for r in records] for name in records[0]}
    assert screen_body(columns_model, json.dumps(columns).encode()) is None
    for bad_rows in ([3], [1_500, 4_999], list(range(0, 5_000, 7))):
        broken = {**columns, "age": [("old" if i in bad_rows else v) for i, v in enumerate(columns["age"])]}
        broken["region"] = [("mars" if i in bad_rows[:2] else v) for i, v in enumerate(columns["region"])]
        body = json.dumps(broken).encode()
        refusal = screen_body(columns_model, body)
        count, first = _pydantic_refusal(columns_model, body)
        assert refusal is not None and refusal.problems == count
        # The same first problems; slices list a row's fields together, pydantic a field's rows.
        shown = sorted(tuple(p["loc"]) for p in refusal.first)
        assert shown == sorted(first) if count <= 20 else shown[:5] == sorted(first)[:5]


def test_screening_refuses_shapes_pydantic_would_drown_in(columns_model: Any) -> None:
    from kennel.serving.guard import screen_body

    wide = {"age": [40.0], **{f"k{i}": 1 for i in range(5_000)}}
    refusal = screen_body(columns_model, json.dumps(wide).encode())
    assert refusal is not None and refusal.first[0]["type"] == "too_many_keys" and refusal.problems == 5_001
    uneven = {"age": [40.0] * 3_000, "region": ["west"] * 2_000}
    refusal = screen_body(columns_model, json.dumps(uneven).encode())
    assert refusal is not None and any("differ in length" in p["msg"] or p["type"] == "missing" for p in refusal.first)
    too_many = {"age": [40.0] * 100_001}
    refusal = screen_body(columns_model, json.dumps(too_many).encode())
    assert refusal is not None and refusal.first[0]["type"] == "too_long"
    refusal = screen_body(columns_model, b'{"age": [1, 2,')
    assert refusal is not None and refusal.first[0]["type"] == "json_invalid"


def test_screening_a_body_of_millions_of_wrong_values_stays_small(tmp_path: Path, model_dir: Path) -> None:
    """2 million wrong values (90,000 rows of every column, 8 MB): pydantic alone keeps every error
    until it is done (hundreds of MB); screened in slices, the process grows by a fraction of that."""
    import subprocess
    import sys

    script = tmp_path / "screen.py"
    script.write_text(
        f"""
import json, re, sys
sys.path[:0] = {[str(Path(__file__).parents[1])]!r}
from pydantic import ValidationError
from kennel.model import ModelCard
from kennel.serving.api import request_models
from kennel.serving.guard import screen_body
from kennel.spec import load_spec
folder = {str(model_dir)!r}
model = request_models(load_spec(folder + "/spec.yaml"), ModelCard.load(folder)).columns
column = b'[' + b'"x",' * 89_999 + b'"x"]'
body = b"{{" + b",".join(b'"' + name.encode() + b'": ' + column for name in model.model_fields) + b"}}"
# VmHWM, this process's own peak (ru_maxrss would start at the forking parent's size: pytest's)
peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
before = peak()
if sys.argv[1] == "sliced":
    problems = screen_body(model, body).problems
else:
    try:
        model.model_validate_json(body)
    except ValidationError as exc:
        problems = exc.error_count()
print(json.dumps({{"problems": problems, "growth_mb": peak() - before}}))
"""
    )

    def run(how: str) -> dict[str, Any]:
        result = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    sliced, plain = run("sliced"), run("plain")
    print(f"screened in slices: {sliced}; pydantic alone: {plain}")
    assert sliced["problems"] == plain["problems"] >= 1_800_000
    assert sliced["growth_mb"] < plain["growth_mb"] / 4, (sliced, plain)
