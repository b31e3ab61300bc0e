"""Where a run's steps execute (KENNEL_EXECUTOR), and what Kubernetes resources each step asks for.

in_process (default): every step in the run's own process, so Spark and the heavy imports start once per
run. k8s: dagster-k8s's k8s_job_executor, one Kubernetes Job per step; only then do the per-step
`dagster-k8s/config` op tags below take effect (the in-process executor ignores them), putting training
on a GPU node. Every other step gets the modest requests of the run launcher's runK8sConfig
(deploy/helm/values.yaml), which the k8s executor applies to step pods too, under the op tags.
deploy/README.md documents both.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

EXECUTOR_SETTING = "KENNEL_EXECUTOR"
EXECUTORS = ("in_process", "k8s")

K8S_CONFIG_TAG = "dagster-k8s/config"  # the op tag dagster-k8s reads a step's Kubernetes config from

# The training step (XGBoost on CUDA when the pod sees a GPU) gets one GPU. The device plugin advertises
# `nvidia.com/gpu` only on GPU nodes, so the limit alone places the pod there; the node selector is the
# label NVIDIA's GPU feature discovery sets, and the toleration admits the pod to nodes tainted
# `nvidia.com/gpu:NoSchedule` (how GKE, AKS and the GPU operator keep other pods off them).
GPU_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "2", "memory": "8Gi"},
            "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
        }
    },
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}

# Evaluation computes exact TreeSHAP over the whole test window with the saved model, which Model.load
# sets up for the CPU (no device): more cores and memory than a plain step, no GPU it would leave idle.
CPU_HEAVY_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}},
}


def gpu_step_tags() -> dict[str, Any]:
    """Op tags for a step that should run on a GPU node under the k8s executor."""
    return {K8S_CONFIG_TAG: GPU_STEP_K8S_CONFIG}


def cpu_heavy_step_tags() -> dict[str, Any]:
    """Op tags for a CPU-bound step that needs more than the default request under the k8s executor."""
    return {K8S_CONFIG_TAG: CPU_HEAVY_STEP_K8S_CONFIG}


def build_executor(setting: str | None = None) -> dg.ExecutorDefinition:
    """The executor KENNEL_EXECUTOR names (`setting` overrides the environment)."""
    choice = setting if setting is not None else os.environ.get(EXECUTOR_SETTING) or "in_process"
    if choice == "in_process":
        return dg.in_process_executor
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor  # imported only here: the Kubernetes client is heavy

        # Unconfigured, so a run's config can still set max_concurrent, job_namespace, step_k8s_config, …
        return k8s_job_executor
    raise ValueError(f"{EXECUTOR_SETTING} must be one of {', '.join(EXECUTORS)}, got {choice!r}")
