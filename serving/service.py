"""The fish species service: ``bentoml serve serving.service:FishService``.

This module is the BentoML adapter; the logic lives in plain modules. The path of one request:

1. ``serving.web.RequestGuard`` (ASGI middleware): ``/healthz`` and ``/readyz``, rejects bad uploads
   before BentoML parses them (413 over the body limit, 400 not multipart, too many files), CORS and
   security headers; ``/``, ``/static/`` and ``GET /model`` are the page app (``serving.web``).
2. :class:`FishService` (HTTP, ``FISH_SERVE_PORT``): ``/predict``, ``/predict_batch`` and ``/explain``
   (a class activation map over the photo, PNG) ask
   :class:`serving.predictor.Predictor` to
3. check and look each upload up in the prediction cache (``serving.cache``: Redis, or an in-process
   LRU), and decode the misses with ``fish_platform.imaging.to_model_input`` (the dataset job's own
   resize);
4. send the arrays through ``serving.coalesce.Coalescer`` (one open call per batch of waiting
   requests) to
5. :class:`FishModel` (internal, unix socket): a *batchable* BentoML API, so adaptive batching merges
   the images of concurrent requests into one call of
6. ``serving.inference.ModelHolder``: the model the ``production`` alias points at (polled, swapped
   without a restart) on its runtime (``registry_loader``: the version's OpenVINO bundle, or Keras on
   TensorFlow, by ``FISH_RUNTIME``) and its classify step (``classify_batch``: calibrated top-3 and
   ``unknown`` from the version's calibration record, ``ServedModel.answer``).

Images cross the process boundary as pickled uint8 arrays (BentoML uses pickle between services of
one graph). Settings: the ``serving`` section of ``fish_platform.settings``; BentoML reads the
batching and worker settings when the classes below are decorated, so they are loaded at import.
Metrics: ``serving.metrics`` (``/metrics``). Every answer has a ``request_id`` (``X-Request-ID``) and a
row in the prediction log (``serving.prediction_log``); ``/feedback`` corrects one answer
(``fish_platform.monitoring.feedback``); see docs/monitoring.md.
"""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio.to_thread
import bentoml
import numpy as np
from PIL import Image as PILImage
from starlette.responses import JSONResponse, Response

from fish_platform.contract import CHALLENGER_ALIAS, model_alias_uri
from fish_platform.data.storage import open_storage
from fish_platform.logs import configure_logging, log_event
from fish_platform.monitoring.feedback import AnsweredRequest, FeedbackError, find_request, record_feedback
from fish_platform.monitoring.log_schema import ROLE_CHALLENGER, ROLE_CHAMPION
from fish_platform.settings import ServingSettings
from serving.cache import CacheConfig, build_cache
from serving.config import load_serving_config, redact_url
from serving.drift_export import DriftExport
from serving.inference import (
    ExplainUnavailable,
    ModelHolder,
    ModelInfo,
    ModelNotLoaded,
    RegistryAlias,
    registry_calibration,
    registry_loader,
)
from serving.metrics import service_metrics
from serving.prediction_log import (
    PredictionLog,
    Recent,
    RecentRequests,
    RequestIdMiddleware,
    current_client_key,
    current_request_id,
    image_facts,
    item_request_id,
    prediction_row,
    sha256_of_key,
)
from serving.predictor import Answer, ImageRejected, ModelUnavailable, Predictor, PreparedImage, ServedView
from serving.schemas import BatchItem, BatchResponse, PredictResponse
from serving.shadow import Agreement, Shadow, ShadowItem, challenger_answers, top1
from serving.web import RequestGuard, build_frontend_app, error_body, frontend_problem

log = logging.getLogger("serving.service")

SETTINGS = load_serving_config()  # BentoML reads batch size, latency and workers at decoration
INFO_MAX_AGE_S = 1.0  # how stale the API process' view of the served version may be
RETRY_SHORTLY = "the model is not available right now, retry shortly"


