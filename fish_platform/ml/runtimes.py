"""Inference runtimes for the exported classifier: OpenVINO, ONNX Runtime, LiteRT and TensorFlow.

Every runtime class has the same small interface, so the service, the CLI and the benchmarks can
swap one for another:

* ``name``: ``"openvino"``, ``"onnx"``, ``"litert"`` or ``"tensorflow"``;
* ``threads``: the compute threads it was built with;
* ``image_size`` and ``n_classes`` (read from the model file);
* ``predict_arrays(images)``: ``(N, S, S, 3)`` RGB pixels in [0, 255] (float32, or uint8 which
  is cast) -> ``float32 (N, n_classes)`` softmax probabilities, for any ``N`` (0 included);
* ``has_features`` and ``predict_with_features(images)``: the probabilities and, for a model
  exported with its feature map as a second output (:func:`fish_platform.ml.optimize.output_roles`),
  ``float32 (N, h, w, channels)`` (else ``None``), from the same run: what class activation maps
  and pooled embeddings are computed from.

The models take raw pixel values: EfficientNet's rescaling and normalization are inside the graph,
so no runtime does any preprocessing of its own.

Importing this module, and loading or running an OpenVINO, ONNX or LiteRT model, never imports
TensorFlow (a serving process can then leave it out of its image). Only
:class:`TensorFlowClassifier`, the reference the others are compared with, imports it, in its
constructor. Each runtime's own package is imported when a model is loaded, not at import time.

Thread counts come from :func:`cpu_threads_from_limit`: the container's CPU limit (cgroup quota),
never the node's core count, which in a pod with a limit of 2 CPUs on a 64-core node would start
64 compute threads that the kernel then throttles.
"""

from __future__ import annotations

import importlib.util
import math
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

RuntimeName = Literal["openvino", "onnx", "litert", "tensorflow"]
RUNTIME_NAMES: tuple[str, ...] = ("openvino", "onnx", "litert", "tensorflow")
# The package each runtime needs (import name), checked without importing it.
RUNTIME_PACKAGES: dict[str, str] = {
    "openvino": "openvino",
    "onnx": "onnxruntime",
    "litert": "ai_edge_litert",
    "tensorflow": "tensorflow",
}
# Model file suffix -> runtime, for :func:`load_runtime`.
SUFFIX_RUNTIMES: dict[str, str] = {
    ".xml": "openvino",
    ".onnx": "onnx",
    ".tflite": "litert",
    ".keras": "tensorflow",
}

# OpenVINO performance hint for batched serving. Measured with benchmarks/runtimes.py (2 threads on
# a shared 2-core machine, five runs): at batch 32 THROUGHPUT (one stream per thread, a batch split
# across them) did 1.05-1.45x the images/s of LATENCY (one stream using every thread), for B0 at
# 224 px and B4 at 380 px; at batch 1 LATENCY was 1.0-1.4x faster with B0. Callers that classify
# one image at a time (the CLI) should pass hint="latency".
DEFAULT_OPENVINO_HINT = "throughput"
# Larger batches are split into chunks of this many images (bounds the memory of one call).
DEFAULT_MAX_BATCH = 64
# With the THROUGHPUT hint, the most images one infer request runs at a time: a batch is dealt out
# in pieces of this size to whichever request is free next. Measured on 2 cores with B0 at 224 px,
# batch 32 (ten alternating rounds): pieces of 2 did 88-107 images/s against 71-97 for the batch
# split evenly in two (one half per request), and 73-84 against 57-72 with another process taking
# a third of a core (as the service's API process does). B4 at 380 px showed no difference beyond
# the noise. ``request_batch=None`` gives the even split.
DEFAULT_REQUEST_BATCH = 2

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU_DIR = Path("/sys/fs/cgroup/cpu")


# --- thread counts -------------------------------------------------------------------------------


