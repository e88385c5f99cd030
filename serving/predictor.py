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

An answer is the model process' ``{"model_name", "model_version", "top3": [{species, confidence}],
"unknown", "unknown_score"}`` as a :class:`ModelAnswer`, whose ``embedding`` attribute (not a key: it
is neither cached nor sent to clients) is the pooled feature vector of a fresh answer (None for a
cached one). :meth:`Predictor.explain` draws a class activation map over the photo (``/explain``),
with the same checks and the same cache (key: version + sha256 + species).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np

from fish_platform.imaging import InvalidImage, decode_image, resize_square, sha256_hex, to_model_input
from fish_platform.settings import ServingSettings
from serving.cache import PredictionCache, cache_key, explain_key
from serving.coalesce import Coalescer

Answer = dict[str, Any]
ModelCall = Callable[[list[np.ndarray]], Awaitable[list[Answer]]]
ExplainCall = Callable[[np.ndarray, str | None], Awaitable[dict[str, Any]]]
EMBEDDING_KEY = "embedding"  # carries the embedding across the process boundary, never cached
PROBABILITIES_KEY = "probabilities"  # the full calibrated vector, the same way (the prediction log)
EXPLAIN_MAX_SIDE = 512  # the heat map PNG is the photo scaled to at most this many pixels a side


class ModelAnswer(dict):
    """One image's answer (JSON-able keys) plus ``embedding``: float32 (channels,) or None, and
    ``probabilities``: the calibrated float32 vector in label order (None for a cached answer).

    A dict, so the cache and the responses take it as before; both are attributes so that
    ``json.dumps`` and the cache never see them (the prediction log reads them).
    """

    embedding: np.ndarray | None = None
    probabilities: np.ndarray | None = None  # float32 (n_labels,), label order; None when cached

    def to_wire(self) -> dict[str, Any]:
        """A plain dict for BentoML's hop between processes (it rebuilds dicts, dropping attributes)."""
        return {**self, EMBEDDING_KEY: self.embedding, PROBABILITIES_KEY: self.probabilities}

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> ModelAnswer:
        fields = dict(raw)
        embedding = fields.pop(EMBEDDING_KEY, None)
        probabilities = fields.pop(PROBABILITIES_KEY, None)
        answer = cls(fields)
        answer.embedding = None if embedding is None else np.asarray(embedding, dtype=np.float32)
        answer.probabilities = None if probabilities is None else np.asarray(probabilities, dtype=np.float32)
        return answer


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
        explain_model: ExplainCall | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
        self.explain_model = explain_model
        self.on_stale_version = on_stale_version
        self._calls: Coalescer[np.ndarray, Answer] = Coalescer(
            call_model, max_in_flight=MODEL_CALLS_IN_FLIGHT, max_items=config.batch_max_size
        )

    def read_upload(self, path: Path) -> bytes:
        """The uploaded bytes, or :class:`ImageRejected` (413 over the limit, 400 empty)."""
        size = path.stat().st_size
        if size > self.config.max_upload_bytes:
            message = f"{size:,} bytes is over the limit of {self.config.max_upload_bytes:,} bytes per image"
            raise ImageRejected(413, "too_large", message)
        data = path.read_bytes()
        if not data:
            raise ImageRejected(400, "empty", "the file has no bytes")
        return data

    async def prepare(self, path: Path, model: dict[str, Any]) -> PreparedImage:
        """Size check, cache lookup, and (on a miss) decoding for one uploaded file."""
        data = self.read_upload(path)
        key = cache_key(model["model_name"], model["model_version"], sha256_hex(data))
        if (hit := await self.cache.get(key)) is not None:
            return PreparedImage(key, answer=ModelAnswer(hit), cached=True)  # embedding: None
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
        for image, raw in zip(pending, answers, strict=True):
            answer = ModelAnswer.from_wire(raw)
            image.answer = answer
            if answer["model_version"] == model["model_version"]:
                await self.cache.set(image.key, answer)
            else:  # a swap mid-request: the key names the old version, so don't cache
                self.on_stale_version()

    async def run(self, arrays: list[np.ndarray]) -> list[ModelAnswer]:
        """The model's fresh answers to prepared arrays, uncached (the shadow's path)."""
        return [ModelAnswer.from_wire(raw) for raw in await self._calls.submit(arrays)]

    async def explain(
        self, path: Path, model: dict[str, Any], species: str | None
    ) -> tuple[bytes, dict[str, Any]]:
        """The photo with the class activation map of ``species`` (default: the top-1) over it, as PNG.

        The same checks as :meth:`prepare` (4xx with a reason), plus 400 ``unknown_species`` for a
        name the served version does not know. Returns the PNG and ``{species, model_version, cached}``.
        """
        data = self.read_upload(path)
        labels = [str(label) for label in model.get("labels", [])]
        if species is not None:
            species = resolve_species(species, labels)
        key = explain_key(model["model_name"], model["model_version"], sha256_hex(data), species)
        if (hit := await self.cache.get(key)) is not None and "png" in hit:
            return base64.b64decode(hit["png"]), {**hit.get("meta", {}), "cached": True}
        try:
            photo, array = await anyio.to_thread.run_sync(
                _decode_for_explain, data, int(model["image_size"]), self.config.max_pixels
            )
        except InvalidImage as exc:
            raise ImageRejected(400, exc.reason, str(exc)) from exc
        if self.explain_model is None:
            raise ModelUnavailable("explain_unavailable", "this service gives no explanations")
        try:
            explained = await self.explain_model(array, species)
        except Exception as exc:  # noqa: BLE001 - as for predictions: the model process could not answer
            raise model_unavailable(exc) from exc
        if explained.get("error"):
            raise ModelUnavailable("explain_unavailable", str(explained["error"]))
        from fish_platform.ml.explain import overlay_png  # matplotlib: only when a map is drawn

        png = await anyio.to_thread.run_sync(overlay_png, photo, np.asarray(explained["cam"], np.float32))
        meta = {
            "species": explained["species"],
            "model_version": explained["model_version"],
            "top3": explained.get("top3"),
        }
        if explained["model_version"] == model["model_version"]:
            await self.cache.set(key, {"png": base64.b64encode(png).decode("ascii"), "meta": meta})
        else:
            self.on_stale_version()
        return png, {**meta, "cached": False}


