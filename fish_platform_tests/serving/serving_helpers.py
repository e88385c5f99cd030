"""Helpers for the serving tests: tiny real classifiers in a throwaway MLflow registry, test images.

The models are the platform's own (``build_model`` + ``log_classifier``): EfficientNet-B0,
untrained, 32-48 px, so a test registers one in seconds.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fish_platform_tests.helpers import REPO_ROOT

TEST_OUTPUT = REPO_ROOT / "test-output"
ALIAS = "production"
LABELS_V1 = ("amphiprion_clarkii", "chromis_chrysura", "dascyllus_reticulatus", "zebrasoma_scopas")
LABELS_V2 = ("Sea Bass", "Shrimp", "Trout", "Red Mullet", "Gilt-Head Bream")


def png_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A distinct small PNG per seed (distinct bytes -> distinct cache keys)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    artifact_location: str
    model_name: str


def register_tiny_model(
    registry: Registry,
    labels: Sequence[str],
    image_size: int,
    seed: int = 0,
    bundles: Sequence[str] = (),
    calibration: dict | None = None,
) -> str:
    """Build, log and register one untrained B0 through ``log_classifier``; returns the new version.

    ``bundles`` (e.g. ``("openvino",)``) are exported and logged as ``serving/<format>`` the way the
    ``serving_model`` asset logs them; ``calibration`` is logged as the evaluation step logs it.
    """
    import keras
    import mlflow
    from mlflow import MlflowClient

    from fish_platform.ml.model import build_model
    from fish_platform.ml.packaging import log_classifier

    keras.utils.set_random_seed(seed)
    model, weights = build_model(len(labels), image_size, "B0", "none")
    dense = model.get_layer("species")  # a scaled-up head: distinct, stable confidences per image
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 50.0, bias])

    client = MlflowClient(registry.tracking_uri, registry_uri=registry.tracking_uri)
    experiment = client.get_experiment_by_name("fish-serving-test")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("fish-serving-test", artifact_location=registry.artifact_location)
    )
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id):
            info = log_classifier(
                model,
                list(labels),
                image_size,
                "B0",
                weights.description,
                registered_model_name=registry.model_name,
            )
            for fmt in bundles:
                import tempfile

                from fish_platform.ml.export import export_model
                from fish_platform.ml.serving_bundles import SERVING_ARTIFACTS

                with tempfile.TemporaryDirectory() as tmp:
                    folder = export_model(model, list(labels), image_size, fmt, f"{tmp}/{fmt}")
                    mlflow.log_artifacts(str(folder), f"{SERVING_ARTIFACTS}/{fmt}")
            if calibration is not None:
                from fish_platform.ml.trust import CALIBRATION_ARTIFACT

                mlflow.log_dict(calibration, CALIBRATION_ARTIFACT)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    return str(info.registered_model_version)


def promote(registry: Registry, version: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(registry.tracking_uri, registry_uri=registry.tracking_uri)
    client.set_registered_model_alias(registry.model_name, ALIAS, version)