def _model_holder(
    config: ServingSettings,
    alias: str,
    on_swap: Callable[[ModelInfo | None, ModelInfo], None],
    on_unload: Callable[[ModelInfo], None] | None = None,
) -> ModelHolder:
    """The model under ``<model name>@<alias>``, on the configured runtime, with its calibration."""
    return ModelHolder(
        config.model_name,
        resolve=RegistryAlias(config.model_name, alias, config.tracking_uri, config.registry_uri),
        load=registry_loader(
            config.tracking_uri, config.registry_uri, config.runtime, config.tf_intra_op_threads
        ),
        on_swap=on_swap,
        reload_jitter_s=config.reload_jitter_seconds,
        load_calibration=registry_calibration(config.tracking_uri, config.registry_uri),
        unknown_threshold=config.unknown_threshold,
        alias=alias,
        unload_when_unset=on_unload is not None,
        on_unload=on_unload,
    )


def _classify(holder: ModelHolder, images: list[np.ndarray]) -> list[Answer]:
    """One batch on the holder's model, as wire answers (the embedding rides along as a key)."""
    try:
        answers = holder.classify(images)
    except ModelNotLoaded as exc:  # the caller sees a 503 and answers model_not_loaded
        raise bentoml.exceptions.ServiceUnavailable(str(exc)) from exc
    return [answer.to_wire() for answer in answers]


def _served_by(holder: ModelHolder) -> dict[str, Any]:
    """The version the holder serves (name, version, labels, image size), or why none."""
    served = holder.info
    if served is None:
        return {"loaded": False, "error": holder.last_error}
    return {"loaded": True, **served.as_dict()}


# BentoML 1.4.40's client renews its session every 100 requests / 300 s and closes the old one with
# requests still in flight on it ("Server disconnected" for ~10% of calls at concurrency 16; bentoml
# issues 5540/4971). The model services are local unix sockets: keep one session.
_ONE_SESSION = {"max_requests": 2**31 - 1, "max_age": 10.0 * 365 * 24 * 3600}


@bentoml.service(
    name="fish_model",
    workers=1,
    threads=1,
    traffic={"timeout": 120},
    logging={"access": {"enabled": False}},  # an internal hop; the public service logs each request
    runner_connection=_ONE_SESSION,
)
class FishModel:
    """Internal: the production model behind one batchable API."""

    def __init__(self) -> None:
        configure_logging()
        config = load_serving_config()
        self.metrics = service_metrics()
        self.metrics.model_loaded.set(0)
        self.holder = _model_holder(
            config,
            config.alias,
            on_swap=lambda old, new: self.metrics.model_swapped(
                new.model_name, old.version if old else None, new.version
            ),
        )
        log_event(
            log,
            "model service starting",
            model=model_alias_uri(config.model_name, config.alias),
            tracking_uri=redact_url(config.tracking_uri),
            poll_s=config.poll_seconds,
        )
        self.holder.refresh()
        self.holder.start_polling(config.poll_seconds)

    def __is_ready__(self) -> bool:
        return self.holder.current is not None

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=SETTINGS.batch_max_size,
        max_latency_ms=SETTINGS.batch_max_latency_ms,
    )
    def classify(self, images: list[np.ndarray]) -> list[Answer]:
        """uint8 ``(h, w, 3)`` images -> one ``{model_name, model_version, top3}`` per image."""
        answers = _classify(self.holder, images)
        self.metrics.inference_batch_size.observe(len(images))
        return answers

    @bentoml.api
    def explain(self, image: np.ndarray, species: str | None = None) -> dict[str, Any]:
        """One uint8 image -> its class activation map for ``species`` (default top-1), or ``error``."""
        try:
            return self.holder.explain(image, species)
        except ModelNotLoaded as exc:
            raise bentoml.exceptions.ServiceUnavailable(str(exc)) from exc
        except (ExplainUnavailable, ValueError) as exc:  # no feature map, or a swap removed the species
            return {"error": str(exc)}

    @bentoml.api
    async def served_model(self) -> dict[str, Any]:
        """The version this process serves (name, version, labels, image size), or why none."""
        return _served_by(self.holder)

    @bentoml.on_shutdown
    def stop_polling(self) -> None:
        self.holder.stop()


