"""Class activation maps (CAM) for the classifier's global-average-pooling + dense head.

For a head ``p = softmax(W^T mean_hw(F) + b)`` (dropout is the identity at inference), the logit
of class ``c`` is exactly the spatial mean of ``M_c = sum_k W[k, c] * F[:, :, k]`` plus ``b_c``:
``M_c`` is where the image pushed the model towards ``c`` (Zhou et al., 2016). No gradients are
needed, only the last convolutional feature map (the input of the pooling layer) and the dense
kernel.

The numpy part (:func:`class_activation`, :func:`class_activation_map`, :func:`overlay_png`) does
not import TensorFlow, so a serving runtime that exports the feature map as a second output can
draw maps itself. :func:`cam_model` and :func:`head_weights` need Keras and are imported lazily.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_ALPHA = 0.45
DEFAULT_COLORMAP = "jet"


# --- Keras side (lazy imports) -------------------------------------------------------------------


def _is_model(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _find_head(model: Any) -> tuple[Any | None, Any, list[Any]]:
    """``(container, pooling layer, head layers)`` for a model ending in pooling -> [dropout] -> dense.

    The head is the trailing run of Dropout/Dense layers (exactly one Dense, last); the layer
    before it is either the GlobalAveragePooling2D layer (``container`` is ``None``) or a nested
    base whose output is produced by one (``container`` is that base). Other pooling layers, such
    as EfficientNet's squeeze-and-excitation ones, are not mistaken for it.
    """
    import keras

    layers = list(model.layers)
    start = len(layers)
    while start > 0 and isinstance(layers[start - 1], keras.layers.Dense | keras.layers.Dropout):
        start -= 1
    head = layers[start:]
    dense = [layer for layer in head if isinstance(layer, keras.layers.Dense)]
    if len(model.outputs) != 1 or len(dense) != 1 or not head or head[-1] is not dense[0] or start == 0:
        raise ValueError(f"{model.name}: CAM needs a pooling -> [dropout] -> one dense layer head")
    if model.outputs[0] is not dense[0].output:
        raise ValueError(f"{model.name}: the dense layer {dense[0].name} does not produce the model's output")
    activation = getattr(dense[0].activation, "__name__", "")
    if activation not in ("softmax", "linear"):
        raise ValueError(f"{dense[0].name}: expected a softmax or linear dense head, got {activation!r}")
    anchor = layers[start - 1]
    if isinstance(anchor, keras.layers.GlobalAveragePooling2D):
        return None, anchor, head
    if _is_model(anchor) and len(anchor.outputs) == 1:
        for inner in anchor.layers:
            if isinstance(inner, keras.layers.GlobalAveragePooling2D) and inner.output is anchor.outputs[0]:
                return anchor, inner, head
    raise ValueError(
        f"{model.name}: the head's input comes from {anchor.name} ({type(anchor).__name__}), not from a "
        "GlobalAveragePooling2D layer (at the top level or as a nested base's output)"
    )


def head_weights(keras_model: Any) -> tuple[np.ndarray, np.ndarray]:
    """The dense head's ``(kernel (channels, n_classes), bias (n_classes,))`` as float32 numpy."""
    dense = _find_head(keras_model)[2][-1]
    kernel = np.asarray(dense.kernel.numpy(), dtype=np.float32)
    bias = (
        np.asarray(dense.bias.numpy(), dtype=np.float32)
        if dense.use_bias
        else np.zeros(kernel.shape[1], np.float32)
    )
    return kernel, bias


def cam_model(keras_model: Any) -> Any:
    """A Keras model with two outputs: ``[probabilities (N, n_classes), feature map (N, h, w, c)]``.

    The feature map is the input of the global average pooling layer (for EfficientNet, the
    ``top_activation`` output). The returned model shares its layers, hence its weights, with
    ``keras_model``; its probabilities equal ``keras_model``'s at inference. Works for a pooling
    layer at the top level or inside a nested base, as :func:`fish_platform.ml.model.build_model`
    makes it (``pooling="avg"`` inside the EfficientNet base).
    """
    import keras

    container, pooling, head = _find_head(keras_model)
    if container is None:
        inputs = keras_model.inputs[0] if len(keras_model.inputs) == 1 else keras_model.inputs
        return keras.Model(inputs, [keras_model.outputs[0], pooling.input], name=f"{keras_model.name}_cam")
    if len(keras_model.inputs) != 1 or len(container.inputs) != 1:
        raise ValueError(f"{keras_model.name}: CAM supports single-input models only")
    # The nested base's inner tensors are not reachable from the outer inputs, so re-wire: a view of
    # the base with both its pooled output and its feature map, then the same head layers on top.
    base_view = keras.Model(container.inputs, [pooling.output, pooling.input], name=f"{container.name}_cam")
    source = keras_model.inputs[0]
    inputs = keras.Input(shape=tuple(source.shape[1:]), dtype=source.dtype, name=f"{source.name}_cam")
    pooled, feature_map = base_view(inputs, training=False)  # an inference view: frozen statistics
    outputs = pooled
    for layer in head:
        outputs = layer(outputs)
    return keras.Model(inputs, [outputs, feature_map], name=f"{keras_model.name}_cam")


