"""A challenger in shadow: a real `bentoml serve` of a Bento carrying the champion and a challenger
answers with the champion alone, and the challenger's scores of the same requests land in the shadow
log (kennel.serving.prediction_log.ShadowLog), each request id once, as the challenger scores them
served alone. A Bento without a challenger logs no shadow rows. GET /model_card serves the card the
Bento carries. Plus the shadow log's bounds in-process: a full queue skips, a failing challenger is
counted, and neither log line carries request content.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from test_serving import (
    DEMO_SPEC,
    BuiltBento,
    _arrow_body,
    build_test_bento,
    start_server,
    stop_server,
)
from test_serving_unit import synthetic_records, train_model_folder

from kennel.lake import Lake
from kennel.model import Model
from kennel.spec import load_spec

SHADOW_QUEUE_ROWS = 1_000  # small, so one request of more rows is skipped whole
API_KEY = "shadow-test-key-0123456789"
CARD_HTML = "<!doctype html><html><body><h1>credit_demo champion</h1><svg></svg></body></html>"
LOG_WAIT_S = 30  # logs are written every second (KENNEL_PREDICTION_LOG_FLUSH_S=1)


@dataclass(frozen=True)
class ShadowServed:
    built: BuiltBento  # the champion (and its champion-only Bento)
    challenger_tag: str
    challenger: Model  # the stored challenger, loaded in-process like the service loads it
    shadow_url: str  # serves the champion with the challenger in shadow, and a model card
    shadow_lake: Path


SERVE_SETTINGS: dict[str, str | None] = {"KENNEL_LAKE_ROOT": None, "KENNEL_PREDICTION_LOG_FLUSH_S": "1"}


@pytest.fixture(scope="module")
def shadow_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShadowServed]:
    from kennel.serving.model_store import build_bento, load_model_folder, save_model

    built = build_test_bento(tmp_path_factory)
    spec = load_spec(DEMO_SPEC)
    rng = np.random.default_rng(11)  # other records than the champion's: other trees, other learned categories
    challenger_dir = tmp_path_factory.mktemp("challenger") / "credit_demo"
    train_model_folder(challenger_dir, spec, synthetic_records(spec, 300, rng), rng, rounds=12)
    challenger_tag = save_model(
        challenger_dir, name="credit_demo_clf", labels={"dataset": spec.name}, metadata={"run_id": "challenger"}
    )
    card = tmp_path_factory.mktemp("card") / "promotion.html"
    card.write_text(CARD_HTML)
    shadow_lake = Lake(tmp_path_factory.mktemp("shadow-lake"))
    shadow_bento = build_bento(
        built.model_tag,
        bento_name="kennel_credit_demo",
        labels={"model": built.model_tag},
        lake=shadow_lake,
        shadow_model_tag=challenger_tag,
        extra_files={"model_card.html": card},
    )
    proc, url, _, _ = start_server(
        shadow_bento,
        tmp_path_factory.mktemp("serve-shadow"),
        {**SERVE_SETTINGS, "KENNEL_SHADOW_QUEUE_ROWS": str(SHADOW_QUEUE_ROWS)},
    )
    try:
        challenger = Model.load(load_model_folder(challenger_tag))
        yield ShadowServed(built, challenger_tag, challenger, url, shadow_lake.root)
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def plain_url(shadow_served: ShadowServed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The champion-only Bento, behind an API key. Started after the tests that read the shadow
    server's /metrics: servers under one BENTOML_HOME share BentoML's Prometheus folder, which each
    start empties."""
    proc, url, _, _ = start_server(
        shadow_served.built.bento_tag,
        tmp_path_factory.mktemp("serve-plain"),
        {**SERVE_SETTINGS, "KENNEL_API_KEY": API_KEY},
    )
    try:
        yield url
    finally:
        stop_server(proc)


