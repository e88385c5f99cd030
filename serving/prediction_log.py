"""The prediction log's writer in the API process (no BentoML): request ids, a buffer, Parquet flushes.

Every answered image gets a ``request_id`` and one row of
:data:`fish_platform.monitoring.log_schema.PREDICTION_SCHEMA`. :meth:`PredictionLog.append` only puts
the row in an in-memory buffer (a list append under a lock: nothing on the request path waits for
storage); a background thread writes the buffer as one Parquet file per UTC day under
``<FISH_DATA_URI>/predictions/date=YYYY-MM-DD/`` when it holds ``flush_rows`` rows, every
``flush_seconds``, and on shutdown (:meth:`PredictionLog.close`). Each file is written whole and
atomically (``fish_platform.data.storage``), so a crash loses at most the rows still buffered and
never leaves a half-written file (docs/monitoring.md).

With ``keep_images`` the uploaded bytes are kept too, content-addressed:
``<FISH_DATA_URI>/images/<sha256[:2]>/<sha256>.<ext>`` (written by the same thread, once per content).

:class:`RecentRequests` remembers the last requests' (sha256, model version, top-1) so ``/feedback``
can name the image a correction is about without reading the log back.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fish_platform.data.storage import Storage, join, open_storage, write_parquet
from fish_platform.logs import log_event
from fish_platform.monitoring.log_schema import (
    PREDICTION_SCHEMA,
    PREDICTIONS_PREFIX,
    ROLE_CHAMPION,
    partition,
)

log = logging.getLogger("serving.prediction_log")

IMAGES_PREFIX = "images"
REQUEST_ID_HEADER = "X-Request-ID"
RECENT_REQUESTS = 20_000  # ids /feedback finds in memory (~400 bytes each); older ones: the log
MAX_BUFFER_FACTOR = 20  # rows held while storage fails: flush_rows x this, then the oldest go
_IMAGE_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif"}

CLIENT_ID_HEADER = b"x-client-id"  # names a client for the sticky challenger split (serving.shadow)
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("fish_request_id", default=None)
_client_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("fish_client_key", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str:
    """The id :class:`RequestIdMiddleware` gave this request (a fresh one outside it)."""
    return _request_id.get() or new_request_id()


def current_client_key() -> str | None:
    """Who sent this request: its ``X-Client-ID`` header, else its address (None outside a request)."""
    return _client_key.get()


def _client_of(scope: dict) -> str | None:
    for name, value in scope.get("headers") or []:
        if name.lower() == CLIENT_ID_HEADER and value:
            return "id:" + value[:128].decode("latin-1")
    client = scope.get("client")
    return f"addr:{client[0]}" if client else None


def item_request_id(batch_id: str, index: int) -> str:
    """One id per image of a ``/predict_batch`` request: feedback names an image, not a batch."""
    return f"{batch_id}-{index}"


class RequestIdMiddleware:
    """ASGI: give each request on ``paths`` an id (a context variable) and send it as ``X-Request-ID``.

    The id is made here, before the endpoint runs, so the header and the JSON body agree without the
    endpoint taking BentoML's context parameter (which would override the status of error answers).
    """

    def __init__(self, app: Any, paths: tuple[str, ...] = ("/predict", "/predict_batch")) -> None:
        self.app, self.paths = app, paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        token = _request_id.set(request_id)
        client_token = _client_key.set(_client_of(scope))

        async def send_with_id(message: dict) -> None:
            if message.get("type") == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)
            _client_key.reset(client_token)


def _field(answer: Any, name: str) -> Any:
    """An answer's field, whether the answer is a dict or an object with attributes."""
    value = getattr(answer, name, None)
    if value is None and isinstance(answer, Mapping):
        value = answer.get(name)
    return value


def _floats(values: Any) -> np.ndarray | None:
    """A float32 copy (Arrow converts it in the flush thread; a Python list would cost ~75 us here)."""
    if values is None:
        return None
    return np.array(values, dtype=np.float32).ravel()