class ServedView:
    """What one model process serves (``{"loaded": ..., model_name, model_version, ...}``), asked at
    most every ``max_age_s`` and by one caller at a time; ``on_change`` sees each newly loaded version."""

    def __init__(
        self,
        ask: Callable[[], Awaitable[dict[str, Any]]],
        max_age_s: float,
        on_change: Callable[[dict[str, Any]], None] = lambda served: None,
    ) -> None:
        self._ask, self.max_age_s, self._on_change = ask, max_age_s, on_change
        self._now: dict[str, Any] = {"loaded": False, "error": "not asked yet"}
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        if time.monotonic() - self._at < self.max_age_s:
            return self._now
        async with self._lock:
            if time.monotonic() - self._at >= self.max_age_s:
                try:
                    served = await self._ask()
                except Exception as exc:  # noqa: BLE001 - the model process may be (re)starting
                    served = {"loaded": False, "error": f"model service unreachable: {type(exc).__name__}"}
                if served.get("loaded") and served.get("model_version") != self._now.get("model_version"):
                    self._on_change(served)
                self._now, self._at = served, time.monotonic()
        return self._now

    def forget(self) -> None:
        """The model moved on: ask again at the next request."""
        self._at = float("-inf")


def resolve_species(name: str, labels: Sequence[str]) -> str:
    """The label ``name`` means (exact, or with spaces for underscores as the page shows them), else 400."""
    wanted = name.strip()
    for label in labels:
        if wanted == label or wanted.replace(" ", "_").casefold() == label.replace(" ", "_").casefold():
            return label
    shown = ", ".join(labels[:10]) + (" ..." if len(labels) > 10 else "")
    raise ImageRejected(400, "unknown_species", f"the model knows no species {name!r}; it knows: {shown}")


def _decode_for_explain(data: bytes, size: int, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo (at most EXPLAIN_MAX_SIDE a side) to draw on, and the model's input from the same decode."""
    image = decode_image(data, max_pixels)
    array = np.asarray(resize_square(image, size), dtype=np.uint8)
    if max(image.size) > EXPLAIN_MAX_SIDE:
        image = image.copy()
        image.thumbnail((EXPLAIN_MAX_SIDE, EXPLAIN_MAX_SIDE))
    return np.asarray(image.convert("RGB"), dtype=np.uint8), array