@dataclass(frozen=True)
class Explanation:
    """One image's prediction and the class activation map of ``class_index``."""

    probabilities: np.ndarray  # (n_classes,)
    class_index: int
    cam: np.ndarray  # (h, w) in [0, 1]

    @property
    def probability(self) -> float:
        return float(self.probabilities[self.class_index])


def explain_images(
    model_with_cam: Any, kernel: np.ndarray, images: np.ndarray, class_indices: list[int] | None = None
) -> list[Explanation]:
    """Run a :func:`cam_model` on ``images`` (N, H, W, 3) in [0, 255]; maps for the top-1 class by default."""
    probabilities, feature_maps = model_with_cam(np.asarray(images, dtype=np.float32), training=False)
    probabilities, feature_maps = np.asarray(probabilities), np.asarray(feature_maps)
    explanations = []
    for i in range(len(probabilities)):
        index = int(probabilities[i].argmax()) if class_indices is None else int(class_indices[i])
        cam = class_activation_map(feature_maps[i], kernel, index)
        explanations.append(Explanation(probabilities[i], index, cam))
    return explanations


# --- numpy side (no TensorFlow) ------------------------------------------------------------------


def class_activation(feature_map: np.ndarray, dense_kernel: np.ndarray, class_index: int) -> np.ndarray:
    """The raw map ``M_c = F @ W[:, c]`` (h, w); its mean plus the bias is class ``c``'s logit."""
    feature_map = np.asarray(feature_map, dtype=np.float64)
    dense_kernel = np.asarray(dense_kernel, dtype=np.float64)
    if feature_map.ndim != 3:
        raise ValueError(f"feature_map must be (h, w, channels), got shape {feature_map.shape}")
    if dense_kernel.ndim != 2 or dense_kernel.shape[0] != feature_map.shape[2]:
        raise ValueError(
            f"dense_kernel must be (channels={feature_map.shape[2]}, n_classes), got {dense_kernel.shape}"
        )
    if not 0 <= class_index < dense_kernel.shape[1]:
        raise ValueError(f"class_index must lie in [0, {dense_kernel.shape[1]}), got {class_index}")
    return feature_map @ dense_kernel[:, class_index]


def class_activation_map(feature_map: np.ndarray, dense_kernel: np.ndarray, class_index: int) -> np.ndarray:
    """CAM in ``[0, 1]`` (h, w): the raw map, ReLU, divided by its maximum (zeros if nothing is positive)."""
    raw = np.maximum(class_activation(feature_map, dense_kernel, class_index), 0.0)
    peak = raw.max()
    return (raw / peak if peak > 0 else np.zeros_like(raw)).astype(np.float32)


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (h, w) map to ``size = (height, width)`` with Pillow, float32."""
    from PIL import Image

    height, width = size
    image = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def overlay(
    image_uint8: np.ndarray, cam: np.ndarray, alpha: float = DEFAULT_ALPHA, colormap: str = DEFAULT_COLORMAP
) -> np.ndarray:
    """``image`` blended with the coloured, upsampled ``cam``: (H, W, 3) uint8."""
    from matplotlib import colormaps

    image = np.asarray(image_uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    heat = np.clip(upsample(cam, image.shape[:2]), 0.0, 1.0)
    colours = colormaps[colormap](heat)[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def overlay_png(
    image_uint8: np.ndarray, cam: np.ndarray, alpha: float = DEFAULT_ALPHA, colormap: str = DEFAULT_COLORMAP
) -> bytes:
    """:func:`overlay` encoded as PNG bytes, the size of ``image_uint8``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(overlay(image_uint8, cam, alpha, colormap)).save(buffer, format="PNG")
    return buffer.getvalue()
