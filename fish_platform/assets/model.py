"""Model assets: train the classifier, evaluate it, and promote it in the MLflow registry.

Thin adapters over :mod:`fish_platform.ml` and :mod:`fish_platform.registry`: each reads its config
(an overlay on the domain config, :mod:`fish_platform.assets.config`), calls one domain function,
forwards progress to the Dagster log, and returns the domain's typed result. Metadata is what the UI
shows of that result; downstream assets and checks read the result itself. Assets never pass the
Keras model around: the model lives in MLflow.
No ``from __future__ import annotations`` here: Dagster resolves config and resource types from
the real annotations.
"""

from typing import Any

import dagster as dg

from fish_platform.assets.config import overlay, overrides
from fish_platform.data.dataset import FishDataset
from fish_platform.ml.config import (
    EvaluationConfig,
    OptimizationConfig,
    PromotionConfig,
    TrainConfig,
    with_overrides,
)
from fish_platform.ml.evaluate import Evaluation
from fish_platform.ml.plots import markdown_image
from fish_platform.ml.serving_bundles import ServingModelReport
from fish_platform.ml.tracking import EvaluatedModel, TrainingRun
from fish_platform.ml.train import EpochRecord
from fish_platform.pod_sizing import pod_tags
from fish_platform.registry import Review
from fish_platform.resources import MlflowResource, PlatformResource
from fish_platform.settings import load_settings

MODEL_GROUP = "model"
# Step pods are sized when the assets are defined; FISH_TRAIN_GPUS puts training on a GPU node.
TRAINING_POD = pod_tags("training", load_settings().pipeline.train_gpus)
# A model below this share of the way from chance to perfect has not learned (from-scratch training
# can look trained while predicting one class: see docs/training.md).
MIN_SKILL = 0.25

FishClassifierConfig = overlay(
    TrainConfig,
    "FishClassifierConfig",
    "Training settings; unset values take the platform profile's defaults (demo/production). "
    "image_size, when set, must equal the dataset's.",
)
ModelEvaluationConfig = overlay(EvaluationConfig, "ModelEvaluationConfig", "How the model is scored.")
ProductionModelConfig = overlay(PromotionConfig, "ProductionModelConfig", "When a challenger is promoted.")


def run_link(tracking_uri: str, experiment_id: str, run_id: str, ui_url: str | None = None) -> str:
    """A browser link into the MLflow UI (``ui_url``: FISH_MLFLOW_UI_URL, or ``make mlflow``'s address for
    the embedded store) or the HTTP tracking server; otherwise how to open the run locally."""
    base = ui_url or (tracking_uri if tracking_uri.startswith(("http://", "https://")) else None)
    if base:
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"mlflow ui --backend-store-uri {tracking_uri}  ->  /#/experiments/{experiment_id}/runs/{run_id}"


def _run_metadata(mlflow: MlflowResource, run: TrainingRun) -> dict[str, Any]:
    link = run_link(mlflow.tracking_uri, run.experiment_id, run.run_id, mlflow.ui_url)
    value = dg.MetadataValue.url(link) if link.startswith("http") else dg.MetadataValue.text(link)
    return {"mlflow_run_id": run.run_id, "mlflow_run": value}


def _score(value: float) -> dg.FloatMetadataValue:
    return dg.FloatMetadataValue(round(value, 4))


def training_config(config: dg.Config, profile: str, dataset: FishDataset) -> TrainConfig:
    """The profile's training defaults, with the run's overrides, at the dataset's image size."""
    requested = overrides(config)
    size = requested.pop("image_size", None)
    if size is not None and size != dataset.image_size:
        raise dg.Failure(
            f"image_size {size} differs from the dataset's {dataset.image_size}; "
            "rebuild fish_dataset at that size or leave image_size unset"
        )
    return TrainConfig.from_profile(profile, image_size=dataset.image_size, **requested)


