"""Self-contained model bundles for edge devices and other consumers outside the platform.

:func:`export_model` writes a directory that needs neither this package nor TensorFlow to use::

    <out_dir>/
      model.tflite | model.xml + model.bin | model.onnx   the converted FP32 model
      labels.json                                         the species names, in output order
      head.npz                                            the dense head's kernel and bias (when the
                                                          model outputs its feature map too: CAMs)
      model.json                                          format, files, input and output contract,
                                                          preprocessing, labels, a short readme

:func:`load_exported` opens a bundle with the matching runtime class from
:mod:`fish_platform.ml.runtimes` (TensorFlow stays unimported), and :func:`check_export_parity`
compares it with the Keras model on given images. :func:`export_logged_model` bundles a model
version logged to MLflow (the ``keras_model`` and ``metadata`` artifacts of the pyfunc wrapper).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fish_platform.ml.optimize import (
    FEATURES_NAME,
    LITERT_FILE,
    ONNX_FILE,
    OPENVINO_BIN,
    OPENVINO_XML,
    OUTPUT_NAME,
    PARITY_MAX_PROB_DIFF,
    PARITY_MIN_TOP1_AGREEMENT,
    ParityReport,
    check_parity,
    convert_to_litert,
    convert_to_onnx,
    convert_to_openvino,
    reference_probabilities,
    saved_model_for,
)
from fish_platform.ml.runtimes import Classifier, load_runtime

ExportFormat = Literal["litert", "openvino", "onnx"]
EXPORT_FORMATS: tuple[str, ...] = ("litert", "openvino", "onnx")
BUNDLE_VERSION = 1
MODEL_JSON = "model.json"
LABELS_JSON = "labels.json"
HEAD_NPZ = "head.npz"  # kernel (channels, n_classes) and bias (n_classes,) of the dense head
FEATURES_MEANING = (
    "the last convolutional feature map (N, h, w, channels) that the head averages: "
    "its spatial mean is the embedding, feature_map @ kernel[:, c] (head.npz) class c's activation map"
)
# The model file(s) of each format, the first one being what a runtime opens.
FORMAT_FILES: dict[str, tuple[str, ...]] = {
    "litert": (LITERT_FILE,),
    "openvino": (OPENVINO_XML, OPENVINO_BIN),
    "onnx": (ONNX_FILE,),
}
FORMAT_RUNTIMES: dict[str, str] = {"litert": "ai-edge-litert", "openvino": "openvino", "onnx": "onnxruntime"}
PREPROCESSING = (
    "Decode the photo to RGB (8-bit; drop any alpha channel), resize it to image_size x image_size "
    "with bilinear interpolation by stretching (no crop, no padding, aspect ratio not kept), and pass "
    "the pixel values as float32 in [0, 255] without any scaling, mean subtraction or normalization: "
    "the model rescales and normalizes inside its graph. Batch layout NHWC (N, image_size, image_size, 3)."
)
OUTPUT_MEANING = (
    "softmax probabilities (N, len(labels)), summing to 1 per image; index i is labels[i]; "
    "the predicted species is labels[argmax]"
)
_README = {
    "litert": (
        "Run model.tflite with the LiteRT interpreter (pip install ai-edge-litert; "
        "from ai_edge_litert.interpreter import Interpreter). The batch dimension is dynamic: call "
        "resize_tensor_input(input_index, [N, S, S, 3]) and allocate_tensors() before set_tensor/invoke. "
        "Read the output named output.name in model.json (features.name, if present, is the feature map)."
    ),
    "openvino": (
        "Run model.xml (weights in model.bin, FP32) with OpenVINO (pip install openvino): "
        "compiled = openvino.Core().compile_model('model.xml', 'CPU'); probs = compiled(images)[0]. "
        "The batch dimension is dynamic."
    ),
    "onnx": (
        "Run model.onnx with ONNX Runtime (pip install onnxruntime): "
        "session = onnxruntime.InferenceSession('model.onnx'); "
        "probs = session.run(None, {'image': images})[0]. The batch dimension is dynamic."
    ),
}


@dataclass(frozen=True)
class ExportedModel:
    """A bundle written by :func:`export_model`, as read back by :func:`read_export`."""

    path: Path  # the bundle directory
    format: str
    model_file: Path  # the file a runtime opens (model.tflite, model.xml or model.onnx)
    labels: list[str]
    image_size: int
    manifest: dict[str, Any]  # model.json


def export_model(
    keras_model: Any,
    labels: list[str],
    image_size: int,
    fmt: ExportFormat,
    out_dir: Path | str,
    *,
    saved_model: Path | str | None = None,
    info: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert ``keras_model`` to ``fmt`` and write a self-contained bundle at ``out_dir``; returns it.

    ``saved_model`` reuses a SavedModel from :func:`fish_platform.ml.optimize.export_saved_model`
    (it saves tracing the model again when bundling several formats). ``info`` lands in
    ``model.json`` under ``"source"`` (e.g. model name, version, variant, weights). The bundle is
    assembled next to ``out_dir`` and moved into place, so a failed export leaves nothing behind;
    an existing non-empty ``out_dir`` is an error unless ``overwrite``.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    labels = [str(label) for label in labels]
    n_outputs = int(keras_model.output_shape[-1])
    if len(labels) != n_outputs:
        raise ValueError(f"{len(labels)} labels for a model with {n_outputs} outputs")
    if tuple(keras_model.input_shape[1:]) != (image_size, image_size, 3):
        raise ValueError(
            f"image_size {image_size} does not match the model's input {keras_model.input_shape}"
        )
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        head = _head_or_none(keras_model)
        if head is not None:
            np.savez(staging / HEAD_NPZ, kernel=head[0], bias=head[1])
        with saved_model_for(saved_model if saved_model is not None else keras_model) as saved:
            if fmt == "openvino":
                convert_to_openvino(saved, staging)
            elif fmt == "litert":
                convert_to_litert(saved, staging / LITERT_FILE)
            else:
                convert_to_onnx(saved, staging / ONNX_FILE)
        manifest = _manifest(fmt, labels, image_size, staging, info)
        (staging / LABELS_JSON).write_text(json.dumps(labels, indent=2) + "\n")
        (staging / MODEL_JSON).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def export_int8_bundle(
    openvino_bundle: Path | str,
    int8_xml: Path | str,
    out_dir: Path | str,
    *,
    gate_report: Any = None,
    overwrite: bool = False,
) -> Path:
    """An FP32 OpenVINO bundle with its model replaced by an INT8 one (``quantize_int8``'s output).

    ``model.json`` then says ``"precision": "int8"`` and records the quantization and, when given,
    the :class:`fish_platform.ml.optimize.Int8Report` that accepted it (``gate_report``); labels,
    input contract and preprocessing are the FP32 bundle's. Returns ``out_dir``.
    """
    source = read_export(openvino_bundle)
    if source.format != "openvino":
        raise ValueError(f"{openvino_bundle} is a {source.format} bundle; INT8 applies to openvino bundles")
    int8 = Path(int8_xml)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for name in (LABELS_JSON, *FORMAT_FILES["openvino"], *source.manifest.get("extra_files", [])):
            shutil.copyfile(source.path / name, staging / name)
        shutil.copyfile(int8, staging / OPENVINO_XML)
        shutil.copyfile(int8.with_suffix(".bin"), staging / OPENVINO_BIN)
        report = gate_report.to_dict() if hasattr(gate_report, "to_dict") else gate_report
        manifest = {
            **source.manifest,
            "precision": "int8",
            "quantization": {"method": "NNCF post-training INT8 (OpenVINO)", "gate": report},
        }
        (staging / MODEL_JSON).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _head_or_none(keras_model: Any) -> tuple[np.ndarray, np.ndarray] | None:
    from fish_platform.ml.explain import head_weights

    try:
        return head_weights(keras_model)
    except ValueError:  # not a pooling + one dense head: no maps, probabilities only
        return None


def read_head(export_dir: Path | str) -> tuple[np.ndarray, np.ndarray] | None:
    """A bundle's dense head ``(kernel, bias)`` from ``head.npz``, or None when it has none."""
    path = Path(export_dir) / HEAD_NPZ
    if not path.is_file():
        return None
    with np.load(path) as head:
        return np.asarray(head["kernel"], np.float32), np.asarray(head["bias"], np.float32)


def _manifest(
    fmt: str, labels: list[str], image_size: int, folder: Path, info: dict[str, Any] | None
) -> dict:
    files = FORMAT_FILES[fmt]
    io_names = _io_names(fmt, folder / files[0])
    extra = [HEAD_NPZ] if (folder / HEAD_NPZ).is_file() and io_names[2] else []
    features = (
        {
            "features": {
                "name": io_names[2],
                "shape": [-1, "h", "w", "channels"],
                "dtype": "float32",
                "meaning": FEATURES_MEANING,
                "head_file": HEAD_NPZ,
            }
        }
        if extra
        else {}
    )
    return {
        "bundle_version": BUNDLE_VERSION,
        "format": fmt,
        "model_file": files[0],
        "files": list(files),
        "precision": "float32",
        "runtime": {"package": FORMAT_RUNTIMES[fmt], "exported_with": _version(FORMAT_RUNTIMES[fmt])},
        "image_size": int(image_size),
        "input": {
            "name": io_names[0],
            "shape": [-1, int(image_size), int(image_size), 3],
            "dtype": "float32",
            "layout": "NHWC",
            "channels": "RGB",
            "value_range": [0, 255],
            "batch": "dynamic (-1)",
        },
        "output": {
            "name": io_names[1],
            "shape": [-1, len(labels)],
            "dtype": "float32",
            "meaning": OUTPUT_MEANING,
        },
        **features,
        "extra_files": extra,
        "preprocessing": PREPROCESSING,
        "labels": labels,
        "labels_file": LABELS_JSON,
        "source": dict(info or {}),
        "readme": _README[fmt],
    }


def _io_names(fmt: str, model_file: Path) -> tuple[str, str, str | None]:
    """Input, probabilities and feature-map (None: absent) names as the runtime reports them."""
    from fish_platform.ml.optimize import output_roles

    if fmt == "openvino":
        from fish_platform.ml.runtimes import import_openvino

        ov = import_openvino()

        model = ov.Core().read_model(str(model_file))
        probs, features = output_roles([tuple(o.get_partial_shape()) for o in model.outputs])

        def ov_name(index: int, wanted: str) -> str:
            output = model.outputs[index]
            return wanted if wanted in output.get_names() else output.get_any_name()

        feature_name = ov_name(features, FEATURES_NAME) if features is not None else None
        return model.inputs[0].get_any_name(), ov_name(probs, OUTPUT_NAME), feature_name
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(model_file), load_external_data=False).graph
        shapes = [tuple(d for d in o.type.tensor_type.shape.dim) for o in graph.output]
        probs, features = output_roles(shapes)
        names = [o.name for o in graph.output]
        return graph.input[0].name, names[probs], names[features] if features is not None else None
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_file))
    outputs = interpreter.get_output_details()
    probs, features = output_roles([tuple(o["shape"]) for o in outputs])
    feature_name = outputs[features]["name"] if features is not None else None
    return interpreter.get_input_details()[0]["name"], outputs[probs]["name"], feature_name


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def read_export(export_dir: Path | str) -> ExportedModel:
    """Read and check a bundle's ``model.json`` (files present, labels consistent)."""
    folder = Path(export_dir)
    manifest_path = folder / MODEL_JSON
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{folder} is not an exported model (no {MODEL_JSON})")
    manifest = json.loads(manifest_path.read_text())
    fmt = manifest.get("format")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"{manifest_path}: unknown format {fmt!r}")
    missing = [name for name in manifest.get("files", FORMAT_FILES[fmt]) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}")
    labels = json.loads((folder / manifest.get("labels_file", LABELS_JSON)).read_text())
    if labels != manifest["labels"]:
        raise ValueError(f"{folder}: {LABELS_JSON} and {MODEL_JSON} list different labels")
    return ExportedModel(
        folder, fmt, folder / manifest["model_file"], labels, int(manifest["image_size"]), manifest
    )


