"""Model assets: train the classifier, evaluate it, and promote it in the MLflow registry.

Thin adapters over :mod:`fish_platform.ml` and :mod:`fish_platform.registry`: they read config and
resources, forward progress to the Dagster log, and turn results into metadata. Every asset
returns a small dict (run id, model URI, scores), never the Keras model.
No ``from __future__ import annotations`` here: Dagster resolves config and resource types from
the real annotations.
"""

from typing import Any

import dagster as dg

from fish_platform.data.dataset import FishDataset
from fish_platform.ml.config import TrainConfig
from fish_platform.ml.plots import markdown_image
from fish_platform.ml.train import EpochRecord
from fish_platform.pod_sizing import pod_tags
from fish_platform.resources import MlflowResource, PlatformResource
from fish_platform.settings import load_settings

MODEL_GROUP = "model"
TRAINING_POD = pod_tags("training", load_settings().train_gpus)  # FISH_TRAIN_GPUS: a GPU node, or none
# A model below this share of the way from chance to perfect has not learned (from-scratch training
# can look trained while predicting one class: see docs/training.md).
MIN_SKILL = 0.25


class FishClassifierConfig(dg.Config):
    """Training settings. Unset (None) values take the platform profile's defaults (demo/production)."""

    variant: str | None = None  # EfficientNet B0..B7
    image_size: int = 0  # 0: the dataset's image size; otherwise it must equal it
    weights: str | None = None  # "imagenet", "none" or a path to a weights file
    epochs_head: int | None = None
    epochs_finetune: int | None = None
    batch_size: int | None = None
    lr_head: float | None = None
    lr_finetune: float | None = None
    seed: int = 0
    fine_tune_layers: int = 40
    patience: int | None = None
    augment: bool = True
    bn_momentum: float | None = None  # None: 0.9 when training from scratch

    def to_train_config(self, profile: str, dataset_image_size: int) -> TrainConfig:
        if self.image_size and self.image_size != dataset_image_size:
            raise dg.Failure(
                f"image_size {self.image_size} differs from the dataset's {dataset_image_size}; "
                "rebuild fish_dataset at that size or leave image_size at 0"
            )
        return TrainConfig.from_profile(
            profile,
            variant=self.variant,
            image_size=dataset_image_size,
            weights=self.weights,
            epochs_head=self.epochs_head,
            epochs_finetune=self.epochs_finetune,
            batch_size=self.batch_size,
            lr_head=self.lr_head,
            lr_finetune=self.lr_finetune,
            seed=self.seed,
            fine_tune_layers=self.fine_tune_layers,
            patience=self.patience,
            augment=self.augment,
            bn_momentum=self.bn_momentum,
        )


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A browser link when the tracking server is HTTP; otherwise how to open the run locally."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"mlflow ui --backend-store-uri {tracking_uri}  ->  /#/experiments/{experiment_id}/runs/{run_id}"


def _link_metadata(tracking_uri: str, experiment_id: str, run_id: str) -> dict[str, Any]:
    link = run_link(tracking_uri, experiment_id, run_id)
    value = dg.MetadataValue.url(link) if link.startswith("http") else dg.MetadataValue.text(link)
    return {"mlflow_run_id": run_id, "mlflow_run": value}