@dg.asset(group_name=MODEL_GROUP, kinds={"tensorflow", "mlflow"}, op_tags=TRAINING_POD)
def fish_classifier(
    context: dg.AssetExecutionContext,
    config: FishClassifierConfig,
    fish_dataset: FishDataset,
    platform: PlatformResource,
    mlflow: MlflowResource,
) -> dg.Output[TrainingRun]:
    """Keras EfficientNet trained on the dataset's train split, logged to MLflow as a pyfunc model."""
    from fish_platform.ml.tracking import train_and_log

    mlflow.setup()
    train_config = training_config(config, platform.profile, fish_dataset)
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
        run,
        metadata={
            **_run_metadata(mlflow, run),
            "dataset_version": fish_dataset.version.version_id,
            "model_uri": run.model_uri,
            "variant": run.variant,
            "weights": run.weights,
            "image_size": run.image_size,
            "species": len(run.labels),
            "epochs_run": run.epochs_run,
            "best_epoch": run.best_epoch,
            "best_val_accuracy": _score(run.best_val_accuracy),
            "best_val_loss": _score(run.best_val_loss),
            "train_duration_s": round(run.duration_s, 1),
            "train_images_per_s": round(run.train_images_per_s, 1),
            "training_curves": dg.MetadataValue.md(markdown_image(run.curves_png, "training curves")),
        },
    )


@dg.asset(group_name=MODEL_GROUP, kinds={"tensorflow", "mlflow"}, op_tags=TRAINING_POD)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: ModelEvaluationConfig,
    fish_classifier: TrainingRun,
    fish_dataset: FishDataset,
    platform: PlatformResource,
    mlflow: MlflowResource,
) -> dg.Output[EvaluatedModel]:
    """The logged model scored on the test split: accuracy, macro-F1, top-3, per species, latency."""
    from fish_platform.ml.tracking import evaluate_and_log

    mlflow.setup()
    # Whether behavioural checks block promotion is the profile's call unless the run says otherwise.
    profile_default = EvaluationConfig(block_on_behaviour=platform.defaults.block_on_behaviour)
    evaluation_config = with_overrides(profile_default, overrides(config))
    evaluation, confusion_png = evaluate_and_log(fish_classifier, fish_dataset.version, evaluation_config)
    context.log.info(
        f"{evaluation.split}: accuracy {evaluation.accuracy:.4f}, macro-F1 {evaluation.macro_f1:.4f}, "
        f"top-3 {evaluation.top3_accuracy:.4f} on {evaluation.n_images} images"
    )
    return dg.Output(
        EvaluatedModel(fish_classifier, evaluation, evaluation_config),
        metadata={
            **_run_metadata(mlflow, fish_classifier),
            "split": evaluation.split,
            "images": evaluation.n_images,
            "accuracy": _score(evaluation.accuracy),
            "macro_f1": _score(evaluation.macro_f1),
            "top3_accuracy": _score(evaluation.top3_accuracy),
            **{name: round(value, 2) for name, value in evaluation.latency.items()},
            "split_fingerprint": evaluation.fingerprint[:16],
            "per_species": dg.MetadataValue.md(evaluation.per_class_markdown()),
            "confusion_matrix": dg.MetadataValue.md(markdown_image(confusion_png, "confusion matrix")),
            **_trust_metadata(evaluation),
        },
    )


def _trust_metadata(evaluation: Evaluation) -> dict[str, Any]:
    trust = evaluation.trust
    if trust is None:
        return {}
    record = trust.calibration
    return {
        "ece_before_scaling": _score(trust.test_ece_before),
        "ece": _score(trust.test_ece_after),
        "temperature": _score(record.temperature),
        "unknown_threshold": _score(record.threshold),
        "reliability_diagram": dg.MetadataValue.md(markdown_image(trust.reliability_png, "reliability")),
        **{f"behaviour_{name}": _score(check.rate) for name, check in trust.checks.items()},
    }


