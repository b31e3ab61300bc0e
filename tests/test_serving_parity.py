"""Serving agrees with ingestion: one table of cases, each a record that differs from a valid one in a
few values, goes through Spark cleaning (as a landed JSON-lines file) and through a real `bentoml serve`
(as JSON and as Arrow). A row cleaning keeps is scored, with the same values (an unknown category read
as "other", an integer id as text) and with the warnings the case names; a row cleaning quarantines is
refused with a 400 naming the field. Kept rows reach the prediction log as they were scored.

Where they may differ by design: a JSON request is typed (a number must be a JSON number, a boolean a
JSON boolean), while a landed file is text that cleaning parses; the cases use typed values only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from test_serving import start_server, stop_server
from test_serving_unit import DEMO_SPEC, synthetic_records, train_model_folder

from kennel.ingestion.cleaning import clean_partition
from kennel.lake import Lake
from kennel.model import Model
from kennel.spec import DatasetSpec, load_spec

pytestmark = pytest.mark.serving

DAY = "2026-03-02"
API_KEY = "parity-key-0123456789abcdef"  # the parity server requires it: every request below carries it
AUTH = {"Authorization": f"Bearer {API_KEY}"}
TRAINING_SAVINGS_MAX = 100_000.0  # the spec allows up to 10,000,000: more is in range but unseen
LEARNED_PURPOSES = 4  # loan_purpose's learned_categories in the parity spec


@dataclass(frozen=True)
class Kept:
    """Cleaning keeps the row with these values; serving scores it so, with these warnings."""

    values: dict[str, Any] = field(default_factory=dict)
    warnings: frozenset[str] = frozenset()  # "kind:field"


@dataclass(frozen=True)
class Refused:
    """Cleaning quarantines the row for `reason`; serving answers 400 naming `field`."""

    reason: str
    field: str


PARITY_CASES: dict[str, tuple[dict[str, Any], Kept | Refused]] = {
    "declared_category": ({"region": "west"}, Kept({"region": "west"})),
    "declared_category_with_spaces": ({"region": "  west\t"}, Kept({"region": "west"})),
    "unknown_category_read_as_other": (
        {"region": "atlantis"},
        Kept({"region": "other"}, frozenset({"unseen_category:region"})),
    ),
    "unknown_category_quarantined": ({"channel": "pigeon"}, Refused("unknown_category", "channel")),
    "blank_nullable_category": ({"channel": " "}, Kept({"channel": None})),
    "blank_required_category": ({"home_ownership": ""}, Refused("missing_required", "home_ownership")),
    "null_never_seen_in_training": (
        {"savings_balance": None},
        Kept({"savings_balance": None}, frozenset({"out_of_distribution:savings_balance"})),
    ),
    "beyond_training_range_within_spec": (
        {"savings_balance": 5_000_000.0},
        Kept({"savings_balance": 5_000_000.0}, frozenset({"out_of_distribution:savings_balance"})),
    ),
    "outside_spec_range": ({"age": 150.0}, Refused("out_of_range", "age")),
    "missing_required": ({"age": None}, Refused("missing_required", "age")),
    "integer_id": ({"application_id": 123456}, Kept({"application_id": "123456"})),
    # loan_purpose learns its categories: any text is kept (and logged) as sent, scored as "other" when the
    # model did not keep it; only text that can be no category is refused.
    "learned_category_kept": ({"loan_purpose": " c01\t"}, Kept({"loan_purpose": "c01"})),
    "learned_category_unseen": (
        {"loan_purpose": " zeppelin "},
        Kept({"loan_purpose": "zeppelin"}, frozenset({"unseen_category:loan_purpose"})),
    ),
    "learned_category_too_long": ({"loan_purpose": "x" * 129}, Refused("invalid_category", "loan_purpose")),
    "learned_category_invisible_character": (
        {"loan_purpose": "zero\u200bwidth"},
        Refused("invalid_category", "loan_purpose"),
    ),
    "id_too_long": ({"application_id": "x" * 300}, Refused("id_too_long", "application_id")),
}


def parity_spec(folder: Path) -> Path:
    """The demo spec with region read as "other" when unknown and loan_purpose's categories learned,
    landing under `folder`."""
    raw = yaml.safe_load(DEMO_SPEC.read_text())
    raw["source"] = {"uri": str(folder / "landing"), "format": "jsonl"}
    for feature in raw["features"]:
        if feature["name"] == "region":
            feature["categories"] = [*feature["categories"], "other"]
            feature["unknown_category"] = "other"
        if feature["name"] == "loan_purpose":
            del feature["categories"]
            feature["learned_categories"] = LEARNED_PURPOSES
    path = folder / "parity.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def base_record(spec: DatasetSpec) -> dict[str, Any]:
    """A valid record well inside the training data."""
    rng = np.random.default_rng(11)
    record = synthetic_records(spec, 1, rng, missing=0.0)[0]
    return record | {
        "savings_balance": 2_500.0,
        "region": "north",
        "channel": "online",
        "age": 40.0,
        "loan_purpose": "c00",
    }


def case_record(spec: DatasetSpec, name: str) -> dict[str, Any]:
    changes, _ = PARITY_CASES[name]
    return base_record(spec) | {spec.id_column: f"parity-{name}"} | changes


@dataclass(frozen=True)
class ParityServer:
    spec: DatasetSpec
    model: Model
    base_url: str
    lake: Lake


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return parity_spec(tmp_path_factory.mktemp("parity-spec"))


@pytest.fixture(scope="module")
def parity_server(tmp_path_factory: pytest.TempPathFactory, spec_file: Path) -> Any:
    from kennel.serving.model_store import build_bento, load_model_folder, save_model

    folder = tmp_path_factory.mktemp("parity")
    spec = load_spec(spec_file)
    rng = np.random.default_rng(5)
    records = synthetic_records(spec, 400, rng)
    for i, record in enumerate(records):  # savings never missing and never above TRAINING_SAVINGS_MAX in training
        record["savings_balance"] = round(float(rng.uniform(0, TRAINING_SAVINGS_MAX)), 2)
        # Half the purposes c00, the rest spread over c01..c06: the model keeps c00 and three more, and
        # reads the others as "other", which it sees in training too.
        record["loan_purpose"] = "c00" if i % 2 == 0 else f"c{1 + (i // 2) % 6:02d}"
    model_dir = folder / "model"
    train_model_folder(model_dir, spec, records, rng, spec_file=spec_file)
    model_tag = save_model(model_dir, name="parity_clf", labels={}, metadata={})
    lake = Lake(folder / "lake")
    bento_tag = build_bento(model_tag, bento_name="kennel_parity", labels={}, lake=lake)
    proc, base_url, _, _ = start_server(
        bento_tag,
        folder,
        {"KENNEL_LAKE_ROOT": str(lake.root), "KENNEL_PREDICTION_LOG_FLUSH_S": "1", "KENNEL_API_KEY": API_KEY},
    )
    try:
        yield ParityServer(spec, Model.load(load_model_folder(model_tag)), base_url, lake)
    finally:
        stop_server(proc)


def test_the_parity_table_has_every_kind_of_case() -> None:
    outcomes = [outcome for _, outcome in PARITY_CASES.values()]
    assert any(isinstance(o, Refused) for o in outcomes)
    assert {w for o in outcomes if isinstance(o, Kept) for w in o.warnings} >= {
        "unseen_category:region",
        "unseen_category:loan_purpose",
        "out_of_distribution:savings_balance",
    }


def test_cleaning_follows_the_parity_table(spark: Any, spec_file: Path, tmp_path: Path) -> None:
    spec = load_spec(spec_file)
    landing = tmp_path / "landing" / DAY
    landing.mkdir(parents=True)
    lines = []
    for i, name in enumerate(sorted(PARITY_CASES)):
        at = datetime.fromisoformat(f"{DAY}T10:00:{i:02d}")
        lines.append(json.dumps(case_record(spec, name) | {spec.timestamp_column: at.isoformat(), "defaulted": 0}))
    (landing / "cases.jsonl").write_text("\n".join(lines) + "\n")
    result = clean_partition(
        spark,
        spec,
        [landing / "cases.jsonl"],
        DAY,
        tmp_path / "clean",
        tmp_path / "quarantine",
        tmp_path / "staging",
    )
    assert result.rows_in == len(PARITY_CASES)
    clean = pd.read_parquet(tmp_path / "clean")
    quarantine = pd.read_parquet(tmp_path / "quarantine")
    for i, name in enumerate(sorted(PARITY_CASES)):
        changes, outcome = PARITY_CASES[name]
        marker = f"10:00:{i:02d}"
        if isinstance(outcome, Refused):
            rows = quarantine[quarantine["raw"].str.contains(marker, regex=False)]
            assert list(rows["reason"]) == [outcome.reason], name
            continue
        record_id = outcome.values.get(spec.id_column, f"parity-{name}")
        row = clean[clean[spec.id_column] == record_id]
        assert len(row) == 1, name
        for column, value in outcome.values.items():
            got = row.iloc[0][column]
            assert pd.isna(got) if value is None else got == value, (name, column, got)


def _arrow_body(spec: DatasetSpec, record: dict[str, Any]) -> bytes:
    import pyarrow as pa

    types = {
        f.name: {"numeric": pa.float64(), "boolean": pa.bool_()}.get(f.type.value, pa.string()) for f in spec.features
    }
    id_value = record.get(spec.id_column)
    types[spec.id_column] = pa.int64() if isinstance(id_value, int) else pa.string()
    schema = pa.schema([(name, types[name]) for name in record])
    table = pa.Table.from_pylist([record], schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("name", sorted(PARITY_CASES))
def test_serving_follows_the_parity_table(parity_server: ParityServer, name: str) -> None:
    spec, url = parity_server.spec, parity_server.base_url
    record = case_record(spec, name)
    _, outcome = PARITY_CASES[name]
    single = requests.post(f"{url}/predict", json=record, headers=AUTH, timeout=30)
    arrow = requests.post(
        f"{url}/predict_arrow",
        data=_arrow_body(spec, record),
        headers={"Content-Type": "application/vnd.apache.arrow.stream", **AUTH},
        timeout=30,
    )
    if isinstance(outcome, Refused):
        for resp in (single, arrow):
            assert resp.status_code == 400, (name, resp.text)
            assert any(outcome.field in err["loc"] for err in resp.json()["detail"]), (name, resp.text)
        return
    assert single.status_code == 200 and arrow.status_code == 200, (name, single.text, arrow.text)
    scored_as = record | outcome.values
    expected = parity_server.model.score([scored_as])[0]
    answer, columns = single.json(), arrow.json()
    assert answer["probability"] == pytest.approx(expected, abs=1e-6), name
    assert columns["probability"][0] == pytest.approx(expected, abs=1e-6), name
    assert {f"{w['kind']}:{w['field']}" for w in answer["warnings"]} == outcome.warnings, name
    assert {f"{w['kind']}:{w['field']}" for w in columns["warnings"] if w["rows"] == [0]} == outcome.warnings, name
    _assert_logged(parity_server, [answer["request_id"], columns["request_id"][0]], outcome)


def _assert_logged(server: ParityServer, request_ids: list[str], outcome: Kept) -> None:
    from kennel.serving.prediction_log import read_predictions

    deadline = time.monotonic() + 60  # the log is written every second
    while True:
        logged = read_predictions(server.lake.dataset(server.spec.name), with_feedback=False)
        logged = logged[logged["request_id"].isin(request_ids)]
        if len(logged) == len(request_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(logged) == len(request_ids)
    for row in logged.itertuples(index=False):
        for column, value in outcome.values.items():
            got = getattr(row, column)
            assert pd.isna(got) if value is None else got == value, (column, got)
        flagged = set(row.warnings.split(";")) if isinstance(row.warnings, str) else set()
        assert flagged == outcome.warnings


def test_with_an_api_key_only_the_probes_and_the_document_are_open(parity_server: ParityServer) -> None:
    url, record = parity_server.base_url, case_record(parity_server.spec, "declared_category")
    for headers in ({}, {"Authorization": f"Bearer {API_KEY[:-1]}"}, {"X-API-Key": "wrong" * 5}):
        for resp in (
            requests.post(f"{url}/predict", json=record, headers=headers, timeout=30),
            requests.post(
                f"{url}/feedback", json={"labels": [{"request_id": "0" * 32, "label": 1}]}, headers=headers, timeout=30
            ),
            requests.get(f"{url}/metrics", headers=headers, timeout=30),
        ):
            assert resp.status_code == 401 and resp.json()["error"] == "unauthorized", resp.text
    assert requests.get(f"{url}/metrics", headers={"X-API-Key": API_KEY}, timeout=30).status_code == 200
    for path in ("/readyz", "/livez", "/docs.json"):
        assert requests.get(f"{url}{path}", timeout=30).status_code == 200, path
    doc = requests.get(f"{url}/docs.json", timeout=30).json()
    assert doc["paths"]["/predict"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in doc["paths"]["/readyz"]["get"]
