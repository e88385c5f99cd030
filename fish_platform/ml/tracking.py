"""MLflow bookkeeping around training and evaluation: one run per trained model.

Training opens the run (params, per-epoch metrics, curves, the logged model); evaluation resumes
the same run to add the test metrics, so everything about one model sits in one place. A failure
inside ``train_and_log`` ends the run as FAILED before anything is registered.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from fish_platform.data.layout import as_version
from fish_platform.ml.config import EvaluationConfig, OptimizationConfig, TrainConfig
from fish_platform.ml.evaluate import Evaluation, evaluate_classifier
from fish_platform.ml.input import DatasetLike, first_images
from fish_platform.ml.packaging import load_classifier, log_classifier
from fish_platform.ml.plots import confusion_matrix_png, training_curves_png
from fish_platform.ml.reference import build_reference, log_reference
from fish_platform.ml.train import EpochCallback, EpochRecord, TrainResult, train_classifier
from fish_platform.ml.trust import log_calibration


@dataclass
class TrainingRun:
    """What later steps need from a training run (small and picklable, unlike the Keras model)."""

    run_id: str
    experiment_id: str
    model_uri: str
    model_id: str | None
    labels: list[str]
    image_size: int
    variant: str
    weights: str
    epochs_run: int
    best_epoch: int
    best_val_accuracy: float
    best_val_loss: float
    duration_s: float
    train_images_per_s: float
    curves_png: bytes

    def summary(self) -> dict[str, Any]:
        """A plain dict for Dagster's IO manager and asset metadata (no PNG bytes)."""
        return {k: v for k, v in self.__dict__.items() if k != "curves_png"}


@dataclass(frozen=True)
class EvaluatedModel:
    """``model_evaluation``'s output: the trained model, its scores on one split, and how it was scored."""

    model: TrainingRun
    evaluation: Evaluation
    config: EvaluationConfig


def _log_png(png: bytes, artifact_file: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_bytes(png)
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_file).parent))


def example_images(dataset: DatasetLike, split: str = "val", count: int = 2) -> list[bytes]:
    """A couple of real encoded images for the logged model's input example."""
    return first_images(dataset, split, count)


def train_and_log(
    config: TrainConfig,
    dataset: DatasetLike,
    *,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    on_epoch: EpochCallback | None = None,
    registered_model_name: str | None = None,
) -> TrainingRun:
    """Train inside a new MLflow run in the current experiment and log the model as ``model``."""
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params({**config.as_params(), "dataset": as_version(dataset).uri})

        def record(epoch: EpochRecord) -> None:
            mlflow.log_metrics(epoch.metrics, step=epoch.epoch)
            if on_epoch is not None:
                on_epoch(epoch)

        result: TrainResult = train_classifier(config, dataset, on_epoch=record)
        mlflow.set_tags({"fish.weights_used": result.weights.description, "fish.variant": config.variant})
        mlflow.log_params({"n_classes": result.info.n_classes, "train_images": result.train_images,
                           "val_images": result.val_images})
        mlflow.log_metrics({
            "best_val_accuracy": result.best_val_accuracy,
            "best_val_loss": result.best_val_loss,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "train_duration_s": result.duration_s,
            "train_images_per_s": result.train_images_per_s,
        })
        curves = training_curves_png(result.curves(), [r.phase for r in result.history])
        _log_png(curves, "plots/training_curves.png")
        mlflow.log_dict({"labels": result.info.labels}, "labels.json")
        info = log_classifier(
            result.model,
            result.info.labels,
            result.info.image_size,
            config.variant,
            result.weights.description,
            registered_model_name=registered_model_name,
            example_images=example_images(dataset),
        )
        return TrainingRun(
            run_id=run.info.run_id,
            experiment_id=run.info.experiment_id,
            model_uri=info.model_uri,
            model_id=getattr(info, "model_id", None),
            labels=result.info.labels,
            image_size=result.info.image_size,
            variant=config.variant,
            weights=result.weights.description,
            epochs_run=result.epochs_run,
            best_epoch=result.best_epoch,
            best_val_accuracy=result.best_val_accuracy,
            best_val_loss=result.best_val_loss,
            duration_s=result.duration_s,
            train_images_per_s=result.train_images_per_s,
            curves_png=curves,
        )


