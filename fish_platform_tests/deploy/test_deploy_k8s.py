"""The kustomize overlays, rendered offline and checked against the Kubernetes schemas and our rules."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

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
        if doc["apiVersion"].startswith("cert-manager.io/"):
            continue  # a CRD: kubernetes-validate has no schema for it (test_ingress_serves_https_...)
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


HPA_RANGE = {"local": (1, 10), "yandex": (2, 10)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_autoscales_on_cpu_from_1_locally_and_2_on_yandex_to_10_pods(overlay: str):
    docs = render(overlay)
    hpa = find(docs, "HorizontalPodAutoscaler", "fish-serving")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == HPA_RANGE[overlay]
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
def test_pdb_covers_the_serving_pods_consistently_with_the_hpa_floor(overlay: str):
    docs = render(overlay)
    pdb = find(docs, "PodDisruptionBudget", "fish-serving")["spec"]
    labels = find(docs, "Deployment", "fish-serving")["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    floor = find(docs, "HorizontalPodAutoscaler", "fish-serving")["spec"]["minReplicas"]
    if floor == 1:
        # At one replica, minAvailable: 1 would block every node drain.
        assert pdb.get("maxUnavailable") == 1 and "minAvailable" not in pdb
    else:
        # At two or more, a drain may take pods one at a time but never the last one.
        assert pdb.get("minAvailable") == 1 and "maxUnavailable" not in pdb
        assert pdb["minAvailable"] < floor


def test_yandex_serving_pods_spread_over_zones():
    spec = find(render("yandex"), "Deployment", "fish-serving")["spec"]["template"]["spec"]
    by_key = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    zone = by_key["topology.kubernetes.io/zone"]
    assert zone["maxSkew"] == 1 and zone["whenUnsatisfiable"] == "DoNotSchedule"
    assert zone["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "fish-serving"}
    assert "kubernetes.io/hostname" in by_key
    local = find(render("local"), "Deployment", "fish-serving")["spec"]["template"]["spec"]
    assert "topology.kubernetes.io/zone" not in {c["topologyKey"] for c in local["topologySpreadConstraints"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_sends_mlflow_credentials_and_staggers_model_reloads(overlay: str):
    (container,) = containers(find(render(overlay), "Deployment", "fish-serving"))
    env = {e["name"]: e for e in container["env"]}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-auth", "key": key}
    assert int(env["FISH_MODEL_RELOAD_JITTER_SECONDS"]["value"]) >= 30


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_logs_predictions_to_the_pipelines_object_storage(overlay: str):
    docs = render(overlay)
    serving = find(docs, "Deployment", "fish-serving")
    (container,) = containers(serving)
    env = {e["name"]: e for e in container["env"]}
    pipeline = find(docs, "ConfigMap", "dagster-platform-env")["data"]
    for key in ("FISH_DATA_URI", "FISH_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        ref = env[key]["valueFrom"]["configMapKeyRef"]  # the same values the drift asset reads back
        assert ref["name"] == "dagster-platform-env" and ref["key"] in pipeline, key
    assert pipeline[env["FISH_DATA_URI"]["valueFrom"]["configMapKeyRef"]["key"]].startswith("s3://")
    assert {"secretRef": {"name": "fish-s3"}} in container["envFrom"]  # the run pods' storage key
    assert env["FISH_DATA_DIR"]["value"].startswith("/tmp/")  # scratch on the writable emptyDir
    labels = serving["spec"]["template"]["metadata"]["labels"]
    assert labels["fish-platform.io/object-storage-client"] == "true"  # egress: test_network_policies
    if overlay == "yandex":  # the Managed Redis patch replaces env/0: it must still be REDIS_URL
        assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "fish-redis"


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
def test_mlflow_uses_postgres_from_a_secret_s3_artifacts_and_basic_auth(overlay: str):
    docs = render(overlay)
    deployment = find(docs, "Deployment", "mlflow")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    # MLflow reads MLFLOW_BACKEND_STORE_URI as --backend-store-uri.
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-db",
        "key": "backend-store-uri",
    }
    script = container["args"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    assert "exec mlflow server --app-name basic-auth" in script
    assert '--serve-artifacts --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"' in script
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-auth",
        "key": "MLFLOW_TRACKING_USERNAME",
    }
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-auth",
        "key": "MLFLOW_TRACKING_PASSWORD",
    }
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-server"
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith("/tmp/")
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"  # unauthenticated in the auth app
    config_name = next(s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s)
    config = find(docs, "ConfigMap", config_name)["data"]
    assert config["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert "mlflow" in config["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_mlflow_start_script_writes_an_auth_config_mlflow_reads(tmp_path, monkeypatch):
    """Run the container's start script with a stand-in `mlflow` and read the ini it wrote with
    MLflow's own auth config reader: the user store is the backend store, "%" in the password intact."""
    import os
    import subprocess

    (container,) = containers(find(render("local"), "Deployment", "mlflow"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mlflow").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/mlflow-args\n')
    (bin_dir / "mlflow").chmod(0o755)
    uri = "postgresql+psycopg2://mlflow:p%40ss%25w0rd@c-1.rw.mdb.yandexcloud.net:6432/mlflow?sslmode=require"
    ini = tmp_path / "basic_auth.ini"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": uri,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://fish-models/mlflow",
    }
    result = subprocess.run(
        [*container["command"], container["args"][0]], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    args = (tmp_path / "mlflow-args").read_text().split()
    assert args[:3] == ["server", "--app-name", "basic-auth"]
    assert args[args.index("--artifacts-destination") + 1] == "s3://fish-models/mlflow"

    # MLflow's reader, loaded alone: the auth package itself needs Flask-WTF (mlflow[auth], in the image).
    import importlib.util

    import mlflow

    spec = importlib.util.spec_from_file_location(
        "mlflow_auth_config", Path(mlflow.__file__).parent / "server" / "auth" / "config.py"
    )
    auth_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(auth_config)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    parsed = auth_config.read_auth_config()
    assert parsed.database_uri == uri
    assert parsed.default_permission == "READ"
    assert parsed.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"


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


def test_yandex_policies_match_the_terraform_subnets():
    """The ipBlocks of the yandex policies are the ranges infra/ puts the managed databases and the
    Kubernetes master in."""
    docs = render("yandex")
    variables = tf_blocks("variable")
    data_range = ipaddress.ip_network(hcl_value(variables["data_subnet_cidr"]["default"]))
    k8s_range = ipaddress.ip_network(hcl_value(variables["k8s_subnet_cidr"]["default"]))
    expected = {
        "managed-redis-from-serving-only": (data_range, 6380),
        "managed-postgres-from-platform-only": (data_range, 6432),
        "managed-postgres-from-migrate-job": (data_range, 6432),
        "kubernetes-api-egress": (k8s_range, 443),
    }
    for name, (network, port) in expected.items():
        (rule,) = find(docs, "NetworkPolicy", name)["spec"]["egress"]
        (peer,) = rule["to"]
        assert ipaddress.ip_network(peer["ipBlock"]["cidr"]) == network, name
        assert rule["ports"] == [{"protocol": "TCP", "port": port}], name
    storage = find(docs, "NetworkPolicy", "object-storage-egress")["spec"]["egress"][0]
    excepted = [ipaddress.ip_network(c) for c in storage["to"][0]["ipBlock"]["except"]]
    # Object Storage is reached on public addresses only: no private range, so no managed database.
    assert any(data_range.subnet_of(e) for e in excepted) and any(k8s_range.subnet_of(e) for e in excepted)


def test_third_party_images_are_pinned():
    for overlay in OVERLAYS:
        for doc in workloads(render(overlay)):
            for container in containers(doc):
                image = container["image"]
                if "fish-platform/" in image or "/fish-" in image:
                    continue  # our images: the tag is chosen at deploy time
                name, _, tag = image.rpartition(":")
                assert name and tag and tag != "latest", f"{overlay}: unpinned image {image}"


def spark_settings(docs: list[dict]) -> dict[str, str]:
    conf = find(docs, "ConfigMap", "spark-defaults")["data"]["spark-defaults.conf"]
    return dict(
        line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.startswith("#")
    )


def test_spark_component_lets_the_driver_manage_executor_pods():
    docs = render("yandex")
    role = find(docs, "Role", "spark-driver")
    (rule,) = role["rules"]
    assert {"pods", "services", "configmaps"} <= set(rule["resources"])
    assert {"create", "delete", "list", "watch", "get"} <= set(rule["verbs"])
    binding = find(docs, "RoleBinding", "spark-driver")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "dagster", "namespace": "fish-platform"}
    ]
    settings = spark_settings(docs)
    assert settings["spark.kubernetes.namespace"] == "fish-platform"
    assert settings["spark.kubernetes.authenticate.driver.serviceAccountName"] == "dagster"
    assert "spark.kubernetes.container.image" in settings


