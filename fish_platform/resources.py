"""Dagster resources: every connection and setting the assets need.

Values come from :mod:`fish_platform.settings`; a value that came from the environment goes in as
``dg.EnvVar`` (read at launch, hidden in the UI), so a URI carrying a password never shows. Changing
from laptop to cloud is configuration only.
"""

from typing import Any

import dagster as dg

from fish_platform.data.layout import PlatformLayout
from fish_platform.settings import PROFILE_DEFAULTS, ProfileDefaults, Settings, load_settings


class PlatformResource(dg.ConfigurableResource):
    """Where durable platform state lives (``FISH_DATA_URI``), and which profile the platform runs.

    ``data_uri`` is a folder on one machine or ``s3://bucket/prefix`` on a cluster; every run reads
    and writes state there, never on its own disk, so run pods need share nothing else.
    """

    data_uri: str
    s3_endpoint_url: str | None = None
    profile: str = "demo"
    min_images_per_species: int | None = None  # None: the profile's default
    dataset_retention: int | None = None  # None: DatasetConfig's default
    batch_uri: str | None = None  # FISH_BATCH_URI: batches to score; None: <data_uri>/batches

    @property
    def batches_uri(self) -> str:
        """Where batch folders (or prefixes) arrive for ``batch_predictions``."""
        from fish_platform.data.storage import join

        return self.batch_uri or join(self.data_uri, "batches")

    @property
    def defaults(self) -> ProfileDefaults:
        return PROFILE_DEFAULTS[self.profile]

    @property
    def layout(self) -> PlatformLayout:
        return PlatformLayout(self.data_uri, self.s3_endpoint_url)


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and registry, with the experiment's artifact location pinned.

    A small Pythonic resource of our own (dagster-mlflow's ``mlflow_tracking`` is a legacy
    function-style resource). With a ``sqlite:///`` store and no server, MLflow would put
    artifacts in ``./mlruns`` under the current directory; ``artifact_location`` keeps them
    under the data directory (or on S3 in production).
    """

    tracking_uri: str
    registry_uri: str | None = None
    experiment_name: str = "fish-classifier"
    model_name: str = "fish-classifier"
    artifact_location: str | None = None
    ui_url: str | None = None  # the MLflow UI runs are linked to (Settings.mlflow_ui_url)

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str | None:
        """A clickable link to a run in the MLflow UI, or None without a UI."""
        if not self.ui_url:
            return None
        if experiment_id is None:
            experiment_id = self.client().get_run(run_id).info.experiment_id
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def setup(self) -> str:
        """Point the mlflow module at our stores and return the experiment id."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            experiment_id = client.create_experiment(
                self.experiment_name, artifact_location=self.artifact_location
            )
        else:
            experiment_id = experiment.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id

    def client(self):
        from mlflow import MlflowClient

        registry_uri = self.registry_uri or self.tracking_uri
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=registry_uri)


def artifact_location_for(settings: Settings) -> str | None:
    """Where MLflow puts artifacts when it runs without a tracking server: under ``FISH_DATA_URI``.

    With an HTTP tracking server the server decides (its ``--artifacts-destination``).
    """
    if settings.mlflow_tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    location = PlatformLayout(settings.data_uri).mlflow_artifacts_uri
    return location if location.startswith("s3://") else f"file://{location}"


def _setting(settings: Settings, name: str, value: Any) -> Any:
    """``dg.EnvVar`` for a value that came from the environment (read at launch, hidden in the UI),
    else ``value`` (an embedded default)."""
    variable = settings.env_sources.get(name)
    return dg.EnvVar(variable) if variable else value


def default_mlflow_resource(settings: Settings | None = None) -> MlflowResource:
    settings = settings or load_settings()
    return MlflowResource(
        tracking_uri=_setting(settings, "mlflow_tracking_uri", settings.mlflow_tracking_uri),
        registry_uri=_setting(settings, "mlflow_registry_uri", settings.mlflow_registry_uri),
        experiment_name=settings.mlflow_experiment,
        model_name=settings.model_name,
        artifact_location=artifact_location_for(settings),
        ui_url=settings.mlflow_ui_url,
    )


def io_manager_for(data_uri: str, s3_endpoint_url: str | None):
    """Dagster asset outputs under ``FISH_DATA_URI/dagster-io``: S3 in production, a folder locally."""
    location = PlatformLayout(data_uri).dagster_io_uri
    if location.startswith("s3://"):
        from dagster_aws.s3 import S3PickleIOManager, S3Resource

        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        return S3PickleIOManager(
            s3_resource=S3Resource(endpoint_url=s3_endpoint_url), s3_bucket=bucket, s3_prefix=prefix
        )
    return dg.FilesystemIOManager(base_dir=location)


class ImageStoreResource(dg.ConfigurableResource):
    """The raw image source: a local folder or ``s3://bucket/prefix`` (any S3-compatible endpoint)."""

    raw_uri: str
    s3_endpoint_url: str | None = None

    def store(self):
        from fish_platform.data.store import open_store

        return open_store(self.raw_uri, self.s3_endpoint_url)


class SparkResource(dg.ConfigurableResource):
    """A Spark session: ``local[*]`` by default, a cluster (``spark://``, ``k8s://``, ``yarn``) by config."""

    master: str = "local[*]"
    app_name: str = "fish-platform"
    conf: dict[str, str] = {}

    def session(self, run_id: str | None = None):
        """The session, with the settings that depend on the master (executor env, pod names)."""
        from fish_platform.data.spark import build_spark_session

        placement = load_settings().spark_conf(self.master, run_id)
        return build_spark_session(self.master, self.app_name, {**placement, **self.conf})


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource | object]:
    """Every resource from the settings; set variables go in as ``dg.EnvVar``."""
    from fish_platform.assets.serving import ServingResource
    from fish_platform.sensors import RawSensorResource

    settings = settings or load_settings()
    return {
        "platform": PlatformResource(
            data_uri=_setting(settings, "data_uri", settings.data_uri),
            s3_endpoint_url=_setting(settings, "s3_endpoint_url", settings.s3_endpoint_url),
            profile=settings.profile,
            dataset_retention=settings.pipeline.dataset_retention,
            batch_uri=_setting(settings, "batch_uri", settings.pipeline.batch_uri),
        ),
        "image_store": ImageStoreResource(
            raw_uri=_setting(settings, "raw_uri", settings.raw_uri),
            s3_endpoint_url=_setting(settings, "s3_endpoint_url", settings.s3_endpoint_url),
        ),
        "spark": SparkResource(master=_setting(settings, "spark_master", settings.pipeline.spark_master)),
        "mlflow": default_mlflow_resource(settings),
        "raw_sensor": RawSensorResource(
            min_batch=settings.automation.sensor_min_batch,
            quiet_seconds=settings.automation.sensor_quiet_seconds,
        ),
        "io_manager": io_manager_for(settings.data_uri, settings.s3_endpoint_url),
        "serving": ServingResource(
            url=_setting(settings, "serving_url", settings.pipeline.serving_url),
            max_lag_seconds=settings.pipeline.serving_max_lag_seconds,
        ),
    }
