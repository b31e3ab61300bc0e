"""End-to-end serving: train a small booster on synthetic demo-spec records, store it, build a Bento,
run `bentoml serve` on that Bento in a subprocess (one per module) and talk HTTP to it.

The server gets a temporary BENTOML_HOME, no PYTHONPATH, no KENNEL_LAKE_ROOT and no Dagster
settings, so it can only use what the Bento carries, and logs to the lake the Bento was built with.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from test_serving_unit import library_scores, synthetic_records, train_model_folder

from kennel.lake import Lake
from kennel.model import Model, ModelCard
from kennel.spec import PROJECT_ROOT, load_spec

pytestmark = pytest.mark.serving

DEMO_SPEC = PROJECT_ROOT / "datasets" / "credit_demo.yaml"
READY_TIMEOUT_S = 90
N_RECORDS = 400
MAX_REQUEST_BYTES = 1_000_000  # small, so the 413 tests stay cheap
SCHEMATHESIS_CONFIG = """
[checks.positive_data_acceptance]
# A schema-valid body can still be larger than KENNEL_MAX_REQUEST_BYTES (a byte limit JSON Schema
# cannot state); the 413 is documented.
expected-statuses = ["2xx", "413"]

[checks.negative_data_rejection]
# A schema-violating body is refused with 400, or 413/415 before it is parsed.
expected-statuses = [400, 405, 413, 415]

[[operations]]
include-path = "/predict_columns"
# Equal column lengths cannot be stated in JSON Schema either: a schema-valid body may get a 400.
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/predict_arrow"
# The body is any byte string to the schema; most are not Arrow streams (400 expected).
checks.positive_data_acceptance.enabled = false
"""
# Schemathesis has no serializer for Arrow: send its generated strings as raw bytes (garbage in, 400 out).
SCHEMATHESIS_HOOKS = """
import schemathesis

