"""The kustomize overlays, rendered offline and checked against the Kubernetes schemas and our rules."""

from __future__ import annotations

import ipaddress
import re

import kubernetes_validate
import pytest
import yaml

from fish_platform_tests.deploy.deploy_helpers import (
    K8S,
    K8S_SCHEMA_VERSION,
    OVERLAYS,
    REPO_ROOT,
    containers,
    find,
    hcl_value,
    pod_spec,
    render,
    tf_blocks,
    workloads,
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_valid_kubernetes(overlay: str):
    docs = render(overlay)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_platform_namespace(overlay: str):
    for doc in render(overlay):
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == "fish-platform"
        else:
            assert doc["metadata"].get("namespace") == "fish-platform", (
                f"{doc['kind']}/{doc['metadata']['name']}"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_autoscales_from_1_to_10_pods_on_cpu(overlay: str):
    docs = render(overlay)
    hpa = find(docs, "HorizontalPodAutoscaler", "fish-serving")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 10)
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fish-serving"}
    (metric,) = spec["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    deployment = find(docs, "Deployment", "fish-serving")
    # The HPA owns the replica count; a fixed one would be reset on every apply.
    assert "replicas" not in deployment["spec"]
    # CPU utilisation is measured against the request, so the request must exist.
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tensorflow_threads_follow_the_pod_cpu_limit(overlay: str):
    (container,) = containers(find(render(overlay), "Deployment", "fish-serving"))
    env = {e["name"]: e for e in container["env"]}
    source = env["FISH_TF_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert source["resource"] == "limits.cpu" and source["containerName"] == container["name"]
    assert str(source.get("divisor", "1")) == "1"  # whole cores: the service reads an integer
    assert container["resources"]["limits"]["cpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_probes_healthz_and_readyz(overlay: str):
    deployment = find(render(overlay), "Deployment", "fish-serving")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port == {"http": 3000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_is_non_root_read_only_with_writable_tmp(overlay: str):
    deployment = find(render(overlay), "Deployment", "fish-serving")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_hardened_and_sized(overlay: str):
    for doc in workloads(render(overlay)):
        spec = pod_spec(doc)
        pod_security = spec.get("securityContext", {})
        for container in containers(doc):
            where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdb_covers_the_serving_pods(overlay: str):
    docs = render(overlay)
    pdb = find(docs, "PodDisruptionBudget", "fish-serving")
    labels = find(docs, "Deployment", "fish-serving")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # With the HPA at one replica, minAvailable: 1 would block every node drain.
    assert pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_sends_page_and_api_to_serving(overlay: str):
    docs = render(overlay)
    ingress = find(docs, "Ingress", "fish-platform")
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    service = find(docs, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_uses_postgres_from_a_secret_and_s3_artifacts(overlay: str):
    docs = render(overlay)
    deployment = find(docs, "Deployment", "mlflow")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    # MLflow reads MLFLOW_BACKEND_STORE_URI as --backend-store-uri.
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-db",
        "key": "backend-store-uri",
    }
    args = container["args"]
    assert args[0] == "server" and "--serve-artifacts" in args
    destination = args[args.index("--artifacts-destination") + 1]
    assert destination == "$(MLFLOW_ARTIFACTS_DESTINATION)"
    config_name = next(s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s)
    config = find(docs, "ConfigMap", config_name)["data"]
    assert config["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert "mlflow" in config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve_to_rendered_objects_or_documented_secrets(overlay: str):
    docs = render(overlay)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    documented_secrets = set(re.findall(r"\| `([a-z0-9-]+)` \|", (K8S / "secrets" / "README.md").read_text()))
    for doc in workloads(docs):
        spec = pod_spec(doc)
        for container in containers(doc):
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names, where
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in documented_secrets, where
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["name"] in documented_secrets, where
                if "configMapKeyRef" in ref:
                    assert ("ConfigMap", ref["configMapKeyRef"]["name"]) in names, where
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
        if spec.get("serviceAccountName"):
            assert ("ServiceAccount", spec["serviceAccountName"]) in names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_rendered(overlay: str):
    """Secrets are created from ignored files by k8s/deploy.sh, never rendered from git."""
    assert not [d for d in render(overlay) if d["kind"] == "Secret"]


def test_no_secret_with_data_in_git():
    manifests = [p for p in REPO_ROOT.glob("k8s/**/*") if p.suffix in {".yaml", ".yml"}]
    for path in manifests:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), f"{path} holds a Secret with values"
    secret_files = [p for p in (K8S / "secrets").rglob("*") if p.is_file()]
    tracked = [p for p in secret_files if p.name not in {".gitignore", "README.md"}]
    assert tracked and all(p.name.endswith(".example") for p in tracked if not _ignored(p))


def _ignored(path) -> bool:
    """Real secret files a developer created locally (ignored by k8s/secrets/.gitignore)."""
    import subprocess

    result = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO_ROOT, check=False)
    return result.returncode == 0


def test_local_network_policies_fence_redis_and_postgres():
    docs = render("local")
    redis = find(docs, "NetworkPolicy", "redis-from-serving-only")["spec"]
    assert redis["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}
    (rule,) = redis["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "fish-serving"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]

    postgres = find(docs, "NetworkPolicy", "postgres-from-platform-only")["spec"]
    assert postgres["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "postgres"}
    (rule,) = postgres["ingress"]
    client_label = {"fish-platform.io/postgres-client": "true"}
    assert rule["from"] == [{"podSelector": {"matchLabels": client_label}}]
    # MLflow is a client; serving, Redis and the monitoring pods are not.
    labels = {d["metadata"]["name"]: pod_spec_labels(d) for d in workloads(docs)}
    assert client_label.items() <= labels["mlflow"].items()
    for name in ("fish-serving", "redis", "prometheus", "grafana", "minio"):
        assert "fish-platform.io/postgres-client" not in labels[name], name


def pod_spec_labels(doc: dict) -> dict:
    return doc["spec"]["template"]["metadata"].get("labels", {})


def test_yandex_overlay_uses_managed_redis_and_postgres():
    docs = render("yandex")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for gone in [
        ("StatefulSet", "postgres"),
        ("Deployment", "redis"),
        ("Service", "redis"),
        ("Service", "postgres"),
    ]:
        assert gone not in kinds
    serving = find(docs, "Deployment", "fish-serving")
    env = {e["name"]: e for e in serving["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "fish-redis", "key": "REDIS_URL"}


def test_yandex_egress_policies_match_the_terraform_data_subnet():
    docs = render("yandex")
    fence = find(docs, "NetworkPolicy", "egress-except-managed-data")["spec"]
    assert fence["podSelector"] == {} and fence["policyTypes"] == ["Egress"]
    (excepted,) = fence["egress"][0]["to"][0]["ipBlock"]["except"]
    redis = find(docs, "NetworkPolicy", "managed-redis-from-serving-only")["spec"]
    postgres = find(docs, "NetworkPolicy", "managed-postgres-from-platform-only")["spec"]
    assert redis["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "fish-serving"}
    assert postgres["podSelector"]["matchLabels"] == {"fish-platform.io/postgres-client": "true"}
    assert redis["egress"][0]["ports"] == [{"protocol": "TCP", "port": 6380}]
    assert postgres["egress"][0]["ports"] == [{"protocol": "TCP", "port": 6432}]
    for policy in (redis, postgres):
        assert policy["egress"][0]["to"][0]["ipBlock"]["cidr"] == excepted

    variables = tf_blocks("variable")
    data_subnet = ipaddress.ip_network(hcl_value(variables["data_subnet_cidr"]["default"]))
    assert data_subnet.subnet_of(ipaddress.ip_network(excepted)), (
        f"infra data subnet {data_subnet} is outside the range the NetworkPolicies fence ({excepted})"
    )


def test_third_party_images_are_pinned():
    for overlay in OVERLAYS:
        for doc in workloads(render(overlay)):
            for container in containers(doc):
                image = container["image"]
                if "fish-platform/" in image or "/fish-" in image:
                    continue  # our images: the tag is chosen at deploy time
                name, _, tag = image.rpartition(":")
                assert name and tag and tag != "latest", f"{overlay}: unpinned image {image}"


def test_spark_component_lets_the_driver_manage_executor_pods():
    docs = render("yandex")
    role = find(docs, "Role", "spark-driver")
    (rule,) = role["rules"]
    assert {"pods", "services", "configmaps"} <= set(rule["resources"])
    assert {"create", "delete", "list", "watch"} <= set(rule["verbs"])
    binding = find(docs, "RoleBinding", "spark-driver")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "dagster", "namespace": "fish-platform"}
    ]
    conf = find(docs, "ConfigMap", "spark-defaults")["data"]["spark-defaults.conf"]
    settings = dict(
        line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.startswith("#")
    )
    assert settings["spark.kubernetes.namespace"] == "fish-platform"
    assert settings["spark.kubernetes.authenticate.driver.serviceAccountName"] == "dagster"
    assert "spark.kubernetes.container.image" in settings


def test_base_ships_namespace_with_pod_security_labels():
    namespace = yaml.safe_load((K8S / "base" / "namespace.yaml").read_text())
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] in {"baseline", "restricted"}
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
