"""k8s/dagster/*.yaml: Helm values of the official Dagster chart, checked offline against the
chart's documented keys (dagster_chart_keys.py) and against what the platform needs from them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fish_platform_tests.deploy.dagster_chart_keys import (
    COMPUTE_LOG_MANAGER_TYPES,
    RUN_LAUNCHER_TYPES,
    unknown_keys,
)
from fish_platform_tests.deploy.deploy_helpers import K8S, REPO_ROOT, find, render

DAGSTER = K8S / "dagster"
# Stand-ins for what k8s/deploy.sh fills in from `terraform output`.
PLACEHOLDERS = {
    "PG_HOST": "c-abc123.rw.mdb.yandexcloud.net",
    "REGISTRY_ID": "crp0000000000000000",
    "IMAGE_TAG": "0a1b2c3",
    "MODELS_BUCKET": "fish-platform-models-b1g",
}
CLIENT_LABEL = {"fish-platform.io/postgres-client": "true"}


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


VALUES_FILES = [
    DAGSTER / "values.yaml",
    DAGSTER / "values-yandex.yaml",
    K8S / "spark" / "values-spark-k8s.yaml",
]
RELEASES = {
    "local": [DAGSTER / "values.yaml"],
    "yandex": [DAGSTER / "values.yaml", DAGSTER / "values-yandex.yaml"],
    "yandex+spark": [
        DAGSTER / "values.yaml",
        DAGSTER / "values-yandex.yaml",
        K8S / "spark" / "values-spark-k8s.yaml",
    ],
}


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
    if release.startswith("yandex"):
        assert location["image"]["repository"].startswith("cr.yandex/")


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
