"""The README's "Your own data" walk-through, run as written: its own code blocks, read from the README (never
copied here), in one shell, on a data set Kennel never saw (tests/stranger_data.py: other column names, a `;`
delimiter, empty labels on a share of rows, 150 station codes of long-tailed frequency, drift in the last
days) and a second data set in the same deployment.

The README's `sh` block sets the variables the walk-through uses; this test gives them its own values (a
temporary folder, a free port) and checks that it sets exactly the same ones."""

import os
import re
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from kennel.lake import Lake
from kennel.lake.champion import ChampionRegistry
from tests.stranger_data import write_stranger_dataset

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Your own data"
START = date(2026, 3, 1)
BASELINE_DAYS, DRIFT_DAYS = 10, 2

pytestmark = [pytest.mark.slow, pytest.mark.serving]


def walkthrough_blocks() -> tuple[list[str], list[str]]:
    """The section's `sh` blocks (settings the reader adapts) and `bash` blocks (the commands), in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end > 0 else None]
    blocks = re.findall(r"^```(sh|bash)\n(.*?)^```", section, flags=re.S | re.M)
    return [body for kind, body in blocks if kind == "sh"], [body for kind, body in blocks if kind == "bash"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_walkthrough_reads_as_commands():
    settings, commands = walkthrough_blocks()
    assert len(settings) == 1 and len(commands) >= 6
    assert all("kennel" in block or "curl" in block for block in commands)


def test_the_readme_walkthrough_runs_from_files_to_a_served_monitored_model(tmp_path):
    settings, commands = walkthrough_blocks()
    data, data2 = tmp_path / "shipments", tmp_path / "shipments-east"
    write_stranger_dataset(
        data, start=START, days=BASELINE_DAYS + DRIFT_DAYS, rows_per_day=300, seed=0, drift_from_day=BASELINE_DAYS
    )
    write_stranger_dataset(data2, start=START, days=2, rows_per_day=200, seed=1)
    ours = {
        "DATA": str(data),
        "DATA2": str(data2),
        "KENNEL_DATASETS": str(tmp_path / "specs"),
        "PORT": str(_free_port()),
    }
    assert set(re.findall(r"^export (\w+)=", settings[0], flags=re.M)) == set(ours), "the README sets other variables"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KENNEL_", "DAGSTER_", "BENTOML_"))}
    env.update(ours)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        BENTOML_HOME=str(tmp_path / "bentoml"),
        KENNEL_LAKE_ROOT=str(tmp_path / "lake"),
        BENTOML_DO_NOT_TRACK="True",
        AWS_EC2_METADATA_DISABLED="true",
    )
    # One shell, as a reader would type it; each block's time is printed, and the server is stopped however
    # the script ends.
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2> /dev/null || true' EXIT"]
    for i, block in enumerate(commands):
        script += [f"echo '>>> block {i}'; started=$SECONDS", block, f"echo '<<< block {i}' $((SECONDS - started))s"]
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500
    )
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    serve_log = tmp_path / "serve.log"
    assert done.returncode == 0, output[-6000:] + (serve_log.read_text()[-3000:] if serve_log.exists() else "")
    timings = re.findall(r"<<< block (\d+) (\d+)s", done.stdout)
    print(f"walk-through: {len(commands)} blocks in {took:.0f}s: {timings}")
    print(f"commands: {sum(1 for b in commands for line in b.splitlines() if line.strip())}")

    # The served answer: a probability for the README's request.
    predicted = re.search(r'\{[^{}]*"probability":\s*([0-9.eE-]+)', done.stdout)
    assert predicted, done.stdout[-4000:]
    assert 0.0 <= float(predicted.group(1)) <= 1.0

    lake = Lake(tmp_path / "lake")
    shipments = lake.dataset("shipments")
    champion = ChampionRegistry(shipments).current()
    assert champion is not None and champion.bento_tag
    assert champion.metrics["roc_auc"] > 0.6
    quality = {r.day: r for r in shipments.quality_records()}
    assert len(quality) == BASELINE_DAYS + DRIFT_DAYS and all(r.passed for r in quality.values())
    # The drifted days are measured against the champion, and the drift is seen.
    drift = shipments.monitoring_records("data_drift")
    drifted_days = sorted(day for day, record in drift.items() if record.dataset_drift)
    assert drifted_days and drifted_days[0] >= date(2026, 3, 11).isoformat(), {d: r.status for d, r in drift.items()}
    assert "DRIFT" in done.stdout  # kennel status shows it
    # The second data set lives beside the first, in the same deployment and instance.
    assert len(lake.dataset("shipments_east").quality_records()) == 2
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        jobs = {run.job_name for run in instance.get_runs()}
    assert {"shipments__ingest_daily", "shipments__train_and_package", "shipments_east__ingest_daily"} <= jobs
    assert "== shipments_east" in done.stdout and "== shipments" in done.stdout
