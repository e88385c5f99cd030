"""The one Dagster code location: ``dagster dev -m fish_platform.definitions``.

Resources come from the settings (see docs/architecture.md): a variable that is set is passed as
``dg.EnvVar`` (read at launch, hidden in the UI); an unset one falls back to the embedded default for
one machine. Durable state lives under ``FISH_DATA_URI``; ``FISH_DATA_DIR`` is scratch.
"""

import dagster as dg

from fish_platform.assets.data import DATA_ASSETS, DATA_CHECKS
from fish_platform.assets.model import MODEL_ASSETS, MODEL_CHECKS
from fish_platform.jobs import fish_pipeline, retrain_job
from fish_platform.resources import build_resources
from fish_platform.schedules import periodic_retrain_schedule
from fish_platform.sensors import new_raw_images_sensor
from fish_platform.settings import load_settings

_settings = load_settings()

defs = dg.Definitions(
    assets=[*DATA_ASSETS, *MODEL_ASSETS],
    asset_checks=[*DATA_CHECKS, *MODEL_CHECKS],
    jobs=[fish_pipeline, retrain_job],
    sensors=[new_raw_images_sensor(_settings.sensor_interval_seconds, _settings.automatic_run_config())],
    schedules=[periodic_retrain_schedule(_settings.retrain_cron, _settings.automatic_run_config())],
    resources=build_resources(_settings),
)
