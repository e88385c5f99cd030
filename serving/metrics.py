"""The service's own Prometheus metrics (names fixed by docs/architecture.md).

Created by :func:`service_metrics` at service start, not at import: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` in each worker before it instantiates the service, and
``prometheus_client`` metrics only land in the shared multiprocess files (which BentoML's built-in
``/metrics`` collects, from every process of the service graph) when they are created after that.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FishMetrics:
    cache_events: Any  # Counter, label event = hit | miss | error
    predictions: Any  # Counter, label species (top-1)
    model_loaded: Any  # Gauge, 1 while a production model is loaded
    model_version_info: Any  # Gauge (=1), labels model_name, version
    inference_batch_size: Any  # Histogram
    invalid_requests: Any  # Counter, label reason
    # What the prediction log records, as series (updated with each logged answer; docs/monitoring.md)
    answers: Any  # Counter, labels species (top-1), model_version
    unknown_answers: Any  # Counter, label model_version (0 for a version that never says "unknown")
    answer_confidence: Any  # Histogram of the top-1 calibrated probability, label model_version
    # The challenger in shadow (serving.shadow)
    challenger_version_info: Any  # Gauge (=1), labels model_name, version; 0 once unloaded or swapped
    shadow_answers: Any  # Counter, labels champion_version, challenger_version, agree (true|false)
    challenger_agreement: Any  # Gauge: top-1 agreement of the last compared answers (this process)
    shadow_dropped: Any  # Counter, label reason (backlog | failed)
    # The newest drift report (serving.drift_export)
    drift_detected: Any  # Gauge 0/1
    drift_p_value: Any  # Gauge, label test
    drift_answers: Any  # Gauge: answers the report compared
    drift_report_timestamp: Any  # Gauge: when the report was made (unix s; 0 = none yet)

    def answer_logged(self, species: str, model_version: str, confidence: float, unknown: bool) -> None:
        """One answered image (cached or not), as the prediction log sees it."""
        self.answers.labels(species=species, model_version=model_version).inc()
        # inc(0) still creates the series: the unknown rate is 0, not "no data", for a sure model
        self.unknown_answers.labels(model_version=model_version).inc(1 if unknown else 0)
        self.answer_confidence.labels(model_version=model_version).observe(confidence)

    def cache_event(self, event: str) -> None:
        self.cache_events.labels(event=event).inc()

    def invalid(self, reason: str) -> None:
        self.invalid_requests.labels(reason=reason).inc()

    def shadow_compared(self, champion: str, challenger: str, agree: bool, rolling_rate: float) -> None:
        labels = {"champion_version": champion, "challenger_version": challenger}
        self.shadow_answers.labels(**labels, agree="true" if agree else "false").inc()
        self.shadow_answers.labels(**labels, agree="false" if agree else "true").inc(0)  # both series
        self.challenger_agreement.set(rolling_rate)

    def challenger_changed(self, model_name: str, previous: str | None, version: str | None) -> None:
        _switch_version(self.challenger_version_info, model_name, previous, version)

    def model_swapped(self, model_name: str, previous: str | None, version: str) -> None:
        _switch_version(self.model_version_info, model_name, previous, version)
        self.model_loaded.set(1)


def _switch_version(gauge: Any, model_name: str, previous: str | None, version: str | None) -> None:
    """An info gauge moves from ``previous`` (to 0) to ``version`` (to 1; None: none now)."""
    if previous is not None and previous != version:
        gauge.labels(model_name=model_name, version=previous).set(0)
    if version is not None:
        gauge.labels(model_name=model_name, version=version).set(1)


@functools.cache
def service_metrics() -> FishMetrics:
    """The process' metrics (one registration per process, however many services ask)."""
    import prometheus_client as prom

    # "livemax": one series across processes (the model lives in one), dropped when a process dies.
    metrics = FishMetrics(
        cache_events=prom.Counter("fish_cache_events", "Prediction cache lookups by outcome", ["event"]),
        predictions=prom.Counter("fish_predictions", "Answered predictions by top-1 species", ["species"]),
        model_loaded=prom.Gauge(
            "fish_model_loaded", "1 when a production model is loaded", multiprocess_mode="livemax"
        ),
        model_version_info=prom.Gauge(
            "fish_model_version_info",
            "The served model version (value 1; 0 for versions swapped out)",
            ["model_name", "version"],
            multiprocess_mode="livemax",
        ),
        inference_batch_size=prom.Histogram(
            "fish_inference_batch_size",
            "Images per model call (after adaptive batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        ),
        invalid_requests=prom.Counter(
            "fish_invalid_requests", "Rejected requests and images by reason", ["reason"]
        ),
        answers=prom.Counter(
            "fish_answers", "Answered images by top-1 species and model version", ["species", "model_version"]
        ),
        unknown_answers=prom.Counter(
            "fish_unknown_answers", "Answered images flagged unknown (open-set)", ["model_version"]
        ),
        answer_confidence=prom.Histogram(
            "fish_answer_confidence",
            "Top-1 calibrated probability of each answered image",
            ["model_version"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
        ),
        challenger_version_info=prom.Gauge(
            "fish_challenger_version_info",
            "The challenger version answering in shadow (value 1; 0 once swapped out or unloaded)",
            ["model_name", "version"],
            multiprocess_mode="livemax",
        ),
        shadow_answers=prom.Counter(
            "fish_shadow_answers",
            "Images answered by both champion and challenger, by whether their top-1 species agree",
            ["champion_version", "challenger_version", "agree"],
        ),
        challenger_agreement=prom.Gauge(
            "fish_challenger_agreement",
            "Top-1 agreement of champion and challenger over the last 500 compared images",
            multiprocess_mode="livemostrecent",
        ),
        shadow_dropped=prom.Counter(
            "fish_shadow_dropped", "Images not answered in shadow, by reason", ["reason"]
        ),
        drift_detected=prom.Gauge(
            "fish_drift_detected",
            "1 when the newest daily drift report flagged drift",
            multiprocess_mode="livemax",
        ),
        drift_p_value=prom.Gauge(
            "fish_drift_p_value",
            "p-value of each test of the newest drift report",
            ["test"],
            multiprocess_mode="livemostrecent",
        ),
        drift_answers=prom.Gauge(
            "fish_drift_answers", "Answers the newest drift report compared", multiprocess_mode="livemax"
        ),
        drift_report_timestamp=prom.Gauge(
            "fish_drift_report_timestamp_seconds",
            "When the newest drift report was made (unix time; 0 before the first)",
            multiprocess_mode="livemax",
        ),
    )
    for reason in ("backlog", "failed"):  # known label values start at 0, not as "no data"
        metrics.shadow_dropped.labels(reason=reason)
    return metrics