def _post(url: str, route: str, body: Any) -> dict[str, Any]:
    resp = requests.post(f"{url}{route}", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _columns(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    return {name: [r[name] for r in records] for name in records[0]}


def _wait_for_rows(read: Any, request_ids: set[str]) -> pd.DataFrame:
    """The rows of `request_ids` once all are written (or whatever is there at the deadline)."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        frame = read()
        frame = frame[frame["request_id"].isin(request_ids)]
        if set(frame["request_id"]) >= request_ids or time.monotonic() > deadline:
            return frame
        time.sleep(0.25)


def _skipped_rows(url: str) -> float:
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    found = re.search(r"^kennel_shadow_skipped_rows_total(?:\{[^}]*\})? (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.serving
def test_champion_answers_and_challenger_scores_every_request_in_shadow(shadow_served: ShadowServed) -> None:
    from kennel.serving.prediction_log import read_predictions, read_shadow_predictions

    built, url = shadow_served.built, shadow_served.shadow_url
    records = built.records
    champion = built.model.score(records)
    challenger = shadow_served.challenger.score(records)
    assert np.abs(champion - challenger).max() > 0.01  # two different models, or the test proves nothing

    sent: dict[str, tuple[int, str]] = {}  # request id → (record index, endpoint)
    answers: list[tuple[float, str]] = []  # (probability, model_version) of every answered row

    def note(endpoint: str, first: int, probabilities: list[float], ids: list[str], version: str) -> None:
        for offset, (probability, rid) in enumerate(zip(probabilities, ids, strict=True)):
            assert probability == pytest.approx(champion[first + offset], abs=1e-6)
            sent[rid] = (first + offset, endpoint)
            answers.append((probability, version))

    for i in range(10):
        answer = _post(url, "/predict", records[i])
        note("/predict", i, [answer["probability"]], [answer["request_id"]], answer["model_version"])
    for i in range(10, 12):
        answer = _post(url, "/explain", records[i])
        note("/explain", i, [answer["probability"]], [answer["request_id"]], answer["model_version"])
    batch = _post(url, "/predict_batch", {"records": records[12:62]})
    note(
        "/predict_batch",
        12,
        [a["probability"] for a in batch],
        [a["request_id"] for a in batch],
        batch[0]["model_version"],
    )
    columns = _post(url, "/predict_columns", _columns(records[62:102]))
    note("/predict_columns", 62, columns["probability"], columns["request_id"], columns["model_version"])
    resp = requests.post(
        f"{url}/predict_arrow",
        data=_arrow_body(records[102:142]),
        headers={"Content-Type": "application/vnd.apache.arrow.stream"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    arrow = resp.json()
    note("/predict_arrow", 102, arrow["probability"], arrow["request_id"], arrow["model_version"])
    assert {version for _, version in answers} == {built.model_tag}  # the champion answers, always

    lake = Lake(shadow_served.shadow_lake).dataset("credit_demo")
    shadow = _wait_for_rows(lambda: read_shadow_predictions(lake), set(sent))
    assert len(shadow) == len(sent) == 142 and shadow["request_id"].is_unique
    assert set(shadow["model_tag"]) == {shadow_served.challenger_tag}
    assert set(shadow["champion_model_tag"]) == {built.model_tag}
    threshold = shadow_served.challenger.card.threshold
    for row in shadow.itertuples(index=False):
        index, endpoint = sent[row.request_id]
        assert row.endpoint == endpoint
        assert row.probability == pytest.approx(challenger[index], abs=1e-6)
        assert row.predicted_label == int(row.probability >= threshold)
    logged = _wait_for_rows(lambda: read_predictions(lake, with_feedback=False), set(sent))
    assert len(logged) == len(sent) and set(logged["model_tag"]) == {built.model_tag}
    for row in logged.itertuples(index=False):
        assert row.probability == pytest.approx(champion[sent[row.request_id][0]], abs=1e-6)
    paired = logged.merge(shadow, on="request_id", suffixes=("", "_shadow"))
    assert len(paired) == len(sent) and (paired["endpoint"] == paired["endpoint_shadow"]).all()


@pytest.mark.serving
def test_a_request_larger_than_the_shadow_queue_is_answered_and_skipped(shadow_served: ShadowServed) -> None:
    from kennel.serving.prediction_log import read_predictions, read_shadow_predictions

    url, built = shadow_served.shadow_url, shadow_served.built
    records = (built.records * 3)[: SHADOW_QUEUE_ROWS + 1]
    before = _skipped_rows(url)
    answer = _post(url, "/predict_columns", _columns(records))
    assert answer["model_version"] == built.model_tag
    np.testing.assert_allclose(answer["probability"], built.model.score(records), rtol=0, atol=1e-6)
    assert _skipped_rows(url) == before + len(records)
    single = _post(url, "/predict", records[0])  # the queue took nothing of the skipped request: still open
    lake = Lake(shadow_served.shadow_lake).dataset("credit_demo")
    _wait_for_rows(lambda: read_shadow_predictions(lake), {single["request_id"]})
    ids = set(answer["request_id"])
    assert not ids & set(read_shadow_predictions(lake)["request_id"])
    assert ids <= set(read_predictions(lake, with_feedback=False)["request_id"])


@pytest.mark.serving
def test_shadow_evaluation_of_live_traffic_is_the_offline_bootstrap_of_the_same_rows(
    shadow_served: ShadowServed,
) -> None:
    """Labels sent to /feedback for served requests: the shadow evaluation joins the two logs and the
    feedback, and its paired bootstrap is the gate's on those rows scored in-process by both models."""
    from datetime import UTC, datetime, timedelta

    from kennel.lake.records import ChampionEntry, ShadowEntry
    from kennel.serving.prediction_log import read_shadow_predictions
    from kennel.training.config import GateConfig
    from kennel.training.gate import paired_bootstrap
    from kennel.training.shadow import evaluate_shadow, shadow_traffic

    url, built = shadow_served.shadow_url, shadow_served.built
    spec = load_spec(DEMO_SPEC)
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="seconds")
    # Ids of their own: a label reaches every request of the same record id (late labels by id), and the
    # other tests here sent these records too.
    records = [{**r, spec.id_column: f"shadow-eval-{i}"} for i, r in enumerate(built.records[:120])]
    answer = _post(url, "/predict_columns", _columns(records))
    ids = answer["request_id"]
    labels = np.random.default_rng(5).integers(0, 2, len(ids))
    feedback = [
        {"request_id": rid, "label": spec.label.positive if y else spec.label.negative}
        for rid, y in zip(ids, labels, strict=True)
    ]
    assert _post(url, "/feedback", {"labels": feedback})["recorded"] == len(ids)
    lake = Lake(shadow_served.shadow_lake).dataset("credit_demo")
    _wait_for_rows(lambda: read_shadow_predictions(lake), set(ids))
    config = GateConfig(shadow=True, shadow_min_requests=100, shadow_min_labelled=100, bootstrap_samples=300)
    shadow = ShadowEntry(
        run_id="challenger",
        model_dir="unused",
        model_tag=shadow_served.challenger_tag,
        since=since,
        decided_at=since,
        champion_run_id="champion",
    )
    champion = ChampionEntry(
        run_id="champion", model_dir="unused", model_tag=built.model_tag, since=since, reason="", event="promoted"
    )
    deadline = time.monotonic() + LOG_WAIT_S
    while (traffic := shadow_traffic(spec, lake, shadow, champion))["label"].notna().sum() < len(ids):
        assert time.monotonic() < deadline, "feedback never reached the shadow evaluation"
        time.sleep(0.25)
    record = evaluate_shadow(traffic, config, shadow, champion)

    labelled = traffic[traffic["label"].notna()]
    index = {rid: i for i, rid in enumerate(ids)}
    rows = [records[index[rid]] for rid in labelled["request_id"]]
    expected = paired_bootstrap(
        config.primary_metric,
        labelled["label"].to_numpy(dtype=int),
        shadow_served.challenger.score(rows),
        built.model.score(rows),
        config.bootstrap_samples,
        config.confidence,
        config.seed,
    )
    assert record.labelled == len(ids) and record.outcome in ("passed", "rejected")
    assert record.bootstrap == pytest.approx(expected, abs=1e-6)
    assert record.agreement is not None and record.score_psi is not None


@pytest.mark.serving
def test_model_card_is_served_when_the_bento_carries_one(shadow_served: ShadowServed, plain_url: str) -> None:
    resp = requests.get(f"{shadow_served.shadow_url}/model_card", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.text == CARD_HTML
    documented = requests.get(f"{shadow_served.shadow_url}/docs.json", timeout=10).json()["paths"]["/model_card"]
    assert set(documented["get"]["responses"]) == {"200"}
    plain = f"{plain_url}/model_card"
    assert requests.get(plain, timeout=10).status_code == 401  # behind the API key like the scoring routes
    resp = requests.get(plain, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert resp.status_code == 404 and "model card" in resp.json()["error"]


@pytest.mark.serving
def test_a_bento_without_a_challenger_logs_no_shadow_rows(shadow_served: ShadowServed, plain_url: str) -> None:
    from kennel.serving.prediction_log import read_predictions, read_shadow_predictions

    built, url = shadow_served.built, plain_url
    headers = {"Authorization": f"Bearer {API_KEY}"}
    resp = requests.post(f"{url}/predict_batch", json={"records": built.records[:20]}, headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    ids = {a["request_id"] for a in resp.json()}
    lake = Lake(built.built_lake).dataset("credit_demo")
    assert len(_wait_for_rows(lambda: read_predictions(lake, with_feedback=False), ids)) == len(ids)
    assert read_shadow_predictions(lake).empty and not lake.shadow_predictions_dir().exists()


# --- the shadow log's bounds, in-process ---------------------------------------------------------


def _shadow_log(tmp_path: Path, score: Any, **options: Any) -> Any:
    from kennel.serving.prediction_log import ShadowLog

    lake = Lake(tmp_path / "lake").dataset("credit_demo")
    return ShadowLog(
        lake,
        score=score,
        fields=["age"],
        model_tag="challenger:1",
        champion_model_tag="champion:1",
        threshold=0.5,
        **options,
    )


def test_a_full_queue_skips_whole_requests_and_warns_without_content(tmp_path: Path, caplog: Any) -> None:
    skipped: list[int] = []
    log = _shadow_log(tmp_path, lambda columns, n: np.full(n, 0.7), max_queue_rows=3, on_skip=skipped.append)
    assert log.append("/predict_batch", ["a", "b"], {"age": [31.0, 47.0]})
    with caplog.at_level(logging.WARNING, logger="kennel.serving.prediction_log"):
        assert not log.append("/predict_batch", ["c", "d"], {"age": [1234.5, 6789.5]})
        assert not log.append("/predict", ["e"] * 2, {"age": [1234.5, 6789.5]})
    assert skipped == [2, 2] and log.rows_skipped == 4
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "1234.5" not in warnings[0]  # rate-limited, no request content
    assert log.flush() == 2
    from kennel.serving.prediction_log import read_shadow_predictions

    frame = read_shadow_predictions(Lake(tmp_path / "lake").dataset("credit_demo"))
    assert frame["request_id"].tolist() == ["a", "b"] and frame["predicted_label"].tolist() == [1, 1]


def test_a_failing_challenger_is_counted_and_logged_without_content(tmp_path: Path, caplog: Any) -> None:
    def score(columns: Mapping[str, Any], n: int) -> np.ndarray:
        raise ValueError(f"cannot score age={columns['age'][0]}")

    log = _shadow_log(tmp_path, score)
    assert log.append("/predict", ["a"], {"age": [4242.25]})
    with caplog.at_level(logging.ERROR, logger="kennel.serving.prediction_log"):
        log.flush()
    assert log.rows_failed == 1
    assert caplog.records and not any("4242.25" in r.getMessage() for r in caplog.records)


# --- the champion's Bento while a challenger is in shadow ----------------------------------------


def test_ensure_bento_serves_the_champion_with_its_shadow_and_card(tmp_path: Path) -> None:
    import bentoml
    from test_champion import _gate_decision, _stored_model

    from kennel.lake.champion import ChampionRegistry, bento_name
    from kennel.serving.champion import ensure_bento
    from kennel.serving.model_store import BENTO_MANIFEST, BentoManifest, save_model
    from kennel.spec import DEFAULT_SPEC_PATH

    spec = load_spec(DEFAULT_SPEC_PATH)
    lake = Lake(tmp_path / "lake")
    registry = ChampionRegistry(lake.dataset(spec.name))
    tags = {}
    for run_id, seed in (("first", 1), ("second", 5)):
        folder = _stored_model(spec, tmp_path, run_id, seed)
        tags[run_id] = save_model(folder, name=bento_name(spec.name), labels={"run_id": run_id}, metadata={})
        against = None if run_id == "first" else "first"
        registry.record_decision(_gate_decision(run_id, folder, tags[run_id], against=against))
        if run_id == "first":
            registry.promote(folder)
        else:
            registry.start_shadow(folder)
    card = lake.dataset(spec.name).cards_dir() / "first" / "promotion.html"
    card.parent.mkdir(parents=True)
    card.write_text(CARD_HTML)

    entry, built = ensure_bento(registry, lake)
    assert built and entry.run_id == "first"
    bento = bentoml.bentos.get(entry.bento_tag)
    assert sorted(str(m.tag) for m in bento.info.all_models) == sorted(tags.values())
    manifest = BentoManifest.model_validate_json((Path(bento.path) / "src" / BENTO_MANIFEST).read_text())
    assert (manifest.model_tag, manifest.shadow_model_tag) == (tags["first"], tags["second"])
    assert (Path(bento.path) / "src" / "model_card.html").read_text() == CARD_HTML
    pointer = registry.pointer()
    assert pointer.shadow is not None and pointer.shadow.bento_tag == entry.bento_tag
    assert pointer.current is not None and pointer.current.bento_tag is None  # no champion-only Bento was built
    assert ensure_bento(registry, lake) == (entry, False)  # the recorded Bento is reused
