"""deploy/, checked offline: every Kubernetes manifest against the Kubernetes schemas (kubernetes-validate),
the Helm values against what Kennel reads, the Bento's probes against the routes it serves, and the executor
choice and per-step Kubernetes tags as dagster-k8s parses them. No cluster, no Helm, no image build here."""

import json
import re
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes_validate
import pytest
import yaml

from assets.graph import DatasetGraph
from assets.training import build_training_assets
from kennel.serving.api import OPEN_PATHS, openapi_document
from kennel.spec import DEFAULT_SPEC_PATH, PROJECT_ROOT, load_spec
from resources.executor import (
    CPU_HEAVY_STEP_K8S_CONFIG,
    EXECUTOR_SETTING,
    GPU_STEP_K8S_CONFIG,
    K8S_CONFIG_TAG,
    build_executor,
)

DEPLOY = PROJECT_ROOT / "deploy"
K8S_DIR = DEPLOY / "k8s"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
KUBERNETES_VERSION = "1.31.0"  # the oldest minor release still supported upstream when this was written
# Where Kennel reads its settings: a KENNEL_ name that appears in none of these files is one it ignores.
KENNEL_SOURCES = ("kennel", "resources", "assets", "sensors", "bentos", "jobs.py", "definitions.py")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(K8S_DIR.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _documents(path)
    ]


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def _kennel_settings_read() -> set[str]:
    names: set[str] = set()
    for source in KENNEL_SOURCES:
        root = PROJECT_ROOT / source
        for path in [root] if root.is_file() else root.rglob("*.py"):
            names.update(re.findall(r"\bKENNEL_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return names


def _env_names(env: list[dict[str, Any]]) -> set[str]:
    return {var["name"] for var in env}


def _bento_container() -> dict[str, Any]:
    (deployment,) = [doc for _, doc in _manifests() if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    "path, doc", _manifests(), ids=lambda value: value.name if isinstance(value, Path) else value.get("kind")
)
def test_manifest_is_valid_kubernetes(path: Path, doc: dict[str, Any]) -> None:
    _validate(doc)


def test_manifests_cover_the_serving_stack() -> None:
    kinds = {doc["kind"] for _, doc in _manifests()}
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "PersistentVolumeClaim"}


def test_a_broken_manifest_is_rejected() -> None:
    """The validation has teeth: a string where the schema wants an integer, and an unknown field (strict)."""
    (deployment,) = [doc for _, doc in _manifests() if doc["kind"] == "Deployment"]
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="two"):
        _validate(wrong_type)
    unknown_field = json.loads(json.dumps(deployment))
    unknown_field["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(unknown_field)


def test_kustomization_lists_exactly_the_manifests() -> None:
    (kustomization,) = _documents(K8S_DIR / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {path.name for path, _ in _manifests()}
    image_names = {image["name"] for image in kustomization["images"]}
    assert _bento_container()["image"] in image_names  # the placeholder kustomize replaces


def test_bento_probes_are_routes_the_service_serves_without_a_key() -> None:
    container = _bento_container()
    served = openapi_document(title="t", version="v", description="d", apis=[], api_key=True)["paths"]
    probes = [container[probe]["httpGet"] for probe in ("readinessProbe", "livenessProbe", "startupProbe")]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # ready only once the model is warm
    for probe in probes:
        assert "get" in served[probe["path"]]
        assert probe["path"] in OPEN_PATHS  # a probe carries no API key
        assert probe["port"] in {port["name"] for port in container["ports"]}


def test_bento_env_names_only_settings_kennel_reads() -> None:
    env = _env_names(_bento_container()["env"])
    assert {"BENTOML_DO_NOT_TRACK", "KENNEL_LAKE_ROOT"} <= env
    assert {name for name in env if name.startswith("KENNEL_")} <= _kennel_settings_read()


def test_helm_values_launch_runs_and_steps_on_kubernetes() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False  # the external database of deploy/dagster/postgres.yaml
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"][:2] == ["--python-file", "/opt/kennel/definitions.py"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    env = {var["name"]: var.get("value") for var in deployment["env"]}
    assert env["KENNEL_ENV"] == "cluster"
    assert env["KENNEL_LAKE_ROOT"].startswith("s3://")
    for required in ("KENNEL_S3_ENDPOINT_URL", "BENTOML_HOME", "KENNEL_SPARK_MASTER", "KENNEL_LAKE_MIRROR"):
        assert env[required]
    assert build_executor(env[EXECUTOR_SETTING]) is _k8s_job_executor()
    unknown = {name for name in env if name.startswith("KENNEL_")} - _kennel_settings_read()
    assert not unknown, f"Helm values set settings Kennel never reads: {sorted(unknown)}"
    # The shared volume every run and step pod mounts is the claim deploy/k8s creates.
    claims = {v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {doc["metadata"]["name"] for _, doc in _manifests() if doc["kind"] == "PersistentVolumeClaim"}


def _k8s_job_executor() -> dg.ExecutorDefinition:
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


def test_executor_is_in_process_by_default_and_k8s_when_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXECUTOR_SETTING, raising=False)
    assert build_executor() is dg.in_process_executor
    monkeypatch.setenv(EXECUTOR_SETTING, "k8s")
    assert build_executor() is _k8s_job_executor()
    monkeypatch.setenv(EXECUTOR_SETTING, "kubernetes")
    with pytest.raises(ValueError, match="KENNEL_EXECUTOR must be one of in_process, k8s, got 'kubernetes'"):
        build_executor()


def _step_job(step_tags: dict[str, str]) -> dict[str, Any]:
    """The Kubernetes Job dagster-k8s would launch for a step with these op tags, under the Helm values'
    runK8sConfig (merged as the k8s executor merges them), as a plain manifest."""
    import kubernetes
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_user_defined_k8s_config,
    )

    helm = yaml.safe_load(HELM_VALUES.read_text())["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    run_config = UserDefinedDagsterK8sConfig.from_dict(
        {re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), key): value for key, value in helm.items()}
    )
    context = K8sContainerContext(run_k8s_config=run_config).merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags))
    )
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(
            job_image="registry.example.com/kennel-dagster:0.1.0",
            dagster_home="/opt/dagster/dagster_home",
            instance_config_map="dagster-instance",
        ),
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-0123456789abcdef",
        user_defined_k8s_config=context.run_k8s_config,
        component="step_worker",
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def test_training_steps_carry_valid_kubernetes_tags() -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    graph = DatasetGraph(spec.name)
    by_key = {asset.key: asset for asset in build_training_assets(spec, graph)}
    expected = {graph.model: GPU_STEP_K8S_CONFIG, graph.evaluation: CPU_HEAVY_STEP_K8S_CONFIG, graph.training_set: None}
    for key, config in expected.items():
        tags = by_key[key].op.tags  # what the step handler reads as the step's tags: strings, JSON for a mapping
        if config is None:
            assert K8S_CONFIG_TAG not in tags  # runs under the Helm values' modest default
            continue
        assert json.loads(tags[K8S_CONFIG_TAG]) == config
        manifest = _step_job(tags)
        _validate(manifest)
        pod = manifest["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        resources = container["resources"]
        assert resources["requests"] == {"cpu": "2", "memory": "8Gi"}  # the tag's, over the default's 500m
        if config is GPU_STEP_K8S_CONFIG:
            assert resources["limits"] == {"memory": "16Gi", "nvidia.com/gpu": "1"}
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        else:
            assert "nvidia.com/gpu" not in resources["limits"] and "nodeSelector" not in pod


def test_plain_steps_get_the_default_request() -> None:
    manifest = _step_job({})
    _validate(manifest)
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
