"""Converting the Keras classifier to CPU runtimes, checking parity, and gated INT8 quantization.

The route to every format starts from one TensorFlow SavedModel, exported from the Keras model
with a free batch dimension (:func:`export_saved_model`); each converter also takes a Keras model
and exports a temporary SavedModel itself. Export once and pass the directory when converting to
several formats: writing the SavedModel is most of the cost (TensorFlow re-traces the graph in
Python: 20-50 s for B0 at 32 px on 2 shared cores, about a minute for B4 at 380 px).

* OpenVINO IR (:func:`convert_to_openvino`): ``openvino.convert_model`` reads the SavedModel and
  ``openvino.save_model(..., compress_to_fp16=False)`` writes FP32 ``model.xml``/``model.bin``.
* LiteRT (:func:`convert_to_litert`): ``tf.lite.TFLiteConverter`` from the SavedModel, builtin
  ops only (no Flex/``SELECT_TF_OPS``, which the standalone LiteRT interpreter cannot run), float32.
* ONNX (:func:`convert_to_onnx`): tf2onnx from the SavedModel's serving function with its
  variables frozen into constants. (Keras' own ``model.export(format="onnx")`` leaves the
  Normalization layer's mean and variance as extra graph inputs with Keras 3.15 and TF 2.21, so
  the model would not run without them.)

A converted model is trusted only after :func:`check_parity` against Keras on real images;
INT8 (:func:`quantize_int8`, NNCF post-training quantization of the OpenVINO model) is used only
if :class:`Int8Gate` accepts its accuracy against the FP32 model's on labelled images.

TensorFlow, OpenVINO, tf2onnx and NNCF are imported inside the functions that need them, so
importing this module (for the thresholds or :func:`check_parity`) stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# --- thresholds (the one place they are defined) -------------------------------------------------

# A converted FP32 model must pick the same top-1 class as Keras for at least this share of images
PARITY_MIN_TOP1_AGREEMENT = 0.995
# ... and no probability may differ from Keras' by more than this (FP32 runtimes: ~1e-6 measured).
PARITY_MAX_PROB_DIFF = 1e-3
# An INT8 model may lose at most this much top-1 accuracy (absolute, 0.01 = one point) against FP32.
INT8_MAX_ACCURACY_DROP = 0.01
# Calibration images NNCF uses at most (its own default; more only slows quantization).
INT8_CALIBRATION_SUBSET = 300

# --- file names and conversion settings ----------------------------------------------------------

OPENVINO_XML = "model.xml"
OPENVINO_BIN = "model.bin"
LITERT_FILE = "model.tflite"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# The second output of a model with a CAM-able head (global pooling + one dense layer): the last
# convolutional feature map (N, h, w, channels), for class activation maps and pooled embeddings.
FEATURES_NAME = "feature_map"
SERVING_SIGNATURE = "serving_default"


# --- parity ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityReport:
    """How closely a candidate runtime's probabilities follow the reference (Keras) on the same images."""

    n_images: int
    top1_agreement: float  # share of images with the same arg-max class
    max_abs_diff: float  # largest absolute difference of any probability
    mean_abs_diff: float
    passed: bool
    thresholds: dict[str, float]  # min_top1_agreement, max_prob_diff
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_parity(
    reference_probs: np.ndarray,
    candidate_probs: np.ndarray,
    min_top1_agreement: float = PARITY_MIN_TOP1_AGREEMENT,
    max_prob_diff: float = PARITY_MAX_PROB_DIFF,
) -> ParityReport:
    """Compare two ``(N, n_classes)`` probability arrays computed on the same images.

    Passes when the top-1 classes agree on at least ``min_top1_agreement`` of the images and no
    probability differs by more than ``max_prob_diff``. Non-finite candidate values fail. Shapes
    must match; an empty comparison is an error (it would prove nothing).
    """
    reference = np.asarray(reference_probs, dtype=np.float64)
    candidate = np.asarray(candidate_probs, dtype=np.float64)
    if reference.ndim != 2 or reference.shape != candidate.shape:
        raise ValueError(
            f"expected two (N, n_classes) arrays of one shape, got {reference.shape} and {candidate.shape}"
        )
    if len(reference) == 0:
        raise ValueError("parity needs at least one image")
    thresholds = {"min_top1_agreement": float(min_top1_agreement), "max_prob_diff": float(max_prob_diff)}
    n = len(reference)
    if not np.all(np.isfinite(candidate)):
        bad = int(np.sum(~np.all(np.isfinite(candidate), axis=1)))
        return ParityReport(
            n, 0.0, math.inf, math.inf, False, thresholds, f"{bad} of {n} outputs are not finite"
        )
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    diff = np.abs(reference - candidate)
    max_diff, mean_diff = float(diff.max()), float(diff.mean())
    problems = []
    if agreement < min_top1_agreement:
        problems.append(f"top-1 agreement {agreement:.4f} < {min_top1_agreement}")
    if max_diff > max_prob_diff:
        problems.append(f"max probability difference {max_diff:.3g} > {max_prob_diff:g}")
    passed = not problems
    reason = (
        f"top-1 agreement {agreement:.4f}, max probability difference {max_diff:.3g} on {n} images"
        if passed
        else "; ".join(problems) + f" ({n} images)"
    )
    return ParityReport(n, agreement, max_diff, mean_diff, passed, thresholds, reason)


