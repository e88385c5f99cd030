"""The fish species service: ``bentoml serve serving.service:FishService``.

Two BentoML services in one graph (``bentoml serve`` runs each in its own process):

* :class:`FishService` (HTTP, port ``FISH_SERVE_PORT``): reads uploads, answers from the prediction
  cache (:mod:`serving.cache`) or decodes the image with the platform's own
  :func:`fish_platform.imaging.to_model_input` and asks the model, sharing one call among the
  requests that arrive while its previous call is open (:mod:`serving.coalesce`); also serves the
  page (``/``), its assets (``/static/``), ``GET /model``, ``/readyz`` with the model version, and
  ``/metrics``.
* :class:`FishModel` (internal, unix socket): holds the production model (:mod:`serving.inference`)
  and exposes ``classify`` as a *batchable* API, so BentoML's adaptive batching merges the images of
  concurrent requests into one model call. Images cross the process boundary as pickled uint8
  arrays (BentoML uses pickle between services of one graph).

Everything with logic lives in plain modules; the methods here only wire them together.
"""

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio.to_thread
import bentoml
import numpy as np
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from fish_platform.imaging import InvalidImage, sha256_hex, to_model_input
from fish_platform.logs import configure_logging, log_event
from serving.cache import CacheConfig, build_cache, cache_key
from serving.coalesce import Coalescer
from serving.config import load_serving_config, redact_url
from serving.inference import (
    ModelHolder,
    ModelNotLoaded,
    RegistryAlias,
    configure_tf_threads,
    registry_loader,
)
from serving.metrics import service_metrics
from serving.web import RequestGuard, build_frontend_app, error_body, frontend_problem

log = logging.getLogger("serving.service")

# Adaptive batching. BentoML reads these when the class is decorated (so at import, from the
# environment): images per model call, and the latency above which it sheds requests with a 503.
MAX_BATCH_SIZE = int(os.environ.get("FISH_BATCH_MAX_SIZE") or 32)
MAX_LATENCY_MS = int(os.environ.get("FISH_BATCH_MAX_LATENCY_MS") or 10_000)
# HTTP parsing, validation, decoding and the cache run in the public service's workers; the model
# runs once, in FishModel. More API workers help when request handling, not the model, is the limit.
API_WORKERS = int(os.environ.get("FISH_API_WORKERS") or 1)
# Model calls an API worker keeps open at once; images of requests that arrive meanwhile share the
# next call (serving/coalesce.py), so the hop to the model process is paid per batch, not per image.
MODEL_CALLS_IN_FLIGHT = 2
INFO_MAX_AGE_S = 1.0  # how stale the API process' view of the served version may be


class Prediction(BaseModel):
    species: str
    confidence: float = Field(ge=0.0, le=1.0)


class PredictResponse(BaseModel):
    top3: list[Prediction]
    model_name: str
    model_version: str
    cached: bool
    latency_ms: float


class BatchItem(BaseModel):
    index: int
    ok: bool
    top3: list[Prediction] | None = None
    model_version: str | None = None
    cached: bool | None = None
    error: str | None = None
    reason: str | None = None


class BatchResponse(BaseModel):
    results: list[BatchItem]
    model_name: str
    model_version: str
    latency_ms: float


