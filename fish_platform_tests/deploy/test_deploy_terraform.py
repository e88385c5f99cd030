"""infra/: every .tf file parses (python-hcl2), the required resources are there, no secret is in
git, and checkov finds nothing left unexplained."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fish_platform_tests.deploy.deploy_helpers import INFRA, REPO_ROOT, hcl_value, load_tf, tf_blocks

TF_FILES = sorted(INFRA.glob("*.tf"))
SECRET_VARIABLES = ("pg_mlflow_password", "pg_dagster_password", "redis_password")
BLOCKING_SEVERITIES = {"HIGH", "CRITICAL"}


def test_infra_has_terraform_files():
    names = {p.name for p in TF_FILES}
    assert {"versions.tf", "variables.tf", "outputs.tf"} <= names
    assert (INFRA / "terraform.tfvars.example").is_file()


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: p.name)
def test_tf_file_parses(path: Path):
    parsed = load_tf(path)
    assert parsed, f"{path.name} parsed to nothing"


def test_provider_is_yandex_cloud():
    (terraform,) = load_tf(INFRA / "versions.tf")["terraform"]
    providers = hcl_value(terraform["required_providers"])
    assert hcl_value(providers["yandex"])["source"] == "yandex-cloud/yandex"


def test_the_platform_resources_exist():
    types = {name.split(".")[0] for name in tf_blocks("resource")}
    required = {
        "yandex_vpc_network",
        "yandex_vpc_subnet",
        "yandex_vpc_security_group",
        "yandex_kubernetes_cluster",
        "yandex_kubernetes_node_group",
        "yandex_mdb_postgresql_cluster",
        "yandex_mdb_postgresql_database",
        "yandex_mdb_postgresql_user",
        "yandex_mdb_redis_cluster",
        "yandex_storage_bucket",
        "yandex_container_registry",
        "yandex_iam_service_account",
        "yandex_resourcemanager_folder_iam_member",
    }
    assert required <= types, f"missing: {sorted(required - types)}"


def test_node_group_autoscales():
    resources = tf_blocks("resource")
    group = resources["yandex_kubernetes_node_group.main"]
    auto = hcl_value(hcl_value(group["scale_policy"])["auto_scale"])
    assert {"min", "max", "initial"} <= set(auto)
    variables = tf_blocks("variable")
    low, high = (hcl_value(variables[v]["default"]) for v in ("node_min", "node_max"))
    assert 1 <= low < high


def test_postgres_has_mlflow_and_dagster_databases():
    resources = tf_blocks("resource")
    databases = {
        hcl_value(b["name"]): hcl_value(b["owner"])
        for n, b in resources.items()
        if n.startswith("yandex_mdb_postgresql_database.")
    }
    assert set(databases) == {"mlflow", "dagster"}
    assert databases["mlflow"] == "${yandex_mdb_postgresql_user.mlflow.name}"
    assert databases["dagster"] == "${yandex_mdb_postgresql_user.dagster.name}"


def test_two_private_encrypted_buckets():
    buckets = {n: b for n, b in tf_blocks("resource").items() if n.startswith("yandex_storage_bucket.")}
    assert set(buckets) == {"yandex_storage_bucket.models", "yandex_storage_bucket.data"}
    for name, bucket in buckets.items():
        access = hcl_value(bucket["anonymous_access_flags"])
        assert hcl_value(access["read"]) is False and hcl_value(access["list"]) is False, name
        assert "server_side_encryption_configuration" in bucket, name


def test_secret_variables_are_sensitive_without_defaults():
    variables = tf_blocks("variable")
    for name in SECRET_VARIABLES:
        assert hcl_value(variables[name].get("sensitive")) is True, name
        assert "default" not in variables[name], f"{name} must not have a default"


def test_outputs_carrying_secrets_are_sensitive():
    secret_markers = ("password", "secret_key", "access_key")
    for name, body in tf_blocks("output").items():
        value = str(hcl_value(body["value"]))
        if any(marker in value for marker in secret_markers):
            assert hcl_value(body.get("sensitive")) is True, f"output {name} exposes a secret"


def test_no_secret_literal_in_terraform_files():
    literal = re.compile(r'^\s*(password|secret_key|access_key|token)\s*=\s*"[^"$]', re.MULTILINE)
    for path in [*TF_FILES, INFRA / "terraform.tfvars.example"]:
        assert not literal.search(path.read_text()), f"{path.name} assigns a secret literally"
    example = load_tf(INFRA / "terraform.tfvars.example")
    assert not set(example) & set(SECRET_VARIABLES)
    assert {"cloud_id", "folder_id", "api_allowed_cidrs"} <= set(example)


def test_checkov_skips_give_reasons():
    skip = re.compile(r"#\s*checkov:skip=(CKV\w*_\d+)(?::(.*))?")
    for path in TF_FILES:
        for check_id, reason in skip.findall(path.read_text()):
            assert reason and len(reason.strip()) > 20, f"{path.name}: skip of {check_id} needs a real reason"


def checkov() -> str:
    venv_checkov = Path(sys.executable).parent / "checkov"
    path = str(venv_checkov) if venv_checkov.exists() else shutil.which("checkov")
    if path is None:
        pytest.skip("checkov not installed (pip install checkov; it is in the test extras)")
    return path


@pytest.mark.timeout(300)
def test_checkov_finds_nothing_unexplained():
    result = subprocess.run(
        # --skip-download: no network (guidelines and severities come from Prisma Cloud otherwise).
        [checkov(), "-d", str(INFRA), "--quiet", "--compact", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=280,
        check=False,
    )
    assert result.stdout.strip(), f"checkov printed nothing:\n{result.stderr[-2000:]}"
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed, skipped = [], []
    for report in reports:
        assert report.get("summary", {}).get("parsing_errors", 0) == 0, report["summary"]
        failed += report.get("results", {}).get("failed_checks", [])
        skipped += report.get("results", {}).get("skipped_checks", [])
    # Offline checkov knows no severities; then every failure counts.
    if any(check.get("severity") for check in failed):
        blocking = [c for c in failed if (c.get("severity") or "").upper() in BLOCKING_SEVERITIES]
    else:
        blocking = failed
    assert not blocking, "checkov failures:\n" + "\n".join(
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}" for c in blocking
    )
    for check in skipped:
        assert (check.get("suppress_comment") or "").strip(), f"{check['check_id']} skipped without a reason"
