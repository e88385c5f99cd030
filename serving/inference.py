"""The served model: load ``models:/<name>@<alias>`` from the MLflow registry, classify in batches,
follow the alias.

Plain module (no BentoML): the service wraps :class:`ModelHolder` in a batchable API, the
benchmark and the tests use it directly.

* Species names and the input size come from the logged model's metadata (``labels``,
  ``image_size``), never from a list in code.
* Hot reload: :meth:`ModelHolder.refresh` resolves the alias, and only when it points at another
  version it loads and warms that version *beside* the current one, then swaps one reference.
  A batch takes a snapshot of that reference first, so an in-flight batch finishes on the model it
  started with and is labelled with that model's version.
* Every model call also returns the last convolutional feature map (the bundles' second output, or a
  Keras view built on the base's output on TensorFlow): its spatial mean is each answer's
  ``embedding``, and with the dense head's weights it gives class activation maps
  (:meth:`ServedModel.explain`, ``POST /explain``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from fish_platform.contract import PRODUCTION_ALIAS, mlflow_error_is, model_version_uri, top_k
from fish_platform.imaging import resize_square
from fish_platform.logs import log_event
from fish_platform.ml.calibration import CalibrationRecord, featureless
from fish_platform.ml.explain import class_activation_map
from fish_platform.ml.runtimes import probabilities_and_embeddings
from serving.predictor import ModelAnswer

log = logging.getLogger("serving.inference")


class Classifier(Protocol):
    """What the service needs from the logged model (``FishClassifierModel`` in fish_platform.ml)."""

    labels: Sequence[str]
    image_size: int
    metadata: Mapping[str, Any]

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """``(N, size, size, 3)`` uint8 -> ``(N, n_classes)`` probabilities."""
        ...


class FeatureClassifier(Classifier, Protocol):
    """A classifier that also gives its feature map (optional: embeddings and maps need it)."""

    head: tuple[np.ndarray, np.ndarray] | None  # dense kernel (channels, n_classes), bias

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(N, size, size, 3)`` -> probabilities and the ``(N, h, w, channels)`` feature map (or None)."""
        ...


class ExplainUnavailable(RuntimeError):
    """The served version gives no class activation maps (its runtime has no feature map)."""


