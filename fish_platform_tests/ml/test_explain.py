"""Class activation maps: exact arithmetic, the Keras two-output model, overlays, and maps that point
at the object (a hand-weighted model and a tiny trained one)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fish_platform.ml.explain import (
    cam_model,
    class_activation,
    class_activation_map,
    explain_images,
    head_weights,
    overlay,
    overlay_png,
    upsample,
)

pytestmark = pytest.mark.timeout(120)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def efficientnet():
    """The real architecture (scratch weights) at 64 px: a 2 x 2 x 1280 feature map."""
    from fish_platform.ml.model import build_model

    model, _ = build_model(3, 64, "B0", "none")
    return model


def test_cam_model_of_build_model(efficientnet):
    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    with_cam = cam_model(efficientnet)
    probabilities, feature_maps = (np.asarray(out) for out in with_cam(images, training=False))
    assert probabilities.shape == (4, 3) and feature_maps.shape == (4, 2, 2, 1280)
    np.testing.assert_allclose(probabilities, np.asarray(efficientnet(images, training=False)), atol=1e-6)

    kernel, bias = head_weights(efficientnet)
    assert kernel.shape == (1280, 3) and bias.shape == (3,)
    # The head is exactly softmax(mean(F) @ W + b): each class's raw map averages to its logit - bias.
    raw_means = [[class_activation(f, kernel, c).mean() for c in range(3)] for f in feature_maps]
    logits = np.array(raw_means) + bias
    np.testing.assert_allclose(_softmax(logits), probabilities, atol=1e-5)

    for f in feature_maps:
        for c in range(3):
            cam = class_activation_map(f, kernel, c)
            assert cam.shape == (2, 2) and cam.min() >= 0.0 and cam.max() <= 1.0
            raw = np.maximum(np.einsum("hwk,k->hw", f.astype(np.float64), kernel[:, c].astype(np.float64)), 0)
            expected = raw / raw.max() if raw.max() > 0 else raw
            np.testing.assert_allclose(cam, expected, atol=1e-6)


def test_class_activation_map_by_hand():
    rng = np.random.default_rng(1)
    feature_map, kernel = rng.normal(size=(5, 7, 6)), rng.normal(size=(6, 4))
    for c in range(4):
        raw = (feature_map * kernel[:, c]).sum(axis=-1)
        np.testing.assert_allclose(class_activation(feature_map, kernel, c), raw)
        cam = class_activation_map(feature_map, kernel, c)
        assert cam.dtype == np.float32 and cam.shape == (5, 7)
        assert cam.max() == pytest.approx(1.0) and cam.min() == 0.0
        np.testing.assert_allclose(cam, np.maximum(raw, 0) / raw.max(), atol=1e-6)
    assert not class_activation_map(np.ones((2, 2, 3)), -np.ones((3, 2)), 0).any()  # nothing positive
    with pytest.raises(ValueError, match="channels=6"):
        class_activation_map(feature_map, rng.normal(size=(5, 4)), 0)
    with pytest.raises(ValueError, match="class_index"):
        class_activation_map(feature_map, kernel, 4)


def test_overlay_png_has_the_image_size():
    image = np.random.default_rng(2).integers(0, 256, (60, 80, 3)).astype(np.uint8)  # H=60, W=80
    cam = np.array([[0.0, 1.0], [0.25, 0.5]], np.float32)
    png = overlay_png(image, cam)
    decoded = Image.open(io.BytesIO(png))
    assert decoded.format == "PNG" and decoded.size == (80, 60) and decoded.mode == "RGB"
    np.testing.assert_array_equal(overlay(image, cam, alpha=0.0), image)
    heat = upsample(cam, (60, 80))
    assert heat.shape == (60, 80) and heat[0, -1] > 0.9 and heat[0, 0] < 0.1  # corners keep their values
    hot = overlay(np.zeros_like(image), cam, alpha=1.0, colormap="inferno")
    assert hot[0, -1].sum() > hot[0, 0].sum()
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.float32), cam)


def _bright_object_model(size: int = 16):
    """1x1 conv: channel 0 fires on bright pixels, channel 1 on dark ones; GAP; dense 'object' vs
    'background'. Its class-0 CAM must be exactly the bright region."""
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    conv = keras.layers.Conv2D(2, 1, activation="relu", name="detector")
    features = keras.layers.GlobalAveragePooling2D(name="pool")(conv(inputs))
    outputs = keras.layers.Dense(2, activation="softmax", name="species")(
        keras.layers.Dropout(0.2, name="head_dropout")(features)
    )
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.array([[1, -1]] * 3, np.float32).reshape(1, 1, 3, 2) / 765.0,
                      np.array([-0.5, 0.5], np.float32)])
    dense = model.get_layer("species")
    dense.set_weights([np.array([[4, -4], [-4, 4]], np.float32), np.zeros(2, np.float32)])
    return model


def test_hand_weighted_model_maps_the_bright_object():
    model = _bright_object_model()
    image = np.full((1, 16, 16, 3), 20, np.float32)
    image[0, 4:8, 10:14] = 235
    mask = np.zeros((16, 16), bool)
    mask[4:8, 10:14] = True

    kernel, _ = head_weights(model)
    explanation = explain_images(cam_model(model), kernel, image, class_indices=[0])[0]
    np.testing.assert_allclose(explanation.cam, mask.astype(np.float32), atol=1e-6)
    background = explain_images(cam_model(model), kernel, image, class_indices=[1])[0].cam
    np.testing.assert_allclose(background, (~mask).astype(np.float32), atol=1e-6)
    top1 = explain_images(cam_model(model), kernel, image)[0]
    assert top1.class_index == 1 and top1.probability > 0.5  # mostly background


def test_unsupported_heads_are_refused():
    import keras

    inputs = keras.Input((16, 16, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    hidden = keras.layers.Dense(8, activation="relu")(features)
    two_dense = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    with pytest.raises(ValueError, match="one dense layer"):
        cam_model(two_dense)
    flat = keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inputs))
    flattened = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(flat))
    with pytest.raises(ValueError, match="not from a GlobalAveragePooling2D"):
        head_weights(flattened)


def _object_images(n: int, seed: int, size: int = 32, box: int = 8):
    """Red (class 0) or blue (class 1) squares at random places on dark noise, with their masks."""
    rng = np.random.default_rng(seed)
    images = rng.normal(60, 15, (n, size, size, 3))
    labels = rng.integers(0, 2, n)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        row, column = rng.integers(0, size - box, 2)
        colour = [220, 40, 40] if labels[i] == 0 else [40, 40, 220]
        images[i, row:row + box, column:column + box] = colour + rng.normal(0, 10, (box, box, 3))
        masks[i, row:row + box, column:column + box] = True
    return np.clip(images, 0, 255).astype(np.float32), labels, masks


def test_a_trained_model_looks_at_the_object():
    """A tiny conv base (nested, pooling inside, like build_model's) trained for a few seconds."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    hidden = keras.layers.Rescaling(1 / 255.0)(inputs)
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(hidden)
    hidden = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(hidden)
    hidden = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(hidden)
    base = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="avg_pool")(hidden), name="tinybase")
    image = keras.Input((32, 32, 3), name="image")
    head = keras.layers.Dropout(0.1, name="head_dropout")(base(image))
    model = keras.Model(image, keras.layers.Dense(2, activation="softmax", name="species")(head))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    train_images, train_labels, _ = _object_images(400, seed=0)
    model.fit(train_images, train_labels, epochs=8, batch_size=32, verbose=0)

    images, labels, masks = _object_images(40, seed=100)
    with_cam = cam_model(model)
    probabilities, feature_maps = (np.asarray(out) for out in with_cam(images, training=False))
    assert feature_maps.shape == (40, 16, 16, 16)
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.9
    kernel, _ = head_weights(model)
    inside, outside = [], []
    for feature_map, label, mask in zip(feature_maps, labels, masks, strict=True):
        heat = upsample(class_activation_map(feature_map, kernel, int(label)), (32, 32))
        inside.append(heat[mask].mean())
        outside.append(heat[~mask].mean())
    inside, outside = np.array(inside), np.array(outside)
    assert (inside > outside).mean() >= 0.9
    assert inside.mean() > 3 * outside.mean()


def test_the_numpy_side_needs_no_tensorflow():
    code = (
        "import sys, numpy as np\n"
        "from fish_platform.ml import behaviour, calibration, explain\n"
        "cam = explain.class_activation_map(np.ones((2, 2, 3)), np.ones((3, 2)), 1)\n"
        "explain.overlay_png(np.zeros((8, 8, 3), np.uint8), cam)\n"
        "calibration.fit_calibration(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1]))\n"
        "behaviour.not_a_fish_images(8, 7)\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'dagster', 'bentoml') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
