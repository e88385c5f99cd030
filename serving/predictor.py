"""The request path of the public service, without BentoML: check, cache, decode, ask the model.

:class:`Predictor` takes an uploaded file to an answer:

1. :meth:`Predictor.prepare` checks the size, reads the bytes, looks the image up in the prediction
   cache (key: model name + version + sha256 of the bytes) and, on a miss, decodes it into the
   model's uint8 input in a worker thread. A bad file raises :class:`ImageRejected` (a 4xx with a
   reason).
2. :meth:`Predictor.answer` sends the arrays of cache misses to the model process through the
   :class:`serving.coalesce.Coalescer` (requests that arrive while a call is open share the next one)
   and caches each answer under the version that produced it. A model that cannot answer raises
   :class:`ModelUnavailable` (a 503).

An answer is the model process' ``{"model_name", "model_version", "top3": [{species, confidence}]}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np

from fish_platform.imaging import InvalidImage, sha256_hex, to_model_input
from fish_platform.settings import ServingSettings
from serving.cache import PredictionCache, cache_key
from serving.coalesce import Coalescer

Answer = dict[str, Any]
ModelCall = Callable[[list[np.ndarray]], Awaitable[list[Answer]]]
# Model calls an API worker keeps open at once; images of requests that arrive meanwhile share the
# next call, so the hop to the model process is paid per batch, not per image (docs/serving.md).
MODEL_CALLS_IN_FLIGHT = 2


class ImageRejected(Exception):
    """An upload the service will not classify: ``status`` 4xx, ``reason`` for code, a message for people."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class ModelUnavailable(Exception):
    """The model process could not answer (not loaded, overloaded, restarting): a 503."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class PreparedImage:
    """One upload on its way: its cache key, and either the answer (a hit) or the model's input."""

    key: str
    answer: Answer | None = None
    cached: bool = False
    array: np.ndarray | None = None


def model_unavailable(exc: BaseException) -> ModelUnavailable:
    """Name a failed model call: 503 from the model process means no model is loaded there."""
    reason = "model_not_loaded" if getattr(exc, "error_code", None) == 503 else "model_unavailable"
    return ModelUnavailable(reason, f"{type(exc).__name__}: {exc}")


class Predictor:
    """Prepare uploads and answer them, for one API worker (see the module docstring)."""

    def __init__(
        self,
        config: ServingSettings,
        cache: PredictionCache,
        call_model: ModelCall,
        on_stale_version: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.cache = cache
        self.on_stale_version = on_stale_version
        self._calls: Coalescer[np.ndarray, Answer] = Coalescer(
            call_model, max_in_flight=MODEL_CALLS_IN_FLIGHT, max_items=config.batch_max_size
        )

    async def prepare(self, path: Path, model: dict[str, Any]) -> PreparedImage:
        """Size check, cache lookup, and (on a miss) decoding for one uploaded file."""
        size = path.stat().st_size
        if size > self.config.max_upload_bytes:
            message = f"{size:,} bytes is over the limit of {self.config.max_upload_bytes:,} bytes per image"
            raise ImageRejected(413, "too_large", message)
        data = path.read_bytes()
        if not data:
            raise ImageRejected(400, "empty", "the file has no bytes")
        key = cache_key(model["model_name"], model["model_version"], sha256_hex(data))
        if (hit := await self.cache.get(key)) is not None:
            return PreparedImage(key, answer=hit, cached=True)
        try:
            array = await anyio.to_thread.run_sync(
                to_model_input, data, int(model["image_size"]), self.config.max_pixels
            )
        except InvalidImage as exc:
            raise ImageRejected(400, exc.reason, str(exc)) from exc
        return PreparedImage(key, array=array)

    async def prepare_all(
        self, paths: Sequence[Path], model: dict[str, Any]
    ) -> list[PreparedImage | ImageRejected]:
        """:meth:`prepare` for each file; a rejected file becomes its :class:`ImageRejected`."""

        async def one(path: Path) -> PreparedImage | ImageRejected:
            try:
                return await self.prepare(path, model)
            except ImageRejected as rejected:
                return rejected

        return list(await asyncio.gather(*(one(path) for path in paths)))

    async def answer(self, images: Sequence[PreparedImage], model: dict[str, Any]) -> None:
        """Give every prepared image without an answer the model's answer, and cache it."""
        pending = [image for image in images if image.answer is None]
        if not pending:
            return
        try:
            answers = await self._calls.submit([image.array for image in pending])
        except Exception as exc:  # noqa: BLE001 - overloaded, restarting or model-less model process
            raise model_unavailable(exc) from exc
        for image, answer in zip(pending, answers, strict=True):
            image.answer = answer
            if answer["model_version"] == model["model_version"]:
                await self.cache.set(image.key, answer)
            else:  # a swap mid-request: the key names the old version, so don't cache
                self.on_stale_version()
