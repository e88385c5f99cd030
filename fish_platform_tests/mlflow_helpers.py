"""Registered model versions for tests (import as ``fish_platform_tests.mlflow_helpers``).

The models are trivial pyfunc models: registry tests need versions, tags and aliases, not answers.
Runs and models go to the current tracking and registry URIs (``mlflow.set_tracking_uri``).
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion

from fish_platform.registry import register_challenger


class Constant(mlflow.pyfunc.PythonModel):
    """A pyfunc model that answers with its input."""

    def predict(self, context, model_input, params=None):
        return model_input


def register_constant_model(
    client: Any,
    model_name: str,
    *,
    macro_f1: float = 0.5,
    fingerprint: str = "0" * 64,
    experiment_id: str | None = None,
) -> ModelVersion:
    """Log a :class:`Constant` model in its own run and register it as a challenger with its test score."""
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    return register_challenger(
        client,
        model_name,
        info.model_uri,
        run_id=run.info.run_id,
        macro_f1=macro_f1,
        fingerprint=fingerprint,
        model_id=info.model_id,
    )
