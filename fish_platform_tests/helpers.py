"""Helpers shared by tests (import as ``fish_platform_tests.helpers``)."""

import os
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]

# B0 from scratch at 48 px: a configuration two CPU cores train to >= 0.8 on four synthetic species
# in about a minute (the profiles' B0 at 96 px or B4 at 380 px are for real runs).
LEARNING_CONFIG = {
    "epochs_head": 12,
    "epochs_finetune": 4,
    "batch_size": 16,
    "lr_head": 3e-3,
    "lr_finetune": 1e-3,
    "augment": False,
    "patience": 4,
    "seed": 0,
}


def real_data_path() -> Path:
    """The Fish4Knowledge photos: FISH_REAL_DATA_DIR, default ../shared/data/fish4knowledge."""
    configured = os.environ.get("FISH_REAL_DATA_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "fish4knowledge"


def write_image(
    path: Path, color: tuple[int, int, int], size: tuple[int, int] = (48, 40), seed: int = 0
) -> Path:
    """A small noisy image of one dominant colour (PNG or JPEG by suffix)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) * 0.8 + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


COLORS = {
    "Sea Bass": (200, 60, 40),
    "Trout": (40, 180, 60),
    "Shrimp": (50, 70, 210),
    "Red Mullet": (220, 200, 40),
}


def dagster_resources(raw_uri: str, data_dir: Path, **overrides) -> dict:
    """The platform's resources pointed at test folders (embedded defaults otherwise).

    ``data_uri`` (default: ``data_dir``) is the durable root; ``s3_endpoint_url`` serves raw and data URIs.
    """
    from fish_platform.resources import ImageStoreResource, MlflowResource, PlatformResource, SparkResource
    from fish_platform.sensors import RawSensorResource

    endpoint = overrides.pop("s3_endpoint_url", None)
    resources = {
        "platform": PlatformResource(
            data_uri=overrides.pop("data_uri", str(data_dir)),
            s3_endpoint_url=endpoint,
            profile="demo",
            min_images_per_species=3,
        ),
        "image_store": ImageStoreResource(raw_uri=raw_uri, s3_endpoint_url=endpoint),
        "spark": SparkResource(master="local[2]"),
        "mlflow": MlflowResource(
            tracking_uri=f"sqlite:///{data_dir / 'mlflow.db'}",
            artifact_location=(data_dir / "mlartifacts").as_uri(),
        ),
        "raw_sensor": RawSensorResource(min_batch=1, quiet_seconds=0),
    }
    resources.update(overrides)
    return resources