@dg.asset(group_name=MODEL_GROUP, kinds={"tensorflow", "mlflow"}, op_tags=TRAINING_POD)
def fish_classifier(
    context: dg.AssetExecutionContext,
    config: FishClassifierConfig,
    fish_dataset: FishDataset,
    platform: PlatformResource,
    mlflow: MlflowResource,
) -> dg.Output[dict]:
    """Keras EfficientNet trained on the dataset's train split, logged to MLflow as a pyfunc model."""
    from fish_platform.ml.tracking import train_and_log

    mlflow.setup()
    train_config = config.to_train_config(platform.profile, fish_dataset.image_size)
    context.log.info(f"training with {train_config}")

    def on_epoch(record: EpochRecord) -> None:
        scores = ", ".join(f"{k}={v:.4g}" for k, v in record.metrics.items())
        context.log.info(f"epoch {record.epoch} ({record.phase}, {record.seconds:.1f}s): {scores}")

    run = train_and_log(
        train_config,
        fish_dataset.version,
        run_name=f"dagster-{context.run_id[:8]}",
        tags={"dagster.run_id": context.run_id, "dagster.asset": "fish_classifier"},
        on_epoch=on_epoch,
    )
    return dg.Output(
        {**run.summary(), "dataset_version": fish_dataset.version.version_id},
        metadata={
            **_link_metadata(mlflow.tracking_uri, run.experiment_id, run.run_id),
            "model_uri": run.model_uri,
            "variant": run.variant,
            "weights": run.weights,
            "image_size": run.image_size,
            "species": len(run.labels),
            "epochs_run": run.epochs_run,
            "best_epoch": run.best_epoch,
            "best_val_accuracy": dg.FloatMetadataValue(round(run.best_val_accuracy, 4)),
            "best_val_loss": dg.FloatMetadataValue(round(run.best_val_loss, 4)),
            "train_duration_s": round(run.duration_s, 1),
            "train_images_per_s": round(run.train_images_per_s, 1),
            "training_curves": dg.MetadataValue.md(markdown_image(run.curves_png, "training curves")),
        },
    )


class ModelEvaluationConfig(dg.Config):
    split: str = "test"
    batch_size: int = 32
    latency_calls: int = 20  # single-image calls timed for the batch-1 latency
    sample_predictions: int = 8  # images whose top-1 is kept for consistency checks


@dg.asset(group_name=MODEL_GROUP, kinds={"tensorflow", "mlflow"}, op_tags=TRAINING_POD)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: ModelEvaluationConfig,
    fish_classifier: dict,
    fish_dataset: FishDataset,
    mlflow: MlflowResource,
) -> dg.Output[dict]:
    """The logged model scored on the test split: accuracy, macro-F1, top-3, per species, latency."""
    from fish_platform.ml.tracking import evaluate_and_log

    mlflow.setup()
    evaluation, confusion_png = evaluate_and_log(
        fish_classifier["run_id"],
        fish_classifier["model_uri"],
        fish_dataset.version,
        split=config.split,
        model_id=fish_classifier.get("model_id"),
        batch_size=config.batch_size,
        latency_calls=config.latency_calls,
        sample_predictions=config.sample_predictions,
    )
    context.log.info(
        f"{config.split}: accuracy {evaluation.accuracy:.4f}, macro-F1 {evaluation.macro_f1:.4f}, "
        f"top-3 {evaluation.top3_accuracy:.4f} on {evaluation.n_images} images"
    )
    latency = {k: round(v, 2) for k, v in evaluation.latency.items()}
    link = _link_metadata(mlflow.tracking_uri, fish_classifier["experiment_id"], fish_classifier["run_id"])
    return dg.Output(
        {
            "run_id": fish_classifier["run_id"],
            "model_uri": fish_classifier["model_uri"],
            "model_id": fish_classifier.get("model_id"),
            "split": config.split,
            "fingerprint": evaluation.fingerprint,
            "labels": evaluation.labels,
            "n_images": evaluation.n_images,
            "accuracy": evaluation.accuracy,
            "macro_f1": evaluation.macro_f1,
            "top3_accuracy": evaluation.top3_accuracy,
            "per_class": evaluation.per_class,
            "latency": latency,
            "predictions": evaluation.predictions,
        },
        metadata={
            **link,
            "images": evaluation.n_images,
            "accuracy": dg.FloatMetadataValue(round(evaluation.accuracy, 4)),
            "macro_f1": dg.FloatMetadataValue(round(evaluation.macro_f1, 4)),
            "top3_accuracy": dg.FloatMetadataValue(round(evaluation.top3_accuracy, 4)),
            **latency,
            "split_fingerprint": evaluation.fingerprint[:16],
            "per_species": dg.MetadataValue.md(evaluation.per_class_markdown()),
            "confusion_matrix": dg.MetadataValue.md(markdown_image(confusion_png, "confusion matrix")),
        },
    )