def reference_probabilities(keras_model: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The Keras model's probabilities (inference mode), batch by batch: the parity reference."""
    batch = np.ascontiguousarray(images, dtype=np.float32)
    if len(batch) == 0:
        return np.zeros((0, int(keras_model.output_shape[-1])), dtype=np.float32)
    parts = [
        np.asarray(keras_model(batch[start : start + batch_size], training=False), dtype=np.float32)
        for start in range(0, len(batch), batch_size)
    ]
    return np.concatenate(parts)


# --- conversion ------------------------------------------------------------------------------------


def export_saved_model(keras_model: Any, out_dir: Path | str, *, with_features: bool = True) -> Path:
    """Export ``keras_model`` as a TF SavedModel with a ``serving_default`` signature (free batch).

    With Keras 3 ``model.export`` writes an inference-only artifact (the ``call`` in inference
    mode, no Keras objects); the input is ``image`` ``float32 [None, S, S, 3]``, the outputs
    ``output_0`` (the probabilities) and, when ``with_features`` and the model's head allows class
    activation maps (:func:`fish_platform.ml.explain.cam_model`), ``output_1`` (the feature map the
    head pools). The probabilities are the same either way. Returns ``out_dir``.
    """
    import tensorflow as tf

    out = Path(out_dir)
    size = _input_size(keras_model)
    signature = [tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)]
    exported = feature_model(keras_model) if with_features else None
    (exported or keras_model).export(
        str(out), format="tf_saved_model", verbose=False, input_signature=signature
    )
    return out


def feature_model(keras_model: Any) -> Any | None:
    """``keras_model`` with the feature map as a second output, or None if its head is not CAM-able."""
    from fish_platform.ml.explain import cam_model

    try:
        return cam_model(keras_model)
    except ValueError as exc:
        log.info("exporting probabilities only: %s", exc)
        return None


def output_roles(shapes: list[tuple[Any, ...]]) -> tuple[int, int | None]:
    """Indices of ``(probabilities, feature map)`` among a model's outputs, told apart by rank (2 vs 4).

    Converters do not keep output order or names reliably (TFLite sorts by name), the ranks are
    unambiguous. Raises ValueError for anything but one rank-2 output and at most one rank-4 one.
    """
    ranks = [len(shape) for shape in shapes]
    if (
        ranks.count(2) != 1
        or ranks.count(4) > 1
        or len(ranks) > 2
        or len(ranks) - ranks.count(2) != ranks.count(4)
    ):
        raise ValueError(f"expected outputs (N, classes) [+ (N, h, w, channels)], got shapes {shapes}")
    return ranks.index(2), (ranks.index(4) if 4 in ranks else None)


def _input_size(keras_model: Any) -> int:
    shape = tuple(keras_model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] is None:
        raise ValueError(f"expected a model taking (N, S, S, 3) images, got input shape {shape}")
    return int(shape[1])


def is_saved_model(path: Any) -> bool:
    return isinstance(path, str | Path) and (Path(path) / "saved_model.pb").is_file()


@contextlib.contextmanager
def saved_model_for(source: Any) -> Iterator[Path]:
    """``source`` as a SavedModel directory: itself if it is one, else a temporary export of a Keras model."""
    if is_saved_model(source):
        yield Path(source)
        return
    if isinstance(source, str | Path):
        raise ValueError(f"{source} is not a SavedModel directory (no saved_model.pb)")
    with tempfile.TemporaryDirectory(prefix="fish-savedmodel-") as tmp:
        yield export_saved_model(source, Path(tmp) / "saved_model")


