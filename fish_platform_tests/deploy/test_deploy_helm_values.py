"""k8s/dagster/*.yaml: Helm values of the official Dagster chart, checked offline against the
chart's documented keys (dagster_chart_keys.py) and against what the platform needs from them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fish_platform_tests.deploy.dagster_chart_keys import (
    COMPUTE_LOG_MANAGER_TYPES,
    RUN_LAUNCHER_TYPES,
    unknown_keys,
)
from fish_platform_tests.deploy.dagster_pods import (
    PLACEHOLDERS,
    RELEASES,
    TRAINING_K8S_CONFIG,
    load_values,
    merged,
    run_container_context,
)
from fish_platform_tests.deploy.deploy_helpers import K8S, REPO_ROOT, find, render

DAGSTER = K8S / "dagster"
CLIENT_LABEL = {"fish-platform.io/postgres-client": "true"}


VALUES_FILES = [
    DAGSTER / "values.yaml",
    DAGSTER / "values-yandex.yaml",
    K8S / "spark" / "values-spark-k8s.yaml",
]


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_values_use_only_documented_chart_keys(path: Path):
    problems = unknown_keys(load_values(path))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("release", RELEASES)
def test_run_launcher_gives_each_run_its_own_removed_pod(release: str):
    values = merged(*RELEASES[release])
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher" and launcher["type"] in RUN_LAUNCHER_TYPES
    k8s = launcher["config"]["k8sRunLauncher"]
    assert k8s["loadInclusterConfig"] is True
    assert k8s["failPodOnRunFailure"] is True  # a failed run fails its Job (alert DagsterRunFailed)
    job = k8s["runK8sConfig"]["jobSpecConfig"]
    assert job["backoffLimit"] == 0
    assert 0 < job["ttlSecondsAfterFinished"] <= 24 * 3600
    assert CLIENT_LABEL.items() <= k8s["labels"].items()
    assert values["computeLogManager"]["type"] in COMPUTE_LOG_MANAGER_TYPES


@pytest.mark.parametrize("release", RELEASES)
def test_code_location_serves_fish_platform_definitions(release: str):
    values = merged(*RELEASES[release])
    user = values["dagster-user-deployments"]
    assert user["enabled"] and user["enableSubchart"]
    (location,) = user["deployments"]
    assert location["codeServerArgs"] == ["-m", "fish_platform.definitions"]
    assert location["includeConfigInLaunchedRuns"]["enabled"] is True
    assert CLIENT_LABEL.items() <= location["labels"].items()
    assert {"name": "fish-s3"} in location["envSecrets"]
    # Every client of MLflow sends the basic-auth credentials of the Secret mlflow-auth.
    assert {"name": "mlflow-auth"} in location["envSecrets"]
    assert {"name": "mlflow-auth"} in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    image = location["image"]
    assert (image["repository"], image["tag"]) == (
        f"{PLACEHOLDERS['IMAGE_REGISTRY']}/fish-dagster",
        PLACEHOLDERS["IMAGE_TAG"],
    )


@pytest.mark.parametrize("release", RELEASES)
def test_dagster_uses_external_postgres_through_psycopg2(release: str):
    values = merged(*RELEASES[release])
    pg = values["postgresql"]
    assert pg["enabled"] is False  # our PostgreSQL (local) or Managed PostgreSQL (yandex)
    assert pg["postgresqlDatabase"] == "dagster"
    # SQLAlchemy 2.1 reads a bare "postgresql" scheme as psycopg 3, which the image does not have.
    assert pg["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"
    for component in ("dagsterWebserver", "dagsterDaemon"):
        assert CLIENT_LABEL.items() <= values[component]["labels"].items()
    if release.startswith("yandex"):
        assert pg["service"]["port"] == 6432 and pg["postgresqlParams"]["sslmode"] == "require"
    else:
        assert (pg["postgresqlHost"], pg["service"]["port"]) == ("postgres", 5432)


def test_values_reference_objects_the_overlays_create():
    secrets_doc = (K8S / "secrets" / "README.md").read_text()
    documented_secrets = set(re.findall(r"\| `([a-z0-9-]+)` \|", secrets_doc))
    for release, files in RELEASES.items():
        values = merged(*files)
        docs = render("local" if release == "local" else "yandex")
        configmaps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
        launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
        location = values["dagster-user-deployments"]["deployments"][0]
        for source in [*launcher["envConfigMaps"], *location.get("envConfigMaps", [])]:
            assert source["name"] in configmaps, f"{release}: ConfigMap {source['name']} is not rendered"
        for source in [*launcher["envSecrets"], *location.get("envSecrets", [])]:
            assert source["name"] in documented_secrets, f"{release}: Secret {source['name']} undocumented"
        assert values["global"]["postgresqlSecretName"] in documented_secrets
        for volume in launcher.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, f"{release}: {volume}"


def test_spark_values_give_run_pods_the_spark_conf_and_driver_address():
    values = merged(*RELEASES["yandex+spark"])
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    mount = next(m for m in launcher["volumeMounts"] if m["mountPath"] == "/opt/spark-conf")
    volume = next(v for v in launcher["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "spark-defaults"
    assert any(m["mountPath"] == "/tmp" for m in launcher["volumeMounts"])  # lists are replaced whole
    container_env = {e["name"]: e for e in launcher["runK8sConfig"]["containerConfig"]["env"]}
    assert container_env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "spark.driver.host=$(POD_IP)" in container_env["PYSPARK_SUBMIT_ARGS"]["value"]
    # The master comes from dagster-platform-env: local[*] unless deploy.sh is run with FISH_SPARK=k8s.
    assert (
        find(render("yandex"), "ConfigMap", "dagster-platform-env")["data"]["FISH_SPARK_MASTER"] == "local[*]"
    )
    assert "FISH_SPARK_MASTER=k8s://https://kubernetes.default.svc:443" in (K8S / "deploy.sh").read_text()


def test_old_chart_keys_are_rejected():
    assert unknown_keys({"dagit": {"replicaCount": 1}}) == ["dagit: not a key of the Dagster chart"]
    assert unknown_keys({"runLauncher": {"config": {"k8sRunLauncher": {"envSecret": []}}}})


def test_helm_lint_when_helm_and_the_chart_are_available(tmp_path: Path):
    """With helm on PATH and the chart in the local repo cache (helm repo add dagster ...), render it."""
    helm = shutil.which("helm")
    if helm is None:
        pytest.skip("helm not installed (no Debian/PyPI/npm package); values checked against documented keys")
    version = re.search(r'"dagster==([0-9.]+)"', (REPO_ROOT / "pyproject.toml").read_text()).group(1)
    result = subprocess.run(
        [
            helm,
            "template",
            "dagster",
            "dagster/dagster",
            "--version",
            version,
            "-n",
            "fish-platform",
            "-f",
            str(DAGSTER / "values.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 and (
        "repo dagster not found" in result.stderr or "no cached repo" in result.stderr
    ):
        pytest.skip("the dagster Helm repository is not cached here (offline)")
    assert result.returncode == 0, result.stderr


def test_deploy_script_fills_every_placeholder_of_the_values_files():
    used = set()
    for path in VALUES_FILES:
        used |= set(re.findall(r"\$\{(\w+)\}", path.read_text()))
    deploy = (K8S / "deploy.sh").read_text()
    filled = set(re.findall(r"s\|\\\$\{(\w+)\}\|", deploy))
    assert used and used <= filled, f"deploy.sh does not fill {sorted(used - filled)}"
    assert used <= set(PLACEHOLDERS)


@pytest.mark.parametrize("release", RELEASES)
def test_webserver_daemon_and_code_server_run_our_image_non_root_on_a_read_only_root(release: str):
    values = merged(*RELEASES[release])
    location = values["dagster-user-deployments"]["deployments"][0]
    components = {
        "dagsterWebserver": values["dagsterWebserver"],
        "dagsterDaemon": values["dagsterDaemon"],
        "code server": location,
    }
    for name, component in components.items():
        # Our image carries the instance's modules (dagster_aws for the S3 compute log manager).
        assert component["image"] == location["image"], name
        pod, container = component["podSecurityContext"], component["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert container["readOnlyRootFilesystem"] is True, name
        assert container["allowPrivilegeEscalation"] is False, name
        assert container["capabilities"]["drop"] == ["ALL"], name
        tmp = next(m for m in component["volumeMounts"] if m["mountPath"] == "/tmp")
        volume = next(v for v in component["volumes"] if v["name"] == tmp["name"])
        assert "emptyDir" in volume, name
    # A non-root process cannot bind port 80 (the chart's default).
    assert values["dagsterWebserver"]["service"]["port"] >= 1024
    assert (
        values["dagsterWebserver"]["readinessProbe"]["httpGet"]["port"]
        == (values["dagsterWebserver"]["service"]["port"])
    )


@pytest.mark.parametrize("release", RELEASES)
def test_run_pods_are_non_root_on_a_read_only_root(release: str):
    k8s = merged(*RELEASES[release])["runLauncher"]["config"]["k8sRunLauncher"]
    pod = k8s["runK8sConfig"]["podSpecConfig"]["securityContext"]
    container = k8s["runK8sConfig"]["containerConfig"]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["readOnlyRootFilesystem"] is True and container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert any(m["mountPath"] == "/tmp" for m in k8s["volumeMounts"])


COMPUTE_LOG_MODULES = {
    "NoOpComputeLogManager": "dagster",
    "S3ComputeLogManager": "dagster_aws",
    "GCSComputeLogManager": "dagster_gcp",
    "AzureBlobComputeLogManager": "dagster_azure",
}


@pytest.mark.parametrize("release", RELEASES)
def test_compute_log_manager_module_is_in_the_image_in_lockstep(release: str):
    """The image installs pyproject.toml's dependencies; the manager's package must be one of them,
    released with the same dagster-* version as dagster-k8s (lockstep), and importable."""
    import importlib.util

    manager = merged(*RELEASES[release])["computeLogManager"]["type"]
    module = COMPUTE_LOG_MODULES[manager]
    pins = dict(re.findall(r'"([a-z0-9-]+)==([0-9.]+)"', (REPO_ROOT / "pyproject.toml").read_text()))
    package = module.replace("_", "-")
    assert package in pins, f"{manager} needs {package}, which pyproject.toml does not pin"
    if package != "dagster":
        assert pins[package] == pins["dagster-k8s"], f"{package} {pins[package]} is not in lockstep"
    assert importlib.util.find_spec(module) is not None
    dockerfile = (K8S / "images" / "dagster.Dockerfile").read_text()
    assert "COPY pyproject.toml" in dockerfile and "pip install ." in dockerfile


@pytest.mark.parametrize("release", RELEASES)
def test_code_server_resources_do_not_leak_into_run_pods(release: str):
    values = merged(*RELEASES[release])
    location = values["dagster-user-deployments"]["deployments"][0]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert "resources" not in location, "includeConfigInLaunchedRuns would pass them to every run"
    merged_context = run_container_context(values, location)
    assert merged_context.run_k8s_config.container_config["resources"] == launcher["resources"]
    # The scratch volume of the location and of the launcher is the same one: mounted once.
    mounts = merged_context.run_k8s_config.container_config["volume_mounts"]
    assert [m["mount_path"] for m in mounts].count("/tmp") == 1

    # The check would see a leak: the same merge with a size on the code location takes it.
    leaky = {**location, "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}
    leaked = run_container_context(values, leaky).run_k8s_config.container_config["resources"]
    assert leaked["requests"] == {"cpu": "1", "memory": "3Gi"}

    # The namespace's LimitRange sizes the code server instead.
    limit_range = find(
        render("local" if release == "local" else "yandex"), "LimitRange", "container-defaults"
    )
    (container_limits,) = limit_range["spec"]["limits"]
    assert container_limits["type"] == "Container"
    assert {"cpu", "memory"} <= set(container_limits["defaultRequest"]) and container_limits["default"]


def test_a_run_tag_sizes_the_training_pod_over_the_launcher_default():
    """The training step's tag (fish_platform/pod_sizing.py) reaches the pod over the launcher's default."""
    import json

    values = merged(*RELEASES["yandex"])
    location = values["dagster-user-deployments"]["deployments"][0]
    tags = {"dagster-k8s/config": json.dumps(TRAINING_K8S_CONFIG)}
    config = run_container_context(values, location, tags).run_k8s_config
    assert config.container_config["resources"] == TRAINING_K8S_CONFIG["container_config"]["resources"]
    assert config.pod_spec_config["tolerations"] == TRAINING_K8S_CONFIG["pod_spec_config"]["tolerations"]
    # The launcher's security context survives the merge.
    assert config.pod_spec_config["security_context"]["run_as_non_root"] is True
