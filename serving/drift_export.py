"""The newest drift verdict as Prometheus gauges, so the dashboard shows what the drift report found.

The ``prediction_drift`` asset writes ``<FISH_DATA_URI>/reports/drift/latest.json``
(``fish_platform.monitoring.drift.save_drift_report``); :class:`DriftExport` in the API process reads
it every ``FISH_DRIFT_EXPORT_SECONDS`` from a daemon thread (never on the request path) and sets
``fish_drift_detected``, ``fish_drift_p_value{test}``, ``fish_drift_answers`` and
``fish_drift_report_timestamp_seconds`` (0 until a report exists: "no report", not "no drift").
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from fish_platform.data.storage import Storage, join, read_json
from fish_platform.logs import log_event
from fish_platform.monitoring.drift import LATEST_DRIFT_REPORT

log = logging.getLogger("serving.drift_export")


class DriftExport:
    def __init__(self, storage: Storage, data_uri: str, interval_s: float, metrics: Any) -> None:
        self.storage, self.uri, self.interval_s, self.metrics = (
            storage,
            join(data_uri, LATEST_DRIFT_REPORT),
            interval_s,
            metrics,
        )
        self.exported: str | None = None  # generated_at of the report on the gauges
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Put the newest report on the gauges; False when there is none (or it cannot be read)."""
        try:
            if not self.storage.exists(self.uri):
                return False
            report = read_json(self.storage, self.uri)
        except Exception as exc:  # noqa: BLE001 - storage trouble must not stop serving
            log_event(log, "drift report not read", logging.WARNING, uri=self.uri, error=repr(exc))
            return False
        if report.get("generated_at") == self.exported:
            return True
        self.metrics.drift_detected.set(1 if report.get("drifted") else 0)
        self.metrics.drift_answers.set(float(report.get("n_traffic") or 0))
        for name, test in (report.get("tests") or {}).items():
            self.metrics.drift_p_value.labels(test=name).set(float(test.get("p_value", float("nan"))))
        generated = str(report.get("generated_at") or "")
        try:
            stamp = datetime.strptime(generated, "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            stamp = 0.0
        self.metrics.drift_report_timestamp.set(stamp)
        self.exported = generated
        log_event(log, "drift report exported", date=report.get("date"), drifted=bool(report.get("drifted")))
        return True

    def start(self) -> DriftExport:
        if self.interval_s > 0 and self._thread is None:

            def loop() -> None:
                self.refresh()
                while not self._stop.wait(self.interval_s):
                    self.refresh()

            self._thread = threading.Thread(target=loop, name="fish-drift-export", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
