"""One configuration object for training, with defaults from the platform profile."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from fish_platform.settings import PROFILE_DEFAULTS, ProfileDefaults


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a classifier is trained (logged as MLflow params).

    ``image_size`` must equal the dataset's image size: the dataset job already resized every
    image, and resizing again at training time would make training and serving pixels differ.
    """

    variant: str = "B0"
    image_size: int = 128
    weights: str = "none"  # "imagenet", "none" or a path to a weights file
    epochs_head: int = 6
    epochs_finetune: int = 4
    batch_size: int = 32
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    seed: int = 0
    fine_tune_layers: int = 40  # top layers of the base unfrozen in phase 2 (0: all); pretrained only
    patience: int = 3  # epochs without a better val loss before a phase stops
    augment: bool = True
    dropout: float = 0.2
    bn_momentum: float | None = None  # None: 0.9 when training from scratch, Keras' own otherwise
    shuffle_buffer: int = 512  # encoded images held for shuffling (PNG bytes, not decoded pixels)
    class_weights: bool = True

    @classmethod
    def from_profile(cls, profile: str | ProfileDefaults, **overrides: Any) -> TrainConfig:
        """The profile's defaults (``demo`` or ``production``), with ``overrides`` that are not None."""
        defaults = PROFILE_DEFAULTS[profile] if isinstance(profile, str) else profile
        base = cls(
            variant=defaults.model_variant,
            image_size=defaults.image_size,
            weights=defaults.weights,
            epochs_head=defaults.epochs_head,
            epochs_finetune=defaults.epochs_finetune,
            batch_size=defaults.batch_size,
            lr_head=defaults.lr_head,
            lr_finetune=defaults.lr_finetune,
            patience=defaults.patience,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

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

    def as_params(self) -> dict[str, Any]:
        """Flat parameters for MLflow (None shown as 'auto')."""
        return {k: ("auto" if v is None else v) for k, v in asdict(self).items()}
