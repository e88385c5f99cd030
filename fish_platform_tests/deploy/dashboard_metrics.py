"""Which metric names the Grafana dashboard and the alert rules use, and which the service exports.

``assert_dashboard_metrics_exported(metrics_text)`` is the check to run against a live service:
give it the text of ``GET /metrics`` after at least one ``/predict`` request (labelled series
appear only once observed) and it fails naming every dashboard metric the service does not export.
Offline, the tests compare against the list in docs/architecture.md plus BentoML 1.4's built-ins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from fish_platform_tests.deploy.deploy_helpers import K8S, REPO_ROOT

DASHBOARD = K8S / "monitoring" / "grafana" / "dashboards" / "fish-platform.json"
ALERTS = K8S / "monitoring" / "alerts.yml"
ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"

# BentoML 1.4's built-in service metrics (namespace "bentoml_service"): the HTTP middleware
# (bentoml/_internal/server/http/instruments.py) and adaptive batching (_bentoml_impl/server/app.py),
# as documented at docs.bentoml.com "Observability > Metrics". name -> type.
BENTOML_BUILTIN_METRICS = {
    "bentoml_service_request_duration_seconds": "histogram",
    "bentoml_service_request_total": "counter",
    "bentoml_service_request_in_progress": "gauge",
    "bentoml_service_last_request_timestamp_seconds": "gauge",
    "bentoml_service_adaptive_batch_size": "histogram",
}

PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
    "atan2",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])\s*(\()?")
_DURATION_OR_NUMBER = re.compile(r"^\d")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, keywords, labels and durations left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS or _DURATION_OR_NUMBER.match(name):
            continue
        names.add(name)
    return names


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    dashboard = json.loads(path.read_text())
    exprs = []
    for panel in _panels(dashboard.get("panels", [])):
        exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
    return exprs


def _panels(panels: list[dict]) -> Iterable[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows keep their panels here


def dashboard_metric_names(path: Path = DASHBOARD) -> set[str]:
    return set().union(*(metric_names(e) for e in dashboard_exprs(path)))


def alert_exprs(path: Path = ALERTS) -> dict[str, str]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}


def series_names(name: str, kind: str) -> set[str]:
    """Sample names a metric of this type produces in the text exposition format."""
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count"}
    return {name}


def documented_metrics(path: Path = ARCHITECTURE) -> dict[str, str]:
    """name -> type from the table "Metrics exported by the service" of docs/architecture.md."""
    text = path.read_text()
    section = text.split("## Metrics exported by the service", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|\s*([a-z]+)", section, flags=re.MULTILINE)
    assert rows, "no metric table found in docs/architecture.md"
    return dict(rows)


def expected_series() -> set[str]:
    """Every sample name the service should export: documented fish_* metrics plus BentoML's."""
    metrics = {**documented_metrics(), **BENTOML_BUILTIN_METRICS}
    return set().union(*(series_names(name, kind) for name, kind in metrics.items()))


def exported_series(metrics_text: str) -> set[str]:
    """Sample names present in a Prometheus text exposition (the body of GET /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        sample.name for family in text_string_to_metric_families(metrics_text) for sample in family.samples
    }


# Series that exist only while a challenger is loaded and shadowing, or once a drift report exists:
# the shadow service of test_shadow_service.py has both and checks them; other services may lack them.
# (the agreement gauge has no value before the first comparison: "no data", not a made-up rate)
NEEDS_CHALLENGER_OR_DRIFT = frozenset(
    {
        "fish_shadow_answers_total",
        "fish_challenger_agreement",
        "fish_challenger_version_info",
        "fish_drift_p_value",
    }
)


def assert_dashboard_metrics_exported(metrics_text: str, may_lack: frozenset[str] = frozenset()) -> None:
    """Fail unless every metric the Grafana dashboard queries (but ``may_lack``) is in this /metrics text."""
    exported = exported_series(metrics_text)
    missing = sorted(dashboard_metric_names() - exported - may_lack)
    ours = sorted(n for n in exported if n.startswith(("fish_", "bentoml_")))
    assert not missing, (
        f"the Grafana dashboard queries {missing}, which /metrics does not export "
        f"(exported fish_*/bentoml_* series: {ours})"
    )
