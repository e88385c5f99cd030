"""Who may talk to whom: the rendered NetworkPolicies of both overlays, evaluated pair by pair.

A small evaluator of the NetworkPolicy API (networking.k8s.io/v1 semantics: a pod selected by a
policy of a direction allows only what one of those policies' rules allows; a connection needs the
source's egress and the destination's ingress; peers by pod/namespace selector or ipBlock; ports
with protocol and endPort). It is not a CNI: it says what the policies allow, not what a plugin
enforces (kubelet probes, host-network pods and port-forward are outside NetworkPolicy). Calico
enforces them on Yandex Managed Kubernetes; on kind, a kindnetd with NetworkPolicy support or Calico.

The workloads: every pod template the overlay renders, the Dagster chart's pods and a run pod from
our Helm values (dagster_pods.py), Spark executors, and the pods outside the namespace that matter
(the ingress controller, CoreDNS, kube-state-metrics), plus the endpoints only an ipBlock can name.
For every source, destination and port, the test compares the evaluator's answer with the list of
intended connections below.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from fish_platform_tests.deploy.dagster_pods import chart_pods, release_values, run_pod, spark_executor_pod
from fish_platform_tests.deploy.deploy_helpers import OVERLAYS, pod_spec, render, workloads

NAMESPACE = "fish-platform"


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: outside the cluster (reached by address only)
    labels: tuple[tuple[str, str], ...] = ()
    ip: str = "10.112.0.10"  # pods: an address in the pod range (infra cluster_ipv4_range)
    ports: tuple[tuple[int, str], ...] = field(default=())

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def pod(name, namespace, labels, ports=(), ip="10.112.0.10") -> Endpoint:
    return Endpoint(name, namespace, tuple(sorted(labels.items())), ip, tuple(ports))


NAMESPACE_LABELS = {
    ns: {"kubernetes.io/metadata.name": ns} for ns in (NAMESPACE, "ingress-nginx", "kube-system", "default")
}


def selector_matches(selector: dict | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def peer_matches(peer: dict, other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
    if other.namespace is None:
        return False  # selectors name pods, not outside addresses
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], NAMESPACE_LABELS[other.namespace]):
            return False
    elif other.namespace != policy_namespace:
        return False
    if "podSelector" in peer:
        return selector_matches(peer["podSelector"], other.label_map)
    return True


def port_matches(rule_ports: list | None, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        assert isinstance(entry["port"], int), "named ports are not modelled: use numbers"
        if entry["port"] <= port <= entry.get("endPort", entry["port"]):
            return True
    return False


def direction_allows(policies, subject: Endpoint, other: Endpoint, port, protocol, direction) -> bool:
    """Ingress: may `other` connect to `subject`? Egress: may `subject` connect to `other`?"""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if subject.namespace == p["metadata"]["namespace"]
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and selector_matches(p["spec"]["podSelector"], subject.label_map)
    ]
    if not selecting:
        return True  # isolated in this direction only by a policy that selects the pod
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            if peers is not None and not any(
                peer_matches(peer, other, policy["metadata"]["namespace"]) for peer in peers
            ):
                continue
            if port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def allowed(policies, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
    egress = direction_allows(policies, source, destination, port, protocol, "Egress")
    ingress = destination.namespace is None or direction_allows(
        policies, destination, source, port, protocol, "Ingress"
    )
    return egress and ingress


# --- the workloads ------------------------------------------------------------------------------


def _template_labels(doc: dict) -> dict:
    template = (
        doc["spec"]["jobTemplate"]["spec"]["template"]
        if doc["kind"] == "CronJob"
        else doc["spec"]["template"]
    )
    return template["metadata"].get("labels", {})


def _ports(spec: dict) -> list[tuple[int, str]]:
    return [
        (p["containerPort"], p.get("protocol", "TCP"))
        for c in spec.get("containers", [])
        for p in c.get("ports", [])
    ]


def cluster(overlay: str) -> dict[str, Endpoint]:
    endpoints: dict[str, Endpoint] = {}
    for doc in workloads(render(overlay)):
        endpoints[doc["metadata"]["name"]] = pod(
            doc["metadata"]["name"], NAMESPACE, _template_labels(doc), _ports(pod_spec(doc))
        )
    values = release_values("local" if overlay == "local" else "yandex")
    chart_ports = {"dagster-webserver": [(values["dagsterWebserver"]["service"]["port"], "TCP")]}
    for name, chart_pod in chart_pods(values).items():
        if name.startswith("code-server-"):
            ports = [(values["dagster-user-deployments"]["deployments"][0]["port"], "TCP")]
            name = "dagster-code-server"
        else:
            ports = chart_ports.get(name, [])
        endpoints[name] = pod(name, NAMESPACE, chart_pod["labels"], ports)
    spark = overlay == "yandex"
    endpoints["dagster-run"] = pod(
        "dagster-run", NAMESPACE, run_pod(values)["labels"], [(7078, "TCP"), (7079, "TCP")] if spark else []
    )
    if spark:
        endpoints["spark-executor"] = pod(
            "spark-executor", NAMESPACE, spark_executor_pod()["labels"], [(7079, "TCP")]
        )
        endpoints["acme-solver"] = pod(
            "acme-solver", NAMESPACE, {"acme.cert-manager.io/http01-solver": "true"}, [(8089, "TCP")]
        )
    # Outside the namespace, as their charts label them.
    endpoints["ingress-nginx"] = pod(
        "ingress-nginx",
        "ingress-nginx",
        {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"},
        [(80, "TCP"), (443, "TCP")],
    )
    endpoints["kube-dns"] = pod(
        "kube-dns", "kube-system", {"k8s-app": "kube-dns"}, [(53, "UDP"), (53, "TCP")]
    )
    endpoints["kube-state-metrics"] = pod(
        "kube-state-metrics", "kube-system", {"app.kubernetes.io/name": "kube-state-metrics"}, [(8080, "TCP")]
    )
    endpoints["stranger-elsewhere"] = pod("stranger-elsewhere", "default", {"app": "other"}, [(8080, "TCP")])
    endpoints["stranger-here"] = pod("stranger-here", NAMESPACE, {"run": "debug"}, [(8080, "TCP")])
    # Addresses only an ipBlock names.
    if overlay == "yandex":
        endpoints["kube-apiserver"] = pod("kube-apiserver", None, {}, [(443, "TCP")], ip="10.10.0.5")
        endpoints["managed-postgres"] = pod("managed-postgres", None, {}, [(6432, "TCP")], ip="10.20.1.12")
        endpoints["managed-redis"] = pod("managed-redis", None, {}, [(6380, "TCP")], ip="10.20.0.7")
        endpoints["object-storage"] = pod("object-storage", None, {}, [(443, "TCP")], ip="213.180.193.243")
    else:
        endpoints["kube-apiserver"] = pod("kube-apiserver", None, {}, [(6443, "TCP")], ip="172.18.0.2")
    endpoints["cloud-metadata"] = pod("cloud-metadata", None, {}, [(80, "TCP")], ip="169.254.169.254")
    return endpoints


PIPELINE = ("dagster-code-server", "dagster-run")
POSTGRES_CLIENTS = ("mlflow", "dagster-webserver", "dagster-daemon", *PIPELINE, "dagster-instance-migrate")
API_CLIENTS = ("dagster-webserver", "dagster-daemon", "dagster-run", "prometheus")


def intended(overlay: str, endpoints: dict[str, Endpoint]) -> set[tuple[str, str, int, str]]:
    """Every connection the platform needs, and nothing else."""
    want: set[tuple[str, str, int, str]] = set()

    def add(sources, destination, port, protocol="TCP"):
        for source in (sources,) if isinstance(sources, str) else sources:
            want.add((source, destination, port, protocol))

    ours = [name for name, e in endpoints.items() if e.namespace == NAMESPACE]
    for name in ours:
        add(name, "kube-dns", 53, "UDP")
        add(name, "kube-dns", 53, "TCP")
    add(("ingress-nginx", "prometheus", *PIPELINE), "fish-serving", 3000)
    add("prometheus", "kube-state-metrics", 8080)
    add("grafana", "prometheus", 9090)
    add(("fish-serving", *PIPELINE), "mlflow", 5000)
    add(("dagster-webserver", "dagster-daemon"), "dagster-code-server", 3030)
    api_port = 443 if overlay == "yandex" else 6443
    add(API_CLIENTS, "kube-apiserver", api_port)
    if overlay == "local":
        add("fish-serving", "redis", 6379)
        add(POSTGRES_CLIENTS, "postgres", 5432)
        add(("mlflow", *PIPELINE, "minio-buckets", "fish-serving"), "minio", 9000)
    else:
        add("fish-serving", "managed-redis", 6380)
        add(POSTGRES_CLIENTS, "managed-postgres", 6432)
        storage_clients = ("mlflow", *PIPELINE, "dagster-webserver", "spark-executor", "fish-serving")
        add(storage_clients, "object-storage", 443)
        add("ingress-nginx", "acme-solver", 8089)
        add(("dagster-run", "spark-executor"), "spark-executor", 7079)
        add("spark-executor", "dagster-run", 7078)
        add("spark-executor", "dagster-run", 7079)
    # Pods outside the namespace are not fenced by our policies: their own egress is open, which
    # the matrix below covers only for what reaches into ours.
    return want


def policies_of(overlay: str) -> list[dict]:
    return [d for d in render(overlay) if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_intended_connections_are_allowed(overlay: str):
    policies = policies_of(overlay)
    endpoints = cluster(overlay)
    want = intended(overlay, endpoints)
    unexpected, missing = [], []
    for source in endpoints.values():
        if source.namespace is None:
            continue  # outside addresses open no connections into the cluster here
        for destination in endpoints.values():
            for port, protocol in destination.ports:
                if source.namespace != NAMESPACE and destination.namespace != NAMESPACE:
                    continue  # between two pods outside: not ours to fence
                key = (source.name, destination.name, port, protocol)
                if allowed(policies, source, destination, port, protocol):
                    if key not in want:
                        unexpected.append(key)
                elif key in want:
                    missing.append(key)
    assert not missing, f"{overlay}: intended but blocked: {sorted(missing)}"
    assert not unexpected, f"{overlay}: allowed but not intended: {sorted(unexpected)}"
    assert {key[:2] for key in want} <= {(s, d) for s in endpoints for d in endpoints}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_denied_by_default_in_both_directions(overlay: str):
    (deny,) = [p for p in policies_of(overlay) if p["metadata"]["name"] == "default-deny-all"]
    assert deny["spec"]["podSelector"] == {}
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


def test_the_evaluator_sees_a_policy_that_opens_too_much():
    """Guard against an evaluator that agrees with anything: one permissive policy more fails."""
    policies = policies_of("local")
    endpoints = cluster("local")
    stranger, mlflow = endpoints["stranger-here"], endpoints["mlflow"]
    assert not allowed(policies, stranger, mlflow, 5000)
    open_mlflow = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "open", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}},
            "policyTypes": ["Ingress"],
            "ingress": [{}],
        },
    }
    let_out = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "out", "namespace": NAMESPACE},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    assert not allowed([*policies, open_mlflow], stranger, mlflow, 5000)  # its egress is still denied
    assert allowed([*policies, open_mlflow, let_out], stranger, mlflow, 5000)
    # Selectors, namespaces, ipBlocks and ports each decide.
    assert not allowed(policies, endpoints["stranger-elsewhere"], endpoints["fish-serving"], 3000)
    assert allowed(policies, endpoints["ingress-nginx"], endpoints["fish-serving"], 3000)
    assert not allowed(policies, endpoints["ingress-nginx"], endpoints["fish-serving"], 3001)
    assert not allowed(policies, endpoints["fish-serving"], endpoints["cloud-metadata"], 80)
    yandex = policies_of("yandex")
    remote = cluster("yandex")
    assert allowed(yandex, remote["mlflow"], remote["object-storage"], 443)
    assert allowed(yandex, remote["fish-serving"], remote["object-storage"], 443)  # the prediction log
    assert not allowed(yandex, remote["grafana"], remote["object-storage"], 443)
    assert not allowed(yandex, remote["fish-serving"], remote["managed-postgres"], 6432)
    assert not allowed(yandex, remote["mlflow"], remote["managed-redis"], 6380)
