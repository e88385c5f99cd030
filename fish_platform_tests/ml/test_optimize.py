"""Conversion to OpenVINO, LiteRT and ONNX, parity with Keras, and the INT8 gate (real quantized models)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from fish_platform.ml import optimize
from fish_platform.ml.optimize import Int8Gate, check_int8, check_parity, reference_probabilities
from fish_platform.ml.runtimes import LiteRTClassifier, OpenVINOClassifier
from fish_platform_tests.ml.runtime_helpers import artifacts, colour_images

# The first test of a module converts its models (EfficientNet B0: about a minute on 2 cores).
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return artifacts("tiny", tmp_path_factory.getbasetemp(), ("openvino", "litert"))


@pytest.fixture(scope="module")
def b0(tmp_path_factory):
    # B0's LiteRT and ONNX conversions (15-20 s each on 2 cores) are left to benchmarks/runtimes.py,
    # which checks their parity at 224 and 380 px; the tiny CNN's are tested here and in test_runtimes.
    return artifacts("b0", tmp_path_factory.getbasetemp(), ("openvino",))


# --- parity arithmetic ---------------------------------------------------------------------------


def _probs(n: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 2, (n, 4))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def test_parity_arithmetic():
    reference = _probs(200, 0)
    same = check_parity(reference, reference + 1e-6)
    assert same.passed and same.n_images == 200 and same.top1_agreement == 1.0
    assert same.thresholds == {"min_top1_agreement": 0.995, "max_prob_diff": 1e-3}
    assert same.max_abs_diff == pytest.approx(1e-6, rel=0.05)  # float32 inputs

    shifted = reference.copy()
    shifted[:, 0] += 2e-3  # every arg-max kept (or nearly), but probabilities off by 2e-3
    report = check_parity(reference, shifted)
    assert not report.passed and "max probability difference" in report.reason

    flipped = reference.copy()
    rows = np.arange(2)  # 2 of 200 images (1%) get another class: agreement 0.99 < 0.995
    flipped[rows] = np.roll(flipped[rows], 1, axis=1)
    loose = check_parity(reference, flipped, max_prob_diff=1.0)
    assert not loose.passed and loose.top1_agreement == pytest.approx(0.99) and "agreement" in loose.reason
    assert check_parity(reference, flipped, min_top1_agreement=0.99, max_prob_diff=1.0).passed

    broken = reference.copy()
    broken[3, 1] = np.nan
    nan_report = check_parity(reference, broken)
    assert not nan_report.passed and math.isinf(nan_report.max_abs_diff) and "not finite" in nan_report.reason
    with pytest.raises(ValueError):
        check_parity(reference, reference[:10])
    with pytest.raises(ValueError):
        check_parity(reference[:0], reference[:0])
    assert set(report.to_dict()) >= {"top1_agreement", "max_abs_diff", "n_images", "passed", "thresholds"}


# --- conversion and parity -----------------------------------------------------------------------


def test_conversion_to_openvino_and_litert_keeps_the_keras_probabilities(b0, tiny):
    """build_model's B0 (32 px) through OpenVINO, the tiny CNN through both, match Keras at any batch size."""
    images, _ = colour_images(96, seed=21)
    reference = reference_probabilities(b0.model, images)
    assert reference.std(axis=0).max() > 0.02  # the probabilities really vary from image to image
    tiny_reference = reference_probabilities(tiny.model, images)
    cases = [
        (OpenVINOClassifier(b0.openvino, threads=2), reference),
        (OpenVINOClassifier(tiny.openvino, threads=2), tiny_reference),
        (LiteRTClassifier(tiny.litert, threads=2), tiny_reference),
    ]
    for runtime, expected in cases:
        report = check_parity(expected, runtime.predict_arrays(images))
        assert report.passed, f"{runtime.name}: {report.reason}"
        assert report.max_abs_diff < 1e-4  # FP32 everywhere: ~1e-6 measured
        for n in (1, 7):  # dynamic batch: other sizes give the same rows
            np.testing.assert_allclose(runtime.predict_arrays(images[:n]), expected[:n], atol=1e-4)


def test_openvino_ir_keeps_fp32_weights(b0):
    xml = b0.openvino.read_text()
    assert (b0.openvino.parent / optimize.OPENVINO_BIN).is_file()
    assert 'element_type="f32"' in xml
    assert 'element_type="f16"' not in xml  # compress_to_fp16=False: no FP16 constants
    names = re.findall(r'names="([^"]*)"', xml)
    assert any("image" in n for n in names) and any("probabilities" in n for n in names)


