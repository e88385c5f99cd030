"""Behavioural checks over predict functions with known behaviour (numpy only, no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from fish_platform.ml.behaviour import (
    FLIP_INVARIANCE_THRESHOLD,
    NOT_A_FISH_KINDS,
    PHOTOMETRIC_INVARIANCE_THRESHOLD,
    adjust_brightness,
    adjust_contrast,
    flip_invariance,
    minimum_functionality,
    not_a_fish_check,
    not_a_fish_images,
    not_a_fish_kinds,
    not_a_fish_rate,
    photometric_invariance,
)
from fish_platform.ml.calibration import CalibrationRecord

pytestmark = pytest.mark.timeout(60)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def colour_predict(images: np.ndarray) -> np.ndarray:
    """3 'species' by dominant channel: blind to flips, brightness shifts and contrast changes."""
    return _softmax(images.astype(np.float32).mean(axis=(1, 2)) / 10.0)


def left_half_predict(images: np.ndarray) -> np.ndarray:
    """2 'species' by which half is brighter: a flip swaps the answer."""
    width = images.shape[2]
    left = images[:, :, : width // 2].astype(np.float32).mean(axis=(1, 2, 3))
    right = images[:, :, width // 2:].astype(np.float32).mean(axis=(1, 2, 3))
    return _softmax(np.stack([left, right], axis=1))


def brightness_predict(images: np.ndarray) -> np.ndarray:
    """2 'species' by absolute brightness around 128: sensitive to small brightness changes."""
    mean = images.astype(np.float32).mean(axis=(1, 2, 3))
    return _softmax(np.stack([mean - 128.0, 128.0 - mean], axis=1))


def _images(n: int = 40, seed: int = 0) -> np.ndarray:
    """Mid-grey noisy images with a dominant channel and a bright blob on a random side."""
    rng = np.random.default_rng(seed)
    images = rng.normal(110, 10, (n, 24, 32, 3))
    for i in range(n):
        images[i, :, :, i % 3] += 40  # a clear dominant channel
        if rng.random() < 0.5:
            images[i, 6:18, 2:12] += 50
        else:
            images[i, 6:18, 20:30] += 50
    return np.clip(images, 0, 255).astype(np.uint8)


def test_a_flip_invariant_predictor_passes():
    result = flip_invariance(colour_predict, _images())
    assert result.passed and result.rate == 1.0 and result.n == 40 and result.failing == []
    assert result.threshold == FLIP_INVARIANCE_THRESHOLD == 0.95


def test_a_predictor_that_depends_on_the_left_half_fails():
    images = _images()
    result = flip_invariance(left_half_predict, images, batch_size=7)  # batching must not matter
    assert not result.passed and result.rate == 0.0
    assert result.failing == list(range(40))


def test_photometric_invariance():
    images = _images()
    stable = photometric_invariance(colour_predict, images)
    assert stable.passed and stable.rate == 1.0 and stable.threshold == PHOTOMETRIC_INVARIANCE_THRESHOLD
    # Images close to mid-grey flip class under +/-10% brightness.
    grey = np.clip(np.random.default_rng(1).normal(128, 3, (20, 16, 16, 3)), 0, 255).astype(np.uint8)
    fragile = photometric_invariance(brightness_predict, grey)
    assert not fragile.passed and fragile.rate == 0.0 and len(fragile.failing) == 20
    assert photometric_invariance(brightness_predict, grey, brightness=0.0, contrast=0.1).passed


def test_photometric_changes():
    images = np.array([[[[100, 150, 200]]]], np.uint8)
    np.testing.assert_array_equal(adjust_brightness(images, 0.1)[0, 0, 0], [126, 176, 226])
    np.testing.assert_array_equal(adjust_brightness(images, 0.3)[0, 0, 0], [176, 226, 255])  # clipped
    np.testing.assert_array_equal(adjust_contrast(images, 1.1)[0, 0, 0], [95, 150, 205])
    with pytest.raises(ValueError, match="uint8"):
        adjust_contrast(images.astype(np.float32), 1.1)


def test_minimum_functionality_flags_a_species_under_the_floor():
    labels = ["cod", "eel", "ray", "tuna"]
    truth = ["cod"] * 10 + ["eel"] * 10 + ["ray"] * 10
    predicted = ["cod"] * 10 + ["eel"] * 7 + ["cod"] * 3 + ["ray"] * 3 + ["eel"] * 7
    result = minimum_functionality(truth, predicted, labels, floor=0.5)
    assert not result.passed and result.failing == ["ray"]
    assert result.per_species == {"cod": 1.0, "eel": 0.7, "ray": 0.3}
    assert result.rate == 0.3 and result.threshold == 0.5 and result.n == 30
    assert result.untested == ["tuna"]
    assert minimum_functionality(truth, predicted, labels, floor=0.3).passed

    # Integer indices into the label order work too.
    indices = minimum_functionality(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]), labels, floor=0.6)
    assert indices.per_species == {"cod": 1.0, "eel": 0.5} and indices.failing == ["eel"]
    with pytest.raises(ValueError, match="outside the label set"):
        minimum_functionality(["shark"], ["cod"], labels)


def test_not_a_fish_images_are_diverse():
    images = not_a_fish_images(48, 28, seed=3)
    assert images.shape == (28, 48, 48, 3) and images.dtype == np.uint8
    kinds = not_a_fish_kinds(28)
    assert set(kinds) == set(NOT_A_FISH_KINDS) and kinds.count("stripes") == 4
    # Plain colours have no texture; noise and patterns do.
    spread = images.reshape(28, -1, 3).std(axis=1).mean(axis=1)
    for kind, value in zip(kinds, spread, strict=True):
        assert (value == 0) if kind == "plain" else (value > 1.0), kind
    noise = images[kinds.index("uniform_noise")]
    assert len(np.unique(noise.reshape(-1, 3), axis=0)) > 1000
    checker = images[kinds.index("checkerboard")]
    assert len(np.unique(checker.reshape(-1, 3), axis=0)) == 2
    flat = images.reshape(28, -1).astype(np.int64)
    assert len({tuple(row) for row in flat}) == 28  # no duplicates
    np.testing.assert_array_equal(not_a_fish_images(48, 28, seed=3), images)  # reproducible
    assert not np.array_equal(not_a_fish_images(48, 28, seed=4), images)


def test_not_a_fish_rate_with_a_calibration_record():
    images = not_a_fish_images(16, 21, seed=0)

    def unsure(batch: np.ndarray) -> np.ndarray:
        return np.full((len(batch), 4), 0.25)  # no preference: every image is unknown

    def sure(batch: np.ndarray) -> np.ndarray:
        return np.tile([0.97, 0.01, 0.01, 0.01], (len(batch), 1))

    record = CalibrationRecord(temperature=1.0, threshold=0.6, score_method="max_probability",
                               ece_before=0.0, ece_after=0.0)
    assert not_a_fish_rate(lambda x: record.is_unknown(unsure(x)), images, batch_size=5) == 1.0
    assert not_a_fish_rate(lambda x: record.is_unknown(sure(x)), images) == 0.0
    check = not_a_fish_check(lambda x: record.is_unknown(sure(x)), images)
    assert not check.passed and check.n == 21
