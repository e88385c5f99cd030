"""Structured (JSON) logging for the platform's own processes.

``FISH_LOG_FORMAT=console`` gives human-readable lines instead. Dagster's own log capture
is untouched: assets log through ``context.log``.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from fish_platform.settings import LoggingSettings, load_logging_settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            payload.update(extra)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(settings: LoggingSettings | None = None) -> None:
    """Install one stderr handler on the ``fish_platform`` and ``serving`` loggers (idempotent)."""
    settings = settings or load_logging_settings()
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "console":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    for name in ("fish_platform", "serving"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(settings.level)
        logger.propagate = False


def redact_url(url: str) -> str:
    """Hide a password in ``scheme://user:secret@host/...`` before it is logged or printed."""
    if "://" not in url or "@" not in url.split("://", 1)[1]:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object) -> None:
    """Log ``event`` with structured ``fields`` (kept as JSON keys by :class:`JsonFormatter`)."""
    logger.log(level, event, extra={"fields": fields})
