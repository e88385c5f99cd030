"""Every pod of the platform against the "restricted" Pod Security Standard the namespace enforces.

The checker below implements the Baseline and Restricted controls of
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (policy version 1.32) over a
pod spec. It runs over: every workload the kustomize overlays render; the Dagster chart's pods as
their templates place our values (dagster_pods.py: no Helm here); the run pods, rendered by
dagster-k8s's own code from those values; and the Spark executor pod template. The checker is
tested on pods that break each control, so a pass means something.
"""

from __future__ import annotations

import copy
import json

import pytest

from fish_platform_tests.deploy.dagster_pods import (
    RELEASES,
    TRAINING_K8S_CONFIG,
    chart_pods,
    release_values,
    run_pod,
    spark_executor_pod,
)
from fish_platform_tests.deploy.deploy_helpers import OVERLAYS, pod_spec, render, workloads

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(spec: dict) -> list[str]:
    """The Pod Security Standard controls (baseline + restricted) a pod spec breaks."""
    problems: list[str] = []
    pod_security = spec.get("securityContext") or {}
    containers = [
        *spec.get("initContainers", []),
        *spec.get("containers", []),
        *spec.get("ephemeralContainers", []),
    ]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{key} is set")
    if pod_security.get("windowsOptions", {}).get("hostProcess"):
        problems.append("pod: hostProcess")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")
    for sysctl in pod_security.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"unsafe sysctl {sysctl['name']}")
    problems += _selinux_and_apparmor("pod", pod_security)
    pod_seccomp = (pod_security.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        problems.append("pod: seccomp Unconfined")
    if pod_security.get("runAsUser") == 0:
        problems.append("pod: runAsUser 0")
    if pod_security.get("runAsNonRoot") is False:
        problems.append("pod: runAsNonRoot false")
    for container in containers:
        name = container["name"]
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            problems.append(f"{name}: privileged")
        if security.get("windowsOptions", {}).get("hostProcess"):
            problems.append(f"{name}: hostProcess")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
        if security.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount {security['procMount']}")
        problems += _selinux_and_apparmor(name, security)
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot is not true (pod or container)")
        if security.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (security.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{name}: seccomp profile {seccomp} (RuntimeDefault or Localhost needed)")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f"{name}: adds capabilities {sorted(added)}")
    return problems


def _selinux_and_apparmor(where: str, security: dict) -> list[str]:
    problems = []
    selinux = security.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        problems.append(f"{where}: seLinuxOptions {selinux}")
    apparmor = (security.get("appArmorProfile") or {}).get("type")
    if apparmor not in {None, "RuntimeDefault", "Localhost"}:
        problems.append(f"{where}: appArmorProfile {apparmor}")
    return problems


def read_only_root_violations(spec: dict) -> list[str]:
    """Not a Pod Security control, a platform rule: every container's root filesystem is read-only."""
    return [
        c["name"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]
        if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True
    ]


# --- the checker itself -------------------------------------------------------------------------

COMPLIANT = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "containers": [
        {
            "name": "app",
            "image": "example:1",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "config", "configMap": {"name": "c"}}],
}


def _broken(path: str, value) -> dict:
    spec = copy.deepcopy(COMPLIANT)
    target = spec
    *parents, leaf = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
    if value is None:
        del target[leaf]
    else:
        target[leaf] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("hostNetwork", True, "hostNetwork"),
        ("hostPID", True, "hostPID"),
        ("securityContext.runAsNonRoot", None, "runAsNonRoot is not true"),
        ("securityContext.runAsUser", 0, "runAsUser 0"),
        ("securityContext.seccompProfile", None, "seccomp profile None"),
        ("securityContext.seccompProfile", {"type": "Unconfined"}, "Unconfined"),
        ("containers.0.securityContext.allowPrivilegeEscalation", None, "allowPrivilegeEscalation"),
        ("containers.0.securityContext.privileged", True, "privileged"),
        ("containers.0.securityContext.capabilities", {"drop": ["NET_RAW"]}, "do not drop ALL"),
        ("containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}, "adds"),
        ("containers.0.ports", [{"containerPort": 80, "hostPort": 80}], "hostPort"),
        ("volumes", [{"name": "host", "hostPath": {"path": "/"}}], "hostPath"),
        ("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}], "unsafe sysctl"),
    ],
)
def test_the_checker_rejects_each_broken_control(path: str, value, expected: str):
    assert restricted_violations(COMPLIANT) == []
    problems = restricted_violations(_broken(path, value))
    assert any(expected in p for p in problems), problems


def test_the_checker_accepts_net_bind_service_and_container_level_settings():
    spec = _broken("securityContext", {})
    spec["containers"][0]["securityContext"].update(
        runAsNonRoot=True,
        seccompProfile={"type": "RuntimeDefault"},
        capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    )
    assert restricted_violations(spec) == []


# --- the platform's pods ------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kustomize_pod_meets_restricted_with_a_read_only_root(overlay: str):
    for doc in workloads(render(overlay)):
        spec = pod_spec(doc)
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        assert restricted_violations(spec) == [], where
        assert read_only_root_violations(spec) == [], where


@pytest.mark.parametrize("release", RELEASES)
def test_every_dagster_chart_pod_meets_restricted_with_a_read_only_root(release: str):
    pods = chart_pods(release_values(release))
    assert {
        "dagster-webserver",
        "dagster-daemon",
        "dagster-instance-migrate",
        "code-server-fish-platform",
    } <= set(pods)
    for name, pod in pods.items():
        assert restricted_violations(pod["spec"]) == [], f"{release}: {name}"
        assert read_only_root_violations(pod["spec"]) == [], f"{release}: {name}"
        for container in pod["spec"]["containers"]:
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if name != "dagster-instance-migrate":
                assert "/tmp" in mounts, f"{release}: {name} has no writable /tmp"


TRAINING_TAGS = {"dagster-k8s/config": json.dumps(TRAINING_K8S_CONFIG)}


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("tags", [None, TRAINING_TAGS], ids=["light", "training"])
def test_run_pods_rendered_by_dagster_k8s_meet_restricted(release: str, tags):
    pod = run_pod(release_values(release), tags)
    assert restricted_violations(pod["spec"]) == [], release
    assert read_only_root_violations(pod["spec"]) == [], release
    (container,) = pod["spec"]["containers"]
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
    if tags:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_spark_executor_pods_meet_restricted():
    pod = spark_executor_pod()
    assert restricted_violations(pod["spec"]) == []
    assert read_only_root_violations(pod["spec"]) == []


def test_the_training_tag_can_run_the_gpu_image_on_the_gpu_nodes():
    """docs/deployment.md, GPU training: the same tag with the -gpu image (FISH_TF_VARIANT=gpu)."""
    values = release_values("yandex")
    image = values["dagster-user-deployments"]["deployments"][0]["image"]
    gpu_image = f"{image['repository']}:{image['tag']}-gpu"
    config = {
        **TRAINING_K8S_CONFIG,
        "container_config": {**TRAINING_K8S_CONFIG["container_config"], "image": gpu_image},
    }
    pod = run_pod(values, {"dagster-k8s/config": json.dumps(config)})
    (container,) = pod["spec"]["containers"]
    assert container["image"] == gpu_image
    assert pod["spec"]["nodeSelector"] == {"fish-platform.io/node-pool": "gpu"}
    assert restricted_violations(pod["spec"]) == []
