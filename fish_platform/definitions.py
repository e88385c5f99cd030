"""The one Dagster code location: ``dagster dev -m fish_platform.definitions``.

Resources come from the settings (see docs/architecture.md): a variable that is set is passed as
``dg.EnvVar`` (read at launch, hidden in the UI); an unset one falls back to the embedded default for
one machine. Durable state lives under ``FISH_DATA_URI``; ``FISH_DATA_DIR`` is scratch.
"""

import dagster as dg

from fish_platform.assets.data import DATA_ASSETS, DATA_CHECKS
from fish_platform.assets.model import MODEL_ASSETS, MODEL_CHECKS
from fish_platform.assets.serving import SERVING_ASSETS
from fish_platform.jobs import fish_pipeline, retrain_job, serving_status_job
from fish_platform.resources import build_resources
from fish_platform.schedules import periodic_retrain_schedule, serving_status_schedule
from fish_platform.sensors import new_raw_images_sensor
from fish_platform.settings import load_settings

_settings = load_settings()


def _executor(settings):
    """``FISH_EXECUTOR=k8s``: every step in its own pod, sized by its asset's ``dagster-k8s/config`` tag."""
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return None  # Dagster's default: steps in subprocesses of the run (one machine, or one run pod)


defs = dg.Definitions(
    assets=[*DATA_ASSETS, *MODEL_ASSETS, *SERVING_ASSETS],
    asset_checks=[*DATA_CHECKS, *MODEL_CHECKS],
    jobs=[fish_pipeline, retrain_job, serving_status_job],
    sensors=[new_raw_images_sensor(_settings.sensor_interval_seconds, _settings.automatic_run_config())],
    schedules=[
        periodic_retrain_schedule(_settings.retrain_cron, _settings.automatic_run_config()),
        serving_status_schedule(_settings.serving_url),
    ],
    resources=build_resources(_settings),
    executor=_executor(_settings),
)
