"""The values keys of the official Dagster Helm chart that k8s/dagster/*.yaml may use.

No Helm binary (nor the chart's values.schema.json) is available offline, so this is a documented
list, written from the chart's values.schema.json in dagster-io/dagster (helm/dagster, generated
from helm/dagster/schema/schema/charts/dagster/values.py), for the chart released with
dagster 1.13. It covers the sections we configure, not every key of the chart; ``FREE`` marks
a subtree the chart passes through as a Kubernetes object or free-form map. Extend it (from the
schema) when values.yaml needs a new key; a typo or a key from an old chart (``dagit``,
``userDeployments``) fails the test instead of being ignored by Helm at install time.
"""

from __future__ import annotations

from typing import Any

FREE = object()  # any content: Kubernetes objects (resources, probes, securityContext...) or maps

_IMAGE = {"repository": str, "tag": (str, int), "pullPolicy": str}
_ENV_SOURCES = [{"name": str, "optional": bool}]
_K8S_POD_FIELDS = {
    "annotations": FREE,
    "labels": FREE,
    "nodeSelector": FREE,
    "affinity": FREE,
    "tolerations": FREE,
    "podSecurityContext": FREE,
    "securityContext": FREE,
    "resources": FREE,
    "livenessProbe": FREE,
    "readinessProbe": FREE,
    "startupProbe": FREE,
    "volumes": FREE,
    "volumeMounts": FREE,
    "schedulerName": str,
}
_TICK_RETENTION = {"purgeAfterDays": FREE}