def lower_priority(niceness: int) -> None:
    """Raise the niceness of every thread of this process (Linux: niceness is per thread, and the
    threads BentoML started before this service was built would keep theirs); threads started later
    inherit it from their creator. With the kernel's autogroup scheduling (on by default on desktop
    and many server kernels), BentoML's workers each lead a session of their own and share the CPU
    by session, whatever their threads' niceness: the session's own niceness is set too."""
    autogroup = Path("/proc/self/autogroup")
    try:
        autogroup.write_text(str(niceness))
    except OSError:  # no autogroup (e.g. a container without it): thread niceness is what counts
        pass
    tasks = Path("/proc/self/task")
    for tid in [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), niceness))
        except OSError:  # a thread that ended meanwhile
            continue


@bentoml.service(
    name="fish_challenger",
    workers=1,
    threads=1,
    traffic={"timeout": 120},
    logging={"access": {"enabled": False}},
    runner_connection=_ONE_SESSION,
)
class ChallengerModel:
    """Internal: the version under the ``challenger`` alias, answering in shadow (serving.shadow).

    Its own process, so that its model calls queue beside the champion's, never in front of them.
    Without the alias it holds no model (and unloads one when the alias is cleared).
    """

    def __init__(self) -> None:
        configure_logging()
        config = load_serving_config()
        self.metrics = service_metrics()
        self.holder = _model_holder(
            config,
            CHALLENGER_ALIAS,
            on_swap=lambda old, new: self.metrics.challenger_changed(
                new.model_name, old.version if old else None, new.version
            ),
            on_unload=lambda old: self.metrics.challenger_changed(old.model_name, old.version, None),
        )
        if config.shadow_nice > 0:  # the champion's answers first; the shadow takes the idle CPU
            lower_priority(config.shadow_nice)
        self.holder.refresh()
        self.holder.start_polling(config.poll_seconds)

    def __is_ready__(self) -> bool:
        return True  # serving never waits for a challenger

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=SETTINGS.batch_max_size,
        max_latency_ms=SETTINGS.batch_max_latency_ms,
    )
    def classify(self, images: list[np.ndarray]) -> list[Answer]:
        """As :meth:`FishModel.classify`, with the challenger."""
        return _classify(self.holder, images)

    @bentoml.api
    async def served_model(self) -> dict[str, Any]:
        return _served_by(self.holder)

    @bentoml.on_shutdown
    def stop_polling(self) -> None:
        self.holder.stop()


async def _served_model() -> dict[str, Any]:
    service = bentoml.get_current_service()
    if service is None:
        return {"loaded": False, "error": "service starting"}
    return await service.served_model()


async def _readiness() -> tuple[bool, dict[str, Any]]:
    service = bentoml.get_current_service()
    if service is None:
        return False, {"status": "not_ready", "reason": "service starting"}
    return await service.readiness()


def _log_version(role: str) -> Callable[[dict[str, Any]], None]:
    def logged(served: dict[str, Any]) -> None:
        log_event(
            log,
            f"{role} model version",
            model_name=served.get("model_name"),
            version=served.get("model_version"),
        )

    return logged


def _count_rejection(reason: str) -> None:
    service_metrics().invalid(reason)


def _error(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(reason, message), status_code=status)


class _NoModel(Exception):
    """No model is loaded in the model process (yet): 503 before any upload is read."""


@dataclass(frozen=True)
class _Route:
    """Which model answers a request, and which one (if any) answers it in shadow (serving.shadow)."""

    predictor: Predictor
    served: dict[str, Any]
    role: str
    shadow_predictor: Predictor | None = None
    shadow_served: dict[str, Any] | None = None
    shadow_role: str | None = None

    def versions(self) -> tuple[str, str]:
        """(champion version, challenger version) of a shadowed route."""
        assert self.shadow_served is not None
        pair = (str(self.served["model_version"]), str(self.shadow_served["model_version"]))
        return pair if self.role == ROLE_CHAMPION else (pair[1], pair[0])


