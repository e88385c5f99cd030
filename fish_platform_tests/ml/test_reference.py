"""The drift reference stored with each evaluated model version (fish_platform/ml/reference.py)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from fish_platform.ml.calibration import CalibrationRecord
from fish_platform.ml.config import EvaluationConfig
from fish_platform.ml.input import iter_rows
from fish_platform.ml.packaging import load_classifier, log_classifier
from fish_platform.ml.reference import REFERENCE_ARTIFACT, load_reference, read_reference, reference_bytes
from fish_platform.ml.tracking import TrainingRun, evaluate_and_log

SMALL_EVAL = EvaluationConfig(latency_calls=0, behaviour_images=4, not_a_fish_images=4)


def _logged_tiny_model(dataset, labels: list[str]) -> TrainingRun:
    import keras

    from fish_platform.ml.model import build_model

    keras.utils.set_random_seed(0)
    model, weights = build_model(len(labels), 32, "B0", "none")
    with mlflow.start_run() as run:
        info = log_classifier(model, labels, 32, "B0", weights.description)
    return TrainingRun(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        model_uri=info.model_uri,
        model_id=getattr(info, "model_id", None),
        labels=labels,
        image_size=32,
        variant="B0",
        weights=weights.description,
        epochs_run=0,
        best_epoch=0,
        best_val_accuracy=0.0,
        best_val_loss=0.0,
        duration_s=0.0,
        train_images_per_s=0.0,
        curves_png=b"",
    )


def test_evaluation_stores_the_validation_reference(mlflow_store, tiny_dataset) -> None:
    labels = tiny_dataset.labels()["labels"]
    run = _logged_tiny_model(tiny_dataset, labels)
    evaluate_and_log(run, tiny_dataset, SMALL_EVAL)

    reference = load_reference(run.run_id)
    val = list(iter_rows(tiny_dataset, "val", ["sha256", "image", "orig_width", "orig_height"]))
    assert reference.labels == labels
    assert reference.sha256 == [row["sha256"] for row in val]
    assert reference.meta == {"split": "val", "images": len(val), "calibrated": True}
    assert reference.embeddings.shape == (len(val), 1280)  # B0's avg_pool width
    assert np.allclose(reference.probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert reference.unknown is not None and reference.unknown.dtype == bool
    assert reference.width.tolist() == [row["orig_width"] for row in val]
    assert reference.height.tolist() == [row["orig_height"] for row in val]

    model = load_classifier(run.model_uri)  # the served path: same decode, same forward pass
    batch = model.decode([row["image"] for row in val])
    assert np.allclose(reference.brightness, batch.reshape(len(val), -1).mean(axis=1), atol=1e-3)
    raw = model.predict_arrays(batch)
    record = CalibrationRecord.from_dict(mlflow.artifacts.load_dict(f"runs:/{run.run_id}/calibration.json"))
    assert np.allclose(reference.probabilities, record.calibrate(raw), atol=1e-5)  # as the service logs them
    assert reference.unknown.tolist() == record.is_unknown(raw).tolist()

    client = mlflow.MlflowClient()
    assert [f.path for f in client.list_artifacts(run.run_id, "reference")] == [REFERENCE_ARTIFACT]


def test_reference_round_trips_and_missing_reference_is_named(mlflow_store, tiny_dataset) -> None:
    from fish_platform.ml.reference import ImageProfiler

    labels = tiny_dataset.labels()["labels"]
    run = _logged_tiny_model(tiny_dataset, labels)
    model = load_classifier(run.model_uri)
    images = [row["image"] for row in iter_rows(tiny_dataset, "test", ["image"])][:5]
    profile = ImageProfiler(model).profile_images(images)
    again = read_reference(reference_bytes(profile))
    assert np.array_equal(again.embeddings, profile.embeddings)
    assert np.array_equal(again.probabilities, profile.probabilities)
    assert again.unknown is None  # no calibration: the log's null
    with pytest.raises(FileNotFoundError, match="model_evaluation"):
        load_reference(run.run_id)