def run_model(model: Classifier, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities and, where the model gives it, the feature map of one batch (one call)."""
    with_features = getattr(model, "predict_with_features", None)
    if with_features is None:
        return np.asarray(model.predict_arrays(batch)), None
    probs, features = with_features(batch)
    return np.asarray(probs), (None if features is None else np.asarray(features, dtype=np.float32))


class ModelNotLoaded(RuntimeError):
    """No production model is loaded (no alias yet, or the first load failed)."""


@dataclass(frozen=True)
class ModelInfo:
    model_name: str
    version: str
    image_size: int
    labels: tuple[str, ...]
    variant: str | None = None
    weights: str | None = None
    run_id: str | None = None
    runtime: str = "tensorflow"  # what computes the answers: tensorflow, openvino or onnx
    loaded_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.version,
            "image_size": self.image_size,
            "labels": list(self.labels),
            "variant": self.variant,
            "weights": self.weights,
            "run_id": self.run_id,
            "runtime": self.runtime,
            "loaded_at": self.loaded_at,
        }


@dataclass(frozen=True)
class ServedModel:
    info: ModelInfo
    model: Classifier
    # Temperature and open-set threshold fitted with the version (fish_platform.ml.trust); None for a
    # version registered before calibration existed: raw softmax and never "unknown".
    calibration: CalibrationRecord | None = None
    unknown_threshold: float | None = None  # FISH_UNKNOWN_THRESHOLD: overrides the record's threshold

    def answer(
        self, probabilities: np.ndarray, embedding: np.ndarray | None = None, blank: bool = False
    ) -> ModelAnswer:
        """One image's probabilities -> the answer: calibrated top-3 and whether it is "unknown".

        ``blank``: the picture is featureless (``fish_platform.ml.calibration.featureless``), which is
        "unknown" whatever the score, when the version has a calibration record to answer "unknown" with.
        """
        record = self.calibration
        calibrated = record.calibrate(probabilities[None])[0] if record else probabilities
        answer = ModelAnswer(
            {
                "model_name": self.info.model_name,
                "model_version": self.info.version,
                "top3": top_k(calibrated, self.info.labels),
                "unknown": False,
                "unknown_score": None,
            }
        )
        answer.embedding = embedding
        answer.probabilities = np.asarray(calibrated, dtype=np.float32)  # the full vector, for the log
        if record is not None:
            embeddings = None if embedding is None else np.asarray(embedding)[None]
            method = record.method_for(embeddings)
            score = float(record.scores(probabilities[None], embeddings)[0])
            threshold = record.threshold_for(method)
            if self.unknown_threshold is not None and method == record.score_method:
                threshold = self.unknown_threshold
            answer["unknown"], answer["unknown_score"] = bool(score < threshold or blank), round(score, 6)
        return answer

    def explain(self, image: np.ndarray, species: str | None = None) -> dict[str, Any]:
        """One uint8 image -> the class activation map (h, w in [0, 1]) of ``species`` (default top-1).

        CAM = relu(feature_map @ kernel[:, c]) / max, exact for the global-pooling + one dense head.
        """
        head = getattr(self.model, "head", None)
        batch = fit_to_size(np.asarray(image, dtype=np.uint8), self.info.image_size)[None]
        probs, features = run_model(self.model, batch)
        if features is None or head is None:
            raise ExplainUnavailable(
                f"version {self.info.version} ({self.info.runtime}) gives no feature map"
            )
        answer = self.answer(probs[0], features[0].mean(axis=(0, 1)))
        if species is not None and species not in self.info.labels:
            raise ValueError(f"version {self.info.version} has no species {species!r}")
        index = int(np.argmax(probs[0])) if species is None else self.info.labels.index(species)
        return {
            "model_name": self.info.model_name,
            "model_version": self.info.version,
            "class_index": index,
            "species": self.info.labels[index],
            "top3": answer["top3"],
            "cam": class_activation_map(features[0], head[0], index),
        }


@dataclass(frozen=True)
class AliasTarget:
    version: str
    run_id: str | None = None


def fit_to_size(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an already-prepared uint8 image whose size is not the model's.

    Only needed in the moment of a swap to a model with another input size, when a request was
    prepared for the previous one; normally the caller prepared the image at ``size`` already.
    """
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(resize_square(Image.fromarray(image), size), dtype=np.uint8)


def classify_batch(served: ServedModel, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """Classify ``images`` (each ``(h, w, 3)`` uint8) with one model call."""
    if not images:
        return []
    size = served.info.image_size
    batch = np.stack([fit_to_size(np.asarray(image, dtype=np.uint8), size) for image in images])
    probs, pooled = probabilities_and_embeddings(served.model, batch)
    if probs.shape != (len(images), len(served.info.labels)):
        raise RuntimeError(f"model returned shape {probs.shape} for {len(images)} images")
    embeddings = pooled if pooled is not None else [None] * len(probs)
    blank = featureless(batch)
    return [
        served.answer(row, embedding, bool(flat))
        for row, embedding, flat in zip(probs, embeddings, blank, strict=True)
    ]


def configure_tf_threads(intra_op: int) -> None:
    """Size TensorFlow's compute (intra-op) thread pool; 0 keeps TensorFlow's default (one per core).

    Must run before TensorFlow executes anything in this process. On a small machine the model
    process shares the cores with the API process, and a compute thread per core competes with it
    (B0 at 96 px on 2 cores: 1 thread raised uncached throughput by a fifth; see docs/benchmarks.md).
    """
    if intra_op <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    except RuntimeError as exc:  # TensorFlow was initialised already: keep its pool
        log_event(log, "tensorflow threads not set", logging.WARNING, error=str(exc))


RUNTIMES = ("auto", "openvino", "onnx", "tensorflow")


class KerasFeatureClassifier:
    """The logged Keras classifier plus a view that also outputs the base's feature map (TensorFlow)."""

    def __init__(self, wrapped: Any) -> None:
        import tensorflow as tf

        from fish_platform.ml.explain import head_weights
        from fish_platform.ml.optimize import feature_model

        self._wrapped = wrapped
        self.labels, self.image_size = wrapped.labels, wrapped.image_size
        self.metadata = wrapped.metadata
        network = feature_model(wrapped.keras_model)  # shares the weights: the same probabilities
        self.head = head_weights(wrapped.keras_model) if network is not None else None
        self._forward = None
        if network is not None:
            size = self.image_size

            @tf.function(
                input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)], reduce_retracing=True
            )
            def forward(images: Any) -> Any:
                return network(tf.cast(images, tf.float32), training=False)

            self._forward = forward

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        return self.predict_with_features(images)[0]

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        batch = np.asarray(images, dtype=np.uint8)
        if self._forward is None or len(batch) == 0:
            return self._wrapped.predict_arrays(batch), None
        parts = [self._forward(batch[start : start + 64]) for start in range(0, len(batch), 64)]
        probs = np.concatenate([np.asarray(p, dtype=np.float32) for p, _ in parts])
        return probs, np.concatenate([np.asarray(f, dtype=np.float32) for _, f in parts])