@bentoml.service(
    name="fish_model",
    workers=1,
    threads=1,
    traffic={"timeout": 120},
    logging={"access": {"enabled": False}},  # an internal hop; the public service logs each request
    # BentoML 1.4.40's client renews its session every 100 requests / 300 s and closes the old one
    # with requests still in flight on it ("Server disconnected" for ~10% of calls at concurrency 16;
    # bentoml issues 5540/4971). This is a local unix socket: keep one session.
    runner_connection={"max_requests": 2**31 - 1, "max_age": 10.0 * 365 * 24 * 3600},
)
class FishModel:
    """Internal: the production model behind one batchable API."""

    def __init__(self) -> None:
        configure_logging()
        config = load_serving_config()
        configure_tf_threads(config.tf_intra_op_threads)
        self.metrics = service_metrics()
        self.metrics.model_loaded.set(0)
        self.holder = ModelHolder(
            config.model_name,
            resolve=RegistryAlias(config.model_name, config.alias, config.tracking_uri, config.registry_uri),
            load=registry_loader(config.tracking_uri, config.registry_uri),
            on_swap=lambda old, new: self.metrics.model_swapped(
                new.model_name, old.version if old else None, new.version
            ),
            reload_jitter_s=config.reload_jitter_seconds,
        )
        log_event(
            log,
            "model service starting",
            model=f"models:/{config.model_name}@{config.alias}",
            tracking_uri=redact_url(config.tracking_uri),
            poll_s=config.poll_seconds,
        )
        self.holder.refresh()
        self.holder.start_polling(config.poll_seconds)

    def __is_ready__(self) -> bool:
        return self.holder.current is not None

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def classify(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        """uint8 ``(h, w, 3)`` images -> one ``{model_name, model_version, top3}`` per image."""
        try:
            results = self.holder.classify(images)
        except ModelNotLoaded as exc:
            return [{"error": "model_not_loaded", "detail": str(exc)} for _ in images]
        self.metrics.inference_batch_size.observe(len(images))
        return results

    @bentoml.api
    async def info(self) -> dict[str, Any]:
        served = self.holder.info
        if served is None:
            return {"loaded": False, "error": self.holder.last_error}
        return {"loaded": True, **served.as_dict()}

    @bentoml.on_shutdown
    def stop_polling(self) -> None:
        self.holder.stop()


@dataclass
class _Upload:
    """One image on its way through a request: a cache hit, an array for the model, or an error."""

    key: str | None = None
    result: dict[str, Any] | None = None
    cached: bool = False
    array: np.ndarray | None = None
    status: int = 200
    reason: str | None = None
    error: str | None = None


async def _current_model_info() -> dict[str, Any]:
    service = bentoml.get_current_service()
    if service is None:
        return {"loaded": False, "error": "service starting"}
    return await service.model_info()


async def _readiness() -> tuple[bool, dict[str, Any]]:
    service = bentoml.get_current_service()
    if service is None:
        return False, {"status": "not_ready", "reason": "service starting"}
    return await service.readiness()


def _count_rejection(reason: str) -> None:
    service_metrics().invalid(reason)


def _error(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(reason, message), status_code=status)


@bentoml.service(name="fish_service", workers=API_WORKERS, traffic={"timeout": 60})
@bentoml.asgi_app(build_frontend_app(_current_model_info), path="/")
class FishService:
    """Public HTTP API, page and probes."""

    model = bentoml.depends(FishModel)

    def __init__(self) -> None:
        configure_logging()
        self.config = load_serving_config()
        self.metrics = service_metrics()
        self.cache = build_cache(
            CacheConfig(
                redis_url=self.config.redis_url,
                ttl_seconds=self.config.cache_ttl_seconds,
                max_items=self.config.cache_max_items,
                socket_timeout_s=self.config.redis_timeout_seconds,
            ),
            on_event=self.metrics.cache_event,
        )
        self._info: dict[str, Any] = {"loaded": False, "error": "not asked yet"}
        self._info_at = float("-inf")
        self._info_lock = asyncio.Lock()
        self._model_calls: Coalescer[np.ndarray, dict[str, Any]] = Coalescer(
            self._call_model, max_in_flight=MODEL_CALLS_IN_FLIGHT, max_items=MAX_BATCH_SIZE
        )
        if problem := frontend_problem(self.config.frontend_dir):
            log_event(log, problem, logging.WARNING, frontend_dir=str(self.config.frontend_dir))

    async def model_info(self) -> dict[str, Any]:
        """What the model process serves now (refreshed at most every INFO_MAX_AGE_S)."""
        if time.monotonic() - self._info_at < INFO_MAX_AGE_S:
            return self._info
        async with self._info_lock:
            if time.monotonic() - self._info_at >= INFO_MAX_AGE_S:
                try:
                    info = await self.model.to_async.info()
                except Exception as exc:  # noqa: BLE001 - the model process may be (re)starting
                    info = {"loaded": False, "error": f"model service unreachable: {type(exc).__name__}"}
                if info.get("model_version") != self._info.get("model_version") and info.get("loaded"):
                    log_event(
                        log,
                        "serving model version",
                        model_name=info.get("model_name"),
                        version=info.get("model_version"),
                    )
                self._info, self._info_at = info, time.monotonic()
        return self._info

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        info = await self.model_info()
        if not info.get("loaded"):
            return False, {"status": "not_ready", "reason": info.get("error") or "no model loaded"}
        return True, {
            "status": "ready",
            "model_name": info["model_name"],
            "model_version": info["model_version"],
            "cache": self.cache.backend,
        }

    async def __is_ready__(self) -> bool:
        return (await self.readiness())[0]

    @bentoml.on_shutdown
    async def close_cache(self) -> None:
        await self.cache.close()

    async def _take(self, path: Path, info: dict[str, Any]) -> _Upload:
        """Size check, cache lookup, and (on a miss) decoding for one uploaded file."""
        size = path.stat().st_size
        if size > self.config.max_upload_bytes:
            message = f"{size:,} bytes is over the limit of {self.config.max_upload_bytes:,} bytes per image"
            return _Upload(status=413, reason="too_large", error=message)
        data = path.read_bytes()
        if not data:
            return _Upload(status=400, reason="empty", error="the file has no bytes")
        key = cache_key(info["model_name"], info["model_version"], sha256_hex(data))
        if (hit := await self.cache.get(key)) is not None:
            return _Upload(key=key, result=hit, cached=True)
        try:
            array = await anyio.to_thread.run_sync(
                to_model_input, data, int(info["image_size"]), self.config.max_pixels
            )
        except InvalidImage as exc:
            return _Upload(status=400, reason=exc.reason, error=str(exc))
        return _Upload(key=key, array=array)

    async def _call_model(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        try:
            return await self.model.to_async.classify(images=images)
        except aiohttp.ClientConnectionError:  # a dropped connection: classify is safe to repeat
            return await self.model.to_async.classify(images=images)

    async def _classify(self, uploads: list[_Upload], info: dict[str, Any]) -> str | None:
        """Fill ``result`` of every upload with an array; returns an error reason if the model failed."""
        pending = [u for u in uploads if u.array is not None]
        if not pending:
            return None
        try:
            results = await self._model_calls.submit([u.array for u in pending])
        except Exception as exc:  # noqa: BLE001 - overloaded or restarting model process
            log_event(log, "model call failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}")
            return "model_unavailable"
        for upload, result in zip(pending, results, strict=True):
            if "error" in result:
                return str(result["error"])
            upload.result = result
            if result["model_version"] == info["model_version"]:  # a swap mid-request: don't cache
                await self.cache.set(upload.key, result)
            else:
                self._info_at = float("-inf")  # the model moved on: refresh our view now
        return None

    def _rejected(self, upload: _Upload) -> None:
        self.metrics.invalid(upload.reason or "invalid")
        log_event(log, "image rejected", logging.INFO, reason=upload.reason, status=upload.status)

    def _answered(self, result: dict[str, Any]) -> None:
        if result.get("top3"):
            self.metrics.predictions.labels(species=result["top3"][0]["species"]).inc()

    @bentoml.api(route="/predict")
    async def predict(self, file: Path) -> PredictResponse:
        """One image (multipart field ``file``) -> the three most likely species."""
        started = time.perf_counter()
        info = await self.model_info()
        if not info.get("loaded"):
            return _error(503, "model_not_loaded", info.get("error") or "no production model loaded")
        upload = await self._take(file, info)
        if upload.error:
            self._rejected(upload)
            return _error(upload.status, upload.reason or "invalid", upload.error)
        if failure := await self._classify([upload], info):
            return _error(503, failure, "the model is not available right now, retry shortly")
        assert upload.result is not None
        self._answered(upload.result)
        return PredictResponse(
            top3=upload.result["top3"],
            model_name=upload.result.get("model_name", info["model_name"]),
            model_version=upload.result["model_version"],
            cached=upload.cached,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, files: list[Path]) -> BatchResponse:
        """Several images (multipart fields ``files``) -> one result per image, in order.

        A bad image gets an error entry of its own; the others are still answered.
        """
        started = time.perf_counter()
        info = await self.model_info()
        if not info.get("loaded"):
            return _error(503, "model_not_loaded", info.get("error") or "no production model loaded")
        uploads = list(await asyncio.gather(*(self._take(path, info) for path in files)))
        if failure := await self._classify(uploads, info):
            return _error(503, failure, "the model is not available right now, retry shortly")
        items: list[BatchItem] = []
        for index, upload in enumerate(uploads):
            if upload.result is None:
                self._rejected(upload)
                items.append(BatchItem(index=index, ok=False, error=upload.error, reason=upload.reason))
                continue
            self._answered(upload.result)
            items.append(
                BatchItem(
                    index=index,
                    ok=True,
                    top3=upload.result["top3"],
                    model_version=upload.result["model_version"],
                    cached=upload.cached,
                )
            )
        return BatchResponse(
            results=items,
            model_name=info["model_name"],
            model_version=info["model_version"],
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
        )


FishService.add_asgi_middleware(RequestGuard, readiness=_readiness, on_reject=_count_rejection)

__all__ = ["FishModel", "FishService"]