def image_facts(path: Path) -> tuple[int | None, int | None, str]:
    """Width, height and file extension of an upload, from its header only (no pixel decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.width, image.height, _IMAGE_EXTENSIONS.get(image.format or "", "bin")
    except Exception:  # noqa: BLE001 - the model already accepted it; a fact we can't read is null
        return None, None, "bin"


def prediction_row(
    request_id: str,
    sha256: str,
    answer: Any,
    served: Mapping[str, Any],
    cached: bool,
    latency_ms: float,
    width: int | None = None,
    height: int | None = None,
    model_input: np.ndarray | None = None,
    role: str = ROLE_CHAMPION,
    served_to_client: bool = True,
) -> dict[str, Any]:
    """One row of PREDICTION_SCHEMA for one model's answer to one image (by default the champion's,
    the one the client got; a shadow answer has its ``role`` and ``served_to_client=False``)."""
    top3 = list(_field(answer, "top3") or [])
    unknown_score = _field(answer, "unknown_score")
    brightness = _field(answer, "brightness")
    if brightness is None and model_input is not None:
        pixels = np.asarray(model_input).ravel()  # an integer sum: a third of the time of .mean()
        brightness = int(np.add.reduce(pixels, dtype=np.uint64)) / max(1, pixels.size)
    embedding = None if cached else _floats(_field(answer, "embedding"))
    return {
        "request_id": request_id,
        "ts": datetime.now(UTC),
        "sha256": sha256,
        "model_name": _field(answer, "model_name") or served.get("model_name"),
        "model_version": str(_field(answer, "model_version") or served.get("model_version")),
        "runtime": served.get("runtime"),
        "role": role,
        "served": bool(served_to_client),
        "labels": list(_field(answer, "labels") or served.get("labels") or []) or None,
        "probabilities": _floats(_field(answer, "probabilities")),
        "top_species": [str(p["species"]) for p in top3],
        "top_scores": [float(p["confidence"]) for p in top3],
        "unknown": bool(_field(answer, "unknown")) if unknown_score is not None else None,
        "unknown_score": None if unknown_score is None else float(unknown_score),
        "cached": bool(cached),
        "latency_ms": float(latency_ms),
        "width": width,
        "height": height,
        "brightness": None if brightness is None else float(brightness),
        "embedding": embedding,
    }


_FLOAT_LISTS = {f.name for f in PREDICTION_SCHEMA if f.type == pa.list_(pa.float32())}


def _float_list_column(values: list[Any]) -> pa.Array:
    """A list<float32> column from per-row float32 vectors (or None) without a Python loop per value.

    ``pa.Table.from_pylist`` converts every float of every embedding one by one: 180 ms for 500 rows
    of 1,280 values, holding the GIL in the API process; this builds the column from one concatenated
    array in about 1 ms.
    """
    present = [v is not None for v in values]
    vectors = [np.asarray(v, dtype=np.float32).ravel() for v in values if v is not None]
    lengths = [len(v) for v in vectors]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    offsets[1:][np.array(present, dtype=bool)] = lengths
    offsets = np.cumsum(offsets, dtype=np.int32)
    flat = np.concatenate(vectors) if vectors else np.zeros(0, dtype=np.float32)
    mask = None if all(present) else pa.array([not p for p in present])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32()), mask=mask)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Buffered rows as a table of :data:`PREDICTION_SCHEMA`, column by column."""
    columns = {
        field.name: _float_list_column([row.get(field.name) for row in rows])
        if field.name in _FLOAT_LISTS
        else pa.array([row.get(field.name) for row in rows], field.type)
        for field in PREDICTION_SCHEMA
    }
    return pa.Table.from_pydict(columns, schema=PREDICTION_SCHEMA)


def sha256_of_key(cache_key: str) -> str:
    """The image digest a prediction cache key ends with (``serving.cache.cache_key``)."""
    return cache_key.rsplit(":", 1)[-1]


def image_uri(data_uri: str, sha256: str, ext: str) -> str:
    """Where a kept upload lives: content-addressed, so the same photo is stored once."""
    return join(data_uri, IMAGES_PREFIX, sha256[:2], f"{sha256}.{ext}")


def _writer_id() -> str:
    host = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Recent:
    sha256: str
    model_version: str
    predicted: str | None
    image_ext: str | None = None