def test_spark_executors_get_storage_by_configuration_and_unique_names():
    docs = render("yandex")
    settings = spark_settings(docs)
    # Credentials from the Secret as secretKeyRef env, never a file; the endpoint as executor env.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert settings[f"spark.kubernetes.executor.secretKeyRef.{key}"] == f"fish-s3:{key}"
    endpoint = find(docs, "ConfigMap", "dagster-platform-env")["data"]["FISH_S3_ENDPOINT_URL"]
    assert settings["spark.executorEnv.FISH_S3_ENDPOINT_URL"] == endpoint
    assert not [k for k in settings if "secretFile" in k or k.endswith(".secrets") or "hadoopConf" in k]
    # A fixed prefix would make two concurrent runs' executor pods clash; the platform sets it per run.
    assert "spark.kubernetes.executor.podNamePrefix" not in settings
    # The executor pod template is shipped in the same ConfigMap, at the path the setting names.
    template_path = settings["spark.kubernetes.executor.podTemplateFile"]
    data = find(docs, "ConfigMap", "spark-defaults")["data"]
    assert template_path == "/opt/spark-conf/" + "executor-pod-template.yaml"
    template = yaml.safe_load(data["executor-pod-template.yaml"])
    assert (
        template["spec"]["containers"][0]["name"]
        == settings["spark.kubernetes.executor.podTemplateContainerName"]
    )
    # Executors are owned by the driver pod: its name comes from the downward API.
    values = yaml.safe_load((K8S / "spark" / "values-spark-k8s.yaml").read_text())
    env = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "spark.kubernetes.driver.pod.name=$(POD_NAME)" in by_name["PYSPARK_SUBMIT_ARGS"]["value"]
    # $(VAR) expands only variables defined earlier in the list.
    names = [e["name"] for e in env]
    assert names.index("POD_NAME") < names.index("PYSPARK_SUBMIT_ARGS")


