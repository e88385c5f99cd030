"""The pods of the Dagster Helm release and the run pods dagster-k8s launches, from our values.

No Helm here, so the chart's pods are modelled from its templates at chart 1.13 (helm/dagster in
dagster-io/dagster: templates/helpers/_deployment-webserver.tpl, templates/deployment-daemon.yaml,
templates/job-instance-migrate.yaml, charts/dagster-user-deployments/templates/deployment-user.yaml
and the k8sContainerContext helper): where each security context, volume and label of the values
lands. The run pod is not modelled: dagster-k8s's own code builds it (container-context merge and
construct_dagster_k8s_job), as the run launcher does in the cluster.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from fish_platform.pod_sizing import K8S_CONFIG_TAG, pod_tags
from fish_platform_tests.deploy.deploy_helpers import K8S

DAGSTER = K8S / "dagster"
RELEASE = "dagster"
# Stand-ins for what k8s/deploy.sh fills in from its environment and `terraform output`.
PLACEHOLDERS = {
    "PG_HOST": "c-abc123.rw.mdb.yandexcloud.net",
    "IMAGE_REGISTRY": "cr.yandex/crp0000000000000000",
    "IMAGE_TAG": "0a1b2c3d4e5f",
    "IMAGE_PULL_POLICY": "IfNotPresent",
    "DATA_BUCKET": "fish-platform-data-b1g",
}
RELEASES = {
    "local": [DAGSTER / "values.yaml"],
    "yandex": [DAGSTER / "values.yaml", DAGSTER / "values-yandex.yaml"],
    "yandex+spark": [
        DAGSTER / "values.yaml",
        DAGSTER / "values-yandex.yaml",
        K8S / "spark" / "values-spark-k8s.yaml",
    ],
}
# The chart's init-container images (values postgresql.image and busybox.image defaults).
CHART_INIT_IMAGES = {
    "check-db-ready": "docker.io/library/postgres:14.6",
    "init-user": "docker.io/busybox:1.28",
}


# The `dagster-k8s/config` tag of the training step with a GPU, from the platform's one source
# (fish_platform/pod_sizing.py): dagster-k8s reads it from a step's op_tags (k8s_job_executor) or a
# run's tags (K8sRunLauncher).
TRAINING_K8S_CONFIG = pod_tags("training", gpus=1)[K8S_CONFIG_TAG]


def load_values(path: Path) -> dict:
    text = path.read_text()
    for name, value in PLACEHOLDERS.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, f"{path.name} has a placeholder k8s/deploy.sh does not fill"
    return yaml.safe_load(text)


def merged(*paths: Path) -> dict:
    """Helm's merge of several -f files: maps merge, lists and scalars are replaced."""
    result: dict = {}
    for path in paths:
        result = _merge(result, load_values(path))
    return result


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def release_values(release: str) -> dict:
    return merged(*RELEASES[release])


def _selector_labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": RELEASE}


def _image(spec: dict) -> str:
    return f"{spec['repository']}:{spec['tag']}"


def _component_pod(component: dict, labels: dict, containers: list[dict], volumes: list[dict]) -> dict:
    init = [
        {
            "name": "check-db-ready",
            "image": CHART_INIT_IMAGES["check-db-ready"],
            "securityContext": component.get("securityContext", {}),
            "resources": component.get("initContainerResources", {}),
        },
        {
            "name": "init-user-deployment-fish-platform",
            "image": CHART_INIT_IMAGES["init-user"],
            "securityContext": component.get("securityContext", {}),
            "resources": component.get("initContainerResources", {}),
        },
    ]
    return {
        "labels": labels,
        "spec": {
            "securityContext": component.get("podSecurityContext", {}),
            "initContainers": init,
            "containers": containers,
            "volumes": volumes + list(component.get("volumes", [])),
        },
    }


def chart_pods(values: dict) -> dict[str, dict]:
    """name -> {"labels": pod labels, "spec": pod spec} for the release's own pods."""
    instance_volumes = [
        {"name": "dagster-instance", "configMap": {"name": f"{RELEASE}-instance"}},
        {"name": "dagster-workspace-yaml", "configMap": {"name": f"{RELEASE}-workspace-yaml"}},
    ]
    pods: dict[str, dict] = {}
    for key, component_name, extra in [
        ("dagsterWebserver", "dagster-webserver", {}),
        ("dagsterDaemon", "dagster-daemon", {"deployment": "daemon"}),
    ]:
        component = values[key]
        container = {
            "name": "dagster",
            "image": _image(component["image"]),
            "securityContext": component.get("securityContext", {}),
            "resources": component.get("resources", {}),
            "volumeMounts": list(component.get("volumeMounts", [])),
        }
        labels = {**_selector_labels(), "component": component_name, **extra, **component.get("labels", {})}
        pods[component_name] = _component_pod(component, labels, [container], instance_volumes)

    webserver = values["dagsterWebserver"]
    pods["dagster-instance-migrate"] = {
        # Set by the Job controller; the chart gives this pod no labels of its own.
        "labels": {"job-name": f"{RELEASE}-instance-migrate", "batch.kubernetes.io/job-name": "x"},
        "spec": {
            "securityContext": webserver.get("podSecurityContext", {}),
            "containers": [
                {
                    "name": "dagster-instance-migrate",
                    "image": _image(webserver["image"]),
                    "securityContext": webserver.get("securityContext", {}),
                    "resources": webserver.get("resources", {}),
                }
            ],
            "volumes": instance_volumes[:1] + list(webserver.get("volumes", [])),
        },
    }
    for location in values["dagster-user-deployments"]["deployments"]:
        labels = {
            **_selector_labels(),
            "component": "user-deployments",
            "deployment": location["name"],
            **location.get("labels", {}),
        }
        pods[f"code-server-{location['name']}"] = {
            "labels": labels,
            "spec": {
                "securityContext": location.get("podSecurityContext", {}),
                "containers": [
                    {
                        "name": "dagster",
                        "image": _image(location["image"]),
                        "securityContext": location.get("securityContext", {}),
                        # None in the values: the namespace's LimitRange fills it in.
                        "resources": location.get("resources", {}),
                        "volumeMounts": list(location.get("volumeMounts", [])),
                    }
                ],
                "volumes": list(location.get("volumes", [])),
            },
        }
    return pods