@bentoml.service(name="fish_service", workers=SETTINGS.api_workers, traffic={"timeout": 60})
@bentoml.asgi_app(build_frontend_app(_served_model), path="/")
class FishService:
    """Public HTTP API, page and probes."""

    model = bentoml.depends(FishModel)
    if SETTINGS.shadow:  # FISH_SHADOW=off: no challenger process at all
        challenger = bentoml.depends(ChallengerModel)

    def __init__(self) -> None:
        configure_logging()
        self.config = load_serving_config()
        self.metrics = service_metrics()
        self.cache = build_cache(CacheConfig.from_settings(self.config), on_event=self.metrics.cache_event)
        self._champion = ServedView(self._ask_champion, INFO_MAX_AGE_S, on_change=_log_version("champion"))
        self.predictor = Predictor(
            self.config,
            self.cache,
            self._call_model,
            on_stale_version=self._champion.forget,
            explain_model=self._call_explain,
        )
        # The challenger in shadow (serving.shadow): its own view, predictor (same cache: keys name
        # the version) and model process.
        self._challenger: ServedView | None = None
        self.challenger_predictor: Predictor | None = None
        if self.config.shadow:
            self._challenger = ServedView(
                self._ask_challenger, INFO_MAX_AGE_S, on_change=_log_version("challenger")
            )
            self.challenger_predictor = Predictor(
                self.config, self.cache, self._call_challenger, on_stale_version=self._challenger.forget
            )
        self.shadow = Shadow(
            self.config.shadow_max_pending,
            on_drop=lambda n, reason: self.metrics.shadow_dropped.labels(reason=reason).inc(n),
        )
        self.agreement = Agreement()
        self._compared: tuple[str, str] | None = None  # the versions the agreement window is about
        if problem := frontend_problem(self.config.frontend_dir):
            log_event(log, problem, logging.WARNING, frontend_dir=str(self.config.frontend_dir))
        # The prediction log and feedback (serving.prediction_log, fish_platform.monitoring.feedback)
        data_uri = self.config.data_uri
        self.storage = open_storage(data_uri, self.config.s3_endpoint_url) if data_uri else None
        self.recent = RecentRequests()
        self.prediction_log: PredictionLog | None = None
        if self.config.prediction_log and data_uri:
            self.prediction_log = PredictionLog(
                self.config.data_uri,
                self.config.prediction_log_flush_rows,
                self.config.prediction_log_flush_seconds,
                keep_images=self.config.keep_images,
                storage=self.storage,
            ).start()
        self.drift_export = None  # the newest drift report on /metrics (serving.drift_export)
        if self.storage is not None and data_uri:
            self.drift_export = DriftExport(
                self.storage, data_uri, self.config.drift_export_seconds, self.metrics
            ).start()

    async def served_model(self) -> dict[str, Any]:
        """What the model process serves now (refreshed at most every INFO_MAX_AGE_S)."""
        return await self._champion.get()

    async def _ask_champion(self) -> dict[str, Any]:
        return await self.model.to_async.served_model()

    async def _ask_challenger(self) -> dict[str, Any]:
        return await self.challenger.to_async.served_model()

    async def _challenger_model(self) -> dict[str, Any] | None:
        """The loaded challenger, when there is one that is not the champion's own version."""
        if self._challenger is None:
            return None
        served = await self._challenger.get()
        return served if served.get("loaded") else None

    async def _loaded_model(self) -> dict[str, Any]:
        served = await self.served_model()
        if not served.get("loaded"):
            raise _NoModel(served.get("error") or "no production model loaded")
        return served

    async def _route(self) -> _Route:
        """Champion or challenger for this request's client, and the other one in shadow."""
        champion = await self._loaded_model()
        challenger = await self._challenger_model()
        if challenger is None or challenger.get("model_version") == champion.get("model_version"):
            return _Route(self.predictor, champion, ROLE_CHAMPION)
        assert self.challenger_predictor is not None
        if challenger_answers(current_client_key(), self.config.challenger_traffic_percent):
            return _Route(
                self.challenger_predictor,
                challenger,
                ROLE_CHALLENGER,
                self.predictor,
                champion,
                ROLE_CHAMPION,
            )
        return _Route(
            self.predictor, champion, ROLE_CHAMPION, self.challenger_predictor, challenger, ROLE_CHALLENGER
        )

    async def _answer(self, route: _Route, images: list[PreparedImage]) -> _Route:
        """Answer on ``route``; when the challenger cannot, the champion answers (and nothing shadows)."""
        try:
            await route.predictor.answer(images, route.served)
            return route
        except ModelUnavailable as exc:
            if route.role == ROLE_CHAMPION:
                raise
            log_event(
                log, "challenger could not answer; the champion does", logging.WARNING, error=exc.detail
            )
        # route.served (the challenger's) names the cache keys: the champion's answers are not cached there
        await self.predictor.answer(images, route.served)
        return _Route(self.predictor, await self._loaded_model(), ROLE_CHAMPION)

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        served = await self.served_model()
        if not served.get("loaded"):
            return False, {"status": "not_ready", "reason": served.get("error") or "no model loaded"}
        challenger = await self._challenger_model()
        return True, {
            "status": "ready",
            "model_name": served["model_name"],
            "model_version": served["model_version"],
            "runtime": served.get("runtime"),
            **(await self._cache_state()),
            **({"challenger_version": challenger["model_version"]} if challenger else {}),
        }

    async def _cache_state(self) -> dict[str, Any]:
        """``cache``: memory, redis, or redis_unavailable (answers go out uncached) with the error."""
        state = await self.cache.state()
        return {"cache": state.state, **({"cache_error": state.error} if state.error else {})}

    async def __is_ready__(self) -> bool:
        return (await self.readiness())[0]

    @bentoml.on_shutdown
    async def close_cache(self) -> None:
        await self.cache.close()

    @bentoml.on_shutdown
    async def flush_prediction_log(self) -> None:
        if self.drift_export is not None:
            self.drift_export.stop()
        await self.shadow.drain()  # the answers in flight get their rows in the last flush
        if self.prediction_log is not None:
            await anyio.to_thread.run_sync(self.prediction_log.close)

    def _log_answer(
        self,
        request_id: str,
        path: Path,
        image: PreparedImage,
        route: _Route,
        latency_ms: float,
        shadowed: list[ShadowItem],
    ) -> None:
        """Remember the answer for /feedback, buffer its log row and, when it was computed (not a
        cache hit) on a route with a shadow, queue it in ``shadowed`` (never fails the request)."""
        try:
            answer = image.answer or {}
            sha = sha256_of_key(image.key)
            width, height, ext = image_facts(path) if self.prediction_log else (None, None, None)
            top = answer.get("top3") or [{}]
            recent = Recent(sha, str(answer.get("model_version")), top[0].get("species"), ext)
            self.recent.add(request_id, recent)
            if "species" in top[0]:  # the log's view as series (fish_answers_total ...)
                top1_answer, unknown = top[0], bool(answer.get("unknown"))
                self.metrics.answer_logged(
                    top1_answer["species"], recent.model_version, top1_answer["confidence"], unknown
                )
            if self.prediction_log is not None:
                row = prediction_row(
                    request_id,
                    sha,
                    answer,
                    route.served,
                    image.cached,
                    latency_ms,
                    width,
                    height,
                    image.array,
                    role=route.role,
                )
                kept = (path.read_bytes(), ext) if self.config.keep_images else None
                self.prediction_log.append(row, kept)
            if route.shadow_predictor is not None and not image.cached and image.array is not None:
                shadowed.append(ShadowItem(request_id, sha, image.array, answer, width, height))
        except Exception as exc:  # noqa: BLE001 - the log is best effort; the answer still goes out
            log_event(log, "prediction not logged", logging.WARNING, error=repr(exc))

    def _shadow(self, route: _Route, items: list[ShadowItem]) -> None:
        """The other model answers ``items`` off the request path; its rows share their request ids."""
        if route.shadow_predictor is None or route.shadow_served is None or not items:
            return
        shadow_served, shadow_role, versions = route.shadow_served, route.shadow_role, route.versions()

        def record(items: list[ShadowItem], answers: Any, latency_ms: float) -> None:
            if versions != self._compared:  # another pair of models: the window starts again
                self.agreement.reset()
                self._compared = versions
            for item, answer in zip(items, answers, strict=True):
                if str(answer.get("model_version")) != str(shadow_served["model_version"]):
                    continue  # swapped while in flight: it is not the pair this route compared
                agree = top1(answer) == top1(item.answered)
                self.metrics.shadow_compared(*versions, agree, self.agreement.add(agree))
                if self.prediction_log is not None:
                    row = prediction_row(
                        item.request_id,
                        item.sha256,
                        answer,
                        shadow_served,
                        False,
                        latency_ms,
                        item.width,
                        item.height,
                        item.array,
                        role=shadow_role,
                        served_to_client=False,
                    )
                    self.prediction_log.append(row)

        self.shadow.submit(items, route.shadow_predictor.run, record)

    def _record_feedback(self, request_id: str, label: str, comment: str | None, species: list[str]) -> dict:
        recent = self.recent.get(request_id)
        if recent is not None:
            request = AnsweredRequest(
                request_id, recent.sha256, recent.model_version, recent.predicted, recent.image_ext
            )
        elif self.storage is None:
            raise FeedbackError(503, "feedback_unavailable", "FISH_DATA_URI is not set: nowhere to keep it")
        elif found := find_request(self.storage, self.storage.uri, request_id):
            request = found
        else:
            raise FeedbackError(404, "unknown_request", f"no recent answer has request_id {request_id!r}")
        keep = self.config.keep_images and self.prediction_log is not None
        if keep:
            self.prediction_log.flush()  # the upload is written with the next flush: write it now
        return record_feedback(self.storage, self.storage.uri, request, label, species, comment, keep)

    async def _call_model(self, images: list[np.ndarray]) -> list[Answer]:
        try:
            return await self.model.to_async.classify(images=images)
        except aiohttp.ClientConnectionError:  # a dropped connection: classify is safe to repeat
            return await self.model.to_async.classify(images=images)

    async def _call_challenger(self, images: list[np.ndarray]) -> list[Answer]:
        try:
            return await self.challenger.to_async.classify(images=images)
        except aiohttp.ClientConnectionError:
            return await self.challenger.to_async.classify(images=images)

    async def _call_explain(self, image: np.ndarray, species: str | None) -> dict[str, Any]:
        return await self.model.to_async.explain(image=image, species=species)

    def _rejected(self, rejected: ImageRejected) -> None:
        self.metrics.invalid(rejected.reason)
        log_event(log, "image rejected", logging.INFO, reason=rejected.reason, status=rejected.status)

    def _answered(self, image: PreparedImage) -> None:
        if image.answer and image.answer.get("top3"):
            self.metrics.predictions.labels(species=image.answer["top3"][0]["species"]).inc()

    def _unavailable(self, exc: ModelUnavailable) -> JSONResponse:
        log_event(log, "model call failed", logging.WARNING, reason=exc.reason, error=exc.detail)
        return _error(503, exc.reason, RETRY_SHORTLY)

    @bentoml.api(route="/predict")
    async def predict(self, file: Path) -> PredictResponse:
        """One image (multipart field ``file``) -> the three most likely species."""
        started = time.perf_counter()
        try:
            route = await self._route()
            image = await route.predictor.prepare(file, route.served)
            route = await self._answer(route, [image])
        except _NoModel as exc:
            return _error(503, "model_not_loaded", str(exc))
        except ImageRejected as rejected:
            self._rejected(rejected)
            return _error(rejected.status, rejected.reason, rejected.message)
        except ModelUnavailable as exc:
            return self._unavailable(exc)
        assert image.answer is not None
        self._answered(image)
        request_id = current_request_id()
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        shadowed: list[ShadowItem] = []
        self._log_answer(request_id, file, image, route, latency_ms, shadowed)
        self._shadow(route, shadowed)
        return PredictResponse(
            request_id=request_id,
            top3=image.answer["top3"],
            unknown=image.answer.get("unknown", False),
            unknown_score=image.answer.get("unknown_score"),
            model_name=image.answer.get("model_name", route.served["model_name"]),
            model_version=image.answer["model_version"],
            cached=image.cached,
            latency_ms=latency_ms,
        )

    @bentoml.api(route="/explain")
    async def explain(self, file: Path, species: str | None = None) -> PILImage.Image:
        """One image (multipart ``file``) -> PNG: the photo with the class activation map of
        ``species`` (a form field; default the top-1) over it. Same 4xx as /predict; 400
        ``unknown_species`` for a name the served version does not know."""
        try:
            served = await self._loaded_model()
            png, meta = await self.predictor.explain(file, served, species)
        except _NoModel as exc:
            return _error(503, "model_not_loaded", str(exc))
        except ImageRejected as rejected:
            self._rejected(rejected)
            return _error(rejected.status, rejected.reason, rejected.message)
        except ModelUnavailable as exc:
            if exc.reason == "explain_unavailable":  # retrying will not help: say why
                return _error(503, exc.reason, exc.detail)
            return self._unavailable(exc)
        headers = {
            "x-fish-species": quote(str(meta["species"])),
            "x-model-version": str(meta["model_version"]),
            "x-cached": "true" if meta["cached"] else "false",
            "cache-control": "no-store",
        }
        return Response(png, media_type="image/png", headers=headers)

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, files: list[Path]) -> BatchResponse:
        """Several images (multipart fields ``files``) -> one result per image, in order.

        A bad image gets an error entry of its own; the others are still answered.
        """
        started = time.perf_counter()
        try:
            route = await self._route()
            prepared = await route.predictor.prepare_all(files, route.served)
            route = await self._answer(route, [p for p in prepared if isinstance(p, PreparedImage)])
        except _NoModel as exc:
            return _error(503, "model_not_loaded", str(exc))
        except ModelUnavailable as exc:
            return self._unavailable(exc)
        items: list[BatchItem] = []
        batch_id = current_request_id()
        latency_ms = round((time.perf_counter() - started) * 1000, 2)  # the batch's, in each item's log row
        shadowed: list[ShadowItem] = []
        for index, image in enumerate(prepared):
            if isinstance(image, ImageRejected):
                self._rejected(image)
                items.append(BatchItem(index=index, ok=False, error=image.message, reason=image.reason))
                continue
            assert image.answer is not None
            self._answered(image)
            self._log_answer(
                item_request_id(batch_id, index), files[index], image, route, latency_ms, shadowed
            )
            items.append(
                BatchItem(
                    index=index,
                    request_id=item_request_id(batch_id, index),
                    ok=True,
                    top3=image.answer["top3"],
                    unknown=image.answer.get("unknown", False),
                    unknown_score=image.answer.get("unknown_score"),
                    model_version=image.answer["model_version"],
                    cached=image.cached,
                )
            )
        self._shadow(route, shadowed)
        return BatchResponse(
            request_id=batch_id,
            results=items,
            model_name=route.served["model_name"],
            model_version=route.served["model_version"],
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    @bentoml.api(route="/feedback")
    async def feedback(self, request_id: str, species: str, comment: str | None = None) -> dict[str, Any]:
        """A correction of one answer: JSON ``{request_id, species | "unknown" | "not_a_fish", comment?}``."""
        try:
            served = await self._loaded_model()
        except _NoModel as exc:
            return _error(503, "model_not_loaded", str(exc))
        challenger = await self._challenger_model()  # its species are valid corrections too
        labels = list(
            dict.fromkeys(str(label) for m in (served, challenger or {}) for label in m.get("labels") or [])
        )
        try:
            row = await anyio.to_thread.run_sync(self._record_feedback, request_id, species, comment, labels)
        except FeedbackError as exc:
            return _error(exc.status, exc.reason, exc.message)
        log_event(log, "feedback recorded", request_id=request_id, correct_label=row["correct_label"])
        return {
            "ok": True,
            "request_id": request_id,
            "correct_label": row["correct_label"],
            "predicted": row["predicted"],
            "pending_review": row["image_uri"] is not None,
        }


FishService.add_asgi_middleware(RequestGuard, readiness=_readiness, on_reject=_count_rejection)
FishService.add_asgi_middleware(RequestIdMiddleware)

__all__ = ["FishModel", "FishService"]
