"""Models and converted artifacts for the runtime tests (``fish_platform_tests.ml.runtime_helpers``).

Two small models stand in for the trained classifier:

* :func:`trained_tiny_cnn`: a few-layer CNN with EfficientNet's building blocks (rescaling and
  normalization in the graph, batch norm, swish, depthwise and 1x1 convolutions, a
  squeeze-and-excitation gate, pooling, dropout, softmax), trained in seconds to near 100% on
  four colours of noisy images. Its confident, correct predictions make accuracy and INT8 tests
  meaningful.
* :func:`conditioned_b0`: the real ``build_model`` EfficientNet B0 with random weights at 32 px.
  Untrained, its features shrink to ~1e-7 and every image gets ~uniform probabilities, which would
  make any parity check pass trivially; the last batch norm is set from the features' statistics
  (what one step of batch-norm adaptation would do), so the probabilities vary from image to image.

Conversions cost tens of seconds (tracing dominates), so :func:`artifacts` converts each model
once per test session and shares the files between the test modules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fish_platform_tests.helpers import COLORS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SPECIES = list(COLORS)
IMAGE_SIZE = 32


def colour_images(n: int, size: int = IMAGE_SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy one-colour images (float32 pixels in [0, 255]) of the four species, and labels."""
    rng = np.random.default_rng(seed)
    colours = np.array(list(COLORS.values()), dtype=np.float32)
    labels = rng.permutation(np.arange(n) % len(colours))
    brightness = rng.uniform(0.6, 1.1, (n, 1, 1, 1))
    pixels = colours[labels][:, None, None, :] * brightness + rng.normal(0, 30, (n, size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.float32), labels.astype(np.int64)


def tiny_cnn(n_classes: int = 4, size: int = IMAGE_SIZE) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3), dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    x = layers.Normalization(mean=[0.5, 0.5, 0.5], variance=[0.08, 0.08, 0.08])(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("swish")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("swish")(x)
    gate = layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = layers.Conv2D(4, 1, activation="swish")(gate)
    gate = layers.Conv2D(16, 1, activation="sigmoid")(gate)
    x = layers.Multiply()([x, gate])
    x = layers.Conv2D(24, 1, strides=2, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("swish")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="species")(x)
    return keras.Model(inputs, outputs, name="fish_tiny_cnn")


def trained_tiny_cnn(seed: int = 0) -> Any:
    """The tiny CNN fitted on 192 colour images (about 5 s on 2 cores; top-1 accuracy 1.0)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = tiny_cnn()
    images, labels = colour_images(192, seed=seed + 100)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, batch_size=32, epochs=4, verbose=0)
    return model


def conditioned_b0(images: np.ndarray, seed: int = 0, n_classes: int = 4) -> Any:
    """``build_model``'s B0 with random weights at the images' size, its last batch norm set from them."""
    import keras

    from fish_platform.ml.model import base_of, build_model

    keras.utils.set_random_seed(seed)
    model, _ = build_model(n_classes, images.shape[1], "B0", "none")
    base = base_of(model)
    top_conv = keras.Model(base.input, base.get_layer("top_conv").output)
    features = np.asarray(top_conv(images, training=False)).reshape(-1, top_conv.output_shape[-1])
    norm = base.get_layer("top_bn")
    _, _, _, variance = (w.numpy() for w in norm.weights)
    scale = np.sqrt(variance + norm.epsilon) / (features.std(axis=0) + 1e-12)  # standardize the features
    norm.set_weights([scale, np.zeros_like(scale), features.mean(axis=0), variance])
    return model


@dataclass(frozen=True)
class Artifacts:
    """One Keras model, its SavedModel and its conversions (under the session's temporary directory)."""

    model: Any
    saved_model: Path
    files: dict[str, Path]  # runtime name -> model file (model.xml, model.tflite, model.onnx)

    @property
    def openvino(self) -> Path:
        return self.files["openvino"]

    @property
    def litert(self) -> Path:
        return self.files["litert"]

    @property
    def onnx(self) -> Path:
        return self.files["onnx"]


FORMATS = ("openvino", "litert", "onnx")
_CACHE: dict[tuple[str, str], Artifacts] = {}


def artifacts(kind: str, root: Path, formats: tuple[str, ...] = FORMATS) -> Artifacts:
    """``kind`` ``"tiny"`` (trained tiny CNN) or ``"b0"`` (conditioned B0); each format converted once."""
    from fish_platform.ml import optimize

    key = (kind, str(root))
    folder = root / f"runtime-artifacts-{kind}"
    if key not in _CACHE:
        if kind == "tiny":
            model = trained_tiny_cnn()
        elif kind == "b0":
            model = conditioned_b0(colour_images(64, seed=5)[0])
        else:
            raise ValueError(f"unknown kind {kind!r}")
        _CACHE[key] = Artifacts(model, optimize.export_saved_model(model, folder / "saved_model"), {})
    cached = _CACHE[key]
    converters = {
        "openvino": lambda: optimize.convert_to_openvino(cached.saved_model, folder / "openvino"),
        "litert": lambda: optimize.convert_to_litert(cached.saved_model, folder / optimize.LITERT_FILE),
        "onnx": lambda: optimize.convert_to_onnx(cached.saved_model, folder / optimize.ONNX_FILE),
    }
    for name in formats:
        if name not in cached.files:
            cached.files[name] = converters[name]()
    return cached