def _default_loader(uri: str) -> Classifier:
    from fish_platform.ml.packaging import load_classifier  # TensorFlow only in the model process

    return KerasFeatureClassifier(load_classifier(uri))


class BundleClassifier:
    """A version's optimized bundle (``serving/<format>/`` in its run) on its runtime: no TensorFlow."""

    def __init__(self, folder: Any, runtime: str, threads: int | None) -> None:
        from fish_platform.ml.export import load_exported, read_export, read_head

        exported = read_export(folder)
        self._model = load_exported(folder, threads)
        self.head = read_head(folder) if getattr(self._model, "has_features", False) else None
        self.runtime = runtime
        self.labels = list(exported.labels)
        self.image_size = exported.image_size
        self.metadata = {**exported.manifest.get("source", {}), "runtime": runtime}

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.predict_arrays(images), dtype=np.float32)

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        probs, features = self._model.predict_with_features(images)
        return np.asarray(probs, dtype=np.float32), features


def _bundle_for(client: Any, uri: str, runtime: str, threads: int | None) -> BundleClassifier | None:
    """Download the version's bundle for ``runtime`` (``auto``: the first of RUNTIME_PREFERENCE)."""
    from fish_platform.ml.serving_bundles import download_bundle

    name, version = uri.removeprefix("models:/").rsplit("/", 1)
    run_id = client.get_model_version(name, version).run_id
    found = download_bundle(client, run_id, runtime, client.tracking_uri)
    return BundleClassifier(found[0], found[1], threads) if found else None


