"""The ``prediction_drift`` asset, its check and the retraining sensor, over a real MLflow registry."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from fish_platform_tests.ml.ml_helpers import synthetic_images, write_parquet_dataset
from fish_platform_tests.monitoring.drift_helpers import darkened, log_rows, write_log
from fish_platform_tests.serving.serving_helpers import Registry, promote, register_tiny_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A production version with a stored reference, and four days of log: one normal, three dark."""
    import mlflow

    from fish_platform.ml.input import iter_rows
    from fish_platform.ml.packaging import load_classifier
    from fish_platform.ml.reference import ImageProfiler, build_reference, log_reference

    root = tmp_path_factory.mktemp("drift-asset")
    registry = Registry(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri(), "fish-drift-test")
    images = synthetic_images(4, 40, seed=5, root=root / "raw")
    dataset = write_parquet_dataset(root / "dataset", images, image_size=32)
    version = register_tiny_model(registry, sorted(images), 32)
    promote(registry, version)
    client = mlflow.MlflowClient(registry.tracking_uri, registry_uri=registry.tracking_uri)
    run_id = client.get_model_version(registry.model_name, version).run_id
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    model = load_classifier(f"models:/{registry.model_name}/{version}")
    with mlflow.start_run(run_id=run_id):
        log_reference(build_reference(model, dataset))

    data_dir = root / "fish-data"
    # The uploads are the originals (the dataset holds them resized): uri is mem://<species>/<index>.
    uris = [row["uri"].split("/") for row in iter_rows(dataset, "val", ["uri"])]
    val = [images[parts[2]][int(parts[3])] for parts in uris]
    profiler = ImageProfiler(model)
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (3, 2, 1, 0)]
    write_log(data_dir, days[0], log_rows(profiler.profile_images(val), version))
    for day in days[1:]:
        write_log(data_dir, day, log_rows(profiler.profile_images(darkened(val)), version))
    yield registry, data_dir, days, version
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def _resources(registry: Registry, data_dir: Path) -> dict:
    from fish_platform.resources import MlflowResource, PlatformResource

    return {
        "platform": PlatformResource(data_uri=str(data_dir)),
        "mlflow": MlflowResource(
            tracking_uri=registry.tracking_uri,
            model_name=registry.model_name,
            ui_url="http://127.0.0.1:5000",
        ),
    }


def test_drift_asset_check_and_retraining_sensor(world) -> None:
    from fish_platform.assets.monitoring import drift_tick, no_prediction_drift, prediction_drift

    registry, data_dir, days, version = world
    instance = dg.DagsterInstance.ephemeral()
    verdicts = {}
    for day in days:
        result = dg.materialize(
            [prediction_drift, no_prediction_drift],
            partition_key=day,
            resources=_resources(registry, data_dir),
            instance=instance,
        )
        assert result.success
        metadata = result.asset_materializations_for_node("prediction_drift")[0].metadata
        assert metadata["model_version"].value == version
        assert metadata["answers"].value == 32
        assert metadata["plots"].value.startswith("![drift](data:image/png;base64,")
        assert metadata["reference_run"].value.startswith("http://127.0.0.1:5000/#/experiments/")
        report = json.loads(Path(metadata["report_uri"].value).read_text())  # what /metrics exports
        assert (report["date"], report["drifted"]) == (day, metadata["drifted"].value)
        check = result.get_asset_check_evaluations()[0]
        assert check.metadata["partition"].value == day
        verdicts[day] = metadata["drifted"].value
        assert check.passed is (not verdicts[day])
        assert check.severity == dg.AssetCheckSeverity.WARN
    assert verdicts == {days[0]: False, days[1]: True, days[2]: True, days[3]: True}

    request = drift_tick(instance, 3)
    assert isinstance(request, dg.SensorResult)
    assert request.run_requests[0].run_key == f"drift-retrain-{days[3]}"
    assert request.run_requests[0].job_name in (None, "retrain")
    assert isinstance(drift_tick(instance, 4), dg.SkipReason)  # the first day did not drift


def test_drift_asset_fails_clearly_without_a_production_version(tmp_path: Path) -> None:
    from fish_platform.assets.monitoring import prediction_drift

    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "a").as_uri(), "fish-none-yet")
    with pytest.raises(dg.Failure, match="no production version"):
        dg.materialize(
            [prediction_drift],
            partition_key=datetime.now(UTC).date().isoformat(),
            resources=_resources(registry, tmp_path / "data"),
            instance=dg.DagsterInstance.ephemeral(),
        )


def test_runs_link_to_the_mlflow_ui(tmp_path: Path) -> None:
    from fish_platform.assets.model import run_link
    from fish_platform.resources import default_mlflow_resource
    from fish_platform.settings import load_settings

    embedded = load_settings({"FISH_DATA_DIR": str(tmp_path)})
    assert embedded.mlflow_ui_url == "http://127.0.0.1:5000"  # `make mlflow`
    resource = default_mlflow_resource(embedded)
    link = run_link(resource.tracking_uri, "3", "abc", resource.ui_url)
    assert link == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    server = load_settings({"FISH_DATA_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert server.mlflow_ui_url == "http://mlflow:5000"
    chosen = {"FISH_DATA_DIR": str(tmp_path), "FISH_MLFLOW_UI_URL": "https://mlflow.example.org"}
    assert load_settings(chosen).mlflow_ui_url == "https://mlflow.example.org"
    assert run_link("sqlite:///x.db", "1", "r").startswith("mlflow ui --backend-store-uri")  # no UI known
