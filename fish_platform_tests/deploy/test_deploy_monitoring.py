"""Prometheus scrape config and alert rules (promtool), and the Grafana dashboard's metric names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fish_platform_tests.deploy.dashboard_metrics import (
    BENTOML_BUILTIN_METRICS,
    DASHBOARD,
    alert_exprs,
    assert_dashboard_metrics_exported,
    dashboard_exprs,
    dashboard_metric_names,
    expected_series,
    metric_names,
)
from fish_platform_tests.deploy.deploy_helpers import K8S

MONITORING = K8S / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
# kube-state-metrics series the Dagster alert reads (kube_job_status_failed{job_name=...}).
KUBE_STATE_METRICS = {"kube_job_status_failed"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool not found: install the Debian package 'prometheus' (apt-get install prometheus)"
        )
    return path


def run_promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def promtool_knows_kubernetes_sd(tmp_path: Path) -> bool:
    """Debian's promtool is built without Kubernetes service discovery; upstream's has it."""
    probe = tmp_path / "probe.yml"
    probe.write_text("scrape_configs:\n  - job_name: p\n    kubernetes_sd_configs:\n      - role: pod\n")
    return run_promtool("check", "config", str(probe), cwd=tmp_path).returncode == 0


def test_prometheus_config_passes_promtool(tmp_path: Path):
    if promtool_knows_kubernetes_sd(tmp_path):
        config_path = PROMETHEUS_YML
    else:
        # Same config with each kubernetes_sd_configs block swapped for a static target, so the rest
        # (relabelling, rule_files, globals) is still checked; the SD blocks get the check below.
        config = yaml.safe_load(PROMETHEUS_YML.read_text())
        for job in config["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["fish-serving:3000"]}]
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
    result = run_promtool("check", "config", str(config_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_service_discovery_targets_the_serving_pods():
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "fish-serving")
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    assert sd["namespaces"]["names"] == ["fish-platform"]
    assert {"role": "pod", "label": "app.kubernetes.io/name=fish-serving"} in sd["selectors"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    keep_port = [r for r in job["relabel_configs"] if r.get("action") == "keep" and r["regex"] == "http"]
    assert keep_port and keep_port[0]["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
    # The rules group by pod; relabelling must provide that label.
    assert any(r.get("target_label") == "pod" for r in job["relabel_configs"])


def test_alert_rules_pass_promtool_check_and_unit_tests():
    check = run_promtool("check", "rules", "alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    tests = run_promtool("test", "rules", "alerts.test.yml")
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_alerts_cover_the_required_conditions():
    alerts = alert_exprs()
    required = {
        "FishServingHighErrorRate",  # error rate
        "FishServingHighLatencyP95",  # p95 latency
        "FishCacheHitRatioFalling",  # cache hit ratio falling
        "FishNoProductionModelLoaded",  # no production model
        "DagsterRunFailed",  # Dagster run failures
    }
    assert required <= set(alerts)
    assert "histogram_quantile(0.95" in alerts["FishServingHighLatencyP95"]


def test_alert_rules_use_only_exported_metrics():
    known = expected_series() | KUBE_STATE_METRICS
    for alert, expr in alert_exprs().items():
        unknown = metric_names(expr) - known
        assert not unknown, f"alert {alert} uses metrics nobody exports: {sorted(unknown)}"


def test_dashboard_uses_only_documented_and_builtin_metrics():
    used = dashboard_metric_names()
    assert used, "no metric found in the dashboard"
    unknown = used - expected_series()
    assert not unknown, (
        f"dashboard queries {sorted(unknown)}: neither in docs/architecture.md's metric table "
        f"nor a BentoML built-in ({sorted(BENTOML_BUILTIN_METRICS)})"
    )


def test_dashboard_shows_rate_latency_cache_species_and_pods():
    exprs = "\n".join(dashboard_exprs())
    assert "rate(bentoml_service_request_total" in exprs  # request rate
    latency = "sum by (le) (rate(bentoml_service_request_duration_seconds_bucket"
    for quantile in ("0.5", "0.95", "0.99"):  # latency percentiles
        assert f"histogram_quantile({quantile}, {latency}" in exprs
    assert 'fish_cache_events_total{event="hit"}' in exprs  # cache hit ratio
    assert "sum by (species) (rate(fish_predictions_total" in exprs  # predictions per species
    assert "count(fish_model_loaded)" in exprs  # pods


def test_dashboard_shows_the_prediction_log_series():
    exprs = "\n".join(dashboard_exprs())
    assert "sum by (species, model_version) (rate(fish_answers_total" in exprs  # per species and version
    assert "sum by (model_version) (rate(fish_unknown_answers_total" in exprs  # unknown rate
    for quantile in ("0.1", "0.5", "0.9"):  # confidence quantiles
        assert f"histogram_quantile({quantile}, sum by (le) (rate(fish_answer_confidence_bucket" in exprs


def test_dashboard_uses_the_provisioned_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    uids = {d["uid"] for d in datasources["datasources"]}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    provider = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/fish-platform.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{endpoint="/predict"}[$__rate_interval]))', {"a_bucket"}),
        ("max by (model_name, version) (b) == 1", {"b"}),
        ('c / on(pod) group_left(version) d{x=~"y|z"} > bool 2e3', {"c", "d"}),
        ("rate(e[5m] offset 30m) and f unless absent(g)", {"e", "f", "g"}),
        ('label_replace(h, "dst", "$1", "src", "(.*)")', {"h"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]):
    assert metric_names(expr) == names


def exposition(include: set[str]) -> str:
    """A /metrics text like the service's, holding only the given metrics (by base name)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    registry = CollectorRegistry()
    factories = {
        "bentoml_service_request_total": lambda: (
            Counter("bentoml_service_request", "r", ["endpoint", "http_response_code"], registry=registry)
            .labels("/predict", "200")
            .inc()
        ),
        "bentoml_service_request_duration_seconds": lambda: (
            Histogram("bentoml_service_request_duration_seconds", "d", ["endpoint"], registry=registry)
            .labels("/predict")
            .observe(0.1)
        ),
        "bentoml_service_request_in_progress": lambda: Gauge(
            "bentoml_service_request_in_progress", "p", registry=registry
        ).set(0),
        "fish_cache_events_total": lambda: (
            Counter("fish_cache_events", "c", ["event"], registry=registry).labels("hit").inc()
        ),
        "fish_predictions_total": lambda: (
            Counter("fish_predictions", "p", ["species"], registry=registry).labels("trout").inc()
        ),
        "fish_model_loaded": lambda: Gauge("fish_model_loaded", "l", registry=registry).set(1),
        "fish_model_version_info": lambda: (
            Gauge("fish_model_version_info", "v", ["model_name", "version"], registry=registry)
            .labels("fish-classifier", "1")
            .set(1)
        ),
        "fish_inference_batch_size": lambda: Histogram(
            "fish_inference_batch_size", "b", registry=registry
        ).observe(4),
        "fish_invalid_requests_total": lambda: (
            Counter("fish_invalid_requests", "i", ["reason"], registry=registry).labels("not_an_image").inc()
        ),
        "fish_answers_total": lambda: (
            Counter("fish_answers", "a", ["species", "model_version"], registry=registry)
            .labels("trout", "1")
            .inc()
        ),
        "fish_unknown_answers_total": lambda: (
            Counter("fish_unknown_answers", "u", ["model_version"], registry=registry).labels("1").inc(0)
        ),
        "fish_answer_confidence": lambda: (
            Histogram("fish_answer_confidence", "c", ["model_version"], registry=registry)
            .labels("1")
            .observe(0.9)
        ),
        "fish_challenger_version_info": lambda: (
            Gauge("fish_challenger_version_info", "v", ["model_name", "version"], registry=registry)
            .labels("fish", "2")
            .set(1)
        ),
        "fish_shadow_answers_total": lambda: (
            Counter("fish_shadow_answers", "s", ["champion", "challenger", "agree"], registry=registry)
            .labels("1", "2", "true")
            .inc()
        ),
        "fish_challenger_agreement": lambda: (
            Gauge("fish_challenger_agreement", "a", registry=registry).set(0.9)
        ),
        "fish_shadow_dropped_total": lambda: (
            Counter("fish_shadow_dropped", "d", ["reason"], registry=registry).labels("backlog").inc(0)
        ),
        "fish_drift_detected": lambda: Gauge("fish_drift_detected", "d", registry=registry).set(0),
        "fish_drift_p_value": lambda: (
            Gauge("fish_drift_p_value", "p", ["test"], registry=registry).labels("embedding").set(0.4)
        ),
        "fish_drift_answers": lambda: Gauge("fish_drift_answers", "n", registry=registry).set(40),
        "fish_drift_report_timestamp_seconds": lambda: (
            Gauge("fish_drift_report_timestamp_seconds", "t", registry=registry).set(1.8e9)
        ),
    }
    for name in include:
        factories[name]()
    return generate_latest(registry).decode()


ALL_SERVICE_METRICS = {
    "bentoml_service_request_total",
    "bentoml_service_request_duration_seconds",
    "bentoml_service_request_in_progress",
    "fish_cache_events_total",
    "fish_predictions_total",
    "fish_model_loaded",
    "fish_model_version_info",
    "fish_inference_batch_size",
    "fish_invalid_requests_total",
    "fish_answers_total",
    "fish_unknown_answers_total",
    "fish_answer_confidence",
    "fish_challenger_version_info",
    "fish_shadow_answers_total",
    "fish_challenger_agreement",
    "fish_shadow_dropped_total",
    "fish_drift_detected",
    "fish_drift_p_value",
    "fish_drift_answers",
    "fish_drift_report_timestamp_seconds",
}


def test_live_metrics_check_accepts_a_complete_exposition():
    assert_dashboard_metrics_exported(exposition(ALL_SERVICE_METRICS))


def test_live_metrics_check_names_what_is_missing():
    with pytest.raises(AssertionError, match=re.escape("fish_predictions_total")):
        assert_dashboard_metrics_exported(exposition(ALL_SERVICE_METRICS - {"fish_predictions_total"}))
