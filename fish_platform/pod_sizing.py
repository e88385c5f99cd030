"""How big each step's Kubernetes pod is: the ``dagster-k8s/config`` tag of every asset.

With ``FISH_EXECUTOR=k8s`` (``k8s_job_executor``) every step runs in its own pod, and dagster-k8s
merges an asset's ``op_tags["dagster-k8s/config"]`` over the run launcher's container config. The
sizes fit the node groups of infra/ (CPU nodes: 4 cores, 16 GB; GPU nodes: see ``gpu_node_*``):
training takes most of a CPU node, or a GPU node with ``FISH_TRAIN_GPUS`` > 0; the Spark driver
(which also runs ``local[*]`` executors when no cluster is configured) two cores; everything else is
light. Without the Kubernetes executor the tags are inert.
"""

from __future__ import annotations

from typing import Any

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_POOL = {"fish-platform.io/node-pool": "gpu"}  # the label of infra/'s GPU node group

SIZES: dict[str, dict[str, dict[str, str]]] = {
    "training": {"requests": {"cpu": "3", "memory": "10Gi"}, "limits": {"cpu": "4", "memory": "14Gi"}},
    "training_gpu": {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"cpu": "16", "memory": "64Gi"}},
    "spark": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "6Gi"}},
    "light": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
}


def pod_tags(kind: str, gpus: int = 0) -> dict[str, Any]:
    """The op tags of a step of ``kind`` (``training``, ``spark`` or ``light``)."""
    if kind == "training" and gpus > 0:
        resources = {
            part: {**values, GPU_RESOURCE: str(gpus)} for part, values in SIZES["training_gpu"].items()
        }
        pod_spec = {
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
            "node_selector": dict(GPU_NODE_POOL),
        }
        return {K8S_CONFIG_TAG: {"container_config": {"resources": resources}, "pod_spec_config": pod_spec}}
    return {K8S_CONFIG_TAG: {"container_config": {"resources": SIZES[kind]}}}