@dg.asset_check(
    asset=model_evaluation,
    blocking=True,
    description=f"Test accuracy is at least {MIN_SKILL:.0%} of the way from chance to perfect.",
)
def model_beats_chance(
    context: dg.AssetCheckExecutionContext, model_evaluation: EvaluatedModel
) -> dg.AssetCheckResult:
    """Stops promotion of a model that only looks trained (e.g. one class for every image)."""
    evaluation = model_evaluation.evaluation
    chance = 1.0 / len(evaluation.labels)
    required = chance + MIN_SKILL * (1.0 - chance)
    recalls = [row["recall"] for row in evaluation.per_class]
    passed = evaluation.accuracy >= required
    metadata = {
        "accuracy": round(evaluation.accuracy, 4),
        "required": round(required, 4),
        "chance": round(chance, 4),
        "species_never_recognised": sum(1 for r in recalls if r == 0.0),
    }
    if not passed:
        metadata["what_to_do"] = NOT_LEARNED_ADVICE
        context.log.warning(f"accuracy {evaluation.accuracy:.3f} < {required:.3f}: {NOT_LEARNED_ADVICE}")
    return dg.AssetCheckResult(passed=passed, metadata=metadata)


NOT_LEARNED_ADVICE = (
    "the model has not learned: add images (at least a few dozen per species; from-scratch training "
    "needs more than pretrained), or train from ImageNet weights (weights=imagenet, see docs/training.md)"
)


def _behaviour_check(name: str, description: str) -> dg.AssetChecksDefinition:
    """A check on one behavioural test computed by the evaluation (fish_platform.ml.trust): it blocks
    promotion when it fails with ERROR severity, i.e. when ``block_on_behaviour`` is set."""

    @dg.asset_check(asset=model_evaluation, name=f"behaviour_{name}", blocking=True, description=description)
    def check(
        context: dg.AssetCheckExecutionContext, model_evaluation: EvaluatedModel
    ) -> dg.AssetCheckResult:
        trust = model_evaluation.evaluation.trust
        if trust is None:
            return dg.AssetCheckResult(passed=False, metadata={"reason": "no behaviour tests were run"})
        result = trust.checks[name]
        metadata = {"rate": round(result.rate, 4), "required": result.threshold, "images": result.n}
        if result.per_species:
            metadata["recall_per_species"] = ", ".join(f"{k} {v:.2f}" for k, v in result.per_species.items())
        if result.failing:
            metadata["failing"] = ", ".join(str(item) for item in result.failing[:20])
        verdict = "passed" if result.passed else "FAILED"
        context.log.info(f"behaviour {name} {verdict}: {result.rate:.3f} (required {result.threshold})")
        blocking = model_evaluation.config.block_on_behaviour
        severity = dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
        return dg.AssetCheckResult(passed=result.passed, metadata=metadata, severity=severity)

    return check


BEHAVIOUR_CHECKS = [
    _behaviour_check("flip", "Top-1 unchanged for mirrored test images (at least 95%)."),
    _behaviour_check(
        "brightness_contrast", "Top-1 unchanged under small brightness and contrast changes (at least 95%)."
    ),
    _behaviour_check("minimum_functionality", "Every species' test recall reaches the configured floor."),
    _behaviour_check("not_a_fish", "Generated non-fish images (colours, noise, patterns) get unknown."),
]


ServingModelConfig = overlay(OptimizationConfig, "ServingModelConfig", "Optimized runtimes to build.")


@dg.asset(group_name=MODEL_GROUP, kinds={"openvino", "mlflow"}, op_tags=TRAINING_POD)
def serving_model(
    context: dg.AssetExecutionContext,
    config: ServingModelConfig,
    model_evaluation: EvaluatedModel,
    fish_dataset: FishDataset,
    mlflow: MlflowResource,
) -> dg.Output[ServingModelReport]:
    """The evaluated model converted for fast CPU serving (OpenVINO IR FP32), checked against Keras on
    the test split and logged beside the model, where the service finds it."""
    from fish_platform.ml.tracking import optimize_and_log

    mlflow.setup()
    optimization = with_overrides(OptimizationConfig(), overrides(config))
    model, dataset = model_evaluation.model, fish_dataset.version
    report = optimize_and_log(model, dataset, optimization, log=context.log.info)
    metadata: dict[str, Any] = {
        "runtimes": ", ".join(report.runtimes) or "none",
        "test_images": report.test_images,
    }
    for bundle in report.bundles:
        metadata[f"{bundle.format}_top1_agreement"] = _score(bundle.parity["top1_agreement"])
        metadata[f"{bundle.format}_max_prob_diff"] = float(bundle.parity["max_abs_diff"])
        metadata[f"{bundle.format}_seconds"] = bundle.seconds
    if report.int8 is not None:
        metadata["int8"] = "kept" if report.int8["accepted"] else "rejected"
        metadata["int8_reason"] = str(report.int8.get("reason", ""))
    return dg.Output(report, metadata=metadata)


