"""How far a trained model's answers can be trusted: calibration, "unknown", behaviour.

Run by the evaluation step on the logged model (as the service will load it):

1. temperature scaling and the open-set threshold are fitted on the **validation** split
   (:func:`fish_platform.ml.calibration.fit_calibration`); the record is stored with the model
   version (``calibration.json`` in its run) and read by the service;
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
    expected_calibration_error,
    fit_calibration,
    reliability_diagram_png,
)
from fish_platform.ml.config import EvaluationConfig
from fish_platform.ml.input import DatasetLike, first_images

CALIBRATION_ARTIFACT = "calibration.json"


@dataclass
class TrustReport:
    calibration: CalibrationRecord
    test_ece_before: float
    test_ece_after: float
    reliability_png: bytes = field(repr=False)
    checks: dict[str, behaviour.BehaviourResult]

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        values = {
            "ece_before_scaling": self.test_ece_before,
            "ece": self.test_ece_after,
            "temperature": self.calibration.temperature,
            "unknown_threshold": self.calibration.threshold,
        }
        values.update({f"behaviour_{name}": check.rate for name, check in self.checks.items()})
        return {f"{prefix}{name}": float(value) for name, value in values.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.as_dict(),
            "test_ece_before": self.test_ece_before,
            "test_ece_after": self.test_ece_after,
            "checks": {name: check.as_dict() for name, check in self.checks.items()},
        }


def label_indices(species: list[str], labels: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(labels)}
    return np.array([index[name] for name in species], dtype=np.int64)


def assess_trust(
    model: Any,
    dataset: DatasetLike,
    val: Any,
    test: Any,
    config: EvaluationConfig | None = None,
) -> TrustReport:
    """Calibrate on ``val`` predictions, measure on ``test`` (both :class:`SplitPredictions`)."""
    config = config or EvaluationConfig()
    labels = list(model.labels)
    val_labels = label_indices(val.true_species, labels)
    record = fit_calibration(val.probabilities, val_labels, extra={"split": "val"})
    test_labels = label_indices(test.true_species, labels)
    calibrated = record.calibrate(test.probabilities)
    png = reliability_diagram_png(test.probabilities, calibrated, test_labels, temperature=record.temperature)
    images = model.decode(first_images(dataset, config.split, config.behaviour_images))
    predict = model.predict_arrays
    predicted = [labels[i] for i in test.probabilities.argmax(axis=1)]
    strangers = behaviour.not_a_fish_images(model.image_size, config.not_a_fish_images, seed=0)
    checks = {
        "flip": behaviour.flip_invariance(predict, images),
        "brightness_contrast": behaviour.photometric_invariance(predict, images),
        "minimum_functionality": behaviour.minimum_functionality(
            test.true_species, predicted, labels, config.min_species_recall
        ),
        "not_a_fish": behaviour.not_a_fish_check(lambda x: record.is_unknown(predict(x), x), strangers),
    }
    return TrustReport(
        calibration=record,
        test_ece_before=expected_calibration_error(test.probabilities, test_labels),
        test_ece_after=expected_calibration_error(calibrated, test_labels),
        reliability_png=png,
        checks=checks,
    )
