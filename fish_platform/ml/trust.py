"""How far a trained model's answers can be trusted: calibration, "unknown", behaviour.

Run by the evaluation step on the logged model (as the service will load it):

1. temperature scaling and the open-set thresholds are fitted on the **validation** split
   (:func:`fish_platform.ml.calibration.fit_calibration`), the ``vim`` subspace on training images'
   embeddings; the record is stored with the model version (``calibration.json`` and
   ``open_set_space.npz`` in its run, :func:`load_calibration`) and read by the service;
2. the **test** split's expected calibration error before and after scaling, with a reliability
   diagram;
3. behavioural checks on test images (:mod:`fish_platform.ml.behaviour`): horizontal flips, small
   brightness and contrast changes, each species' recall, and generated "not a fish" images answered
   ``unknown``. The asset checks on ``model_evaluation`` block promotion when one fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fish_platform.ml import behaviour
from fish_platform.ml.calibration import (
    CalibrationRecord,
    FeatureSpace,
    expected_calibration_error,
    fit_calibration,
    reliability_diagram_png,
)
from fish_platform.ml.config import EvaluationConfig
from fish_platform.ml.input import DatasetLike, count_rows, first_images

CALIBRATION_ARTIFACT = "calibration.json"
SPACE_ARTIFACT = "open_set_space.npz"  # the head and the vim subspace (FeatureSpace.to_bytes)


@dataclass
class TrustReport:
    calibration: CalibrationRecord
    test_ece_before: float
    test_ece_after: float
    reliability_png: bytes = field(repr=False)
    checks: dict[str, behaviour.BehaviourResult]
    test_unknown_rate: float = float("nan")  # test images answered "unknown" (1 - TPR at the threshold)

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        values = {
            "ece_before_scaling": self.test_ece_before,
            "ece": self.test_ece_after,
            "temperature": self.calibration.temperature,
            "unknown_threshold": self.calibration.threshold,
            "unknown_rate": self.test_unknown_rate,
        }
        values.update({f"behaviour_{name}": check.rate for name, check in self.checks.items()})
        return {f"{prefix}{name}": float(value) for name, value in values.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.as_dict(),
            "test_ece_before": self.test_ece_before,
            "test_ece_after": self.test_ece_after,
            "test_unknown_rate": self.test_unknown_rate,
            "checks": {name: check.as_dict() for name, check in self.checks.items()},
        }


def label_indices(species: list[str], labels: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(labels)}
    return np.array([index[name] for name in species], dtype=np.int64)


def fit_feature_space(model: Any, dataset: DatasetLike, config: EvaluationConfig) -> FeatureSpace:
    """The head and the ``vim`` subspace of up to ``open_set_fit_images`` training embeddings."""
    from fish_platform.ml.evaluate import predict_split

    every = max(1, -(-count_rows(dataset, "train") // max(config.open_set_fit_images, 1)))
    train = predict_split(model, dataset, "train", config.batch_size, embeddings=True, every=every)
    return FeatureSpace.fit(train.embeddings, *model.head)


def assess_trust(
    model: Any,
    dataset: DatasetLike,
    val: Any,
    test: Any,
    config: EvaluationConfig | None = None,
) -> TrustReport:
    """Calibrate on ``val`` predictions, measure on ``test`` (both :class:`SplitPredictions`, with
    embeddings for the feature scores)."""
    config = config or EvaluationConfig()
    labels = list(model.labels)
    val_labels = label_indices(val.true_species, labels)
    space = fit_feature_space(model, dataset, config)
    record = fit_calibration(
        val.probabilities,
        val_labels,
        score_method=config.open_set_score,
        embeddings=val.embeddings,
        space=space,
        extra={"split": "val", "vim_dimension": space.dimension},
    )
    test_labels = label_indices(test.true_species, labels)
    calibrated = record.calibrate(test.probabilities)
    png = reliability_diagram_png(test.probabilities, calibrated, test_labels, temperature=record.temperature)
    images = model.decode(first_images(dataset, config.split, config.behaviour_images))
    predict = model.predict_arrays
    predicted = [labels[i] for i in test.probabilities.argmax(axis=1)]
    strangers = behaviour.not_a_fish_images(model.image_size, config.not_a_fish_images, seed=0)

    def unknown(x: np.ndarray) -> np.ndarray:
        probabilities, embeddings = model.predict_with_embeddings(x)
        return record.is_unknown(probabilities, x, embeddings)

    checks = {
        "flip": behaviour.flip_invariance(predict, images),
        "brightness_contrast": behaviour.photometric_invariance(predict, images),
        "minimum_functionality": behaviour.minimum_functionality(
            test.true_species, predicted, labels, config.min_species_recall
        ),
        "not_a_fish": behaviour.not_a_fish_check(unknown, strangers),
    }
    return TrustReport(
        calibration=record,
        test_ece_before=expected_calibration_error(test.probabilities, test_labels),
        test_ece_after=expected_calibration_error(calibrated, test_labels),
        reliability_png=png,
        checks=checks,
        test_unknown_rate=float(record.is_unknown(test.probabilities, embeddings=test.embeddings).mean()),
    )


def log_calibration(record: CalibrationRecord) -> None:
    """Log the record (and its feature space) into the active MLflow run."""
    import tempfile
    from pathlib import Path

    import mlflow

    mlflow.log_dict(record.as_dict(), CALIBRATION_ARTIFACT)
    if record.space is not None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / SPACE_ARTIFACT
            path.write_bytes(record.space.to_bytes())
            mlflow.log_artifact(str(path))


def load_calibration(run_id: str, tracking_uri: str | None = None) -> CalibrationRecord:
    """The record logged with a run, with its feature space where one was logged. Raises
    ``MlflowException``/``OSError`` when the run has no record (a version from before calibration)."""
    import json
    import tempfile
    from pathlib import Path

    import mlflow
    from mlflow.exceptions import MlflowException

    text = mlflow.artifacts.load_text(f"runs:/{run_id}/{CALIBRATION_ARTIFACT}")
    values = json.loads(text)
    space = None
    if values.get("format_version", 1) >= 2:
        try:
            with tempfile.TemporaryDirectory() as folder:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=SPACE_ARTIFACT, dst_path=folder, tracking_uri=tracking_uri
                )
                space = FeatureSpace.from_bytes(Path(path).read_bytes())
        except (MlflowException, OSError):
            space = None  # the record falls back to max_probability (its `method_for` says so)
    return CalibrationRecord.from_dict(values, space=space)
