"""Behavioural checks of a classifier, over any ``predict(images_uint8 (N, H, W, 3)) -> probabilities``.

Invariance checks (a fish seen in a mirror, or in slightly different light, is the same fish),
a per-species minimum-functionality check, and a "not a fish" set of plain colours, noise and
textures to measure how often the open-set rule rejects what is clearly not a fish. Plain numpy:
``predict`` can be a Keras model, the packaged model's ``predict_arrays`` or a test double.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Thresholds, in one place. A check passes when its rate is at least its threshold.
FLIP_INVARIANCE_THRESHOLD = 0.95  # share of images whose top-1 survives a horizontal flip
PHOTOMETRIC_INVARIANCE_THRESHOLD = 0.95  # share whose top-1 survives every brightness/contrast change
DEFAULT_BRIGHTNESS = 0.1  # +/- this fraction of the full 0..255 range
DEFAULT_CONTRAST = 0.1  # +/- this fraction around each image's mean
MIN_SPECIES_RECALL = 0.5  # default per-species recall floor for minimum functionality
NOT_A_FISH_REJECTION_THRESHOLD = 0.9  # share of not-a-fish images the open-set rule should reject
DEFAULT_BATCH_SIZE = 64

NOT_A_FISH_KINDS = (
    "plain", "uniform_noise", "smooth_noise", "stripes", "checkerboard", "linear_gradient", "radial_gradient",
)

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BehaviourResult:
    """One check: ``rate`` compared with ``threshold`` over ``n`` cases.

    ``failing``: image indices whose prediction changed (invariance checks) or species under the
    floor (minimum functionality). ``per_species``: recall per species with test images.
    """

    name: str
    rate: float
    passed: bool
    threshold: float
    n: int
    failing: list[Any] = field(default_factory=list)
    per_species: dict[str, float] = field(default_factory=dict)
    untested: list[str] = field(default_factory=list)  # species without images (not counted)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_images(images: np.ndarray) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[3] != 3 or array.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {array.shape} {array.dtype}")
    return array


def _top1(predict: Predict, images: np.ndarray, batch_size: int) -> np.ndarray:
    if len(images) == 0:
        return np.zeros(0, np.int64)
    parts = [np.asarray(predict(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return np.concatenate(parts).argmax(axis=1)


def _invariance(name: str, predict: Predict, images: np.ndarray, variants: list[np.ndarray],
                threshold: float, batch_size: int) -> BehaviourResult:
    reference = _top1(predict, images, batch_size)
    stable = np.ones(len(images), dtype=bool)
    for variant in variants:
        stable &= _top1(predict, variant, batch_size) == reference
    rate = float(stable.mean()) if len(images) else 1.0
    return BehaviourResult(name, rate, rate >= threshold, threshold, len(images),
                           failing=[int(i) for i in np.flatnonzero(~stable)])


def horizontal_flip(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(_check_images(images)[:, :, ::-1])


def adjust_brightness(images: np.ndarray, delta: float) -> np.ndarray:
    """Add ``delta`` (a fraction of 255) to every pixel, clipped to uint8."""
    shifted = _check_images(images).astype(np.float32) + delta * 255.0
    return np.clip(np.rint(shifted), 0, 255).astype(np.uint8)


def adjust_contrast(images: np.ndarray, factor: float) -> np.ndarray:
    """Scale each image's deviation from its own mean by ``factor``, clipped to uint8."""
    values = _check_images(images).astype(np.float32)
    mean = values.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip(np.rint((values - mean) * factor + mean), 0, 255).astype(np.uint8)