def test_parity_fails_for_a_perturbed_model(tiny):
    """A candidate that no longer computes the Keras model's function is caught."""
    images, _ = colour_images(64, seed=22)
    candidate = OpenVINOClassifier(tiny.openvino, threads=2).predict_arrays(images)
    assert check_parity(reference_probabilities(tiny.model, images), candidate).passed

    head = tiny.model.get_layer("species")
    kernel, bias = head.get_weights()
    noise = np.random.default_rng(0).normal(0, 0.05, kernel.shape).astype(np.float32)
    head.set_weights([kernel + noise, bias])  # the Keras side now differs from the converted model
    try:
        report = check_parity(reference_probabilities(tiny.model, images), candidate)
    finally:
        head.set_weights([kernel, bias])  # the model is shared with other tests
    assert not report.passed
    assert report.max_abs_diff > optimize.PARITY_MAX_PROB_DIFF


def test_converters_reject_a_folder_that_is_not_a_saved_model(tmp_path):
    # (A Keras model is converted through a temporary SavedModel: test_export covers that path.)
    with pytest.raises(ValueError, match="not a SavedModel"):
        optimize.convert_to_openvino(tmp_path, tmp_path / "nothing")


# --- INT8 gate -------------------------------------------------------------------------------------


def test_int8_gate_arithmetic():
    assert check_int8(0.90, 0.895).passed  # half a point lost: within one point
    assert check_int8(0.91, 0.90).passed  # exactly one point (no float rounding surprise)
    assert check_int8(0.80, 0.85).passed  # INT8 scoring higher is fine
    failed = check_int8(0.90, 0.88)
    assert not failed.passed and failed.drop == pytest.approx(0.02) and "exceeds" in failed.reason
    assert check_int8(0.90, 0.88, max_drop=0.05).passed
    assert not Int8Gate(max_drop=0.0).check(0.9, 0.8999).passed
    assert Int8Gate(max_drop=0.0).check(0.9, 0.9).passed

    too_few = check_int8(0.9, 0.9, n_images=50)  # 50 images cannot resolve a 1-point drop
    assert not too_few.passed and "need at least 100" in too_few.reason
    assert check_int8(0.9, 0.9, n_images=100).passed
    assert Int8Gate(0.05).min_images == 20 and Int8Gate().min_images == 100
    assert not check_int8(0.9, math.nan).passed
    with pytest.raises(ValueError):
        check_int8(90.0, 89.0)  # percentages instead of fractions
    with pytest.raises(ValueError):
        Int8Gate(max_drop=-0.1)
    assert optimize.INT8_MAX_ACCURACY_DROP == Int8Gate().max_drop == 0.01


def test_int8_accepted_for_a_trained_model_rejected_when_badly_calibrated(tiny, tmp_path):
    """The same trained model: representative calibration passes; blank (white) frames do not."""
    calibration, _ = colour_images(64, seed=31)
    images, labels = colour_images(128, seed=32)

    good = optimize.quantize_int8_gated(tiny.openvino, calibration, images, labels, tmp_path / "good")
    assert good.accepted and good.model_path is not None, good.report.reason
    assert good.report.reference_accuracy >= 0.98 and good.report.n_images == 128
    assert "FakeQuantize" in good.model_path.read_text()  # really quantized
    int8 = OpenVINOClassifier(good.model_path, threads=2).predict_arrays(images)
    assert int8.shape == (128, 4)

    blank = np.full((16, 32, 32, 3), 255.0, dtype=np.float32)
    bad = optimize.quantize_int8_gated(tiny.openvino, blank, images, labels, tmp_path / "bad")
    assert not bad.accepted and bad.model_path is None
    assert bad.report.int8_accuracy < bad.report.reference_accuracy - optimize.INT8_MAX_ACCURACY_DROP
    assert "exceeds" in bad.report.reason
    assert not (tmp_path / "bad").exists()  # a rejected model is not left behind


def test_int8_rejected_for_an_efficientnet_whose_argmax_flips(b0, tmp_path):
    """Random-weight B0: its class margins are tiny, so INT8 changes many predictions."""
    calibration, _ = colour_images(64, seed=41)
    images, _ = colour_images(128, seed=42)
    labels = reference_probabilities(b0.model, images).argmax(axis=1)  # FP32 accuracy 1.0 by construction
    result = optimize.quantize_int8_gated(
        b0.openvino, calibration, images, labels, tmp_path / "int8", keep_rejected=True
    )
    assert not result.accepted, result.report.reason
    assert result.report.reference_accuracy == 1.0
    assert result.report.int8_accuracy < 0.99 and result.report.top1_agreement == result.report.int8_accuracy
    assert result.model_path is not None and result.model_path.is_file()  # kept for inspection
