"""Building the EfficientNet classifier and choosing which layers train in each phase."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Keras' native input size per variant (the size the ImageNet weights were trained at).
NATIVE_SIZES: dict[str, int] = {
    "B0": 224, "B1": 240, "B2": 260, "B3": 300, "B4": 380, "B5": 456, "B6": 528, "B7": 600,
}
MIN_IMAGE_SIZE = 32  # EfficientNet's stem and five stride-2 stages need at least this much
SCRATCH_BN_MOMENTUM = 0.9


class WeightsUnavailable(RuntimeError):
    """The requested base weights cannot be loaded; training never falls back to other weights."""


@dataclass(frozen=True)
class ResolvedWeights:
    """What is passed to Keras, and the honest description recorded with the model."""

    keras_arg: str | None  # "imagenet", None, or a file path
    description: str  # "imagenet", "none", "file:/path" or "imagenet (file:/path)"

    @property
    def pretrained(self) -> bool:
        return self.keras_arg is not None


def normalize_variant(variant: str) -> str:
    """``b4``, ``B4`` and ``EfficientNetB4`` all mean ``B4``."""
    name = variant.strip().upper().removeprefix("EFFICIENTNET")
    if name not in NATIVE_SIZES:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; choose one of {', '.join(NATIVE_SIZES)}")
    return name


def official_weights_filename(variant: str) -> str:
    """The file Keras downloads for ``weights="imagenet"`` without the top (``efficientnetb4_notop.h5``)."""
    return f"efficientnet{normalize_variant(variant).lower()}_notop.h5"


def resolve_weights(weights: str, variant: str) -> ResolvedWeights:
    """``imagenet`` | ``none`` | a path to a weights file -> what to hand to Keras.

    A path to Keras' own ImageNet file (``efficientnetb4_notop.h5``) is staged into Keras' cache
    and loaded as ``imagenet``: Keras adds ImageNet's standard-deviation rescaling only for
    ``weights="imagenet"``, so loading that file by path would silently change preprocessing.
    Keras checks the file's hash, so a wrong file is an error, not a download.
    """
    choice = weights.strip()
    if choice.lower() == "none":
        return ResolvedWeights(None, "none")
    if choice.lower() == "imagenet":
        return ResolvedWeights("imagenet", "imagenet")
    path = Path(choice).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(
            f"weights must be 'imagenet', 'none' or an existing weights file; {str(path)!r} does not exist"
        )
    path = path.resolve()
    if path.name == official_weights_filename(variant):
        target = _keras_cache_dir() / "models" / path.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            log.info("staged %s into Keras' cache at %s", path, target)
        return ResolvedWeights("imagenet", f"imagenet (file:{path})")
    return ResolvedWeights(str(path), f"file:{path}")


def _keras_cache_dir() -> Path:
    """Where Keras looks for downloaded weights: ``$KERAS_HOME`` or ``~/.keras``, as Keras decided when
    it was imported (asked, not re-derived from the environment)."""
    from keras.src.backend.config import keras_home

    return Path(keras_home()).expanduser()


def _application(variant: str) -> Any:
    import keras

    return getattr(keras.applications, f"EfficientNet{normalize_variant(variant)}")


def build_model(
    n_classes: int,
    image_size: int,
    variant: str = "B0",
    weights: str = "none",
    *,
    dropout: float = 0.2,
    bn_momentum: float | None = None,
) -> tuple[Any, ResolvedWeights]:
    """EfficientNet base + pooled dropout/softmax head, taking float pixels in [0, 255].

    Pretrained bases are called with ``training=False`` so their BatchNormalization statistics stay
    frozen while the top blocks fine-tune (Keras' transfer-learning recipe). A base trained from
    scratch runs its BatchNormalization in training mode, with momentum lowered to
    ``bn_momentum`` (default 0.9): with Keras' 0.99 the moving statistics lag so far behind in a
    few hundred steps that validation accuracy stays at chance (measured: docs/training.md).
    Returns the model and the weights actually used.
    """
    import keras

    if n_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    resolved = resolve_weights(weights, variant)
    try:
        base = _application(variant)(
            include_top=False,
            weights=resolved.keras_arg,
            input_shape=(image_size, image_size, 3),
            pooling="avg",
        )
    except Exception as exc:  # download failures, hash mismatches, incompatible files
        name = f"EfficientNet{normalize_variant(variant)}"
        raise WeightsUnavailable(f"could not load {resolved.description} weights for {name}: {exc}") from exc
    log.info("EfficientNet%s base with %s weights", normalize_variant(variant), resolved.description)
    if not resolved.pretrained:
        momentum = SCRATCH_BN_MOMENTUM if bn_momentum is None else bn_momentum
        set_bn_momentum(base, momentum)
    elif bn_momentum is not None:
        set_bn_momentum(base, bn_momentum)

    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="image")
    features = base(inputs, training=False) if resolved.pretrained else base(inputs)
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="species")(features)
    model = keras.Model(inputs, outputs, name=f"fish_efficientnet{normalize_variant(variant).lower()}")
    return model, resolved


def set_bn_momentum(model: Any, momentum: float) -> int:
    """Set ``momentum`` on every BatchNormalization layer; returns how many were changed."""
    import keras

    changed = 0
    for layer in _walk(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            changed += 1
    return changed


def _walk(model: Any):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _walk(layer)


def base_of(model: Any) -> Any:
    """The EfficientNet base inside a model made by :func:`build_model`."""
    for layer in model.layers:
        if re.fullmatch(r"efficientnetb\d", layer.name):
            return layer
    raise ValueError(f"{model.name} has no EfficientNet base")


def freeze_base(model: Any) -> None:
    """Phase 1 for pretrained weights: only the new head trains."""
    base_of(model).trainable = False


def unfreeze_top(model: Any, n_layers: int) -> int:
    """Phase 2: the base's top ``n_layers`` layers train (0: all); BatchNormalization stays frozen.

    Keeping BatchNormalization frozen keeps the pretrained statistics that the rest of the base
    was trained with; a small fine-tuning set would otherwise drag them around. Returns the number
    of layers made trainable.
    """
    import keras

    base = base_of(model)
    base.trainable = True
    layers = base.layers
    cut = 0 if n_layers <= 0 else max(0, len(layers) - n_layers)
    trainable = 0
    for index, layer in enumerate(layers):
        layer.trainable = index >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        trainable += int(layer.trainable)
    return trainable