def no_openvino_telemetry() -> None:
    """Keep OpenVINO's converter and NNCF from sending usage telemetry from this process.

    Both report to Google Analytics unless the user opted out (``openvino_telemetry``'s consent file
    under the home directory), and each event forks a process to send it. Where the network is closed
    (a cluster without egress, this project's test machines) that process waits on DNS, and the
    interpreter waits for it at exit: a finished conversion or test run never exits. This gives the
    answer ``opt_in_out --opt_out`` gives, for this process only, without writing to the home folder.
    """
    try:
        from openvino_telemetry import Telemetry
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:  # no telemetry package: nothing to opt out of
        return
    declined = opt_in_checker.ConsentCheckResult.DECLINED
    opt_in_checker.OptInChecker.check = lambda self, *args, **kwargs: declined
    existing = getattr(Telemetry, "_SingletonMetaClass__single_instance", None)
    if existing is not None:  # made before this call: withdraw its consent too
        existing.consent = False


def import_openvino() -> Any:
    """``import openvino``, with its telemetry off (:func:`no_openvino_telemetry`)."""
    no_openvino_telemetry()
    import openvino

    return openvino


def parse_cpu_quantity(value: float | int | str) -> float:
    """A CPU amount as Kubernetes writes it (``"2"``, ``"1.5"``, ``"500m"``) or a number -> cores."""
    if isinstance(value, bool):
        raise ValueError(f"not a CPU quantity: {value!r}")
    if isinstance(value, int | float):
        cores = float(value)
    else:
        text = str(value).strip()
        try:
            cores = float(text[:-1]) / 1000.0 if text.endswith("m") else float(text)
        except ValueError:
            raise ValueError(f"not a CPU quantity: {value!r} (expected e.g. 2, 1.5 or 500m)") from None
    if not math.isfinite(cores) or cores <= 0:
        raise ValueError(f"a CPU limit must be a positive number of cores, got {value!r}")
    return cores


