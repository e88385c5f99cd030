"""The one Dagster code location: ``dagster dev -m fish_platform.definitions``.

Resources come from the environment (see docs/architecture.md). A variable that is set is
passed as ``dg.EnvVar`` (read at launch, hidden in the UI); an unset one falls back to the
embedded default for one machine.
"""

import os

import dagster as dg

from fish_platform.assets.data import DATA_ASSETS, DATA_CHECKS
from fish_platform.assets.model import MODEL_ASSETS, MODEL_CHECKS
from fish_platform.resources import (
    ImageStoreResource,
    PlatformResource,
    SparkResource,
    default_mlflow_resource,
)
from fish_platform.schedules import periodic_retrain
from fish_platform.sensors import PIPELINE_JOB_NAME, RawSensorResource, new_raw_images
from fish_platform.settings import load_settings


def _setting(variable: str, default: str | None) -> str | dg.EnvVar | None:
    return dg.EnvVar(variable) if os.environ.get(variable) else default


def build_resources() -> dict[str, dg.ConfigurableResource]:
    settings = load_settings()
    return {
        "platform": PlatformResource(data_dir=str(settings.data_dir), profile=settings.profile),
        "image_store": ImageStoreResource(
            raw_uri=_setting("FISH_RAW_URI", settings.raw_uri),
            s3_endpoint_url=settings.s3_endpoint_url,
        ),
        "spark": SparkResource(master=_setting("FISH_SPARK_MASTER", settings.spark_master)),
        "mlflow": default_mlflow_resource(),
        "raw_sensor": RawSensorResource(
            min_batch=int(os.environ.get("FISH_SENSOR_MIN_BATCH", "1")),
            quiet_seconds=float(os.environ.get("FISH_SENSOR_QUIET_SECONDS", "30")),
        ),
    }


fish_pipeline = dg.define_asset_job(
    PIPELINE_JOB_NAME,
    selection=dg.AssetSelection.all(),
    description="The whole graph: raw images -> dataset -> classifier -> evaluation -> production model.",
)

defs = dg.Definitions(
    assets=[*DATA_ASSETS, *MODEL_ASSETS],
    asset_checks=[*DATA_CHECKS, *MODEL_CHECKS],
    jobs=[fish_pipeline],
    sensors=[new_raw_images],
    schedules=[periodic_retrain],
    resources=build_resources(),
)
