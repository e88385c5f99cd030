"""The logged model: a pyfunc wrapper around the Keras classifier plus its metadata.

MLflow's Keras flavour predicts through ``model.predict`` (slow at batch 1) and returns bare
indices; this wrapper keeps the Keras model file as an artifact, reads the species names from
``metadata.json`` and calls the model through one compiled ``tf.function``, so a fresh process
(the service, the CLI, a notebook) gets species names and fast single-image answers.
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from fish_platform.contract import top_k
from fish_platform.imaging import to_model_input

log = logging.getLogger(__name__)

MODEL_NAME_IN_RUN = "model"
KERAS_ARTIFACT = "keras_model"
METADATA_ARTIFACT = "metadata"
METADATA_FORMAT = 1
PREPROCESSING = (
    "decode with fish_platform.imaging.decode_image (RGB), resize with fish_platform.imaging.resize_square "
    "(bilinear stretch to image_size x image_size), uint8 pixels passed as float in [0, 255]; "
    "EfficientNet normalizes inside the model"
)
# Batches larger than this are split so a big DataFrame cannot exhaust memory.
MAX_BATCH = 64
# Third-party requirements of the wrapper; the fish-platform package itself must be installed
# where the model is loaded (it is not on PyPI), see docs/training.md.
_REQUIREMENTS = ("tensorflow-cpu", "keras", "mlflow", "numpy", "pandas", "pillow")


def _pinned_requirements() -> list[str]:
    """Pin the versions this process runs with, so the model loads with what it was saved with."""
    pins = []
    for name in _REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def build_metadata(labels: list[str], image_size: int, variant: str, weights: str) -> dict[str, Any]:
    """Everything a consumer needs to turn the model's output back into species names."""
    import keras

    return {
        "format": METADATA_FORMAT,
        "labels": list(labels),
        "image_size": int(image_size),
        "variant": variant,
        "weights": weights,
        "input": "uint8 RGB array (N, image_size, image_size, 3)",
        "output": "softmax probabilities (N, len(labels)) in the order of labels",
        "preprocessing": PREPROCESSING,
        "keras_version": keras.__version__,
    }


