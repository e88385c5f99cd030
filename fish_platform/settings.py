"""Platform settings, read from the environment.

Every setting has a ``FISH_`` variable; the tools' own standard variables
(``MLFLOW_TRACKING_URI``, ``REDIS_URL``, ``DAGSTER_HOME``, ``AWS_*``) are honoured as
those tools define them. Nothing here is read at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Profile = Literal["demo", "production"]
PROFILES: tuple[str, ...] = ("demo", "production")
EXECUTORS: tuple[str, ...] = ("multiprocess", "k8s")


@dataclass(frozen=True)
class ProfileDefaults:
    """What changes between a laptop demo and the production system."""

    image_size: int
    model_variant: str
    weights: str
    epochs_head: int
    epochs_finetune: int
    batch_size: int
    min_images_per_species: int
    lr_head: float
    lr_finetune: float
    patience: int


PROFILE_DEFAULTS: dict[str, ProfileDefaults] = {
    # Small enough that `make demo` runs the whole graph in minutes on 2 CPU cores. Trained from
    # scratch (no ImageNet download here), so: small batches for enough BatchNorm updates per epoch,
    # a brisk learning rate, and patience for the noisy early validation loss.
    "demo": ProfileDefaults(
        image_size=96,
        model_variant="B0",
        weights="none",
        epochs_head=12,
        epochs_finetune=4,
        batch_size=16,
        min_images_per_species=10,
        lr_head=3e-3,
        lr_finetune=1e-3,
        patience=6,
    ),
    # The original system: EfficientNet-B4 at its native 380 px, ImageNet weights.
    "production": ProfileDefaults(
        image_size=380,
        model_variant="B4",
        weights="imagenet",
        epochs_head=10,
        epochs_finetune=20,
        batch_size=32,
        min_images_per_species=50,
        lr_head=1e-3,
        lr_finetune=1e-4,
        patience=3,
    ),
}


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    profile: str
    data_dir: Path  # FISH_DATA_DIR: scratch for one process; nothing durable lives here unless data_uri does
    data_uri: str  # FISH_DATA_URI: durable platform state (a folder, or s3://bucket/prefix)
    raw_uri: str
    s3_endpoint_url: str | None
    spark_master: str
    mlflow_tracking_uri: str
    mlflow_registry_uri: str | None
    mlflow_experiment: str
    model_name: str
    redis_url: str | None
    dataset_retention: int = 3  # FISH_DATASET_RETENTION: complete dataset versions kept
    sensor_interval_seconds: int = 60  # FISH_SENSOR_INTERVAL_SECONDS
    sensor_min_batch: int = 1  # FISH_SENSOR_MIN_BATCH
    sensor_quiet_seconds: float = 30.0  # FISH_SENSOR_QUIET_SECONDS
    retrain_cron: str = "0 3 * * 1"  # FISH_RETRAIN_CRON
    spark_driver_pod: str | None = None  # POD_NAME (downward API): the driver pod that owns k8s executors
    run_config_file: str | None = None  # FISH_RUN_CONFIG: YAML run config of sensor/schedule runs
    executor: str = "multiprocess"  # FISH_EXECUTOR: multiprocess (one machine or one run pod) or k8s
    train_gpus: int = 0  # FISH_TRAIN_GPUS: GPUs the training step's pod requests (k8s executor)
    serving_url: str | None = None  # FISH_SERVING_URL: the service serving_deployment asks
    serving_max_lag_seconds: float = 300.0  # FISH_SERVING_MAX_LAG_SECONDS

    def automatic_run_config(self) -> dict:
        """Run config for runs the platform launches by itself (sensor, schedule): empty unless set."""
        if not self.run_config_file:
            return {}
        import yaml

        return yaml.safe_load(Path(self.run_config_file).read_text()) or {}

    @property
    def mlflow_dir(self) -> Path:
        return (self.data_dir if self.durable_on_s3 else Path(self.data_uri)) / "mlflow"

    @property
    def durable_on_s3(self) -> bool:
        return self.data_uri.startswith("s3://")

    def spark_conf(self, master: str | None = None, run_id: str | None = None) -> dict[str, str]:
        """Spark settings that depend on where the job runs (the master URL).

        Executors on a standalone cluster get the S3 endpoint and credentials as executor
        environment; on Kubernetes they come from a Secret (``spark.kubernetes.executor.secretKeyRef``
        in k8s/spark/spark-defaults.conf), and executor pods are named per run and owned by the driver.
        """
        master = master or self.spark_master
        conf: dict[str, str] = {}
        forwarded = [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_DEFAULT_REGION",
            *CHECKSUM_ENV,
        ]
        if master.startswith("spark://"):
            for name in forwarded:
                if _env(name):
                    conf[f"spark.executorEnv.{name}"] = _env(name)
        if master.startswith("k8s://"):
            conf["spark.kubernetes.executor.podNamePrefix"] = f"fish-{(run_id or 'local')[:8].lower()}"
            if self.spark_driver_pod:
                conf["spark.kubernetes.driver.pod.name"] = self.spark_driver_pod
            for name in CHECKSUM_ENV:
                conf[f"spark.executorEnv.{name}"] = os.environ[name]
        return conf


# boto3 1.36+ sends CRC32 checksums that some S3-compatible stores reject; ask only when required.
CHECKSUM_ENV = ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION")


def export_process_env(settings: Settings) -> None:
    """Set the variables that libraries and child processes read themselves (never overriding the user).

    MLflow's S3 client reads ``MLFLOW_S3_ENDPOINT_URL``: it gets the platform's one endpoint setting.
    """
    for name in CHECKSUM_ENV:
        os.environ.setdefault(name, "when_required")
    if settings.s3_endpoint_url:
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint_url)


def default_data_dir() -> Path:
    return Path(_env("FISH_DATA_DIR", "fish-data")).expanduser().resolve()


def load_settings() -> Settings:
    """Read settings from the environment (call at run time, not import time)."""
    profile = _env("FISH_PROFILE", "demo")
    if profile not in PROFILE_DEFAULTS:
        raise ValueError(f"FISH_PROFILE must be one of {PROFILES}, got {profile!r}")
    data_dir = default_data_dir()
    data_uri = _env("FISH_DATA_URI", str(data_dir))
    if not data_uri.startswith("s3://"):
        data_uri = str(Path(data_uri.removeprefix("file://")).expanduser().resolve())
    # The embedded MLflow store is durable state: beside the data when FISH_DATA_URI is a folder.
    mlflow_dir = (data_dir if data_uri.startswith("s3://") else Path(data_uri)) / "mlflow"
    settings = Settings(
        profile=profile,
        data_dir=data_dir,
        data_uri=data_uri,
        raw_uri=_env("FISH_RAW_URI", str(data_dir / "raw")),
        s3_endpoint_url=_env("FISH_S3_ENDPOINT_URL", _env("AWS_ENDPOINT_URL_S3", _env("AWS_ENDPOINT_URL"))),
        spark_master=_env("FISH_SPARK_MASTER", "local[*]"),
        mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir / 'mlflow.db'}"),
        mlflow_registry_uri=_env("MLFLOW_REGISTRY_URI"),
        mlflow_experiment=_env("FISH_MLFLOW_EXPERIMENT", "fish-classifier"),
        model_name=_env("FISH_MODEL_NAME", "fish-classifier"),
        redis_url=_env("REDIS_URL"),
        dataset_retention=int(_env("FISH_DATASET_RETENTION", "3")),
        sensor_interval_seconds=int(_env("FISH_SENSOR_INTERVAL_SECONDS", "60")),
        sensor_min_batch=int(_env("FISH_SENSOR_MIN_BATCH", "1")),
        sensor_quiet_seconds=float(_env("FISH_SENSOR_QUIET_SECONDS", "30")),
        retrain_cron=_env("FISH_RETRAIN_CRON", "0 3 * * 1"),
        spark_driver_pod=_env("POD_NAME"),
        run_config_file=_env("FISH_RUN_CONFIG"),
        executor=_env("FISH_EXECUTOR", "multiprocess"),
        train_gpus=int(_env("FISH_TRAIN_GPUS", "0")),
        serving_url=_env("FISH_SERVING_URL"),
        serving_max_lag_seconds=float(_env("FISH_SERVING_MAX_LAG_SECONDS", "300")),
    )
    if settings.executor not in EXECUTORS:
        raise ValueError(f"FISH_EXECUTOR must be one of {EXECUTORS}, got {settings.executor!r}")
    export_process_env(settings)
    return settings