class RecentRequests:
    """A bounded map request id -> :class:`Recent` (the newest ``capacity`` requests; thread-safe)."""

    def __init__(self, capacity: int = RECENT_REQUESTS) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Recent] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, request_id: str, recent: Recent) -> None:
        with self._lock:
            self._items[request_id] = recent
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, request_id: str) -> Recent | None:
        with self._lock:
            return self._items.get(request_id)

    def __len__(self) -> int:
        return len(self._items)


class PredictionLog:
    """Buffered rows -> Parquet under ``<data_uri>/predictions/`` (see the module docstring)."""

    def __init__(
        self,
        data_uri: str,
        flush_rows: int = 500,
        flush_seconds: float = 10.0,
        keep_images: bool = False,
        s3_endpoint_url: str | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.data_uri = data_uri
        self.flush_rows = max(1, int(flush_rows))
        self.flush_seconds = float(flush_seconds)
        self.keep_images = keep_images
        self.storage = storage or open_storage(data_uri, s3_endpoint_url)
        self.writer_id = _writer_id()
        self.rows_written = 0
        self.rows_dropped = 0
        self.files_written = 0
        self._rows: list[dict[str, Any]] = []
        self._images: dict[str, tuple[bytes, str]] = {}  # sha256 -> (bytes, ext), waiting for a flush
        self._images_kept: set[str] = set()  # written by this process (skip the existence check)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time (thread, shutdown, feedback)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def start(self) -> PredictionLog:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
        return self

    def append(self, row: dict[str, Any], image: tuple[bytes, str] | None = None) -> None:
        """Buffer one row (and the upload, when images are kept); never waits for storage."""
        with self._lock:
            self._rows.append(row)
            if image is not None and self.keep_images and row["sha256"] not in self._images_kept:
                self._images.setdefault(row["sha256"], image)
            full = len(self._rows) >= self.flush_rows
        if full:
            self._wake.set()

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.flush()

    def flush(self) -> int:
        """Write what is buffered now; returns the rows written. Failed rows stay for the next try."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
                images, self._images = self._images, {}
            for sha, (data, ext) in images.items():
                try:
                    uri = image_uri(self.data_uri, sha, ext)
                    if not self.storage.exists(uri):
                        self.storage.write_bytes(uri, data)
                    self._images_kept.add(sha)
                except Exception as exc:  # noqa: BLE001 - storage down: keep the image for the next flush
                    with self._lock:
                        self._images.setdefault(sha, (data, ext))
                    log_event(log, "kept image not written", logging.WARNING, error=repr(exc))
            if not rows:
                return 0
            by_day: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_day.setdefault(row["ts"].strftime("%Y-%m-%d"), []).append(row)
            written = 0
            for day, day_rows in by_day.items():
                try:
                    self._write(day, day_rows)
                    written += len(day_rows)
                except Exception as exc:  # noqa: BLE001 - storage down: the rows wait (bounded)
                    self._requeue(day_rows)
                    log_event(
                        log,
                        "prediction log flush failed",
                        logging.WARNING,
                        rows=len(day_rows),
                        error=repr(exc),
                    )
            self.rows_written += written
            return written

    def _write(self, day: str, rows: list[dict[str, Any]]) -> None:
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"part-{stamp}-{self.writer_id}-{self._seq:06d}.parquet"
        uri = join(self.data_uri, PREDICTIONS_PREFIX, partition(day), name)
        write_parquet(self.storage, uri, rows_to_table(rows), row_group_size=10_000)
        self.files_written += 1

    def _requeue(self, rows: list[dict[str, Any]]) -> None:
        limit = self.flush_rows * MAX_BUFFER_FACTOR
        with self._lock:
            self._rows = rows + self._rows
            if len(self._rows) > limit:
                dropped = len(self._rows) - limit
                self._rows = self._rows[dropped:]
                self.rows_dropped += dropped

    def close(self, timeout: float = 30.0) -> int:
        """Stop the thread and write what is left (graceful shutdown); returns the rows written."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        deadline = time.monotonic() + timeout
        written = self.flush()
        while self._rows and time.monotonic() < deadline:  # a failing store: a few more tries
            time.sleep(0.5)
            written += self.flush()
        return written