def _as_bytes(value: Any) -> bytes:
    """Image cells arrive as bytes in-process and as base64 text through JSON (REST, input examples)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return base64.b64decode(value)
    raise TypeError(f"the image column must hold encoded image bytes, got {type(value).__name__}")


class FishClassifierModel(mlflow.pyfunc.PythonModel):
    """Species classifier: encoded images in, species names with confidences out."""

    labels: list[str]
    image_size: int
    metadata: dict[str, Any]

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the Keras model and metadata once, and build the compiled forward pass."""
        self.load_files(Path(context.artifacts[KERAS_ARTIFACT]), Path(context.artifacts[METADATA_ARTIFACT]))

    def load_files(self, keras_path: Path, metadata_path: Path) -> None:
        """Load from plain files (also used by tests and tools that bypass MLflow)."""
        import keras
        import tensorflow as tf

        self.metadata = json.loads(Path(metadata_path).read_text())
        self.labels = list(self.metadata["labels"])
        self.image_size = int(self.metadata["image_size"])
        self._model = keras.saving.load_model(str(keras_path), compile=False)
        size = self.image_size

        # A fixed input signature with a free batch dimension: one trace serves every batch size.
        @tf.function(
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)],
            reduce_retracing=True,
        )
        def forward(images: tf.Tensor) -> tf.Tensor:
            return self._model(tf.cast(images, tf.float32), training=False)

        self._forward = forward

    @property
    def keras_model(self) -> Any:
        return self._model

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """``uint8 (N, S, S, 3)`` -> ``float32 (N, n_classes)`` probabilities, in ``labels`` order."""
        batch = np.asarray(batch)
        expected = (self.image_size, self.image_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"expected shape (N, {expected[0]}, {expected[1]}, 3), got {batch.shape}")
        if batch.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels, got {batch.dtype}")
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        parts = [
            self._forward(batch[start : start + MAX_BATCH]).numpy()
            for start in range(0, len(batch), MAX_BATCH)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def predict_with_embeddings(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``uint8 (N, S, S, 3)`` -> probabilities and the pooled embeddings (the dense head's input,
        the spatial mean of the last feature map, as the served runtimes give it)."""
        if getattr(self, "_embedded", None) is None:
            import tensorflow as tf

            from fish_platform.ml.explain import cam_model

            both = cam_model(self._model)
            size = self.image_size

            @tf.function(
                input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)], reduce_retracing=True
            )
            def embedded(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                probabilities, feature_map = both(tf.cast(images, tf.float32), training=False)
                return probabilities, tf.reduce_mean(feature_map, axis=[1, 2])

            self._embedded = embedded
        batch = np.asarray(batch)
        self.predict_arrays(batch[:0])  # the same input checks
        parts = [self._embedded(batch[i : i + MAX_BATCH]) for i in range(0, len(batch), MAX_BATCH)]
        if not parts:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, 0), np.float32)
        probabilities = np.concatenate([p.numpy() for p, _ in parts]).astype(np.float32, copy=False)
        return probabilities, np.concatenate([e.numpy() for _, e in parts]).astype(np.float32, copy=False)

    @property
    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """The dense head's ``(kernel (features, classes), bias)``."""
        from fish_platform.ml.explain import head_weights

        return head_weights(self._model)

    def decode(self, images: list[bytes]) -> np.ndarray:
        """Encoded images -> the uint8 batch the model takes, prepared exactly as the dataset job does."""
        return np.stack([to_model_input(data, self.image_size) for data in images])

    def describe(self, probabilities: np.ndarray) -> pd.DataFrame:
        """Probabilities -> ``species``, ``confidence``, ``top3`` (JSON list of {species, confidence})."""
        rows = []
        for probs in probabilities:
            top3 = top_k(probs, self.labels)
            species, confidence = top3[0]["species"], float(probs.max())
            rows.append({"species": species, "confidence": confidence, "top3": json.dumps(top3)})
        return pd.DataFrame(rows, columns=["species", "confidence", "top3"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """DataFrame with a binary ``image`` column -> species names and confidences."""
        if "image" not in model_input.columns:
            raise ValueError("the input needs a column 'image' with encoded image bytes")
        images = [_as_bytes(value) for value in model_input["image"]]
        if not images:
            return pd.DataFrame({"species": [], "confidence": [], "top3": []})
        return self.describe(self.predict_arrays(self.decode(images)))


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema(
            [ColSpec("string", "species"), ColSpec("double", "confidence"), ColSpec("string", "top3")]
        ),
    )


def log_classifier(
    keras_model: Any,
    labels: list[str],
    image_size: int,
    variant: str,
    weights: str,
    *,
    registered_model_name: str | None = None,
    example_images: list[bytes] | None = None,
) -> Any:
    """Log the classifier as a pyfunc model named ``model`` in the active MLflow run.

    ``example_images`` (encoded image bytes, one or two are enough) become the input example,
    which MLflow validates by loading and calling the model before the log is accepted.
    ``registered_model_name`` also registers a version; the training asset leaves it unset and
    registers only after evaluation (see :mod:`fish_platform.registry`). Returns MLflow's ``ModelInfo``.
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_classifier needs an active MLflow run (mlflow.start_run())")
    if len(labels) != int(keras_model.output_shape[-1]):
        raise ValueError(f"{len(labels)} labels for a model with {keras_model.output_shape[-1]} outputs")
    metadata = build_metadata(labels, image_size, variant, weights)
    input_example = pd.DataFrame({"image": list(example_images)}) if example_images else None
    with tempfile.TemporaryDirectory(prefix="fish-model-") as tmp:
        keras_path = Path(tmp) / "model.keras"
        metadata_path = Path(tmp) / "metadata.json"
        keras_model.save(keras_path)
        metadata_path.write_text(json.dumps(metadata, indent=2))
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=FishClassifierModel(),
            artifacts={KERAS_ARTIFACT: str(keras_path), METADATA_ARTIFACT: str(metadata_path)},
            signature=_signature(),
            input_example=input_example,
            # Explicit requirements: inferring them would load the model in a subprocess (slow).
            pip_requirements=_pinned_requirements(),
            metadata={"fish": {k: v for k, v in metadata.items() if k != "labels"}, "labels": list(labels)},
            registered_model_name=registered_model_name,
        )


def load_classifier(model_uri: str) -> FishClassifierModel:
    """Load a logged classifier (``models:/fish-classifier@production``, ``runs:/...``) and unwrap it."""
    model = mlflow.pyfunc.load_model(model_uri)
    wrapped = model.unwrap_python_model()
    if not isinstance(wrapped, FishClassifierModel):
        raise TypeError(f"{model_uri} is not a fish classifier (got {type(wrapped).__name__})")
    return wrapped