CHART_VALUES: dict[str, Any] = {
    "global": {
        "postgresqlSecretName": str,
        "dagsterHome": str,
        "serviceAccountName": str,
        "celeryConfigSecretName": str,
    },
    "serviceAccount": {"create": bool, "name": str, "annotations": FREE},
    "imagePullSecrets": FREE,
    "generatePostgresqlPasswordSecret": bool,
    "generateCeleryConfigSecret": bool,
    "postgresql": {
        "enabled": bool,
        "image": _IMAGE,
        "postgresqlHost": str,
        "postgresqlUsername": str,
        "postgresqlPassword": str,
        "postgresqlDatabase": str,
        "postgresqlParams": FREE,
        "postgresqlScheme": str,
        "service": {"port": int},
    },
    "telemetry": {"enabled": bool},
    "dagsterWebserver": {
        "replicaCount": int,
        "image": _IMAGE,
        "nameOverride": str,
        "pathPrefix": str,
        "service": {"type": str, "port": int, "annotations": FREE},
        "workspace": FREE,
        "env": FREE,
        "envConfigMaps": _ENV_SOURCES,
        "envSecrets": _ENV_SOURCES,
        "deploymentLabels": FREE,
        "enableReadOnly": bool,
        "dbStatementTimeout": int,
        "dbPoolRecycle": int,
        "logLevel": str,
        "initContainerResources": FREE,
        **_K8S_POD_FIELDS,
    },
    "dagster-user-deployments": {
        "enabled": bool,
        "enableSubchart": bool,
        "imagePullSecrets": FREE,
        "deployments": [
            {
                "name": str,
                "image": _IMAGE,
                "dagsterApiGrpcArgs": [str],
                "codeServerArgs": [str],
                "includeConfigInLaunchedRuns": {"enabled": bool},
                "deploymentNamespace": str,
                "port": int,
                "env": FREE,
                "envConfigMaps": _ENV_SOURCES,
                "envSecrets": _ENV_SOURCES,
                "initContainers": FREE,
                "sidecarContainers": FREE,
                **_K8S_POD_FIELDS,
            }
        ],
    },
    "runLauncher": {
        "type": str,
        "config": {
            "k8sRunLauncher": {
                "image": _IMAGE,
                "imagePullPolicy": str,
                "jobNamespace": str,
                "loadInclusterConfig": bool,
                "kubeconfigFile": str,
                "envConfigMaps": _ENV_SOURCES,
                "envSecrets": _ENV_SOURCES,
                "envVars": [str],
                "volumeMounts": FREE,
                "volumes": FREE,
                "labels": FREE,
                "failPodOnRunFailure": bool,
                "resources": FREE,
                "schedulerName": str,
                "securityContext": FREE,
                "runK8sConfig": {
                    "containerConfig": FREE,
                    "podSpecConfig": FREE,
                    "podTemplateSpecMetadata": FREE,
                    "jobSpecConfig": FREE,
                    "jobMetadata": FREE,
                },
            },
            "customRunLauncher": {"module": str, "class": str, "config": FREE},
        },
    },
    "dagsterDaemon": {
        "enabled": bool,
        "image": _IMAGE,
        "heartbeatTolerance": int,
        "runCoordinator": {
            "enabled": bool,
            "type": str,
            "config": {
                "queuedRunCoordinator": {
                    "maxConcurrentRuns": int,
                    "tagConcurrencyLimits": FREE,
                    "dequeueIntervalSeconds": int,
                    "dequeueNumWorkers": int,
                    "dequeueUseThreads": bool,
                    "blockOpConcurrencyLimitedRuns": FREE,
                },
                "customRunCoordinator": FREE,
            },
        },
        "env": FREE,
        "envConfigMaps": _ENV_SOURCES,
        "envSecrets": _ENV_SOURCES,
        "deploymentLabels": FREE,
        "runMonitoring": FREE,
        "runRetries": FREE,
        "sensors": FREE,
        "schedules": FREE,
        "initContainerResources": FREE,
        **_K8S_POD_FIELDS,
    },
    "computeLogManager": {
        "type": str,
        "config": {
            "s3ComputeLogManager": {
                "bucket": str,
                "localDir": str,
                "prefix": str,
                "useSsl": bool,
                "verify": bool,
                "verifyCertPath": str,
                "endpointUrl": str,
                "skipEmptyFiles": bool,
                "uploadInterval": int,
                "uploadExtraArgs": FREE,
                "showUrlOnly": bool,
                "region": str,
            },
            "gcsComputeLogManager": FREE,
            "azureBlobComputeLogManager": FREE,
            "customComputeLogManager": FREE,
        },
    },
    "scheduler": {"type": str, "config": FREE},
    "pythonLogs": {"pythonLogLevel": str, "managedPythonLoggers": [str], "dagsterHandlerConfig": FREE},
    "retention": {
        "enabled": bool,
        "sensor": _TICK_RETENTION,
        "schedule": _TICK_RETENTION,
        "autoMaterialize": _TICK_RETENTION,
    },
    "migrate": {"enabled": bool},
    "ingress": FREE,
    "additionalInstanceConfig": FREE,
}

RUN_LAUNCHER_TYPES = {"K8sRunLauncher", "CeleryK8sRunLauncher", "CustomRunLauncher"}
COMPUTE_LOG_MANAGER_TYPES = {
    "NoOpComputeLogManager",
    "AzureBlobComputeLogManager",
    "GCSComputeLogManager",
    "S3ComputeLogManager",
    "CustomComputeLogManager",
}


def unknown_keys(values: Any, schema: Any = CHART_VALUES, path: str = "") -> list[str]:
    """Paths in ``values`` that the documented chart keys do not have, or whose type is wrong."""
    if schema is FREE or values is None:
        return []
    if isinstance(schema, dict):
        if not isinstance(values, dict):
            return [f"{path or '<root>'}: expected a mapping, got {type(values).__name__}"]
        problems = []
        for key, value in values.items():
            where = f"{path}.{key}" if path else key
            if key not in schema:
                problems.append(f"{where}: not a key of the Dagster chart")
            else:
                problems += unknown_keys(value, schema[key], where)
        return problems
    if isinstance(schema, list):
        if not isinstance(values, list):
            return [f"{path}: expected a list, got {type(values).__name__}"]
        return [p for i, item in enumerate(values) for p in unknown_keys(item, schema[0], f"{path}[{i}]")]
    if not isinstance(values, schema):
        return [f"{path}: expected {schema}, got {type(values).__name__}"]
    return []