@dg.asset_check(
    asset=serving_model,
    blocking=True,
    description="Every optimized runtime agrees with Keras on the test split (top-1 >= 99.5%, |dp| <= 1e-3).",
)
def optimized_model_matches_keras(serving_model: ServingModelReport) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=serving_model.parity_passed,
        metadata={
            bundle.format: "passed" if bundle.passed else f"FAILED {bundle.parity}"
            for bundle in serving_model.bundles
        },
    )


@dg.asset(group_name=MODEL_GROUP, kinds={"mlflow"}, op_tags=pod_tags("training"), deps=[serving_model])
def production_model(
    context: dg.AssetExecutionContext,
    config: ProductionModelConfig,
    model_evaluation: EvaluatedModel,
    fish_dataset: FishDataset,
    mlflow: MlflowResource,
) -> dg.Output[Review]:
    """Register the evaluated model; move the ``production`` alias to it only if it beats the champion."""
    from fish_platform.ml.tracking import champion_scorer
    from fish_platform.registry import register_and_review

    mlflow.setup()
    evaluation = model_evaluation.evaluation
    promotion = with_overrides(PromotionConfig(), overrides(config))
    review = register_and_review(
        mlflow.client(),
        mlflow.model_name,
        model_evaluation.model.model_uri,
        run_id=model_evaluation.model.run_id,
        model_id=model_evaluation.model.model_id,
        macro_f1=evaluation.macro_f1,
        fingerprint=evaluation.fingerprint,
        evaluate_champion=champion_scorer(fish_dataset.version, evaluation.split),
        margin=promotion.margin,
        challenger_margin=promotion.challenger_margin,
        tags={"dagster.run_id": context.run_id},
    )
    decision = review.decision
    context.log.info(f"{review.model_name} v{review.version}: {decision.label} ({decision.reason})")
    return dg.Output(
        review,
        metadata={
            "model_name": review.model_name,
            "registered_version": review.version,
            "decision": decision.label,
            "reason": decision.reason,
            "challenger_macro_f1": round(decision.challenger_f1, 4),
            "champion_version": decision.champion_version or "none",
            "champion_macro_f1": "n/a" if decision.champion_f1 is None else round(decision.champion_f1, 4),
            "champion_score_source": decision.champion_f1_source,
            "production_version": review.production_version or "none",
            "challenger_version": review.challenger_version or "none",
            "production_uri": review.production_uri,
        },
    )


@dg.asset_check(
    asset=production_model,
    description="The production alias follows the decision: the challenger if promoted, else the champion.",
)
def production_alias_follows_decision(
    production_model: Review, mlflow: MlflowResource
) -> dg.AssetCheckResult:
    from fish_platform.registry import get_champion

    champion = get_champion(mlflow.client(), production_model.model_name)
    actual = str(champion.version) if champion is not None else None
    decision = production_model.decision
    expected = production_model.version if decision.promote else decision.champion_version
    return dg.AssetCheckResult(
        passed=actual is not None and actual == expected,
        metadata={
            "alias_version": actual or "none",
            "expected_version": expected or "none",
            "decision": decision.label,
            "reason": decision.reason,
        },
    )


MODEL_ASSETS = [fish_classifier, model_evaluation, serving_model, production_model]
MODEL_CHECKS = [
    model_beats_chance,
    *BEHAVIOUR_CHECKS,
    optimized_model_matches_keras,
    production_alias_follows_decision,
]
