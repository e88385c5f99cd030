"""Schedules: periodic retraining (off by default: turn it on in the UI or with ``dagster schedule
start``), the serving status every 5 minutes, and the day's drift report after midnight UTC."""

from datetime import timedelta

import dagster as dg

from fish_platform.jobs import RETRAIN_ASSETS, prediction_drift_job, retrain_job, serving_status_job


def _only_ops(run_config: dict, names: tuple[str, ...]) -> dict:
    """The run config without ``ops`` entries for assets outside the job (Dagster rejects them)."""
    ops = {name: value for name, value in run_config.get("ops", {}).items() if name in names}
    return {**run_config, "ops": ops} if "ops" in run_config else run_config


def periodic_retrain_schedule(
    cron_schedule: str = "0 3 * * 1", run_config: dict | None = None
) -> dg.ScheduleDefinition:
    """The retrain schedule at ``cron_schedule`` (FISH_RETRAIN_CRON) with ``run_config`` (FISH_RUN_CONFIG)."""
    return dg.ScheduleDefinition(
        name="periodic_retrain",
        job=retrain_job,
        cron_schedule=cron_schedule,
        run_config=_only_ops(run_config or {}, RETRAIN_ASSETS),
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )


def serving_status_schedule(serving_url: str | None) -> dg.ScheduleDefinition:
    """Every 5 minutes, ``serving_deployment``: running by default when a service URL is configured."""
    return dg.ScheduleDefinition(
        name="serving_status_every_5_minutes",
        job=serving_status_job,
        cron_schedule="*/5 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING if serving_url else dg.DefaultScheduleStatus.STOPPED,
    )


def prediction_drift_schedule(serving_url: str | None) -> dg.ScheduleDefinition:
    """At 00:30 UTC, yesterday's ``prediction_drift`` partition over the whole day's prediction log.

    Running by default where a service is deployed (``FISH_SERVING_URL``), like the status schedule;
    the drift-retrain sensor reads the verdicts these runs leave. Today's partition can still be
    materialized by hand during the day.
    """

    @dg.schedule(
        name="prediction_drift_daily",
        cron_schedule="30 0 * * *",
        execution_timezone="UTC",
        job=prediction_drift_job,
        default_status=dg.DefaultScheduleStatus.RUNNING if serving_url else dg.DefaultScheduleStatus.STOPPED,
    )
    def prediction_drift_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"prediction_drift-{day}", partition_key=day)

    return prediction_drift_daily