def load_exported(export_dir: Path | str, threads: int | None = None, **options: Any) -> Classifier:
    """Open a bundle with its runtime class (never imports TensorFlow); ``options`` go to the class."""
    exported = read_export(export_dir)
    runtime = {"litert": "litert", "openvino": "openvino", "onnx": "onnx"}[exported.format]
    classifier = load_runtime(exported.model_file, runtime, threads, **options)
    if classifier.image_size not in (None, exported.image_size):
        raise ValueError(
            f"{exported.model_file} takes {classifier.image_size} px, model.json says {exported.image_size}"
        )
    return classifier


def check_export_parity(
    export_dir: Path | str,
    reference: Any,
    images: np.ndarray,
    *,
    threads: int | None = None,
    min_top1_agreement: float = PARITY_MIN_TOP1_AGREEMENT,
    max_prob_diff: float = PARITY_MAX_PROB_DIFF,
) -> ParityReport:
    """Run the bundle on ``images`` with its runtime class and compare with ``reference``.

    ``reference`` is the Keras model (its probabilities are computed here) or an array of
    probabilities computed beforehand on the same images (no TensorFlow needed then).
    """
    if isinstance(reference, np.ndarray):
        expected = reference
    else:
        expected = reference_probabilities(reference, images)
    candidate = load_exported(export_dir, threads).predict_arrays(images)
    return check_parity(expected, candidate, min_top1_agreement, max_prob_diff)


