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


def test_gpu_node_group_is_off_by_default_tainted_and_scales_from_zero():
    group = tf_blocks("resource")["yandex_kubernetes_node_group.gpu"]
    assert hcl_value(group["count"]) == "${var.gpu_node_max > 0 ? 1 : 0}"
    assert hcl_value(tf_blocks("variable")["gpu_node_max"]["default"]) == 0
    assert hcl_value(group["node_taints"]) == "nvidia.com/gpu=true:NoSchedule"
    assert hcl_value(group["node_labels"]) == {"fish-platform.io/node-pool": "gpu"}
    auto = hcl_value(hcl_value(group["scale_policy"])["auto_scale"])
    assert hcl_value(auto["min"]) == 0 and hcl_value(auto["initial"]) == 0
    template = hcl_value(group["instance_template"])
    assert hcl_value(hcl_value(template["resources"])["gpus"]) == "${var.gpu_node_gpus}"
    assert hcl_value(hcl_value(template["gpu_settings"])["gpu_environment"]) == "runc_drivers_cuda"
    # The training step's toleration and node selector (fish_platform/pod_sizing.py) match them.
    from fish_platform.pod_sizing import K8S_CONFIG_TAG, pod_tags

    pod_spec = pod_tags("training", gpus=1)[K8S_CONFIG_TAG]["pod_spec_config"]
    taint_key, _, rest = hcl_value(group["node_taints"]).partition("=")
    (toleration,) = pod_spec["tolerations"]
    assert toleration["key"] == taint_key and toleration["effect"] == rest.split(":")[1]
    assert pod_spec["node_selector"] == hcl_value(group["node_labels"])


def test_multi_zone_gives_a_regional_master_and_a_node_group_per_zone():
    variables = tf_blocks("variable")
    assert hcl_value(variables["multi_zone"]["default"]) is False
    zones = hcl_value(variables["zones"]["default"])
    assert len(zones) == 3 and len(set(zones)) == 3
    resources = tf_blocks("resource")
    master = hcl_value(resources["yandex_kubernetes_cluster.main"]["master"])
    dynamic = {name: body for block in master["dynamic"] for name, body in block.items()}
    assert hcl_value(dynamic["zonal"]["for_each"]) == "${var.multi_zone ? [] : ['${var.zone}']}"
    assert hcl_value(dynamic["regional"]["for_each"]) == "${var.multi_zone ? ['ru-central1'] : []}"
    regional = hcl_value(dynamic["regional"]["content"])
    location = hcl_value(regional["dynamic"])["location"]
    assert hcl_value(location["for_each"]) == "${local.zones}"
    # Autoscaled node groups are zonal in Yandex Cloud: one per zone.
    for name in ("yandex_kubernetes_node_group.main", "yandex_vpc_subnet.k8s", "yandex_vpc_subnet.data"):
        assert hcl_value(resources[name]["for_each"]) == "${local.zone_subnets}", name
    group = resources["yandex_kubernetes_node_group.main"]
    location = hcl_value(hcl_value(group["allocation_policy"])["location"])
    assert hcl_value(location["zone"]) == "${each.key}"
    # The zones' subnets are carved from the ranges the yandex NetworkPolicies allow.
    network = (INFRA / "network.tf").read_text()
    assert "cidrsubnet(var.k8s_subnet_cidr, 8, index)" in network
    assert "cidrsubnet(var.data_subnet_cidr, 8, index)" in network


def _grants(bucket: dict) -> dict[str, set[str]]:
    grants = bucket.get("grant", [])
    return {
        re.search(r"service_account\.(\w+)\.id", hcl_value(g["id"])).group(1): set(
            hcl_value(g["permissions"])
        )
        if isinstance(hcl_value(g["permissions"]), list)
        else {hcl_value(g["permissions"])}
        for g in grants
    }


def test_each_workload_has_its_own_storage_key_with_bucket_grants_only():
    resources = tf_blocks("resource")
    models = _grants(resources["yandex_storage_bucket.models"])
    data = _grants(resources["yandex_storage_bucket.data"])
    assert models == {"mlflow": {"READ", "WRITE"}, "dagster": {"READ", "WRITE"}, "serving": {"READ"}}
    assert data == {"dagster": {"READ", "WRITE"}}
    # No folder-wide storage role for any workload: only Terraform's identity can delete buckets.
    iam = (INFRA / "iam.tf").read_text()
    assert not re.search(r'role\s*=\s*"storage\.', iam), "a folder-wide storage role"
    assert "FULL_CONTROL" not in (INFRA / "storage.tf").read_text()
    keys = resources["yandex_iam_service_account_static_access_key.storage"]
    assert hcl_value(keys["for_each"]) == "${local.storage_accounts}"
    accounts = set(re.findall(r"^\s+(\w+)\s+= yandex_iam_service_account\.(\w+)\.id", iam, re.MULTILINE))
    assert {("dagster", "dagster"), ("mlflow", "mlflow"), ("serving", "serving")} <= accounts
    assert "yandex_iam_service_account.workloads" not in resources  # the shared key is gone


def test_deploy_script_reads_only_outputs_that_exist():
    deploy = (REPO_ROOT / "k8s" / "deploy.sh").read_text()
    used = set(re.findall(r"tf_output (\w+)", deploy))
    outputs = set(tf_blocks("output"))
    assert used and used <= outputs, f"deploy.sh reads missing outputs {sorted(used - outputs)}"


def test_remote_state_backend_is_configured_at_init():
    (terraform,) = load_tf(INFRA / "versions.tf")["terraform"]
    backend = hcl_value(terraform["backend"])
    assert set(backend) == {"s3"} and not hcl_value(backend["s3"]), (
        "partial: the settings come from -backend-config"
    )
    example = load_tf(INFRA / "backend.hcl.example")
    assert {"bucket", "key", "region", "endpoints"} <= set(example)
    assert "storage.yandexcloud.net" in str(example["endpoints"])
    override = (INFRA / "local-state_override.tf.example").read_text()
    assert 'backend "local"' in override
    ignored = (INFRA / ".gitignore").read_text().split()
    assert "backend.hcl" in ignored and "*_override.tf" in ignored


def test_terraform_fmt_when_terraform_is_installed():
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform not installed")
    result = subprocess.run(
        [binary, "fmt", "-check", "-recursive", str(INFRA)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
