"""End-to-end serving: train a small booster on synthetic demo-spec records, store it, build a Bento,
run `bentoml serve` on that Bento in a subprocess and talk HTTP to it.

The server gets a temporary BENTOML_HOME, no PYTHONPATH and no Dagster settings, so it can only
use what the Bento carries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import requests

from kennel.features import MODEL_FILE, SPEC_FILE, ModelCard, to_model_frame
from kennel.serving import load_booster, predict_frame
from kennel.spec import PROJECT_ROOT, DatasetSpec, FeatureType, load_spec

pytestmark = pytest.mark.serving

DEMO_SPEC = PROJECT_ROOT / "datasets" / "credit_demo.yaml"
READY_TIMEOUT_S = 90
N_TRAIN = 400


@dataclass(frozen=True)
class Served:
    base_url: str
    model_tag: str
    bento_tag: str
    card: ModelCard
    booster: Any  # the stored model, loaded in-process like the service loads it
    records: list[dict[str, Any]]
    expected: np.ndarray  # in-process probabilities for `records`, from the stored model
    command: list[str]
    env: dict[str, str]


def _synthetic_records(spec: DatasetSpec, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """In-range records for every spec feature; nullable features are missing 10% of the time.

    Plain Python values, because the service's record schema is strict (no numpy scalars).
    """
    records = []
    for i in range(n):
        record: dict[str, Any] = {spec.id_column: f"app-{i:05d}"}
        for feat in spec.features:
            if feat.nullable and rng.random() < 0.1:
                record[feat.name] = None
            elif feat.type is FeatureType.categorical:
                record[feat.name] = str(rng.choice(list(feat.categories or ())))
            elif feat.type is FeatureType.boolean:
                record[feat.name] = bool(rng.random() < 0.5)
            else:
                low = feat.min if feat.min is not None else 0.0
                high = feat.max if feat.max is not None else low + 100.0
                record[feat.name] = round(float(rng.uniform(low, high)), 2)
        records.append(record)
    return records


def _synthetic_labels(spec: DatasetSpec, frame: Any, rng: np.random.Generator) -> np.ndarray:
    """Labels that depend on the numeric features, so the booster has something to learn."""
    score = np.zeros(len(frame))
    for feat in spec.model_features:
        if feat.type is FeatureType.numeric and feat.min is not None and feat.max is not None:
            scaled = (frame[feat.name].to_numpy(dtype=float) - feat.min) / (feat.max - feat.min) * 2 - 1
            score += rng.normal() * np.nan_to_num(scaled)
    return (rng.random(len(frame)) < 1 / (1 + np.exp(-2 * score))).astype(int)


def _train_model_folder(folder: Path, spec: DatasetSpec, records: list[dict[str, Any]],
                        rng: np.random.Generator) -> None:
    import xgboost

    card = ModelCard.for_spec(spec, threshold=0.5, model_version="test-serving")
    frame = to_model_frame(records, card)
    dtrain = xgboost.DMatrix(frame, label=_synthetic_labels(spec, frame, rng), enable_categorical=True)
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1}
    booster = xgboost.train(params, dtrain, num_boost_round=20)
    folder.mkdir(parents=True)
    booster.save_model(str(folder / MODEL_FILE))
    card.save(folder)
    shutil.copy2(DEMO_SPEC, folder / SPEC_FILE)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"bentoml serve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or the proxy waits for a worker
            pass
        time.sleep(0.25)
    pytest.fail(f"bentoml serve not ready after {READY_TIMEOUT_S}s:\n{log_path.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # The server runs in its own session, so its group holds exactly it and its workers.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # conftest points BENTOML_HOME at the session's temp folder before anything imports bentoml.
    import bentoml

    from kennel.registry import build_bento, load_model_folder, save_model

    spec = load_spec(DEMO_SPEC)
    rng = np.random.default_rng(7)
    records = _synthetic_records(spec, N_TRAIN, rng)
    model_dir = tmp_path_factory.mktemp("model") / "credit_demo"
    _train_model_folder(model_dir, spec, records, rng)

    model_tag = save_model(model_dir, name="credit_demo_clf",
                           labels={"dataset": spec.name, "owner": spec.owner}, metadata={"run_id": "test"})
    bento_tag = build_bento(model_tag, bento_name="kennel_credit_demo", labels={"Model": model_tag})
    assert bentoml.bentos.get(bento_tag).tag.name == "kennel_credit_demo"

    stored_dir = load_model_folder(model_tag)
    card = ModelCard.load(stored_dir)
    booster = load_booster(stored_dir)
    expected = predict_frame(booster, card, records)

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("bentoml")), "serve", bento_tag,
               "--host", "127.0.0.1", "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and "dagster" not in k.lower()}
    run_dir = tmp_path_factory.mktemp("serve")
    log_path = run_dir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_ready(proc, base_url, log_path)
        yield Served(base_url, model_tag, bento_tag, card, booster, records, expected, command, env)
    finally:
        _stop(proc)


def _post(served: Served, route: str, body: Any) -> requests.Response:
    return requests.post(f"{served.base_url}{route}", json=body, timeout=30)


def _check_answer(answer: dict[str, Any], served: Served, expected: float) -> None:
    assert set(answer) == {"probability", "label", "model_version", "request_id"}
    assert 0.0 <= answer["probability"] <= 1.0
    assert answer["probability"] == pytest.approx(expected, abs=1e-6)
    assert answer["label"] == int(answer["probability"] >= served.card.threshold)
    assert answer["model_version"] == served.model_tag
    assert re.fullmatch(r"[0-9a-f]{32}", answer["request_id"])


def test_predict_single_record(served: Served) -> None:
    resp = _post(served, "/predict", served.records[0])
    assert resp.status_code == 200, resp.text
    _check_answer(resp.json(), served, served.expected[0])


def test_predict_batch_matches_in_process(served: Served) -> None:
    resp = _post(served, "/predict_batch", {"records": served.records[:50]})
    assert resp.status_code == 200, resp.text
    answers = resp.json()
    assert len(answers) == 50
    for answer, expected in zip(answers, served.expected[:50]):
        _check_answer(answer, served, expected)
    assert len({a["request_id"] for a in answers}) == 50


def test_id_and_sensitive_columns_are_optional_and_ignored(served: Served) -> None:
    record = dict(served.records[1])
    del record["application_id"], record["gender"]
    resp = _post(served, "/predict", record)
    assert resp.status_code == 200, resp.text
    assert resp.json()["probability"] == pytest.approx(served.expected[1], abs=1e-6)


def test_nullable_features_may_be_omitted(served: Served) -> None:
    nullable = {f.name for f in load_spec(DEMO_SPEC).features if f.nullable}
    record = {k: v for k, v in served.records[2].items() if k not in nullable}
    resp = _post(served, "/predict", record)
    assert resp.status_code == 200, resp.text
    expected = predict_frame(served.booster, served.card, [record])[0]
    assert resp.json()["probability"] == pytest.approx(expected, abs=1e-6)


def _assert_rejected(resp: requests.Response, field: str) -> None:
    """A client error whose pydantic detail locates the problem at `field`."""
    assert 400 <= resp.status_code < 500, resp.text
    locations = [[str(part) for part in err["loc"]] for err in resp.json()["detail"]]
    assert any(field in loc for loc in locations), resp.text


def _with(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {**record, **changes}


def _without(field: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {k: v for k, v in record.items() if k != field}


# (route, body from a valid record, field the error must name)
MALFORMED: dict[str, tuple[str, Callable[[dict[str, Any]], Any], str]] = {
    "missing_required": ("/predict", _without("age"), "age"),
    "null_required": ("/predict", _with(home_ownership=None), "home_ownership"),
    "wrong_type": ("/predict", _with(loan_amount="lots"), "loan_amount"),
    "number_as_string": ("/predict", _with(age="42"), "age"),
    "out_of_range": ("/predict", _with(age=12), "age"),
    "unknown_category": ("/predict", _with(region="atlantis"), "region"),
    "sensitive_unknown_category": ("/predict", _with(gender="robot"), "gender"),
    "extra_field": ("/predict", _with(favourite_colour="blue"), "favourite_colour"),
    "empty_batch": ("/predict_batch", lambda record: {"records": []}, "records"),
    "bad_record_in_batch": ("/predict_batch",
                            lambda record: {"records": [record, {**record, "region": "x"}]}, "region"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_record_is_rejected_naming_the_field(served: Served, case: str) -> None:
    route, make_body, field = MALFORMED[case]
    resp = _post(served, route, make_body(served.records[3]))
    _assert_rejected(resp, field)


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_non_finite_number_is_rejected(served: Served, literal: str) -> None:
    # requests' json= refuses NaN (allow_nan=False), so put the bare literal into the body by hand.
    body = json.dumps({**served.records[4], "interest_rate": "__X__"}).replace('"__X__"', literal)
    resp = requests.post(f"{served.base_url}/predict", data=body,
                         headers={"Content-Type": "application/json"}, timeout=30)
    _assert_rejected(resp, "interest_rate")


def test_invalid_json_is_rejected(served: Served) -> None:
    resp = requests.post(f"{served.base_url}/predict", data=b"{not json",
                         headers={"Content-Type": "application/json"}, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    assert "json" in resp.text.lower()


def test_bento_pins_its_model_and_knows_nothing_of_dagster(served: Served) -> None:
    import bentoml

    bento = bentoml.bentos.get(served.bento_tag)
    assert [str(m.tag) for m in bento.info.all_models] == [served.model_tag]
    src = Path(bento.path) / "src"
    assert json.loads((src / "kennel_model.json").read_text()) == {"model_tag": served.model_tag}
    assert (src / "kennel" / "serving.py").is_file()
    # Only Python source travels (bentoml adds its own bentofile.yaml).
    others = {p.name for p in src.rglob("*") if p.is_file() and p.suffix != ".py"}
    assert others <= {"kennel_model.json", "bentofile.yaml"}, others
    for path in src.rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+dagster", path.read_text(), re.M), path
    requirements = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text()
    assert "dagster" not in requirements.lower()
    assert "xgboost==" in requirements
    assert not any("dagster" in part.lower() for part in served.command)
    assert not any("dagster" in key.lower() for key in served.env)


def test_openapi_shows_the_record_fields(served: Served) -> None:
    schema = requests.get(f"{served.base_url}/docs.json", timeout=10).json()
    text = json.dumps(schema)
    for name in served.card.feature_names:
        assert f'"{name}"' in text


def test_each_build_pins_its_own_model(served: Served) -> None:
    # bentoml caches the imported service module; a second build in one process must not reuse
    # the first build's module (and with it the first model).
    import bentoml

    from kennel.registry import build_bento, load_model_folder, save_model

    second = save_model(load_model_folder(served.model_tag), name="credit_demo_clf", labels={}, metadata={})
    assert second != served.model_tag
    bento_tag = build_bento(second, bento_name="kennel_credit_demo", labels={})
    assert [str(m.tag) for m in bentoml.bentos.get(bento_tag).info.all_models] == [second]
    assert "service" not in sys.modules


@pytest.mark.parametrize(("raw", "clean"), [
    ("team:ML Platform", "team-ml-platform"),
    ("credit_demo_clf:4qw62axlqoivwax4", "credit_demo_clf-4qw62axlqoivwax4"),
    ("--x--", "x"),
    ("a" * 62 + "-b", "a" * 62),
    ("", ""),
])
def test_sanitize_label(raw: str, clean: str) -> None:
    from kennel.registry import sanitize_label

    assert sanitize_label(raw) == clean


def test_sanitize_labels_rejects_colliding_or_empty_keys() -> None:
    from kennel.registry import sanitize_labels

    with pytest.raises(ValueError, match="collide"):
        sanitize_labels({"Team": "a", "team": "b"})
    with pytest.raises(ValueError, match="no letters or digits"):
        sanitize_labels({"::": "a"})


def test_record_model_refuses_a_card_for_another_spec() -> None:
    from kennel.serving import record_model

    spec = load_spec(DEMO_SPEC)
    card = ModelCard.for_spec(spec).model_copy(update={"spec_fingerprint": "0" * 16})
    with pytest.raises(ValueError, match="fingerprint"):
        record_model(spec, card)