schemathesis.serializer.alias("application/vnd.apache.arrow.stream", "application/octet-stream")
"""


@dataclass(frozen=True)
class BuiltBento:
    model_tag: str
    bento_tag: str
    card: ModelCard
    model_dir: Path  # the stored model's folder in the model store
    model: Model  # the stored model, loaded in-process like the service loads it
    records: list[dict[str, Any]]
    expected: np.ndarray  # probabilities for `records` from XGBoost itself on the training frame
    built_lake: Path  # the lake the Bento was built with (its kennel_model.json names it)


@dataclass(frozen=True)
class Served(BuiltBento):
    base_url: str
    lake: Path
    command: list[str]
    env: dict[str, str]


def build_test_bento(tmp_path_factory: pytest.TempPathFactory) -> BuiltBento:
    """Train on synthetic records, save to the model store, build a Bento for a fresh lake (conftest
    points BENTOML_HOME at the session's temp folder)."""
    import bentoml

    from kennel.serving.model_store import build_bento, load_model_folder, save_model

    spec = load_spec(DEMO_SPEC)
    rng = np.random.default_rng(7)
    records = synthetic_records(spec, N_RECORDS, rng)
    model_dir = tmp_path_factory.mktemp("model") / "credit_demo"
    train_model_folder(model_dir, spec, records, rng)
    model_tag = save_model(
        model_dir,
        name="credit_demo_clf",
        labels={"dataset": spec.name, "owner": spec.owner},
        metadata={"run_id": "test"},
    )
    built_lake = Lake(tmp_path_factory.mktemp("built-lake"))
    bento_tag = build_bento(model_tag, bento_name="kennel_credit_demo", labels={"Model": model_tag}, lake=built_lake)
    assert bentoml.bentos.get(bento_tag).tag.name == "kennel_credit_demo"
    stored_dir = load_model_folder(model_tag)
    model = Model.load(stored_dir)
    expected = library_scores(stored_dir, records)
    # the service scores through Model; in-process it agrees with the library on the training frame
    np.testing.assert_allclose(model.score(records), expected, rtol=0, atol=1e-6)
    return BuiltBento(model_tag, bento_tag, model.card, stored_dir, model, records, expected, built_lake.root)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    bento_tag: str, run_dir: Path, settings: dict[str, str | None]
) -> tuple[subprocess.Popen[bytes], str, list[str], dict[str, str]]:
    """`bentoml serve <bento_tag>` on a free port in its own session; waits for /readyz. A setting
    of None removes that variable from the server's environment."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("bentoml")),
        "serve",
        bento_tag,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and "dagster" not in k.lower()}
    for key, value in settings.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    log_path = run_dir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"bentoml serve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return proc, base_url, command, env
        except requests.RequestException:  # not listening yet
            pass
        time.sleep(0.25)
    stop_server(proc)
    pytest.fail(f"bentoml serve not ready after {READY_TIMEOUT_S}s:\n{log_path.read_text()}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a process manager would: a graceful shutdown that runs the service's hooks."""
    if proc.poll() is not None:
        return
    # The server runs in its own session, so its group holds exactly it and its workers.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    built = build_test_bento(tmp_path_factory)
    run_dir = tmp_path_factory.mktemp("serve")
    proc, base_url, command, env = start_server(
        built.bento_tag,
        run_dir,
        {
            # unset: the service logs to the lake named in the Bento's manifest (the one it was built with)
            "KENNEL_LAKE_ROOT": None,
            "KENNEL_PREDICTION_LOG_FLUSH_S": "1",
            "KENNEL_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        },
    )
    try:
        yield Served(**vars(built), base_url=base_url, lake=built.built_lake, command=command, env=env)
    finally:
        stop_server(proc)


def _post(served: Served, route: str, body: Any) -> requests.Response:
    return requests.post(f"{served.base_url}{route}", json=body, timeout=30)


def _check_answer(answer: dict[str, Any], served: Served, expected: float) -> None:
    assert set(answer) == {"probability", "label", "model_version", "request_id", "warnings"}
    assert answer["probability"] == pytest.approx(expected, abs=1e-6)
    assert answer["label"] == int(answer["probability"] >= served.card.threshold)
    assert answer["model_version"] == served.model_tag
    assert re.fullmatch(r"[0-9a-f]{32}", answer["request_id"])


# --- answers agree with in-process predictions ---------------------------------------------------


def test_predict_single_records_match_in_process(served: Served) -> None:
    for record, expected in zip(served.records[:25], served.expected[:25]):
        resp = _post(served, "/predict", record)
        assert resp.status_code == 200, resp.text
        _check_answer(resp.json(), served, expected)
    assert len(set(np.round(served.expected[:25], 6))) > 5  # not a constant model


def test_predict_batch_matches_in_process(served: Served) -> None:
    resp = _post(served, "/predict_batch", {"records": served.records})
    assert resp.status_code == 200, resp.text
    answers = resp.json()
    assert len(answers) == N_RECORDS
    for answer, expected in zip(answers, served.expected):
        _check_answer(answer, served, expected)
    assert len({a["request_id"] for a in answers}) == N_RECORDS


def test_predict_columns_matches_in_process(served: Served) -> None:
    columns = {name: [r[name] for r in served.records] for name in served.records[0]}
    resp = _post(served, "/predict_columns", columns)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert set(answer) == {"probability", "label", "request_id", "model_version", "warnings"}
    np.testing.assert_allclose(answer["probability"], served.expected, rtol=0, atol=1e-6)
    assert answer["label"] == [int(p >= served.card.threshold) for p in answer["probability"]]
    assert answer["model_version"] == served.model_tag
    assert len(set(answer["request_id"])) == N_RECORDS


def _arrow_body(records: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa

    table = pa.Table.from_pylist(records)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=150)
    return sink.getvalue().to_pybytes()


def _post_arrow(served: Served, body: bytes) -> requests.Response:
    return requests.post(
        f"{served.base_url}/predict_arrow",
        data=body,
        headers={"Content-Type": "application/vnd.apache.arrow.stream"},
        timeout=30,
    )


def test_predict_arrow_matches_in_process(served: Served) -> None:
    resp = _post_arrow(served, _arrow_body(served.records))
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    np.testing.assert_allclose(answer["probability"], served.expected, rtol=0, atol=1e-6)
    assert answer["label"] == [int(p >= served.card.threshold) for p in answer["probability"]]
    assert answer["model_version"] == served.model_tag and len(set(answer["request_id"])) == N_RECORDS


def test_predict_arrow_refuses_what_json_refuses(served: Served) -> None:
    resp = _post_arrow(served, _arrow_body([{**served.records[0], "region": "mars"}]))
    _assert_rejected(resp, "region")
    resp = _post_arrow(served, b"not arrow at all")
    assert resp.status_code == 400 and resp.json()["detail"][0]["type"] == "arrow_invalid"
    resp = requests.post(
        f"{served.base_url}/predict_arrow",
        data=_arrow_body(served.records[:2]),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 415


def test_concurrent_batches_come_back_whole_and_in_order(served: Served) -> None:
    # Adaptive batching merges requests that arrive together; each must get exactly its own rows.
    slices = [(start, start + 10 + start % 7) for start in range(0, 320, 20)]

    def one(bounds: tuple[int, int]) -> tuple[tuple[int, int], list[dict[str, Any]]]:
        start, stop = bounds
        resp = _post(served, "/predict_batch", {"records": served.records[start:stop]})
        assert resp.status_code == 200, resp.text
        return bounds, resp.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        for (start, stop), answers in pool.map(one, slices):
            assert len(answers) == stop - start
            for answer, expected in zip(answers, served.expected[start:stop]):
                _check_answer(answer, served, expected)


def test_id_and_sensitive_columns_are_optional_and_ignored(served: Served) -> None:
    record = dict(served.records[1])
    del record["application_id"], record["gender"]
    resp = _post(served, "/predict", record)
    assert resp.status_code == 200, resp.text
    assert resp.json()["probability"] == pytest.approx(served.expected[1], abs=1e-6)


def test_nullable_features_may_be_omitted(served: Served) -> None:
    nullable = {f.name for f in load_spec(DEMO_SPEC).features if f.nullable}
    record = {k: v for k, v in served.records[2].items() if k not in nullable}
    expected = library_scores(served.model_dir, [record])[0]
    assert served.model.score([record])[0] == pytest.approx(expected, abs=1e-6)
    resp = _post(served, "/predict", record)
    assert resp.status_code == 200, resp.text
    assert resp.json()["probability"] == pytest.approx(expected, abs=1e-6)
    resp = _post(served, "/predict_columns", {name: [value] for name, value in record.items()})
    assert resp.status_code == 200, resp.text
    assert resp.json()["probability"][0] == pytest.approx(expected, abs=1e-6)


# --- malformed input -----------------------------------------------------------------------------


def _assert_rejected(resp: requests.Response, field: str | None) -> None:
    """A 400 whose pydantic detail locates the problem at `field` (or names it in the message);
    None: the body as a whole (empty location)."""
    assert resp.status_code == 400, resp.text
    detail = resp.json()["detail"]
    if field is None:
        assert [err["loc"] for err in detail] == [[]], resp.text
    else:
        assert any(field in [str(part) for part in err["loc"]] or field in err["msg"] for err in detail), resp.text


def _with(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {**record, **changes}


def _without(field: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {k: v for k, v in record.items() if k != field}


def _as_columns(record: dict[str, Any], n: int = 2) -> dict[str, list[Any]]:
    return {name: [value] * n for name, value in record.items()}


# (route, body from a valid record, field the error must name; None: the body itself)
MALFORMED: dict[str, tuple[str, Callable[[dict[str, Any]], Any], str | None]] = {
    "missing_required": ("/predict", _without("age"), "age"),
    "null_required": ("/predict", _with(home_ownership=None), "home_ownership"),
    "wrong_type": ("/predict", _with(loan_amount="lots"), "loan_amount"),
    "number_as_string": ("/predict", _with(age="42"), "age"),
    "boolean_as_number": ("/predict", _with(is_repeat_customer=1), "is_repeat_customer"),
    "out_of_range": ("/predict", _with(age=12), "age"),
    "unknown_category": ("/predict", _with(region="atlantis"), "region"),
    "sensitive_unknown_category": ("/predict", _with(gender="robot"), "gender"),
    "extra_field": ("/predict", _with(favourite_colour="blue"), "favourite_colour"),
    "record_not_an_object": ("/predict", lambda record: [record], None),
    "empty_batch": ("/predict_batch", lambda record: {"records": []}, "records"),
    "batch_not_wrapped": ("/predict_batch", lambda record: [record], None),
    "batch_extra_field": ("/predict_batch", lambda record: {"records": [record], "limit": 3}, "limit"),
    "bad_record_in_batch": (
        "/predict_batch",
        lambda record: {"records": [record, {**record, "region": "x"}]},
        "region",
    ),
    "columns_misaligned": ("/predict_columns", lambda record: {**_as_columns(record), "age": [40.0]}, "age"),
    "columns_bad_value": (
        "/predict_columns",
        lambda record: {**_as_columns(record), "region": ["west", "mars"]},
        "region",
    ),
    "columns_scalar": ("/predict_columns", lambda record: record, "age"),
    "feedback_bad_request_id": (
        "/feedback",
        lambda record: {"labels": [{"request_id": "123", "label": 1}]},
        "request_id",
    ),
    "feedback_bad_label": ("/feedback", lambda record: {"labels": [{"request_id": "a" * 32, "label": "yes"}]}, "label"),
    "feedback_boolean_label": (
        "/feedback",
        lambda record: {"labels": [{"request_id": "a" * 32, "label": True}]},
        "label",
    ),
    "feedback_empty": ("/feedback", lambda record: {"labels": []}, "labels"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_is_rejected_naming_the_field(served: Served, case: str) -> None:
    route, make_body, field = MALFORMED[case]
    _assert_rejected(_post(served, route, make_body(served.records[3])), field)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("route", ["/predict", "/predict_columns"])
def test_non_finite_number_is_rejected(served: Served, literal: str, route: str) -> None:
    # requests' json= refuses NaN (allow_nan=False), so put the bare literal into the body by hand.
    record = {**served.records[4], "interest_rate": "__X__"}
    body = json.dumps(record if route == "/predict" else _as_columns(record, 1)).replace('"__X__"', literal)
    resp = requests.post(
        f"{served.base_url}{route}", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    _assert_rejected(resp, "interest_rate")


@pytest.mark.parametrize("route", ["/predict", "/predict_batch", "/predict_columns", "/feedback"])
def test_invalid_json_is_rejected(served: Served, route: str) -> None:
    resp = requests.post(
        f"{served.base_url}{route}", data=b'{"age": 4', headers={"Content-Type": "application/json"}, timeout=30
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_a_body_that_is_not_json_gets_415(served: Served, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    resp = requests.post(f"{served.base_url}/predict", data=json.dumps(served.records[0]), headers=headers, timeout=30)
    assert resp.status_code == 415, resp.text
    assert "Content-Type: application/json" in resp.json()["error"]


def _raw_post(
    served: Served, path: str, headers: dict[str, str], body: Any, encode_chunked: bool = False
) -> tuple[int, bytes]:
    host, port = served.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", path)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        if encode_chunked:
            for chunk in body:
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.send(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_oversize_body_gets_413_without_being_read(served: Served) -> None:
    # Declares 50 MB and sends only the start: the answer comes from the Content-Length alone.
    status, body = _raw_post(
        served,
        "/predict_batch",
        {"Content-Type": "application/json", "Content-Length": str(50_000_000)},
        b'{"records": [',
    )
    assert status == 413
    error = json.loads(body)["error"]
    assert f"{MAX_REQUEST_BYTES:,} bytes" in error and "KENNEL_MAX_REQUEST_BYTES" in error


def test_oversize_chunked_body_gets_413(served: Served) -> None:
    record = json.dumps(served.records[0]).encode()
    chunks = [b'{"records": [' + record] + [b"," + record] * (MAX_REQUEST_BYTES // len(record) + 50) + [b"]}"]
    status, body = _raw_post(
        served,
        "/predict_batch",
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        chunks,
        encode_chunked=True,
    )
    assert status == 413 and len(body) < 500


def test_errors_do_not_echo_large_inputs(served: Served) -> None:
    record = {**served.records[5], "application_id": "Z" * 200_000, "age": "old"}
    resp = _post(served, "/predict", record)
    assert resp.status_code == 400
    assert len(resp.content) < 2_000 and "ZZZ" not in resp.text
    assert {tuple(e["loc"]) for e in resp.json()["detail"]} == {("application_id",), ("age",)}


# --- probes and OpenAPI --------------------------------------------------------------------------


def test_ready_and_live(served: Served) -> None:
    assert requests.get(f"{served.base_url}/readyz", timeout=10).status_code == 200
    assert requests.get(f"{served.base_url}/livez", timeout=10).status_code == 200


def test_openapi_document_is_the_services_own(served: Served) -> None:
    doc = requests.get(f"{served.base_url}/docs.json", timeout=10).json()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["version"] == served.model_tag
    assert {
        "/predict",
        "/explain",
        "/predict_batch",
        "/predict_columns",
        "/predict_arrow",
        "/feedback",
        "/readyz",
    } <= set(doc["paths"])
    assert "/model_card" not in doc["paths"]  # listed only by a Bento that carries a card
    record = doc["components"]["schemas"]["CreditDemoRecord"]
    assert set(served.card.feature_names) <= set(record["properties"])
    assert record["additionalProperties"] is False
    assert {"type": "null"} in record["properties"]["credit_score"]["anyOf"]


def test_schemathesis_finds_no_server_errors(served: Served, tmp_path: Path) -> None:
    """Property-based requests from the OpenAPI document (valid and invalid, seeded): no 5xx, every
    status, content type and body as documented, invalid input refused, valid input accepted."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    hooks = tmp_path / "schemathesis_hooks.py"
    hooks.write_text(SCHEMATHESIS_HOOKS)
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [
            str(st),
            "--config-file",
            str(config),
            "run",
            f"{served.base_url}/docs.json",
            "--max-examples",
            "10",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--no-color",
            "--output-truncate",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(hooks)},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"Tested: 10\b", result.stdout), result.stdout[-3000:]


# --- prediction log and feedback -----------------------------------------------------------------


def test_predictions_and_feedback_land_in_the_lake(served: Served) -> None:
    from kennel.serving.prediction_log import read_predictions

    records = [{**r, "application_id": f"lake-{i}"} for i, r in enumerate(served.records[10:17])]
    single = [_post(served, "/predict", r).json() for r in records[:2]]
    batch = _post(served, "/predict_batch", {"records": records[2:5]}).json()
    arrow = _post_arrow(served, _arrow_body(records[5:])).json()
    endpoints = ["/predict"] * 2 + ["/predict_batch"] * 3 + ["/predict_arrow"] * 2
    answers = (
        single
        + batch
        + [
            {"request_id": rid, "probability": p, "label": label}
            for rid, p, label in zip(arrow["request_id"], arrow["probability"], arrow["label"])
        ]
    )
    by_id = {a["request_id"]: (a, r, e) for a, r, e in zip(answers, records, endpoints)}
    outcomes = {answers[0]["request_id"]: 1, answers[3]["request_id"]: 0}
    resp = _post(
        served, "/feedback", {"labels": [{"request_id": rid, "label": label} for rid, label in outcomes.items()]}
    )
    assert resp.status_code == 200 and resp.json() == {"recorded": 2, "unknown_request_ids": 0}

    deadline = time.monotonic() + 30  # both logs are written every second
    while True:
        frame = read_predictions(Lake(served.lake).dataset("credit_demo"))
        frame = frame[frame["request_id"].isin(by_id)]
        if (len(frame) == len(by_id) and frame["actual_label"].notna().sum() == 2) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert len(frame) == len(by_id), frame
    for row in frame.itertuples(index=False):
        answer, record, endpoint = by_id[row.request_id]
        assert row.probability == answer["probability"]
        assert row.predicted_label == answer["label"]
        assert row.model_tag == served.model_tag
        assert row.application_id == record["application_id"]
        assert row.age == record["age"] and row.region == record["region"]
        assert row.endpoint == endpoint
        expected = outcomes.get(row.request_id)
        assert pd.isna(row.actual_label) if expected is None else row.actual_label == expected


def _unknown_feedback_ids(served: Served) -> float:
    metrics = requests.get(f"{served.base_url}/metrics", timeout=10).text
    found = re.search(r"^kennel_feedback_unknown_request_ids_total(?:\{[^}]*\})? (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_feedback_for_ids_never_issued_is_refused_and_counted(served: Served) -> None:
    issued = _post(served, "/predict", served.records[0]).json()["request_id"]
    tampered = issued[:-1] + ("1" if issued[-1] == "0" else "0")
    before = _unknown_feedback_ids(served)
    labels = [
        {"request_id": issued, "label": 1},
        {"request_id": "0" * 32, "label": 0},  # well-formed, never issued
        {"request_id": tampered, "label": 1},
    ]
    resp = _post(served, "/feedback", {"labels": labels})
    assert resp.status_code == 200 and resp.json() == {"recorded": 1, "unknown_request_ids": 2}
    assert _unknown_feedback_ids(served) == before + 2


# --- the Bento itself ----------------------------------------------------------------------------


def test_bento_pins_its_model_and_knows_nothing_of_dagster(served: Served) -> None:
    import bentoml

    from kennel.serving.model_store import BENTO_MANIFEST, KENNEL_DIR, serving_modules

    bento = bentoml.bentos.get(served.bento_tag)
    assert [str(m.tag) for m in bento.info.all_models] == [served.model_tag]
    src = Path(bento.path) / "src"
    manifest = json.loads((src / BENTO_MANIFEST).read_text())
    assert manifest == {"model_tag": served.model_tag, "lake_root": str(served.built_lake), "shadow_model_tag": None}
    # Only the kennel modules the service imports travel: serving and the model, not the pipeline.
    shipped = {p.relative_to(src).as_posix() for p in (src / "kennel").rglob("*.py")}
    assert {
        "kennel/serving/api.py",
        "kennel/serving/prediction_log.py",
        "kennel/model/booster.py",
        "kennel/lake/__init__.py",
    } <= shipped, shipped
    assert not [
        f
        for f in shipped
        if f.startswith(("kennel/ingestion/", "kennel/training/", "kennel/monitoring/", "kennel/demo/"))
    ], shipped
    assert shipped == {"kennel/" + m.relative_to(KENNEL_DIR).as_posix() for m in serving_modules()}
    # Only Python source travels (bentoml adds its own bentofile.yaml).
    others = {p.name for p in src.rglob("*") if p.is_file() and p.suffix != ".py"}
    assert others <= {BENTO_MANIFEST, "bentofile.yaml"}, others
    for path in src.rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+dagster", path.read_text(), re.M), path
    requirements = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text()
    assert "dagster" not in requirements.lower() and "scikit-learn" not in requirements.lower()
    assert "xgboost==" in requirements and "pyarrow==" in requirements
    assert not any("dagster" in part.lower() for part in served.command)
    assert not any("dagster" in key.lower() for key in served.env)


def test_each_build_pins_its_own_model(served: Served, tmp_path: Path) -> None:
    # bentoml caches the imported service module; a second build in one process must not reuse
    # the first build's module (and with it the first model).
    import bentoml

    from kennel.serving.model_store import build_bento, load_model_folder, save_model

    second = save_model(load_model_folder(served.model_tag), name="credit_demo_clf", labels={}, metadata={})
    assert second != served.model_tag
    other_lake = Lake(tmp_path / "other-lake")
    bento_tag = build_bento(second, bento_name="kennel_credit_demo", labels={}, lake=other_lake)
    bento = bentoml.bentos.get(bento_tag)
    assert [str(m.tag) for m in bento.info.all_models] == [second]
    manifest = json.loads((Path(bento.path) / "src" / "kennel_model.json").read_text())
    assert manifest == {"model_tag": second, "lake_root": str(other_lake.root), "shadow_model_tag": None}
    assert "service" not in sys.modules


# --- /explain ------------------------------------------------------------------------------------

EXPLAIN_TOP_K = 5  # the service's default: the served fixture leaves KENNEL_EXPLAIN_TOP_K unset
EXPLANATION_FIELDS = {"margin", "bias", "contributions", "rest"}


def _explain(served: Served, record: dict[str, Any]) -> dict[str, Any]:
    resp = _post(served, "/explain", record)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert set(answer) == {"probability", "label", "model_version", "request_id", "warnings"} | EXPLANATION_FIELDS
    return answer


def test_explain_scores_like_predict_and_its_contributions_sum_to_the_margin(served: Served) -> None:
    records, expected = served.records[30:42], served.expected[30:42]
    matrix = served.model.encoder.encode_frame(records)
    in_process = served.model.explain_matrix(matrix)
    margins = served.model.booster.inplace_predict(matrix, predict_type="margin", validate_features=False)
    for record, probability, contributions, margin in zip(records, expected, in_process, margins):
        predicted = _post(served, "/predict", record).json()
        answer = _explain(served, record)
        _check_answer({k: v for k, v in answer.items() if k not in EXPLANATION_FIELDS}, served, probability)
        assert answer["probability"] == predicted["probability"]
        assert answer["request_id"] != predicted["request_id"]
        listed = answer["contributions"]
        values = [c["contribution"] for c in listed]
        assert len(listed) == EXPLAIN_TOP_K
        # The k largest by |contribution|, largest first, each a feature of the card (never a category).
        by_feature = dict(zip(served.card.feature_names, contributions[:-1].tolist()))
        largest = sorted(by_feature, key=lambda name: -abs(by_feature[name]))[:EXPLAIN_TOP_K]
        assert [c["feature"] for c in listed] == largest
        assert values == pytest.approx([by_feature[name] for name in largest], abs=1e-6)
        assert answer["rest"] == pytest.approx(sum(by_feature.values()) - sum(values), abs=1e-5)
        assert answer["bias"] == pytest.approx(float(contributions[-1]), abs=1e-6)
        assert sum(values) + answer["rest"] + answer["bias"] == pytest.approx(answer["margin"], abs=1e-9)
        assert answer["margin"] == pytest.approx(float(margin), abs=1e-5)
        p = answer["probability"]
        # logit of a float32 probability: its rounding grows as p nears 0 or 1.
        assert answer["margin"] == pytest.approx(np.log(p / (1 - p)), abs=1e-5 + 1e-6 / min(p, 1 - p))


def test_explain_flags_what_predict_flags(served: Served) -> None:
    # At the spec's bounds, outside what the synthetic training rows held.
    record = {**served.records[6], "age": 100.0, "annual_income": 5_000_000.0}
    flags = _post(served, "/predict", record).json()["warnings"]
    assert {"field": "age", "kind": "out_of_distribution"} in flags
    assert _explain(served, record)["warnings"] == flags


@pytest.mark.parametrize("case", sorted(case for case, (route, _, _) in MALFORMED.items() if route == "/predict"))
def test_explain_refuses_what_predict_refuses(served: Served, case: str) -> None:
    _, make_body, field = MALFORMED[case]
    _assert_rejected(_post(served, "/explain", make_body(served.records[3])), field)


def test_explain_refuses_bad_bodies_without_echoing_them(served: Served) -> None:
    resp = requests.post(
        f"{served.base_url}/explain", data=b'{"age": 4', headers={"Content-Type": "application/json"}, timeout=30
    )
    assert resp.status_code == 400 and resp.json()["detail"][0]["type"] == "json_invalid"
    resp = requests.post(
        f"{served.base_url}/explain",
        data=json.dumps(served.records[0]),
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )
    assert resp.status_code == 415
    # Larger than the guard validates in place: screened in its child process, which must know the route.
    planted = {**served.records[5], "application_id": "Z" * 200_000, "age": "old"}
    resp = _post(served, "/explain", planted)
    assert resp.status_code == 400, resp.text
    assert len(resp.content) < 2_000 and "ZZZ" not in resp.text
    assert {tuple(e["loc"]) for e in resp.json()["detail"]} == {("application_id",), ("age",)}


def test_explain_is_documented(served: Served) -> None:
    doc = requests.get(f"{served.base_url}/docs.json", timeout=10).json()
    answer = doc["paths"]["/explain"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/Explanation"}
    schema = doc["components"]["schemas"]["Explanation"]
    assert EXPLANATION_FIELDS | {"probability", "request_id"} <= set(schema["properties"])
    request = doc["paths"]["/explain"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request == doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_explained_answers_land_in_the_prediction_log(served: Served) -> None:
    from kennel.serving.prediction_log import read_predictions

    records = [{**r, "application_id": f"explain-{i}"} for i, r in enumerate(served.records[50:53])]
    answers = {a["request_id"]: (a, r) for a, r in ((_explain(served, r), r) for r in records)}
    deadline = time.monotonic() + 30  # the log is written every second
    while True:
        frame = read_predictions(Lake(served.lake).dataset("credit_demo"), with_feedback=False)
        frame = frame[frame["request_id"].isin(answers)]
        if len(frame) == len(answers) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert len(frame) == len(answers), frame
    assert not EXPLANATION_FIELDS & set(frame.columns)  # the score is logged, not its explanation
    for row in frame.itertuples(index=False):
        answer, record = answers[row.request_id]
        assert row.endpoint == "/explain"
        assert row.probability == answer["probability"] and row.predicted_label == answer["label"]
        assert row.application_id == record["application_id"] and row.age == record["age"]
