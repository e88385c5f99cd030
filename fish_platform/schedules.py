"""Periodic retraining (off by default: turn it on in the UI or with ``dagster schedule start``)."""

import os

import dagster as dg

retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets("fish_classifier").downstream(),
    description="Retrain on the current dataset, evaluate, and promote only if the challenger wins.",
)

periodic_retrain = dg.ScheduleDefinition(
    name="periodic_retrain",
    job=retrain_job,
    cron_schedule=os.environ.get("FISH_RETRAIN_CRON", "0 3 * * 1"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
