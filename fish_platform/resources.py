"""Dagster resources: every connection and setting the assets need.

Values come from the environment through ``dg.EnvVar`` (read at launch, hidden in the UI)
or from :mod:`fish_platform.settings`; changing from laptop to cloud is configuration only.
"""

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from fish_platform.settings import PROFILE_DEFAULTS, ProfileDefaults, load_settings


class PlatformResource(dg.ConfigurableResource):
    """Where the platform writes on one machine, and which profile it runs."""

    data_dir: str
    profile: str = "demo"
    min_images_per_species: int = 0  # 0: the profile's default

    @property
    def root(self) -> Path:
        path = Path(self.data_dir).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def defaults(self) -> ProfileDefaults:
        return PROFILE_DEFAULTS[self.profile]

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    @property
    def manifest_dir(self) -> Path:
        return self.root / "manifests"


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

    _experiment_id: str | None = PrivateAttr(default=None)

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
        self._experiment_id = experiment_id
        return experiment_id

    def client(self):
        from mlflow import MlflowClient

        registry_uri = self.registry_uri or self.tracking_uri
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=registry_uri)


def default_mlflow_resource() -> MlflowResource:
    settings = load_settings()
    artifact_location = None
    if settings.mlflow_tracking_uri.startswith("sqlite:") or settings.mlflow_tracking_uri.startswith("file:"):
        artifact_location = (settings.mlflow_dir / "artifacts").as_uri()
    return MlflowResource(
        tracking_uri=settings.mlflow_tracking_uri,
        registry_uri=settings.mlflow_registry_uri,
        experiment_name=settings.mlflow_experiment,
        model_name=settings.model_name,
        artifact_location=artifact_location,
    )


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

    def session(self):
        from fish_platform.data.spark import build_spark_session

        return build_spark_session(self.master, self.app_name, self.conf)
