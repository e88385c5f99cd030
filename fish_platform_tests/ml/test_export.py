"""Edge bundles: each format is a self-contained folder that its runtime loads and that matches Keras."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fish_platform.ml import export
from fish_platform.ml.explain import cam_model, head_weights
from fish_platform.ml.export import (
    check_export_parity,
    export_logged_model,
    export_model,
    load_exported,
    read_export,
    read_head,
)
from fish_platform.ml.optimize import reference_probabilities
from fish_platform_tests.helpers import REPO_ROOT
from fish_platform_tests.ml.runtime_helpers import IMAGE_SIZE, SPECIES, artifacts, colour_images

pytestmark = pytest.mark.timeout(240)

FILES = {
    "litert": {"model.tflite"},
    "openvino": {"model.xml", "model.bin"},
    "onnx": {"model.onnx"},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return artifacts("tiny", tmp_path_factory.getbasetemp(), formats=())


@pytest.mark.parametrize("fmt", ["litert", "openvino", "onnx"])
def test_each_format_is_a_self_contained_bundle_with_parity(fmt, tiny, tmp_path):
    source = {"variant": "tiny", "version": "7"}
    written = export_model(
        tiny.model, SPECIES, IMAGE_SIZE, fmt, tmp_path / "bundle", saved_model=tiny.saved_model, info=source
    )
    moved = shutil.move(str(written), str(tmp_path / "elsewhere"))  # nothing points back to the source
    names = {p.name for p in (tmp_path / "elsewhere").iterdir()}
    assert names == FILES[fmt] | {"labels.json", "model.json", "head.npz"}
    assert not list(tmp_path.glob(".bundle-*"))  # no staging folder left behind

    assert json.loads((tmp_path / "elsewhere" / "labels.json").read_text()) == SPECIES
    manifest = json.loads((tmp_path / "elsewhere" / "model.json").read_text())
    assert manifest["format"] == fmt and manifest["image_size"] == IMAGE_SIZE
    assert manifest["labels"] == SPECIES and manifest["source"] == source
    assert manifest["input"]["shape"] == [-1, IMAGE_SIZE, IMAGE_SIZE, 3]
    assert manifest["input"]["layout"] == "NHWC" and manifest["input"]["value_range"] == [0, 255]
    assert manifest["input"]["dtype"] == "float32" and manifest["output"]["shape"] == [-1, 4]
    assert "softmax" in manifest["output"]["meaning"] and "bilinear" in manifest["preprocessing"]
    assert manifest["readme"] and manifest["runtime"]["exported_with"]
    assert set(manifest["files"]) == FILES[fmt] and manifest["model_file"] in FILES[fmt]
    assert manifest["extra_files"] == ["head.npz"] and manifest["features"]["head_file"] == "head.npz"

    bundle = read_export(moved)
    assert (bundle.format, bundle.labels, bundle.image_size) == (fmt, SPECIES, IMAGE_SIZE)
    classifier = load_exported(moved, threads=1)
    assert classifier.name == fmt and classifier.n_classes == 4

    images, labels = colour_images(48, seed=61)
    report = check_export_parity(moved, tiny.model, images, threads=1)
    assert report.passed and report.n_images == 48, report.reason
    reference = reference_probabilities(tiny.model, images)
    assert check_export_parity(moved, reference, images).passed  # precomputed reference, no Keras
    assert (classifier.predict_arrays(images).argmax(axis=1) == labels).mean() >= 0.98

    # The second output is Keras' feature map, and head.npz the dense head: together, the exact logits.
    probs, features = classifier.predict_with_features(images[:6])
    expected = np.asarray(cam_model(tiny.model)(images[:6], training=False)[1])
    np.testing.assert_allclose(features, expected, atol=1e-4)
    kernel, bias = read_head(moved)
    np.testing.assert_array_equal(kernel, head_weights(tiny.model)[0])
    logits = features.mean(axis=(1, 2)) @ kernel + bias
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(axis=1, keepdims=True), probs, atol=1e-4)


def test_bundle_from_a_keras_model_and_guards(tiny, tmp_path):
    # Without saved_model=: the Keras model is exported to a temporary SavedModel first.
    out = export_model(tiny.model, SPECIES, IMAGE_SIZE, "openvino", tmp_path / "ov")
    images, _ = colour_images(8, seed=62)
    assert check_export_parity(out, tiny.model, images).passed

    with pytest.raises(FileExistsError):
        export_model(tiny.model, SPECIES, IMAGE_SIZE, "onnx", out, saved_model=tiny.saved_model)
    replaced = export_model(
        tiny.model, SPECIES, IMAGE_SIZE, "onnx", out, saved_model=tiny.saved_model, overwrite=True
    )
    assert read_export(replaced).format == "onnx" and not (replaced / "model.xml").exists()
    with pytest.raises(ValueError, match="labels"):
        export_model(
            tiny.model, SPECIES[:3], IMAGE_SIZE, "onnx", tmp_path / "x", saved_model=tiny.saved_model
        )
    with pytest.raises(ValueError, match="image_size"):
        export_model(tiny.model, SPECIES, 64, "onnx", tmp_path / "x", saved_model=tiny.saved_model)
    with pytest.raises(ValueError, match="format"):
        export_model(tiny.model, SPECIES, IMAGE_SIZE, "tensorrt", tmp_path / "x")
    assert not (tmp_path / "x").exists()

    (replaced / "model.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="model.onnx"):
        read_export(replaced)
    with pytest.raises(FileNotFoundError):
        read_export(tmp_path)
    assert export.EXPORT_FORMATS == ("litert", "openvino", "onnx")


def test_int8_bundle_replaces_the_model_and_says_so(tiny, tmp_path):
    from fish_platform.ml.optimize import quantize_int8_gated

    fp32 = export_model(
        tiny.model, SPECIES, IMAGE_SIZE, "openvino", tmp_path / "fp32", saved_model=tiny.saved_model
    )
    calibration, _ = colour_images(32, seed=64)
    images, labels = colour_images(100, seed=65)
    result = quantize_int8_gated(fp32 / "model.xml", calibration, images, labels, tmp_path / "q")
    assert result.accepted, result.report.reason
    out = export.export_int8_bundle(fp32, result.model_path, tmp_path / "int8", gate_report=result.report)
    bundle = read_export(out)
    assert bundle.manifest["precision"] == "int8" and bundle.labels == SPECIES
    assert bundle.manifest["quantization"]["gate"]["passed"] is True
    assert "FakeQuantize" in (out / "model.xml").read_text()
    assert (out / "head.npz").is_file() and load_exported(out, threads=1).has_features  # maps on INT8 too
    assert json.loads((fp32 / "model.json").read_text())["precision"] == "float32"  # source untouched
    probs = load_exported(out, threads=1).predict_arrays(images)
    assert (probs.argmax(axis=1) == labels).mean() >= 0.98
    with pytest.raises(ValueError, match="openvino"):
        onnx = export_model(
            tiny.model, SPECIES, IMAGE_SIZE, "onnx", tmp_path / "o", saved_model=tiny.saved_model
        )
        export.export_int8_bundle(onnx, result.model_path, tmp_path / "bad")


def test_loading_a_bundle_does_not_import_tensorflow(tiny, tmp_path):
    out = export_model(
        tiny.model, SPECIES, IMAGE_SIZE, "litert", tmp_path / "b", saved_model=tiny.saved_model
    )
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        from fish_platform.ml.export import load_exported, read_export
        bundle = read_export({str(out)!r})
        probs = load_exported(bundle.path, threads=1).predict_arrays(np.zeros((2, 32, 32, 3), np.float32))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        print(json.dumps({{"shape": list(probs.shape), "loaded": loaded}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"shape": [2, 4], "loaded": []}


def test_export_a_logged_model_version(tiny, mlflow_store, tmp_path):
    import mlflow

    from fish_platform.ml.packaging import log_classifier

    with mlflow.start_run():
        info = log_classifier(tiny.model, SPECIES, IMAGE_SIZE, "tiny", "none")
    out = export_logged_model(info.model_uri, "onnx", tmp_path / "logged")
    bundle = read_export(out)
    assert bundle.labels == SPECIES and bundle.image_size == IMAGE_SIZE
    assert bundle.manifest["source"]["model_uri"] == info.model_uri
    assert bundle.manifest["source"]["variant"] == "tiny"
    images, _ = colour_images(16, seed=63)
    assert check_export_parity(out, tiny.model, images).passed
