"""Serving settings, read from the environment when the service starts (never at import).

Platform-wide values (tracking/registry URI, model name, Redis URL) come from
:func:`fish_platform.settings.load_settings`, so the service and the Dagster graph agree by
construction; the ``FISH_*`` variables below only concern serving.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fish_platform.imaging import DEFAULT_MAX_PIXELS
from fish_platform.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_ALIAS = "production"


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


@dataclass(frozen=True)
class ServingConfig:
    model_name: str
    tracking_uri: str
    registry_uri: str | None
    poll_seconds: float  # FISH_MODEL_POLL_SECONDS: how often the alias is re-read; 0 disables
    redis_url: str | None
    cache_ttl_seconds: int  # FISH_CACHE_TTL_SECONDS
    cache_max_items: int  # FISH_CACHE_MAX_ITEMS (in-process LRU only)
    redis_timeout_seconds: float  # FISH_REDIS_TIMEOUT_SECONDS: socket + connect timeout
    max_upload_bytes: int  # FISH_MAX_UPLOAD_BYTES: per image; larger -> 413
    max_pixels: int  # FISH_MAX_PIXELS: decompression-bomb guard
    max_batch_files: int  # FISH_MAX_BATCH_FILES: images per /predict_batch request
    cors_origins: tuple[str, ...]  # FISH_CORS_ORIGINS: comma-separated; empty = same origin only
    frontend_dir: Path  # FISH_FRONTEND_DIR
    # FISH_TF_THREADS: TensorFlow compute (intra-op) threads in the model process; 0 = TensorFlow's
    # default (one per core). 1 pays off on 2 cores with a small model (B0 at 96 px), not at 224 px.
    tf_intra_op_threads: int = 0
    # FISH_MODEL_RELOAD_JITTER_SECONDS: after a promotion each pod waits a random 0..N s before it
    # downloads the new version (bounds the load on MLflow when many pods follow one alias).
    reload_jitter_seconds: float = 0.0

    @property
    def alias(self) -> str:
        return MODEL_ALIAS

    @property
    def max_request_bytes(self) -> int:
        """Body limit of one /predict_batch request (multipart framing included)."""
        return self.max_upload_bytes * self.max_batch_files + 64 * 1024


def redact_url(url: str) -> str:
    """Hide a password in ``scheme://user:secret@host/...`` before logging."""
    if "://" not in url or "@" not in url.split("://", 1)[1]:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url


def load_serving_config() -> ServingConfig:
    settings = load_settings()
    origins = tuple(o.strip() for o in os.environ.get("FISH_CORS_ORIGINS", "").split(",") if o.strip())
    return ServingConfig(
        model_name=settings.model_name,
        tracking_uri=settings.mlflow_tracking_uri,
        registry_uri=settings.mlflow_registry_uri,
        poll_seconds=_float("FISH_MODEL_POLL_SECONDS", 30.0),
        redis_url=settings.redis_url,
        cache_ttl_seconds=_int("FISH_CACHE_TTL_SECONDS", 3600),
        cache_max_items=_int("FISH_CACHE_MAX_ITEMS", 10_000),
        redis_timeout_seconds=_float("FISH_REDIS_TIMEOUT_SECONDS", 0.05),
        max_upload_bytes=_int("FISH_MAX_UPLOAD_BYTES", 10 * 1024 * 1024),
        max_pixels=_int("FISH_MAX_PIXELS", DEFAULT_MAX_PIXELS),
        max_batch_files=_int("FISH_MAX_BATCH_FILES", 32),
        cors_origins=origins,
        frontend_dir=Path(os.environ.get("FISH_FRONTEND_DIR", "") or REPO_ROOT / "frontend"),
        tf_intra_op_threads=_int("FISH_TF_THREADS", 0),
        reload_jitter_seconds=_float("FISH_MODEL_RELOAD_JITTER_SECONDS", 0.0),
    )
