"""The one Dagster code location: ``dagster dev -m fish_platform.definitions``.

``defs`` is built when Dagster loads the location (``@dg.definitions``), not at import: resources,
sensor and schedules come from :func:`fish_platform.settings.load_settings`. A value that came from
the environment is passed as ``dg.EnvVar`` (read at launch, hidden in the UI); an unset one falls back
to the embedded default for one machine. Durable state lives under ``FISH_DATA_URI``; ``FISH_DATA_DIR``
is scratch.
"""

import dagster as dg

from fish_platform.assets.batch import BATCH_ASSETS, new_batches_sensor
from fish_platform.assets.challenger import CHALLENGER_ASSETS
from fish_platform.assets.data import DATA_ASSETS, DATA_CHECKS
from fish_platform.assets.model import MODEL_ASSETS, MODEL_CHECKS
from fish_platform.assets.monitoring import MONITORING_ASSETS, MONITORING_CHECKS, drift_retrain_sensor
from fish_platform.assets.serving import SERVING_ASSETS
from fish_platform.jobs import (
    batch_predictions_job,
    fish_pipeline,
    prediction_drift_job,
    retrain_job,
    serving_status_job,
)
from fish_platform.resources import build_resources
from fish_platform.schedules import (
    periodic_retrain_schedule,
    prediction_drift_schedule,
    serving_status_schedule,
)
from fish_platform.sensors import new_raw_images_sensor
from fish_platform.settings import Settings, load_settings


def _executor(settings: Settings):
    """The jobs' executor (``FISH_EXECUTOR``).

    ``in_process`` (the default): every step runs in the run's own process. The graph is a chain, so a
    process per step buys no parallelism, and on a small machine each one costs seconds of imports
    (Dagster, MLflow, then TensorFlow again for every model step: about a minute per run on 2 cores).
    ``multiprocess``: Dagster's default executor (a process per step; run config can still pick
    ``in_process``). ``k8s``: every step in its own pod, sized by its asset's ``dagster-k8s/config`` tag.
    """
    if settings.pipeline.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if settings.pipeline.executor == "in_process":
        return dg.in_process_executor
    return None  # Dagster's default: steps in subprocesses of the run


def build_definitions(settings: Settings) -> dg.Definitions:
    automation = settings.automation
    run_config = automation.run_config()
    return dg.Definitions(
        assets=[
            *DATA_ASSETS,
            *MODEL_ASSETS,
            *SERVING_ASSETS,
            *MONITORING_ASSETS,
            *BATCH_ASSETS,
            *CHALLENGER_ASSETS,
        ],
        asset_checks=[*DATA_CHECKS, *MODEL_CHECKS, *MONITORING_CHECKS],
        jobs=[fish_pipeline, retrain_job, serving_status_job, prediction_drift_job, batch_predictions_job],
        sensors=[
            new_raw_images_sensor(automation.sensor_interval_seconds, run_config),
            drift_retrain_sensor(automation.drift_retrain_days, automation.drift_retrain, run_config),
            new_batches_sensor(automation.sensor_interval_seconds),
        ],
        schedules=[
            periodic_retrain_schedule(automation.retrain_cron, run_config),
            serving_status_schedule(settings.pipeline.serving_url),
            prediction_drift_schedule(settings.pipeline.serving_url),
        ],
        resources=build_resources(settings),
        executor=_executor(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