def convert_to_openvino(source: Any, out_dir: Path | str) -> Path:
    """Keras model or SavedModel directory -> FP32 OpenVINO IR ``out_dir/model.xml`` (+ ``model.bin``).

    Weights stay FP32 (``compress_to_fp16=False``; OpenVINO's default would halve them to FP16).
    The batch dimension stays dynamic. Returns the path of ``model.xml``.
    """
    from fish_platform.ml.runtimes import import_openvino

    ov = import_openvino()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    xml = out / OPENVINO_XML
    with saved_model_for(source) as saved:
        model = ov.convert_model(str(saved))
        probs, features = output_roles([tuple(o.get_partial_shape()) for o in model.outputs])
        model.outputs[probs].get_tensor().add_names({OUTPUT_NAME})
        if features is not None:
            model.outputs[features].get_tensor().add_names({FEATURES_NAME})
        ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def convert_to_litert(source: Any, out_path: Path | str) -> Path:
    """Keras model or SavedModel directory -> a float32 LiteRT flatbuffer at ``out_path`` (``.tflite``).

    Builtin ops only, no optimizations (no quantization): the file runs on the plain LiteRT
    interpreter (``ai_edge_litert``) and on devices without TensorFlow's Flex delegate. The input's
    batch dimension is dynamic (``shape_signature`` ``[-1, S, S, 3]``). Returns ``out_path``.
    """
    import tensorflow as tf

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with saved_model_for(source) as saved:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SERVING_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        out.write_bytes(converter.convert())
    return out


def convert_to_onnx(source: Any, out_path: Path | str, opset: int = ONNX_OPSET) -> Path:
    """Keras model or SavedModel directory -> an ONNX model at ``out_path``.

    tf2onnx converts the serving function with its variables frozen to constants; the input is
    ``image`` (NHWC as in Keras, dynamic batch), the output ``probabilities``. Returns ``out_path``.
    """
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with saved_model_for(source) as saved:
        loaded = tf.saved_model.load(str(saved))
        frozen = convert_variables_to_constants_v2(loaded.signatures[SERVING_SIGNATURE])
        inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
        outputs = [t.name for t in frozen.outputs]
        if len(inputs) != 1:
            raise ValueError(f"expected one input, got {inputs}")
        probs, features = output_roles([tuple(t.shape) for t in frozen.outputs])
        model_proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(), input_names=inputs, output_names=outputs, opset=opset
        )
    names = {inputs[0]: INPUT_NAME, outputs[probs]: OUTPUT_NAME}
    if features is not None:
        names[outputs[features]] = FEATURES_NAME
    _rename_onnx_io(model_proto, names)
    out.write_bytes(model_proto.SerializeToString())
    return out


def _rename_onnx_io(model: Any, names: dict[str, str]) -> None:
    """Give the graph's input and output plain names (tf2onnx keeps TensorFlow's ``image:0``)."""
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in names:
                node.input[i] = names[name]
        for i, name in enumerate(node.output):
            if name in names:
                node.output[i] = names[name]


# --- INT8 --------------------------------------------------------------------------------------------


