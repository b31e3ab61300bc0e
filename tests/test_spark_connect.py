"""Spark Connect for real: the pip package's Connect server on 127.0.0.1, Kennel's cleaning and
xgboost.spark training run through it by a client process that KENNEL_SPARK_REMOTE points at it.

pyspark makes a whole process a Connect client (its functions switch to Connect's process-wide), so the
Connect side runs in a child process; the local-mode side runs in this one, on the session's `spark`."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from kennel.demo import generate
from kennel.ingestion.cleaning import PART_FILE, clean_partition
from kennel.spark import REMOTE_SETTING, connect_conf, is_connect, local_connect_server, spark_remote
from kennel.spec import DEFAULT_SPEC_PATH, PROJECT_ROOT, load_spec
from kennel.training.config import TrainConfig
from tests.training_data import train_on_spark, training_frame

# Run by the Connect client: clean the landed days given as arguments with the session get_spark gives
# (KENNEL_SPARK_REMOTE is set), print each day's CleaningResult as JSON.
_CLEAN_UNDER_CONNECT = """
import json, sys
from dataclasses import asdict
from pathlib import Path
from kennel.ingestion.cleaning import clean_partition
from kennel.spark import get_spark, is_connect
from kennel.spec import DEFAULT_SPEC_PATH, load_spec

spec = load_spec(DEFAULT_SPEC_PATH)
landing, lake = Path(sys.argv[1]), Path(sys.argv[2])
spark = get_spark()
assert is_connect(spark), type(spark)
results = {}
for day in sys.argv[3:]:
    files = sorted((landing / day).glob("*.csv"))
    clean_dir, quarantine_dir = lake / "clean" / day, lake / "quarantine" / day
    results[day] = asdict(clean_partition(spark, spec, files, day, clean_dir, quarantine_dir, lake / "_staging"))
spark.stop()
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEFAULT_SPEC_PATH)


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory):
    """One Connect server for the module (starting one costs 10–20 s), stopped however the tests end."""
    with local_connect_server(tmp_path_factory.mktemp("connect-server")) as url:
        yield url


def _client_env(url: str) -> dict[str, str]:
    return {**os.environ, REMOTE_SETTING: url}


def _rows(folder: Path) -> pd.DataFrame:
    """A written table as a row set: every row, in one order whatever order it was written in."""
    frame = pd.read_parquet(folder / PART_FILE)
    return frame.sort_values(list(frame.columns), na_position="first", kind="stable").reset_index(drop=True)


def test_remote_setting_is_a_spark_connect_url():
    assert spark_remote({}) is None and spark_remote({REMOTE_SETTING: " "}) is None
    assert spark_remote({REMOTE_SETTING: "sc://spark.internal:15002"}) == "sc://spark.internal:15002"
    for bad in ("spark://10.0.0.5:7077", "http://spark:15002", "sc://", "sc://:15002/;token=s3cret"):
        with pytest.raises(ValueError, match=REMOTE_SETTING) as refused:
            spark_remote({REMOTE_SETTING: bad})
        assert "s3cret" not in str(refused.value)  # the URL may carry a token: never echoed


def test_connect_settings_leave_the_server_its_own():
    conf = connect_conf("sc://127.0.0.1:15002")
    assert conf["spark.remote"] == "sc://127.0.0.1:15002"
    # What decides the output travels with the session; master, memory and addresses are the server's.
    assert conf["spark.sql.csv.parser.columnPruning.enabled"] == "false"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert not {k for k in conf if k != "spark.remote" and not k.startswith("spark.sql.")}


@pytest.mark.cluster
def test_cleaning_through_spark_connect_equals_local_mode(spark, spec, connect_url, tmp_path):
    landing = tmp_path / "landing"
    report = generate(spec, landing, days=1, rows_per_day=300, scenario="corrupt")
    days = sorted(report.rows_per_day)
    assert not is_connect(spark)

    run = subprocess.run(
        [sys.executable, "-c", _CLEAN_UNDER_CONNECT, str(landing), str(tmp_path / "connect"), *days],
        env=_client_env(connect_url),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    through_connect = json.loads(run.stdout.strip().splitlines()[-1])

    local = tmp_path / "local"
    for day in days:
        files = sorted((landing / day).glob("*.csv"))
        result = clean_partition(
            spark, spec, files, day, local / "clean" / day, local / "quarantine" / day, local / "_staging"
        )
        assert through_connect[day] == json.loads(json.dumps(asdict(result))), day
        assert result.reconciled and result.rows_quarantined == sum(report.expected_reasons_by_day[day].values())
        for table in ("clean", "quarantine"):
            pd.testing.assert_frame_equal(
                _rows(tmp_path / "connect" / table / day), _rows(local / table / day), obj=f"{table} {day}"
            )


@pytest.mark.cluster
@pytest.mark.full
def test_xgboost_spark_trains_through_spark_connect(spec, connect_url, tmp_path):
    """xgboost 3.4's estimator runs on a Connect session: its barrier stage runs on the server."""
    data = tmp_path / "training"
    data.mkdir()
    training_frame(spec, "2026-01-01", 2000, 1).to_parquet(data / "train.parquet")
    training_frame(spec, "2026-01-02", 500, 2).to_parquet(data / "validation.parquet")
    config = TrainConfig(device="cpu", n_estimators=10, num_workers=2)
    result = train_on_spark(connect_url, data, tmp_path / "model", config, timeout=400)
    assert result["distributed"] and result["params"]["num_workers"] == 2
    assert result["num_boosted_rounds"] == 10 and result["validation_auc"] > 0.75
