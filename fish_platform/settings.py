"""Platform settings, read from the environment.

Every setting has a ``FISH_`` variable; the tools' own standard variables
(``MLFLOW_TRACKING_URI``, ``REDIS_URL``, ``DAGSTER_HOME``, ``AWS_*``) are honoured as
those tools define them. Nothing here is read at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Profile = Literal["demo", "production"]
PROFILES: tuple[str, ...] = ("demo", "production")


@dataclass(frozen=True)
class ProfileDefaults:
    """What changes between a laptop demo and the production system."""

    image_size: int
    model_variant: str
    weights: str
    epochs_head: int
    epochs_finetune: int
    batch_size: int
    min_images_per_species: int
    lr_head: float
    lr_finetune: float
    patience: int


PROFILE_DEFAULTS: dict[str, ProfileDefaults] = {
    # Small enough that `make demo` runs the whole graph in minutes on 2 CPU cores. Trained from
    # scratch (no ImageNet download here), so: small batches for enough BatchNorm updates per epoch,
    # a brisk learning rate, and patience for the noisy early validation loss.
    "demo": ProfileDefaults(
        image_size=96,
        model_variant="B0",
        weights="none",
        epochs_head=12,
        epochs_finetune=4,
        batch_size=16,
        min_images_per_species=10,
        lr_head=3e-3,
        lr_finetune=1e-3,
        patience=6,
    ),
    # The original system: EfficientNet-B4 at its native 380 px, ImageNet weights.
    "production": ProfileDefaults(
        image_size=380,
        model_variant="B4",
        weights="imagenet",
        epochs_head=10,
        epochs_finetune=20,
        batch_size=32,
        min_images_per_species=50,
        lr_head=1e-3,
        lr_finetune=1e-4,
        patience=3,
    ),
}


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    profile: str
    data_dir: Path
    raw_uri: str
    s3_endpoint_url: str | None
    spark_master: str
    mlflow_tracking_uri: str
    mlflow_registry_uri: str | None
    mlflow_experiment: str
    model_name: str
    redis_url: str | None

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"


def default_data_dir() -> Path:
    return Path(_env("FISH_DATA_DIR", "fish-data")).expanduser().resolve()


def load_settings() -> Settings:
    """Read settings from the environment (call at run time, not import time)."""
    profile = _env("FISH_PROFILE", "demo")
    if profile not in PROFILE_DEFAULTS:
        raise ValueError(f"FISH_PROFILE must be one of {PROFILES}, got {profile!r}")
    data_dir = default_data_dir()
    mlflow_dir = data_dir / "mlflow"
    return Settings(
        profile=profile,
        data_dir=data_dir,
        raw_uri=_env("FISH_RAW_URI", str(data_dir / "raw")),
        s3_endpoint_url=_env("FISH_S3_ENDPOINT_URL", _env("AWS_ENDPOINT_URL_S3", _env("AWS_ENDPOINT_URL"))),
        spark_master=_env("FISH_SPARK_MASTER", "local[*]"),
        mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir / 'mlflow.db'}"),
        mlflow_registry_uri=_env("MLFLOW_REGISTRY_URI"),
        mlflow_experiment=_env("FISH_MLFLOW_EXPERIMENT", "fish-classifier"),
        model_name=_env("FISH_MODEL_NAME", "fish-classifier"),
        redis_url=_env("REDIS_URL"),
    )
