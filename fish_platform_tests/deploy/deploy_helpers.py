"""Shared helpers of the deployment tests: repository paths, rendering overlays, walking manifests."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "k8s"
INFRA = REPO_ROOT / "infra"
OVERLAYS = ("local", "yandex")
# The Kubernetes version the manifests are validated against (kubernetes-validate ships its schema;
# Yandex Managed Kubernetes and current kind both run it or newer).
K8S_SCHEMA_VERSION = "1.32.0"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not found: it renders the kustomize overlays (kubectl kustomize)")
    return path


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(overlay: str) -> list[dict[str, Any]]:
    """The manifests of one overlay, as `kubectl apply -k` would send them."""
    return list(_render(overlay))


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def containers(doc: dict) -> Iterator[dict]:
    spec = pod_spec(doc)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def hcl_value(value: Any) -> Any:
    """One HCL attribute value, whichever python-hcl2 flavour parsed it.

    checkov pins its fork (bc-python-hcl2, import name ``hcl2`` too) that wraps every value in a
    one-element list; upstream python-hcl2 does not, and newer versions keep string quotes.
    """
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def load_tf(path: Path) -> dict[str, Any]:
    import hcl2

    with open(path) as handle:
        return hcl2.load(handle)


def tf_blocks(kind: str) -> dict[str, dict[str, Any]]:
    """Every ``variable``/``output`` (name -> body) or ``resource`` ("type.name" -> body) in infra/."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(INFRA.glob("*.tf")):
        for block in load_tf(path).get(kind, []):
            for name, body in block.items():
                if kind in ("resource", "data"):
                    for resource_name, resource_body in body.items():
                        found[f"{name}.{resource_name}"] = resource_body
                else:
                    found[name] = body
    return found