def registry_loader(
    tracking_uri: str | None,
    registry_uri: str | None = None,
    runtime: str = "tensorflow",
    threads: int = 0,
) -> Callable[[str], Classifier]:
    """A loader that downloads ``models:/`` URIs from *this* registry, on ``runtime`` (FISH_RUNTIME).

    ``auto`` serves the version's OpenVINO bundle (then ONNX) when it has one, else TensorFlow;
    ``openvino`` or ``onnx`` refuse a version without that bundle (the previous version keeps
    serving). ``threads`` (0: the container's CPU limit) size the runtime's compute pool.
    ``mlflow.pyfunc.load_model`` resolves ``models:/`` through MLflow's process-wide URIs, not the
    client the alias was read with; without the URIs set here, a service configured only by
    ``FISH_DATA_DIR`` would find the alias and then fail to download the version.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"FISH_RUNTIME must be one of {RUNTIMES}, got {runtime!r}")

    def load(uri: str) -> Classifier:
        import mlflow
        from mlflow import MlflowClient

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri or tracking_uri or mlflow.get_tracking_uri())
        if runtime != "tensorflow":
            client = MlflowClient(mlflow.get_tracking_uri(), registry_uri=mlflow.get_registry_uri())
            bundle = _bundle_for(client, uri, runtime, threads or None)
            if bundle is not None:
                return bundle
            if runtime != "auto":
                raise RuntimeError(f"{uri} has no {runtime} model (FISH_RUNTIME={runtime})")
        configure_tf_threads(threads)
        return _default_loader(uri)

    return load


def registry_calibration(
    tracking_uri: str | None, registry_uri: str | None = None
) -> Callable[[AliasTarget], CalibrationRecord | None]:
    """Reads the calibration record logged with a version's run (None when it has none)."""

    def load(target: AliasTarget) -> CalibrationRecord | None:
        import mlflow
        from mlflow.exceptions import MlflowException

        from fish_platform.ml.trust import load_calibration

        if target.run_id is None:
            return None
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        try:
            record = load_calibration(target.run_id, tracking_uri)
        except (MlflowException, OSError) as exc:
            log_event(log, "no calibration with this version", version=target.version, error=str(exc)[:200])
            return None
        log_event(
            log,
            "open-set score of this version",
            version=target.version,
            score=record.score_method,
            threshold=record.threshold,
            feature_space=record.space is not None,
        )
        return record

    return load