def quantize_int8(
    ov_model_path: Path | str,
    calibration_images: np.ndarray,
    out_dir: Path | str,
    *,
    subset_size: int | None = None,
    fast_bias_correction: bool = True,
) -> Path:
    """Post-training INT8 quantization of an FP32 OpenVINO IR with NNCF; returns ``out_dir/model.xml``.

    ``calibration_images`` (``(N, S, S, 3)``, pixels in [0, 255], preprocessed as for inference)
    set the activation ranges: they must look like the images the model will see (a few hundred
    from the training split). Unrepresentative calibration, e.g. blank images, sets ranges that
    clip real inputs; :class:`Int8Gate` is what catches such a model. Uses at most
    ``subset_size`` images (default: all, up to :data:`INT8_CALIBRATION_SUBSET`). The result is
    not checked here: gate it with :func:`evaluate_int8` or :func:`quantize_int8_gated`.
    """
    from fish_platform.ml.runtimes import import_openvino, no_openvino_telemetry

    no_openvino_telemetry()
    import nncf

    ov = import_openvino()

    images = np.ascontiguousarray(calibration_images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty (N, S, S, 3) calibration batch, got shape {images.shape}")
    n = min(len(images), subset_size or INT8_CALIBRATION_SUBSET)
    model = ov.Core().read_model(str(ov_model_path))
    dataset = nncf.Dataset([images[i : i + 1] for i in range(n)])
    quantized = nncf.quantize(
        model,
        dataset,
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=n,
        fast_bias_correction=fast_bias_correction,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    xml = out / OPENVINO_XML
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return xml


@dataclass(frozen=True)
class Int8Report:
    """The gate's verdict on an INT8 model."""

    reference_accuracy: float  # FP32 top-1 accuracy on the evaluation images
    int8_accuracy: float
    drop: float  # reference - int8 (negative: INT8 scored higher)
    max_drop: float
    n_images: int | None
    passed: bool
    reason: str
    top1_agreement: float | None = None  # INT8 vs FP32 arg-max agreement (information only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Int8Gate:
    """INT8 is accepted only if its top-1 accuracy is at most ``max_drop`` below FP32's.

    With ``n_images`` known, the evaluation must be able to see such a drop: fewer than
    ``1 / max_drop`` images (100 for one point) cannot resolve it, and the gate then fails rather
    than pass on noise.
    """

    max_drop: float = INT8_MAX_ACCURACY_DROP

    def __post_init__(self) -> None:
        if not (0.0 <= self.max_drop < 1.0):
            raise ValueError(f"max_drop must be in [0, 1), got {self.max_drop}")

    @property
    def min_images(self) -> int:
        return math.ceil(1.0 / self.max_drop - 1e-9) if self.max_drop > 0 else 1

    def check(
        self, reference_accuracy: float, int8_accuracy: float, n_images: int | None = None
    ) -> Int8Report:
        reference, int8 = float(reference_accuracy), float(int8_accuracy)
        for label, value in (("reference_accuracy", reference), ("int8_accuracy", int8)):
            if not math.isnan(value) and not 0.0 <= value <= 1.0:
                raise ValueError(f"{label} must be a fraction in [0, 1], got {value}")
        drop = reference - int8
        if math.isnan(drop):
            return Int8Report(
                reference, int8, drop, self.max_drop, n_images, False, "accuracy is not a number"
            )
        if n_images is not None and n_images < self.min_images:
            reason = (
                f"{n_images} evaluation images cannot resolve a drop of {self.max_drop:g}; "
                f"need at least {self.min_images}"
            )
            return Int8Report(reference, int8, drop, self.max_drop, n_images, False, reason)
        passed = drop <= self.max_drop + 1e-9
        verdict = "within" if passed else "exceeds"
        reason = (
            f"INT8 top-1 accuracy {int8:.4f} vs FP32 {reference:.4f}: drop {drop:+.4f} {verdict} "
            f"the allowed {self.max_drop:g}"
        )
        return Int8Report(reference, int8, drop, self.max_drop, n_images, passed, reason)


def check_int8(
    reference_accuracy: float,
    int8_accuracy: float,
    max_drop: float = INT8_MAX_ACCURACY_DROP,
    *,
    n_images: int | None = None,
) -> Int8Report:
    """:meth:`Int8Gate.check` with a given ``max_drop``."""
    return Int8Gate(max_drop).check(reference_accuracy, int8_accuracy, n_images)


def top1_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels)
    if len(probs) != len(labels) or len(labels) == 0:
        raise ValueError(f"{len(probs)} predictions for {len(labels)} labels")
    return float(np.mean(np.asarray(probs).argmax(axis=1) == labels))


def evaluate_int8(
    fp32_xml: Path | str,
    int8_xml: Path | str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    gate: Int8Gate | None = None,
    threads: int | None = None,
) -> Int8Report:
    """Top-1 accuracy of the FP32 and INT8 OpenVINO models on labelled ``images``, judged by ``gate``."""
    from fish_platform.ml.runtimes import OpenVINOClassifier

    gate = gate or Int8Gate()
    fp32 = OpenVINOClassifier(fp32_xml, threads).predict_arrays(images)
    int8 = OpenVINOClassifier(int8_xml, threads).predict_arrays(images)
    report = gate.check(top1_accuracy(fp32, labels), top1_accuracy(int8, labels), n_images=len(labels))
    agreement = float(np.mean(fp32.argmax(axis=1) == int8.argmax(axis=1)))
    return Int8Report(**{**asdict(report), "top1_agreement": agreement})


@dataclass(frozen=True)
class Int8Result:
    """:func:`quantize_int8_gated`'s outcome: the INT8 model if the gate accepted it."""

    model_path: Path | None  # None: rejected (its files were removed unless kept)
    report: Int8Report

    @property
    def accepted(self) -> bool:
        return self.report.passed


def quantize_int8_gated(
    ov_model_path: Path | str,
    calibration_images: np.ndarray,
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    out_dir: Path | str,
    *,
    gate: Int8Gate | None = None,
    subset_size: int | None = None,
    threads: int | None = None,
    keep_rejected: bool = False,
) -> Int8Result:
    """Quantize, evaluate against FP32 on labelled images, and keep the INT8 model only if it passes.

    Calibration and evaluation images should be disjoint (e.g. train and validation splits). A
    rejected model's files are removed (``keep_rejected=True`` keeps them for inspection), so a
    rejected INT8 model cannot be served by accident.
    """
    xml = quantize_int8(ov_model_path, calibration_images, out_dir, subset_size=subset_size)
    report = evaluate_int8(ov_model_path, xml, eval_images, eval_labels, gate=gate, threads=threads)
    log.info("INT8 gate: %s", report.reason)
    if report.passed or keep_rejected:
        return Int8Result(xml, report)
    for path in (xml, xml.with_suffix(".bin")):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        xml.parent.rmdir()  # only if nothing else is in it
    return Int8Result(None, report)