@dg.asset_check(
    asset=model_evaluation,
    blocking=True,
    description=f"Test accuracy is at least {MIN_SKILL:.0%} of the way from chance to perfect.",
)
def model_beats_chance(model_evaluation: dict) -> dg.AssetCheckResult:
    """Stops promotion of a model that only looks trained (e.g. one class for every image)."""
    chance = 1.0 / len(model_evaluation["labels"])
    required = chance + MIN_SKILL * (1.0 - chance)
    recalls = [row["recall"] for row in model_evaluation["per_class"]]
    return dg.AssetCheckResult(
        passed=model_evaluation["accuracy"] >= required,
        metadata={
            "accuracy": round(model_evaluation["accuracy"], 4),
            "required": round(required, 4),
            "chance": round(chance, 4),
            "species_never_recognised": sum(1 for r in recalls if r == 0.0),
        },
    )


class ProductionModelConfig(dg.Config):
    margin: float = 0.01  # macro-F1 a challenger must gain over the champion to replace it


@dg.asset(group_name=MODEL_GROUP, kinds={"mlflow"}, op_tags=pod_tags("training"))
def production_model(
    context: dg.AssetExecutionContext,
    config: ProductionModelConfig,
    model_evaluation: dict,
    fish_dataset: FishDataset,
    mlflow: MlflowResource,
) -> dg.Output[dict]:
    """Register the evaluated model; move the ``production`` alias to it only if it beats the champion."""
    from fish_platform.ml.tracking import champion_scorer
    from fish_platform.registry import PRODUCTION_ALIAS, get_champion, register_challenger, review_challenger

    mlflow.setup()
    client = mlflow.client()
    name = mlflow.model_name
    registered = register_challenger(
        client,
        name,
        model_evaluation["model_uri"],
        run_id=model_evaluation["run_id"],
        macro_f1=model_evaluation["macro_f1"],
        fingerprint=model_evaluation["fingerprint"],
        model_id=model_evaluation.get("model_id"),
        tags={"dagster.run_id": context.run_id},
    )
    version = str(registered.version)
    decision = review_challenger(
        client,
        name,
        version,
        challenger_f1=model_evaluation["macro_f1"],
        fingerprint=model_evaluation["fingerprint"],
        evaluate_champion=champion_scorer(fish_dataset.version, model_evaluation["split"]),
        margin=config.margin,
    )
    champion = get_champion(client, name)
    production_version = str(champion.version) if champion is not None else None
    context.log.info(f"{name} v{version}: {decision.label} ({decision.reason})")
    return dg.Output(
        {
            "model_name": name,
            "version": version,
            "promoted": decision.promote,
            "decision": decision.label,
            "reason": decision.reason,
            "challenger_macro_f1": decision.challenger_f1,
            "champion_version": decision.champion_version,
            "champion_macro_f1": decision.champion_f1,
            "production_version": production_version,
            "production_uri": f"models:/{name}@{PRODUCTION_ALIAS}",
        },
        metadata={
            "model_name": name,
            "registered_version": version,
            "decision": decision.label,
            "reason": decision.reason,
            "challenger_macro_f1": round(decision.challenger_f1, 4),
            "champion_version": decision.champion_version or "none",
            "champion_macro_f1": "n/a" if decision.champion_f1 is None else round(decision.champion_f1, 4),
            "champion_score_source": decision.champion_f1_source,
            "production_version": production_version or "none",
            "production_uri": f"models:/{name}@{PRODUCTION_ALIAS}",
        },
    )


@dg.asset_check(
    asset=production_model,
    description="The production alias follows the decision: the challenger if promoted, else the champion.",
)
def production_alias_follows_decision(production_model: dict, mlflow: MlflowResource) -> dg.AssetCheckResult:
    from fish_platform.registry import get_champion

    champion = get_champion(mlflow.client(), production_model["model_name"])
    actual = str(champion.version) if champion is not None else None
    promoted = production_model["promoted"]
    expected = production_model["version"] if promoted else production_model["champion_version"]
    return dg.AssetCheckResult(
        passed=actual is not None and actual == expected,
        metadata={
            "alias_version": actual or "none",
            "expected_version": expected or "none",
            "decision": production_model["decision"],
            "reason": production_model["reason"],
        },
    )


MODEL_ASSETS = [fish_classifier, model_evaluation, production_model]
MODEL_CHECKS = [model_beats_chance, production_alias_follows_decision]