def test_base_ships_namespace_enforcing_restricted_pod_security():
    namespace = yaml.safe_load((K8S / "base" / "namespace.yaml").read_text())
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_serves_https_with_a_cert_manager_certificate(overlay: str):
    docs = render(overlay)
    ingress = find(docs, "Ingress", "fish-platform")
    (tls,) = ingress["spec"]["tls"]
    (rule,) = ingress["spec"]["rules"]
    assert tls["hosts"] == [rule["host"]]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    certificates = [d for d in docs if d["kind"] == "Certificate"]
    (certificate,) = [c for c in certificates if c["spec"]["secretName"] == tls["secretName"]]
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"]["dnsNames"] == tls["hosts"]
    issuer_ref = certificate["spec"]["issuerRef"]
    issuer = find(docs, issuer_ref["kind"], issuer_ref["name"])
    assert issuer["apiVersion"] == "cert-manager.io/v1"
    if overlay == "yandex":
        acme = issuer["spec"]["acme"]
        assert acme["server"] == "https://acme-v02.api.letsencrypt.org/directory"
        (solver,) = acme["solvers"]
        assert solver["http01"]["ingress"]["ingressClassName"] == ingress["spec"]["ingressClassName"]
    else:
        assert "selfSigned" in issuer["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_platform_state_is_durable_and_the_data_dir_is_scratch(overlay: str):
    env = find(render(overlay), "ConfigMap", "dagster-platform-env")["data"]
    assert env["FISH_DATA_URI"].startswith("s3://") and env["FISH_DATA_URI"].endswith("/platform")
    assert env["FISH_RAW_URI"].startswith("s3://")
    # Same bucket as the raw images, so the same key and endpoint reach both.
    assert env["FISH_DATA_URI"].split("/")[2] == env["FISH_RAW_URI"].split("/")[2]
    values = yaml.safe_load(re.sub(r"\$\{\w+\}", "x", (K8S / "dagster" / "values.yaml").read_text()))
    scratch_mount = next(
        m for m in values["runLauncher"]["config"]["k8sRunLauncher"]["volumeMounts"] if m["name"] == "scratch"
    )
    assert env["FISH_DATA_DIR"].startswith(scratch_mount["mountPath"] + "/")
    if overlay == "local":
        job = find(render("local"), "Job", "minio-buckets")
        script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
        assert f'"{env["FISH_DATA_URI"].split("/")[2]}"' in script  # the bucket exists


def test_local_images_are_always_pulled_from_the_local_registry():
    for doc in workloads(render("local")):
        for container in containers(doc):
            if "/fish-" in container["image"]:
                assert container["image"].startswith("localhost:5001/"), container["image"]
                assert container["imagePullPolicy"] == "Always", doc["metadata"]["name"]
