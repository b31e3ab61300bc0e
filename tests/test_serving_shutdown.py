"""A Bento served by two workers whose prediction log would not flush for an hour: stopping the
server (SIGTERM, as a process manager does) must still leave every answered prediction in the lake."""

from __future__ import annotations

import re

import psutil
import pytest
import requests
from test_serving import build_test_bento, start_server, stop_server

from kennel.lake import Lake
from kennel.serving.prediction_log import read_predictions

pytestmark = pytest.mark.serving


def test_shutdown_flushes_every_workers_prediction_log(tmp_path_factory: pytest.TempPathFactory) -> None:
    built = build_test_bento(tmp_path_factory)
    run_dir = tmp_path_factory.mktemp("serve-shutdown")
    lake = Lake(run_dir / "lake").dataset("credit_demo")
    proc, base_url, _, _ = start_server(
        built.bento_tag,
        run_dir,
        {
            "KENNEL_LAKE_ROOT": str(lake.lake.root),  # overrides the lake named in the Bento's manifest
            "KENNEL_PREDICTION_LOG_FLUSH_S": "3600",
            "KENNEL_SERVE_WORKERS": "2",
        },
    )
    try:
        workers = [
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if "_bentoml_impl.worker.service" in " ".join(p.cmdline())
        ]
        assert len(workers) == 2
        request_ids = []
        with requests.Session() as session:
            for record in built.records[:30]:
                request_ids.append(session.post(f"{base_url}/predict", json=record, timeout=30).json()["request_id"])
        for record in built.records[30:40]:  # new connections, so both workers are likely to answer
            answers = requests.post(f"{base_url}/predict_batch", json={"records": [record]}, timeout=30).json()
            request_ids.append(answers[0]["request_id"])
        assert read_predictions(lake).empty  # nothing written before shutdown
    finally:
        stop_server(proc)
    assert proc.returncode is not None
    logged = read_predictions(lake)
    assert sorted(logged["request_id"]) == sorted(request_ids)
    # all of it in the lake KENNEL_LAKE_ROOT named, none in the one the Bento was built with
    assert read_predictions(Lake(built.built_lake).dataset("credit_demo")).empty
    # part-<time>-<host>-<pid>-<token>-<seq>.parquet
    writers = {
        re.search(r"-(\d+)-[0-9a-f]{6}-\d{6}\.parquet$", p.name).group(1)  # type: ignore[union-attr]
        for p in lake.predictions_dir().glob("date=*/*.parquet")
    }
    assert 1 <= len(writers) <= 2  # one file set per worker process that answered