def cgroup_cpu_limit(
    cpu_max_path: Path | str = CGROUP_V2_CPU_MAX, v1_dir: Path | str = CGROUP_V1_CPU_DIR
) -> float | None:
    """The container's CPU quota in cores (cgroup v2 ``cpu.max``, else v1 CFS quota); None if unlimited.

    cgroup v2 writes ``"<quota> <period>"`` (``"150000 100000"`` is 1.5 cores) or ``"max <period>"``;
    cgroup v1 keeps ``cpu.cfs_quota_us`` (``-1``: no limit) and ``cpu.cfs_period_us``.
    """
    try:
        fields = Path(cpu_max_path).read_text().split()
    except OSError:
        fields = []
    if fields:
        if fields[0] == "max":
            return None
        period = float(fields[1]) if len(fields) > 1 else 100_000.0
        return float(fields[0]) / period if period > 0 else None
    try:
        quota = float(Path(v1_dir, "cpu.cfs_quota_us").read_text().strip())
        period = float(Path(v1_dir, "cpu.cfs_period_us").read_text().strip())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _allowed_cpus() -> int:
    """CPUs this process may run on (its affinity: a container's cpuset), not ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cpu_threads_from_limit(
    limit: float | int | str | None = None,
    *,
    cpu_max_path: Path | str = CGROUP_V2_CPU_MAX,
    v1_dir: Path | str = CGROUP_V1_CPU_DIR,
    default: int | None = None,
) -> int:
    """Compute threads for an inference runtime: the CPU limit, rounded down, at least 1.

    ``limit`` (cores, or a Kubernetes quantity such as ``"1500m"``) wins when given, e.g. from an
    environment variable; otherwise the container's cgroup quota is read (v2 ``cpu.max``, then v1).
    A fractional limit is rounded down (1.5 cores -> 1 thread): a second busy thread would exhaust
    the quota and be throttled for the rest of each 100 ms period, the worst case for latency.
    The result never exceeds the CPUs this process may run on (its affinity). Without any limit,
    ``default`` is returned if given, else that affinity count (a cpuset where one is set).

    This mirrors the project's ``FISH_TF_THREADS`` setting (TensorFlow's intra-op threads): an
    explicit number first, and a size that suits the container rather than the node.
    """
    allowed = _allowed_cpus()
    cores = parse_cpu_quantity(limit) if limit is not None else cgroup_cpu_limit(cpu_max_path, v1_dir)
    if cores is None:
        return max(1, int(default)) if default is not None else allowed
    return max(1, min(allowed, math.floor(cores + 1e-9)))


def _resolve_threads(threads: int | None) -> int:
    if threads is None or threads <= 0:
        return cpu_threads_from_limit()
    return int(threads)


# --- shared helpers ------------------------------------------------------------------------------


def available_runtimes() -> list[str]:
    """The runtimes whose package is installed (checked without importing them)."""
    return [name for name in RUNTIME_NAMES if importlib.util.find_spec(RUNTIME_PACKAGES[name]) is not None]


def as_batch(images: Any, image_size: int | None) -> np.ndarray:
    """Validate ``(N, S, S, 3)`` pixels and return them as a C-contiguous float32 array."""
    batch = np.asarray(images)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, height, width, 3), got {batch.shape}")
    if image_size is not None and batch.shape[1:3] != (image_size, image_size):
        raise ValueError(
            f"expected images of {image_size}x{image_size} pixels, got {batch.shape[1]}x{batch.shape[2]}"
        )
    if not (np.issubdtype(batch.dtype, np.floating) or np.issubdtype(batch.dtype, np.integer)):
        raise ValueError(f"expected numeric pixels, got dtype {batch.dtype}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def _chunks(batch: np.ndarray, size: int) -> list[np.ndarray]:
    return [batch[start : start + size] for start in range(0, len(batch), size)]


@runtime_checkable
class Classifier(Protocol):
    """What every runtime class provides."""

    name: str
    threads: int
    image_size: int
    n_classes: int

    def predict_arrays(self, images: np.ndarray) -> np.ndarray: ...


def probabilities_and_embeddings(model: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """One model call on a uint8 batch: the probabilities and the pooled embeddings, or ``None``.

    The embedding is the spatial mean of the last feature map, the dense head's input: what the
    service logs, the drift reference profiles and the ``vim`` open-set score reads. It works for the
    logged Keras model (``predict_with_embeddings``), any runtime here or the service's Keras wrapper
    (``predict_with_features``, ``None`` when the model was exported without its feature map) and
    anything with ``predict_arrays`` alone (no embedding).
    """
    if hasattr(model, "predict_with_embeddings"):
        probabilities, embeddings = model.predict_with_embeddings(images)
        return np.asarray(probabilities, np.float32), np.asarray(embeddings, np.float32)
    with_features = getattr(model, "predict_with_features", None)
    if with_features is None:
        return np.asarray(model.predict_arrays(images), np.float32), None
    probabilities, features = with_features(images)
    if features is None:
        return np.asarray(probabilities, np.float32), None
    return np.asarray(probabilities, np.float32), np.asarray(features).mean(axis=(1, 2), dtype=np.float32)


def _roles(shapes: list[tuple[Any, ...]]) -> tuple[int, int | None]:
    from fish_platform.ml.optimize import output_roles  # light: imports no TensorFlow

    return output_roles(shapes)


def _split(parts: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray | None]:
    probs = np.concatenate([p for p, _ in parts]).astype(np.float32, copy=False)
    if parts[0][1] is None:
        return probs, None
    return probs, np.concatenate([f for _, f in parts]).astype(np.float32, copy=False)


# --- OpenVINO ------------------------------------------------------------------------------------


class OpenVINOClassifier:
    """An OpenVINO IR (``model.xml`` + ``model.bin``) compiled for the CPU.

    ``threads`` sets ``INFERENCE_NUM_THREADS`` (default: :func:`cpu_threads_from_limit`).
    ``hint`` is OpenVINO's performance hint: ``"latency"`` compiles one stream that uses every
    thread; ``"throughput"`` compiles several streams (on 2 threads: two of one thread each), and
    a batch is dealt out to their infer requests in pieces of ``request_batch`` images (default
    :data:`DEFAULT_REQUEST_BATCH`), each request taking the next piece as soon as it is done, so
    the streams run in parallel and none waits for a slower one at the end; ``request_batch=None``
    splits the batch evenly, one part per request. With ``"latency"`` the batch runs whole.
    Measured on 2 cores (benchmarks/runtimes.py): THROUGHPUT was faster for batches of 8 and 32,
    LATENCY for single images; the default (:data:`DEFAULT_OPENVINO_HINT`) suits the batching
    service, pass ``hint="latency"`` for one image at a time.

    Inference precision is pinned to f32: on CPUs with AMX or AVX512-BF16, OpenVINO otherwise runs
    FP32 models in bf16, which breaks parity with Keras. An INT8 model (from
    :func:`fish_platform.ml.optimize.quantize_int8`) loads the same way.

    The model keeps its dynamic batch dimension, so any batch size runs without recompiling.
    Infer requests are created once and reused from a pool, so concurrent callers are safe: each
    takes a free request (and, with THROUGHPUT, a large batch takes several).
    """

    name = "openvino"

    def __init__(
        self,
        xml_path: Path | str,
        threads: int | None = None,
        *,
        hint: str = DEFAULT_OPENVINO_HINT,
        max_batch: int = DEFAULT_MAX_BATCH,
        request_batch: int | None = DEFAULT_REQUEST_BATCH,
        config: dict[str, Any] | None = None,
    ) -> None:
        ov = import_openvino()
        if request_batch is not None and request_batch < 1:
            raise ValueError(f"request_batch must be at least 1 (or None), got {request_batch}")

        self.path = Path(xml_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no OpenVINO model at {self.path}")
        if hint.lower() not in ("latency", "throughput"):
            raise ValueError(f"hint must be 'latency' or 'throughput', got {hint!r}")
        self.threads = _resolve_threads(threads)
        self.hint = hint.lower()
        self.max_batch = int(max_batch)
        core = ov.Core()
        model = core.read_model(str(self.path))
        if len(model.inputs) != 1:
            raise ValueError(f"expected one input, got {len(model.inputs)}")
        self._probs, self._features = _roles([tuple(o.get_partial_shape()) for o in model.outputs])
        self.has_features = self._features is not None
        shape = model.inputs[0].get_partial_shape()
        self.image_size = _static_dim(shape[1])
        self.n_classes = int(_static_dim(model.outputs[self._probs].get_partial_shape()[1]) or 0)
        settings = {
            "PERFORMANCE_HINT": self.hint.upper(),
            "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": "f32",
            **(config or {}),
        }
        self._compiled = core.compile_model(model, "CPU", settings)
        n_requests = max(1, int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.n_requests = n_requests if self.hint == "throughput" else 1
        self.request_batch = request_batch if self.hint == "throughput" else None
        self._warm_up(self._compiled.create_infer_request())
        self._pool: queue.LifoQueue = queue.LifoQueue()
        for _ in range(self.n_requests):
            self._pool.put(self._compiled.create_infer_request())
        # The calling thread drives one request; these drive the others a call holds (infer
        # releases the GIL). Started on first use.
        self._helpers = ThreadPoolExecutor(max(1, self.n_requests - 1), thread_name_prefix="openvino")

    def _warm_up(self, request: Any) -> None:
        """One image through ``request`` in the constructing thread, before any two threads can call
        into OpenVINO at once.

        OpenVINO's Python bindings (pybind11) set up their NumPy interface on first use, and two
        threads doing that at the same moment deadlock: one holds the GIL waiting for the
        initialisation, the other holds the initialisation waiting for the GIL. Seen as a Spark
        batch-scoring task that never ended (its first batch dealt out to two infer requests at once),
        and in 2 of 20 fresh processes whose first calls came from four threads together.
        """
        tensor = request.get_input_tensor(0)
        size = self.image_size or 32
        request.infer({0: np.zeros((1, size, size, 3), dtype=tensor.get_element_type().to_dtype())})
        self._outputs(request)

    @property
    def streams(self) -> int:
        """How many streams OpenVINO compiled (1 with the LATENCY hint)."""
        return int(self._compiled.get_property("NUM_STREAMS"))

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        return self.predict_with_features(images)[0]

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        batch = as_batch(images, self.image_size)
        if len(batch) == 0:
            return np.zeros((0, self.n_classes), dtype=np.float32), None
        return _split([self._run(chunk) for chunk in _chunks(batch, self.max_batch)])

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        held = [self._pool.get()]  # blocks until a request is free
        try:
            while len(held) < min(self.n_requests, len(batch)):
                try:
                    held.append(self._pool.get_nowait())
                except queue.Empty:
                    break
            size = self.request_batch or -(-len(batch) // len(held))
            pieces = [batch[start : start + size] for start in range(0, len(batch), size)]
            outputs: list[tuple[np.ndarray, np.ndarray | None] | None] = [None] * len(pieces)
            taken = iter(range(len(pieces)))
            lock = threading.Lock()

            def drive(request: Any) -> None:
                while True:
                    with lock:
                        index = next(taken, None)
                    if index is None:
                        return
                    request.infer({0: pieces[index]}, share_inputs=True)
                    outputs[index] = self._outputs(request)

            helping = [self._helpers.submit(drive, request) for request in held[1:]]
            try:
                drive(held[0])
            finally:
                for future in helping:  # every request idle again before it goes back to the pool
                    future.exception()
            for future in helping:
                future.result()  # re-raise a helper's error
            return _split(outputs)  # type: ignore[arg-type]
        finally:
            for request in held:
                self._pool.put(request)

    def _outputs(self, request: Any) -> tuple[np.ndarray, np.ndarray | None]:
        probs = np.array(request.get_output_tensor(self._probs).data, dtype=np.float32, copy=True)
        if self._features is None:
            return probs, None
        features = np.array(request.get_output_tensor(self._features).data, dtype=np.float32, copy=True)
        return probs, features


def _static_dim(dim: Any) -> int | None:
    return None if dim.is_dynamic else int(dim.get_length())


# --- ONNX Runtime --------------------------------------------------------------------------------


class OnnxClassifier:
    """An ONNX model on ONNX Runtime's CPU provider (``intra_op_num_threads`` = ``threads``).

    ``InferenceSession.run`` is thread-safe and the batch dimension is dynamic.
    """

    name = "onnx"

    def __init__(
        self, onnx_path: Path | str, threads: int | None = None, *, max_batch: int = DEFAULT_MAX_BATCH
    ):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}")
        self.threads = _resolve_threads(threads)
        self.max_batch = int(max_batch)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise ValueError(f"expected one input, got {len(inputs)}")
        probs, features = _roles([tuple(o.shape) for o in outputs])
        self._input = inputs[0].name
        self._outputs = [outputs[probs].name] + ([outputs[features].name] if features is not None else [])
        self.has_features = features is not None
        height = inputs[0].shape[1]
        self.image_size = int(height) if isinstance(height, int) else None
        classes = outputs[probs].shape[1]
        self.n_classes = int(classes) if isinstance(classes, int) else 0

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        return self.predict_with_features(images)[0]

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        batch = as_batch(images, self.image_size)
        if len(batch) == 0:
            return np.zeros((0, self.n_classes), dtype=np.float32), None
        parts = []
        for chunk in _chunks(batch, self.max_batch):
            result = self._session.run(self._outputs, {self._input: chunk})
            parts.append((result[0], result[1] if self.has_features else None))
        return _split(parts)


# --- LiteRT --------------------------------------------------------------------------------------


class LiteRTClassifier:
    """A ``.tflite`` model on the LiteRT interpreter (``ai_edge_litert``) with its XNNPACK delegate.

    The interpreter's input is resized when the batch size changes (the model keeps a dynamic
    batch dimension); XNNPACK keeps its packed weights, so switching sizes costs under a
    millisecond once each size has been seen (about 50 ms the first time, B0 at 224 px). One
    interpreter runs one call at a time (a lock serializes concurrent callers); create one
    instance per worker thread for parallelism.
    """

    name = "litert"

    def __init__(
        self, tflite_path: Path | str, threads: int | None = None, *, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(tflite_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no LiteRT model at {self.path}")
        self.threads = _resolve_threads(threads)
        self.max_batch = int(max_batch)
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"expected one input, got {len(inputs)}")
        probs, features = _roles([tuple(o["shape"]) for o in outputs])
        self._input, self._output = inputs[0], outputs[probs]
        self._feature_output = outputs[features] if features is not None else None
        self.has_features = features is not None
        signature = self._input.get("shape_signature", self._input["shape"])
        self.image_size = int(signature[1]) if int(signature[1]) > 0 else None
        self.n_classes = int(self._output["shape"][-1])
        self._batch = -1  # allocated batch size
        self._lock = threading.Lock()

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        return self.predict_with_features(images)[0]

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        batch = as_batch(images, self.image_size)
        if len(batch) == 0:
            return np.zeros((0, self.n_classes), dtype=np.float32), None
        with self._lock:
            return _split([self._run(chunk) for chunk in _chunks(batch, self.max_batch)])

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        interpreter = self._interpreter
        if len(batch) != self._batch:
            interpreter.resize_tensor_input(self._input["index"], list(batch.shape), strict=False)
            interpreter.allocate_tensors()
            self._batch = len(batch)
        interpreter.set_tensor(self._input["index"], batch)
        interpreter.invoke()
        probs = np.array(interpreter.get_tensor(self._output["index"]), dtype=np.float32, copy=True)
        if self._feature_output is None:
            return probs, None
        features = np.array(
            interpreter.get_tensor(self._feature_output["index"]), dtype=np.float32, copy=True
        )
        return probs, features


# --- TensorFlow (the reference) ------------------------------------------------------------------


class TensorFlowClassifier:
    """The Keras model through one compiled ``tf.function`` (as the MLflow wrapper serves it).

    ``model`` is a Keras model or a ``.keras`` file. ``threads`` sets TensorFlow's intra-op pool
    when TensorFlow has not run anything yet in this process (it cannot be changed afterwards;
    then the existing pool is kept and ``threads`` reports it, 0 meaning TensorFlow's default of
    one thread per core). This class imports TensorFlow; the others never do.
    """

    name = "tensorflow"

    def __init__(self, model: Any, threads: int | None = None, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        import tensorflow as tf

        self.threads = _resolve_threads(threads)
        try:
            tf.config.threading.set_intra_op_parallelism_threads(self.threads)
        except RuntimeError:  # TensorFlow is initialised already: its pool stays as it is
            self.threads = tf.config.threading.get_intra_op_parallelism_threads()  # 0: TF's default
        if isinstance(model, str | Path):
            import keras

            self.path: Path | None = Path(model)
            model = keras.saving.load_model(str(model), compile=False)
        else:
            self.path = None
        self.keras_model = model
        self.image_size = int(model.input_shape[1])
        self.n_classes = int(model.output_shape[-1])
        self.max_batch = int(max_batch)
        size = self.image_size
        from fish_platform.ml.optimize import feature_model

        with_features = feature_model(model)  # shares the layers: the same probabilities
        self.has_features = with_features is not None
        network = with_features if with_features is not None else model

        @tf.function(
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)], reduce_retracing=True
        )
        def forward(images):
            return network(images, training=False)

        self._forward = forward

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        return self.predict_with_features(images)[0]

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        batch = as_batch(images, self.image_size)
        if len(batch) == 0:
            return np.zeros((0, self.n_classes), dtype=np.float32), None
        parts = []
        for chunk in _chunks(batch, self.max_batch):
            out = self._forward(chunk)
            if self.has_features:
                parts.append((out[0].numpy(), out[1].numpy()))
            else:
                parts.append((out.numpy(), None))
        return _split(parts)


# --- loading by file -----------------------------------------------------------------------------


def runtime_for_path(path: Path | str) -> str:
    """The runtime for a model file, by suffix: ``.xml``, ``.onnx``, ``.tflite`` or ``.keras``."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_RUNTIMES:
        raise ValueError(f"cannot tell the runtime of {path}; expected one of {', '.join(SUFFIX_RUNTIMES)}")
    return SUFFIX_RUNTIMES[suffix]


def load_runtime(
    path: Path | str, runtime: str | None = None, threads: int | None = None, **options: Any
) -> Classifier:
    """Load a model file with its runtime (by ``runtime`` name, else by the file's suffix).

    ``options`` go to the runtime class (``hint`` for OpenVINO, ``max_batch`` for all).
    """
    name = runtime or runtime_for_path(path)
    classes: dict[str, Any] = {
        "openvino": OpenVINOClassifier,
        "onnx": OnnxClassifier,
        "litert": LiteRTClassifier,
        "tensorflow": TensorFlowClassifier,
    }
    if name not in classes:
        raise ValueError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIME_NAMES)}")
    return classes[name](path, threads, **options)
