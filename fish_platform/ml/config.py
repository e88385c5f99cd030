"""The configuration of training, evaluation and promotion: one dataclass each, one home per default.

Training defaults come from the platform profile (:data:`fish_platform.settings.PROFILE_DEFAULTS`),
the rest from the fields below. ``None`` is the one "use the default" sentinel: in the Dagster config
overlays (:func:`fish_platform.dagster_config.overlay`) every field is optional and ``None`` leaves
the default in place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from fish_platform.settings import PROFILE_DEFAULTS, ProfileDefaults


def doc(text: str, default: Any = None, **kwargs: Any) -> Any:
    """A dataclass field with a description (shown as the Dagster config field's description)."""
    return field(default=default, metadata={"doc": text}, **kwargs)


def _required(text: str) -> Any:
    return field(metadata={"doc": text})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a classifier is trained (logged as MLflow params).

    Fields without a default here are set by the profile (:meth:`from_profile`). ``image_size``
    must equal the dataset's image size: the dataset job already resized every image, and resizing
    again at training time would make training and serving pixels differ.
    """

    variant: str = _required("EfficientNet variant, B0..B7")
    image_size: int = _required("input size in pixels; must equal the dataset's image size")
    weights: str = _required('"imagenet", "none" or a path to a weights file')
    epochs_head: int = _required("epochs of phase 1 (the new head; the whole model when from scratch)")
    epochs_finetune: int = _required("epochs of phase 2 (fine-tuning the top of the base)")
    batch_size: int = _required("images per optimizer step")
    lr_head: float = _required("learning rate of phase 1")
    lr_finetune: float = _required("learning rate of phase 2")
    patience: int = _required("epochs without a better validation loss before a phase stops")
    min_steps: int = _required(
        "optimizer steps trained before early stopping may end training; a small train split gets "
        "more epochs (both phases scaled alike, at most max_epochs) so that it reaches them (0: off)"
    )
    seed: int = doc("seed of initialization, shuffling and augmentation", 0)
    fine_tune_layers: int = doc("top layers of the base unfrozen in phase 2 (0: all); pretrained only", 40)
    augment: bool = doc("random flips, rotation, zoom and contrast on training batches", True)
    dropout: float = doc("dropout before the classifier layer", 0.2)
    bn_momentum: float | None = doc("BatchNorm momentum; None: 0.9 when training from scratch, else Keras'")
    shuffle_buffer: int = doc("encoded images held for shuffling (PNG bytes, not decoded pixels)", 512)
    class_weights: bool = doc("weight the loss by inverse species frequency", True)
    max_epochs: int = doc("the most epochs (both phases) that min_steps may extend training to", 100)
    cache_mb: int = doc(
        "MiB of decoded uint8 images held in memory across epochs (train split first, then val); "
        "a split that does not fit is decoded from Parquet every epoch (0: never cache)",
        1024,
    )

    @classmethod
    def from_profile(cls, profile: str | ProfileDefaults, **overrides: Any) -> TrainConfig:
        """The profile's defaults (``demo`` or ``production``), with ``overrides`` that are not None."""
        defaults = PROFILE_DEFAULTS[profile] if isinstance(profile, str) else profile
        names = {f.name for f in fields(cls)}
        base = {f.name: getattr(defaults, f.name) for f in fields(defaults) if f.name in names}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self) -> None:
        """Reject settings that would fail late or train nothing."""
        if self.epochs_head < 0 or self.epochs_finetune < 0 or self.epochs_head + self.epochs_finetune == 0:
            raise ValueError("epochs_head and epochs_finetune must be >= 0 and not both 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not (self.lr_head > 0 and self.lr_finetune > 0):
            raise ValueError("learning rates must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.min_steps < 0 or self.max_epochs < 1 or self.cache_mb < 0:
            raise ValueError("min_steps and cache_mb must be >= 0 and max_epochs >= 1")

    def as_params(self) -> dict[str, Any]:
        """Flat parameters for MLflow (None shown as 'auto')."""
        return {k: ("auto" if v is None else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class EvaluationConfig:
    """How a trained model is scored."""

    split: str = doc("the split scored (the registry compares versions on the same split)", "test")
    batch_size: int = doc("images per model call", 32)
    latency_calls: int = doc("single-image calls timed for the batch-1 latency (0: no timing)", 20)
    sample_predictions: int = doc("images whose top-1 is kept for consistency checks", 8)
    behaviour_images: int = doc("test images used by the flip and brightness/contrast checks", 64)
    not_a_fish_images: int = doc("generated colours, noise and patterns for the unknown check", 28)
    min_species_recall: float = doc("each species' test recall must reach this (minimum functionality)", 0.5)
    open_set_score: str = doc(
        "the stored 'unknown' score: vim, energy, max_logit, max_probability or entropy (picked by "
        "measurement on held-out species, docs/training.md)",
        "vim",
    )
    open_set_fit_images: int = doc(
        "training images whose embeddings fit the vim subspace (evenly spread over the split)", 4000
    )
    # Off by default: small models trained from scratch fail them (docs/training.md has the figures).
    block_on_behaviour: bool = doc(
        "a failing behavioural check blocks promotion (else it warns); unset: the profile's "
        "(production blocks, demo warns)",
        False,
    )


@dataclass(frozen=True)
class OptimizationConfig:
    """Which optimized runtimes are built for a trained model (each must pass parity to be logged)."""

    formats: str = doc("comma-separated: openvino, onnx, litert", "openvino")
    int8: bool = doc("also an INT8 OpenVINO model (NNCF), kept only if test accuracy drops <= 1 point", False)

    def format_list(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.formats.split(",") if name.strip())


@dataclass(frozen=True)
class PromotionConfig:
    """When a challenger replaces the champion."""

    margin: float = doc("macro-F1 a challenger must gain over the champion to replace it", 0.01)
    challenger_margin: float = doc(
        "a version that misses the promotion gate by at most this much macro-F1 becomes the "
        "@challenger (shadowed in serving, judged by the challenger report); 0: never",
        0.02,
    )


def with_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """``config`` with the ``overrides`` that are not None."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