class RegistryAlias:
    """Resolves ``<name>@<alias>`` to a version through the MLflow client (no model download)."""

    def __init__(
        self,
        model_name: str,
        alias: str = PRODUCTION_ALIAS,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
    ) -> None:
        self.model_name = model_name
        self.alias = alias
        self._uris = (tracking_uri, registry_uri)
        self._client: Any = None

    def __call__(self) -> AliasTarget | None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        if self._client is None:
            # Made at the first lookup, inside ModelHolder.refresh's error handling: two model
            # processes starting on a new SQLite store race to create its tables, and the loser's
            # error must be a failed lookup, retried at the next poll, not a dead process.
            self._client = MlflowClient(tracking_uri=self._uris[0], registry_uri=self._uris[1])
        try:
            mv = self._client.get_model_version_by_alias(self.model_name, self.alias)
        except MlflowException as exc:
            if mlflow_error_is(exc, "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return AliasTarget(version=str(mv.version), run_id=mv.run_id)


class ModelHolder:
    """Holds the served model and follows the registry alias.

    ``resolve`` returns the alias target (or ``None`` when there is none yet), ``load`` turns a
    model URI into a :class:`Classifier`; both are injectable for tests.
    """

    def __init__(
        self,
        model_name: str,
        resolve: Callable[[], AliasTarget | None],
        load: Callable[[str], Classifier] = _default_loader,
        warmup_batch_sizes: Sequence[int] = (1,),
        on_swap: Callable[[ModelInfo | None, ModelInfo], None] | None = None,
        reload_jitter_s: float = 0.0,
        rng: random.Random | None = None,
        wait: Callable[[float], bool] | None = None,
        load_calibration: Callable[[AliasTarget], CalibrationRecord | None] = lambda target: None,
        unknown_threshold: float | None = None,
        alias: str = PRODUCTION_ALIAS,
        unload_when_unset: bool = False,
        on_unload: Callable[[ModelInfo], None] | None = None,
    ) -> None:
        self.model_name = model_name
        self.alias = alias  # for messages; ``resolve`` is what reads the registry
        # The challenger follows its alias away too: cleared -> unloaded. The champion keeps serving.
        self._unload_when_unset = unload_when_unset
        self._on_unload = on_unload
        self._load_calibration = load_calibration
        self._unknown_threshold = unknown_threshold
        # Spread the pods' downloads after a promotion over [0, jitter] s, so that N pods do not pull
        # the same artifacts from one MLflow server at the same instant (the first load is not delayed).
        self._reload_jitter_s = max(0.0, reload_jitter_s)
        self._rng = rng or random.Random()
        self._wait = wait  # default: the stop event's wait (returns True when shutting down)
        self._resolve = resolve
        self._load = load
        self._warmup_batch_sizes = tuple(warmup_batch_sizes)
        self._on_swap = on_swap
        self._current: ServedModel | None = None
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    @property
    def current(self) -> ServedModel | None:
        return self._current

    @property
    def info(self) -> ModelInfo | None:
        served = self._current
        return served.info if served is not None else None

    def classify(self, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        served = self._current  # one snapshot per batch: a concurrent swap cannot mix two models
        if served is None:
            raise ModelNotLoaded(self.last_error or f"no @{self.alias} model loaded yet")
        return classify_batch(served, images)

    def explain(self, image: np.ndarray, species: str | None = None) -> dict[str, Any]:
        served = self._current  # one snapshot, as for a batch
        if served is None:
            raise ModelNotLoaded(self.last_error or f"no @{self.alias} model loaded yet")
        return served.explain(image, species)

    def refresh(self) -> bool:
        """Load the alias' version if it differs from the served one; True when it swapped."""
        with self._refresh_lock:
            try:
                target = self._resolve()
            except Exception as exc:  # noqa: BLE001 - a registry hiccup must not stop serving
                self.last_error = f"registry: {type(exc).__name__}: {exc}"
                log_event(log, "registry lookup failed", logging.WARNING, error=self.last_error)
                return False
            current = self._current
            if target is None:
                unset = f"no version of {self.model_name!r} has the {self.alias} alias"
                if current is not None and self._unload_when_unset:
                    self._current, self.last_error = None, unset
                    log_event(log, "model unloaded", alias=self.alias, version=current.info.version)
                    if self._on_unload is not None:
                        self._on_unload(current.info)
                    return True
                if current is None:
                    self.last_error = unset
                return False
            if current is not None and current.info.version == target.version:
                return False
            if current is not None and self._reload_jitter_s > 0:
                delay = self._rng.uniform(0.0, self._reload_jitter_s)
                log_event(log, "staggered reload", version=target.version, delay_s=round(delay, 2))
                if (self._wait or self._stop.wait)(delay):
                    return False  # shutting down
            try:
                served = self._load_version(target)
            except Exception as exc:  # noqa: BLE001 - keep serving the previous version
                self.last_error = f"loading version {target.version}: {type(exc).__name__}: {exc}"
                log_event(log, "model load failed", logging.ERROR, error=self.last_error)
                return False
            self._current = served  # the swap: one reference assignment
            self.last_error = None
            log_event(
                log,
                "model swapped in",
                model_name=served.info.model_name,
                version=served.info.version,
                previous_version=current.info.version if current else None,
                image_size=served.info.image_size,
                n_labels=len(served.info.labels),
                variant=served.info.variant,
            )
            if self._on_swap is not None:
                self._on_swap(current.info if current else None, served.info)
            return True

    def _load_version(self, target: AliasTarget) -> ServedModel:
        started = time.perf_counter()
        uri = model_version_uri(self.model_name, target.version)  # the resolved version, not a moving alias
        model = self._load(uri)
        metadata = dict(getattr(model, "metadata", {}) or {})
        info = ModelInfo(
            model_name=self.model_name,
            version=target.version,
            image_size=int(model.image_size),
            labels=tuple(str(label) for label in model.labels),
            variant=metadata.get("variant"),
            weights=metadata.get("weights"),
            run_id=target.run_id,
            runtime=str(getattr(model, "runtime", "tensorflow")),
        )
        calibration = self._load_calibration(target)
        served = ServedModel(info, model, calibration, self._unknown_threshold)
        for n in self._warmup_batch_sizes:  # compile before the model takes traffic
            classify_batch(served, [np.zeros((info.image_size, info.image_size, 3), np.uint8)] * n)
        log_event(
            log,
            "model loaded",
            uri=uri,
            seconds=round(time.perf_counter() - started, 2),
            image_size=info.image_size,
            calibrated=calibration is not None,
        )
        return served

    def start_polling(self, interval_s: float) -> None:
        """Follow the alias from a daemon thread every ``interval_s`` seconds (0 disables)."""
        if interval_s <= 0 or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="fish-model-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