def evaluate_and_log(
    run: TrainingRun, dataset: DatasetLike, config: EvaluationConfig | None = None
) -> tuple[Evaluation, bytes]:
    """Load the *logged* model (as the service will), score it, add the results to its run.

    Returns the evaluation and the confusion-matrix PNG.
    """
    config = config or EvaluationConfig()
    split, run_id, model_id = config.split, run.run_id, run.model_id
    model = load_classifier(run.model_uri)
    evaluation = evaluate_classifier(model, dataset, config)
    confusion = confusion_matrix_png(evaluation.confusion, evaluation.labels)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(evaluation.metrics(f"{split}_"), model_id=model_id)
        mlflow.set_tags({"fish.eval.test_fingerprint": evaluation.fingerprint, "fish.eval.split": split})
        mlflow.log_dict(
            {
                "per_class": evaluation.per_class,
                "confusion": evaluation.confusion.tolist(),
                "labels": evaluation.labels,
                "predictions_sample": evaluation.predictions,
                "fingerprint": evaluation.fingerprint,
                "trust": evaluation.trust.as_dict() if evaluation.trust else None,
            },
            f"evaluation/{split}.json",
        )
        _log_png(confusion, f"evaluation/{split}_confusion_matrix.png")
        if evaluation.trust is not None:  # the service reads the record from here (serving/inference.py)
            log_calibration(evaluation.trust.calibration)
            _log_png(evaluation.trust.reliability_png, f"evaluation/{split}_reliability.png")
        # What drift monitoring compares this version's traffic with (fish_platform/ml/reference.py).
        calibration = evaluation.trust.calibration if evaluation.trust is not None else None
        log_reference(build_reference(model, dataset, calibration, batch_size=config.batch_size))
    return evaluation, confusion


def champion_scorer(dataset: DatasetLike, split: str = "test") -> Callable[[str], float]:
    """``model_uri -> macro-F1`` on this dataset's split (``evaluate_champion`` of the registry review)."""
    from fish_platform.ml.evaluate import macro_f1_on_split

    return lambda model_uri: macro_f1_on_split(load_classifier(model_uri), dataset, split)


def optimize_and_log(run: TrainingRun, dataset: DatasetLike, config: OptimizationConfig, log: Any = print):
    """Build the optimized runtimes of a trained model and log those that pass parity in its run.

    Returns the :class:`fish_platform.ml.serving_bundles.ServingModelReport`.
    """
    from fish_platform.ml.serving_bundles import INT8_BUNDLE, SERVING_ARTIFACTS, build_serving_bundles

    with tempfile.TemporaryDirectory(prefix="fish-serving-") as tmp:
        out = Path(tmp)
        report = build_serving_bundles(
            run.run_id, run.model_uri, dataset, out, formats=config.format_list(), int8=config.int8, log=log
        )
        with mlflow.start_run(run_id=run.run_id):
            for bundle in report.bundles:
                if bundle.passed:
                    bundle.artifact_path = f"{SERVING_ARTIFACTS}/{bundle.format}"
                    mlflow.log_artifacts(str(out / bundle.format), bundle.artifact_path)
            if report.int8 and report.int8.get("accepted"):
                mlflow.log_artifacts(str(out / INT8_BUNDLE), f"{SERVING_ARTIFACTS}/{INT8_BUNDLE}")
            mlflow.log_dict(report.as_dict(), f"{SERVING_ARTIFACTS}/report.json")
            mlflow.set_tag("fish.serving.runtimes", ",".join(report.runtimes) or "none")
    return report