def load_logged_keras(model_uri: str) -> tuple[Any, dict[str, Any]]:
    """A classifier logged by :func:`fish_platform.ml.packaging.log_classifier` -> (Keras model, metadata).

    Loads the pyfunc model (``models:/name/version``, ``models:/name@alias``, ``runs:/...``) and
    takes the Keras model and ``metadata.json`` (labels, image_size, variant, weights) from the
    wrapper. Uses MLflow's configured tracking and registry URIs.
    """
    import mlflow

    wrapped = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    keras_model = getattr(wrapped, "keras_model", None)
    meta = getattr(wrapped, "metadata", None)
    if keras_model is None or not isinstance(meta, dict):
        raise TypeError(f"{model_uri} is not a fish classifier (got {type(wrapped).__name__})")
    return keras_model, dict(meta)


def export_logged_model(
    model_uri: str, fmt: ExportFormat, out_dir: Path | str, *, overwrite: bool = False
) -> Path:
    """Bundle a logged model version (see :func:`load_logged_keras`) in ``fmt`` at ``out_dir``."""
    keras_model, meta = load_logged_keras(model_uri)
    info = {
        "model_uri": model_uri,
        **{k: meta[k] for k in ("variant", "weights", "keras_version") if k in meta},
    }
    return export_model(
        keras_model,
        list(meta["labels"]),
        int(meta["image_size"]),
        fmt,
        out_dir,
        info=info,
        overwrite=overwrite,
    )
