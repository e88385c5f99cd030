"""The jobs: the whole graph (run by the new-image sensor) and retraining (run by the schedule)."""

import dagster as dg

PIPELINE_JOB_NAME = "fish_pipeline"
RETRAIN_JOB_NAME = "retrain"
BATCH_JOB_NAME = "batch_predictions_job"
RETRAIN_ASSETS = ("fish_classifier", "model_evaluation", "serving_model", "production_model")

# Monitoring assets are partitioned (per day, per batch) and run in their own jobs.
MONITORING_GROUPS = ("monitoring",)

fish_pipeline = dg.define_asset_job(
    PIPELINE_JOB_NAME,
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(*MONITORING_GROUPS),
    description="The whole graph: raw images -> dataset -> classifier -> evaluation -> production model.",
)

retrain_job = dg.define_asset_job(
    RETRAIN_JOB_NAME,
    selection=dg.AssetSelection.assets("fish_classifier").downstream(),
    description="Retrain on the current dataset version, evaluate, and promote only if the challenger wins.",
)

serving_status_job = dg.define_asset_job(
    "serving_status",
    selection=dg.AssetSelection.assets("serving_deployment"),
    description="Ask the service which model version it serves and compare it with the production alias.",
)

prediction_drift_job = dg.define_asset_job(
    "prediction_drift_job",
    selection=dg.AssetSelection.assets("prediction_drift"),
    description="One day of the prediction log against the production version's reference (per day).",
)

batch_predictions_job = dg.define_asset_job(
    BATCH_JOB_NAME,
    selection=dg.AssetSelection.assets("batch_predictions"),
    description="Score one batch folder of images with the production version (per batch partition).",
)
