"""Fixtures for the ML layer: a throwaway MLflow store, tiny Parquet datasets, tiny models.

Datasets are written straight to Parquet (see ml_helpers), so these tests need no Spark or Java.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fish_platform_tests.ml.ml_helpers import synthetic_images, write_parquet_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class MlflowStore:
    tracking_uri: str
    artifact_location: str
    experiment_id: str


@pytest.fixture
def mlflow_store(tmp_path: Path) -> Iterator[MlflowStore]:
    """A fresh sqlite tracking + registry store with artifacts under ``tmp_path``."""
    import mlflow

    previous_tracking, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = (tmp_path / "mlartifacts").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment_id = mlflow.MlflowClient().create_experiment("fish-test", artifact_location=artifacts)
    mlflow.set_experiment(experiment_id=experiment_id)
    yield MlflowStore(uri, artifacts, experiment_id)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous_tracking)
    mlflow.set_registry_uri(previous_registry)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 synthetic species x 20 images at 32 px: enough to exercise the pipeline, not to learn."""
    root = tmp_path_factory.mktemp("tiny")
    images = synthetic_images(4, 20, seed=7, root=root / "raw")
    return write_parquet_dataset(root / "dataset", images, image_size=32)