def flip_invariance(predict: Predict, images: np.ndarray, threshold: float = FLIP_INVARIANCE_THRESHOLD,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> BehaviourResult:
    """Share of images whose top-1 species is unchanged under a horizontal flip."""
    images = _check_images(images)
    return _invariance("flip_invariance", predict, images, [horizontal_flip(images)], threshold, batch_size)


def photometric_invariance(
    predict: Predict,
    images: np.ndarray,
    brightness: float = DEFAULT_BRIGHTNESS,
    contrast: float = DEFAULT_CONTRAST,
    threshold: float = PHOTOMETRIC_INVARIANCE_THRESHOLD,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BehaviourResult:
    """Share of images whose top-1 survives every one of: brightness +/- ``brightness`` (of 255) and
    contrast x (1 +/- ``contrast``) around the image mean."""
    images = _check_images(images)
    variants = [
        adjust_brightness(images, brightness), adjust_brightness(images, -brightness),
        adjust_contrast(images, 1.0 + contrast), adjust_contrast(images, 1.0 - contrast),
    ]
    return _invariance("photometric_invariance", predict, images, variants, threshold, batch_size)


def _names(values: Sequence[Any] | np.ndarray, labels: Sequence[str]) -> list[str]:
    array = np.asarray(values)
    if array.size and np.issubdtype(array.dtype, np.integer):
        return [labels[int(i)] for i in array]
    return [str(value) for value in array]


def minimum_functionality(
    true_labels: Sequence[Any] | np.ndarray,
    predicted_labels: Sequence[Any] | np.ndarray,
    labels: Sequence[str],
    floor: float = MIN_SPECIES_RECALL,
) -> BehaviourResult:
    """Every species with test images must reach recall ``floor``; ``rate`` is the lowest recall.

    Labels may be species names or integer indices into ``labels``. Species without test images
    are listed in ``untested`` and do not fail the check.
    """
    truth, predicted = _names(true_labels, labels), _names(predicted_labels, labels)
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    unknown = sorted(set(truth) - set(labels))
    if unknown:
        raise ValueError(f"true labels outside the label set: {', '.join(unknown)}")
    support = dict.fromkeys(labels, 0)
    hits = dict.fromkeys(labels, 0)
    for true, guess in zip(truth, predicted, strict=True):
        support[true] += 1
        hits[true] += int(true == guess)
    recall = {name: hits[name] / support[name] for name in labels if support[name]}
    failing = [name for name, value in recall.items() if value < floor]
    rate = min(recall.values()) if recall else 0.0
    return BehaviourResult(
        "minimum_functionality", float(rate), bool(recall) and not failing, floor, len(truth),
        failing=failing, per_species=recall, untested=[name for name in labels if not support[name]],
    )


def not_a_fish_rate(predict_unknown: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> float:
    """Share of ``images`` that ``predict_unknown`` (images -> bool per image, True = not a known
    species) rejects. With a :class:`~fish_platform.ml.calibration.CalibrationRecord` ``record``:
    ``predict_unknown = lambda x: record.is_unknown(predict(x))``."""
    images = _check_images(images)
    if len(images) == 0:
        return 0.0
    flags = np.concatenate([np.asarray(predict_unknown(images[i:i + batch_size]), dtype=bool).ravel()
                            for i in range(0, len(images), batch_size)])
    return float(flags.mean())


def not_a_fish_check(predict_unknown: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                     threshold: float = NOT_A_FISH_REJECTION_THRESHOLD) -> BehaviourResult:
    rate = not_a_fish_rate(predict_unknown, images)
    return BehaviourResult("not_a_fish_rejection", rate, rate >= threshold, threshold, len(images))


def not_a_fish_kinds(n: int) -> list[str]:
    """The kind of each image :func:`not_a_fish_images` makes (the kinds cycle in order)."""
    return [NOT_A_FISH_KINDS[i % len(NOT_A_FISH_KINDS)] for i in range(n)]


def not_a_fish_images(size: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` square (size, size, 3) uint8 images that are clearly not fish, kinds cycling through
    :data:`NOT_A_FISH_KINDS`, with random colours, frequencies, angles and centres."""
    if size < 1 or n < 0:
        raise ValueError(f"size must be positive and n non-negative, got size={size}, n={n}")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, kind in enumerate(not_a_fish_kinds(n)):
        first, second = rng.integers(0, 256, 3).astype(np.float32), rng.integers(0, 256, 3).astype(np.float32)
        if kind == "plain":
            picture = np.broadcast_to(first, (size, size, 3))
        elif kind == "uniform_noise":
            picture = rng.integers(0, 256, (size, size, 3)).astype(np.float32)
        elif kind == "smooth_noise":
            cells = int(rng.integers(2, 9))
            coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
            picture = np.stack([_resize_channel(coarse[..., c], size) for c in range(3)], axis=-1)
        else:
            if kind == "stripes":
                angle, frequency = rng.uniform(0, np.pi), rng.uniform(2, 12)
                phase = (x * np.cos(angle) + y * np.sin(angle)) * frequency
                mix = (np.sin(2 * np.pi * phase) > 0).astype(np.float32)
            elif kind == "checkerboard":
                cells = int(rng.integers(2, 11))
                mix = ((np.floor(x * cells * 0.999) + np.floor(y * cells * 0.999)) % 2).astype(np.float32)
            elif kind == "linear_gradient":
                angle = rng.uniform(0, 2 * np.pi)
                ramp = x * np.cos(angle) + y * np.sin(angle)
                mix = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
            else:  # radial_gradient
                cy, cx = rng.uniform(0.2, 0.8, 2)
                radius = np.hypot(x - cx, y - cy)
                mix = radius / max(float(radius.max()), 1e-6)
            picture = first * (1.0 - mix[..., None]) + second * mix[..., None]
        images[i] = np.clip(np.rint(picture), 0, 255).astype(np.uint8)
    return images


def _resize_channel(channel: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    resized = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    return np.asarray(resized, dtype=np.float32)
