"""Every connection Kennel uses, chosen per environment in one place.

KENNEL_ENV=local (default): everything embedded under the project's .kennel/ folder, Spark local[2].
KENNEL_ENV=cluster: every location comes from the environment (dagster.EnvVar) and must be set.
See the README's "Configuration" table for each variable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject
from dagster_pyspark import LazyPySparkResource

from kennel.lake import configured_mirror, configured_root
from kennel.serving.model_store import DEFAULT_BENTOML_HOME
from kennel.spark import SparkNetwork, connect_conf, prepare_spark_environment, spark_conf, spark_remote
from kennel.spec import PROJECT_ROOT, DatasetSpec
from resources.kafka import KafkaResource
from resources.lake import BoundedS3Resource, LakeResource
from resources.model_store import ModelStoreResource
from resources.streams import StreamResource

DBT_DIR = PROJECT_ROOT / "dbt"

dbt_project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _optional_env(name: str) -> dg.EnvVar | None:
    """An optional setting, read through dagster.EnvVar when it is set (so the UI shows where it came from)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def build_resources(env: str | None = None) -> dict[str, object]:
    env = env or _setting("KENNEL_ENV", "local")
    # KENNEL_SPARK_DRIVER_HOST / KENNEL_SPARK_BIND_ADDRESS (both 127.0.0.1 by default), checked here so a
    # bad value stops the code location from loading with the setting's name, not a run with a JVM error.
    spark_network = SparkNetwork.from_environ()
    prepare_spark_environment(spark_network)
    # KENNEL_SPARK_REMOTE (sc://host:port): every Spark stage is a client of that Spark Connect server,
    # which owns the master, memory and addresses; no master need be set then.
    remote = spark_remote()
    # Credentials and region come from the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, …);
    # retries and timeouts are bounded, so an S3 endpoint that goes away fails a run in seconds.
    s3 = BoundedS3Resource(endpoint_url=_optional_env("KENNEL_S3_ENDPOINT_URL"))
    if env == "local":
        lake = LakeResource(
            root=configured_root(),
            s3=s3,
            mirror=configured_mirror(),
        )
        spark_master = _setting("KENNEL_SPARK_MASTER", "local[2]")
        store = ModelStoreResource(home=_setting("BENTOML_HOME", str(DEFAULT_BENTOML_HOME)))
    elif env == "cluster":
        lake = LakeResource(root=dg.EnvVar("KENNEL_LAKE_ROOT"), mirror=_optional_env("KENNEL_LAKE_MIRROR") or "", s3=s3)
        # spark_config is a plain dict, not EnvVar-able
        spark_master = os.environ.get("KENNEL_SPARK_MASTER", "") if remote else os.environ["KENNEL_SPARK_MASTER"]
        store = ModelStoreResource(home=dg.EnvVar("BENTOML_HOME"))
    else:
        raise ValueError(f"KENNEL_ENV must be 'local' or 'cluster', got {env!r}")
    return {
        "lake": lake,
        "pyspark": LazyPySparkResource(
            spark_config=connect_conf(remote) if remote else spark_conf(spark_master, network=spark_network)
        ),
        # The dbt next to this interpreter, so a run never picks up another dbt from PATH.
        "dbt": DbtCliResource(
            project_dir=dbt_project, profiles_dir=str(DBT_DIR), dbt_executable=str(Path(sys.executable).parent / "dbt")
        ),
        "model_store": store,
        "s3": s3,
        **{name: make() for name, make in STREAM_TRANSPORTS.items()},
    }


# Stream transports, by the spec section that configures them (source.<name>): each becomes the resource
# of its `<name>_landing` asset, `land_<name>` job and schedule. A new transport registers here.
STREAM_TRANSPORTS: dict[str, Callable[[], StreamResource]] = {
    "kafka": lambda: KafkaResource(bootstrap_servers=_optional_env("KENNEL_KAFKA_BOOTSTRAP_SERVERS") or ""),
}


def stream_transports(spec: DatasetSpec) -> list[str]:
    """The registered transports the spec's source uses."""
    return [name for name in STREAM_TRANSPORTS if getattr(spec.source, name, None) is not None]