def location_container_context(location: dict, namespace: str = "fish-platform") -> dict:
    """The container context the chart gives the code server (DAGSTER_CONTAINER_CONTEXT), from its
    values: the dagsterUserDeployments.k8sContainerContext helper."""
    k8s: dict = {
        "image_pull_policy": location["image"]["pullPolicy"],
        "env_config_maps": [f"{RELEASE}-{location['name']}-user-env"]
        + [c["name"] for c in location.get("envConfigMaps", [])],
        "namespace": namespace,
        "service_account_name": "dagster",
    }
    for key, value_key in [
        ("env_secrets", "envSecrets"),
        ("volume_mounts", "volumeMounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
    ]:
        if location.get(value_key):
            value = location[value_key]
            k8s[key] = [v["name"] for v in value] if key == "env_secrets" else value
    return {"k8s": k8s}


_SNAKE = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "jobSpecConfig": "job_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobMetadata": "job_metadata",
}


def run_container_context(values: dict, location: dict | None = None, run_tags: dict | None = None):
    """What dagster-k8s gives a run pod: the run launcher's config, merged with the code location's
    container context and the run's `dagster-k8s/config` tag, by dagster-k8s's own merge code
    (K8sContainerContext.create_for_run does the same with a live run launcher)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config

    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    context = K8sContainerContext(
        image_pull_policy=launcher["imagePullPolicy"],
        env_config_maps=[c["name"] for c in launcher["envConfigMaps"]],
        env_secrets=[s["name"] for s in launcher["envSecrets"]],
        volume_mounts=launcher.get("volumeMounts", []),
        volumes=launcher.get("volumes", []),
        labels=launcher.get("labels", {}),
        resources=launcher.get("resources", {}),
        security_context=launcher.get("securityContext", {}),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
            {_SNAKE[k]: v for k, v in launcher.get("runK8sConfig", {}).items()}
        ),
    )
    user = K8sContainerContext()
    if location is not None:
        user = user.merge(K8sContainerContext.create_from_config(location_container_context(location)))
    if run_tags:
        user = user.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(run_tags)))
    return context.merge(user)


def run_pod(values: dict, run_tags: dict | None = None) -> dict[str, Any]:
    """The run pod's template ({"labels", "spec"}, Kubernetes field names) as dagster-k8s renders it."""
    import kubernetes
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job

    location = values["dagster-user-deployments"]["deployments"][0]
    context = run_container_context(values, location, run_tags)
    job_config = context.get_k8s_job_config(
        job_image=_image(location["image"]),
        run_launcher=_LauncherStandIn(),
    )
    assert isinstance(job_config, DagsterK8sJobConfig)
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_run", json.dumps({})],
        job_name="dagster-run-0123abcd",
        user_defined_k8s_config=context.run_k8s_config,
        component="run_worker",
        labels={"dagster/job": "fish_pipeline", "dagster/run-id": "0123abcd"},
    )
    rendered = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    template = rendered["spec"]["template"]
    return {"labels": template["metadata"].get("labels", {}), "spec": template["spec"]}


class _LauncherStandIn:
    """The run launcher attributes get_k8s_job_config reads, as the chart configures them."""

    job_image = None
    dagster_home = "/opt/dagster/dagster_home"
    instance_config_map = f"{RELEASE}-instance"
    postgres_password_secret = "dagster-postgresql-secret"


def spark_executor_pod() -> dict:
    """Spark's executor pod template (k8s/spark/executor-pod-template.yaml) plus what Spark adds to
    it: a local-dir emptyDir volume (spark-local-dir-1) and the resources of spark-defaults.conf."""
    template = yaml.safe_load((K8S / "spark" / "executor-pod-template.yaml").read_text())
    settings = dict(
        line.split(None, 1)
        for line in (K8S / "spark" / "spark-defaults.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    spec = template["spec"]
    container = spec["containers"][0]
    container["image"] = settings["spark.kubernetes.container.image"]
    container["resources"] = {
        "requests": {"cpu": settings["spark.kubernetes.executor.request.cores"], "memory": "3Gi"},
        "limits": {"cpu": settings["spark.kubernetes.executor.limit.cores"], "memory": "3Gi"},
    }
    spec["volumes"] = [*spec.get("volumes", []), {"name": "spark-local-dir-1", "emptyDir": {}}]
    container["volumeMounts"] = [
        *container.get("volumeMounts", []),
        {"name": "spark-local-dir-1", "mountPath": "/var/data/spark-1"},
    ]
    labels = dict(template["metadata"]["labels"])
    for key, value in settings.items():
        match = re.fullmatch(r"spark\.kubernetes\.executor\.label\.(.+)", key)
        if match:
            labels[match.group(1)] = value
    labels["spark-role"] = "executor"
    return {"labels": labels, "spec": spec}
