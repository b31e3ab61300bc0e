"""Test-session settings: every location in a temp folder, nothing leaves the machine, one Spark session."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="kennel-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    # Set before any test imports bentoml, dagster or definitions: each binds its locations on first use.
    os.environ.update(
        {
            "KENNEL_LAKE_ROOT": str(_SESSION_DIR / "lake"),
            "KENNEL_LANDING_ROOT": str(_SESSION_DIR / "landing"),
            "BENTOML_HOME": str(_SESSION_DIR / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "GX_ANALYTICS_ENABLED": "false",
            "DAGSTER_TELEMETRY_ENABLED": "False",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    os.environ.pop("KENNEL_DATASET_SPEC", None)
    os.environ.pop("KENNEL_ENV", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run (starting one costs 5–10 s)."""
    from kennel.spark import get_spark

    session = get_spark()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 HTTP endpoint on loopback (moto server on a free port) for the whole test run."""
    from moto.server import ThreadedMotoServer

    os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"})
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
