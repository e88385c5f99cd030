"""The model half of the graph materialized in-process: training, evaluation, promotion.

``fish_dataset`` is replaced by a stub returning a Parquet dataset written by the fixtures, so
these tests need no Spark. The learning test trains EfficientNet-B0 from scratch at 48 px.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

import fish_platform.ml.tracking as tracking
from fish_platform.assets.model import MODEL_ASSETS, MODEL_CHECKS
from fish_platform.data.dataset import FishDataset
from fish_platform.data.layout import DatasetVersion
from fish_platform.ml.input import read_dataset_info
from fish_platform.registry import PRODUCTION_ALIAS, TAG_DECISION, get_champion, promote
from fish_platform.resources import MlflowResource, PlatformResource
from fish_platform_tests.helpers import LEARNING_CONFIG
from fish_platform_tests.ml.ml_helpers import fish_dataset_for, synthetic_images, write_parquet_dataset
from fish_platform_tests.mlflow_helpers import register_constant_model

MODEL_NAME = "fish-graph-test"


def _dataset_stub(version: DatasetVersion) -> dg.AssetsDefinition:
    @dg.asset(name="fish_dataset", group_name="data")
    def fish_dataset() -> FishDataset:
        return fish_dataset_for(version)

    return fish_dataset


def _materialize(
    dataset_dir: DatasetVersion, store, tmp_path: Path, classifier_config: dict, profile: str = "demo"
):
    resources = {
        "platform": PlatformResource(data_uri=str(tmp_path / "fish-data"), profile=profile),
        "mlflow": MlflowResource(
            tracking_uri=store.tracking_uri,
            experiment_name="fish-graph",
            model_name=MODEL_NAME,
            artifact_location=store.artifact_location,
        ),
    }
    run_config = {
        "ops": {
            "fish_classifier": {"config": classifier_config},
            "model_evaluation": {"config": {"latency_calls": 5, "batch_size": 16}},
        }
    }
    return dg.materialize(
        [_dataset_stub(dataset_dir), *MODEL_ASSETS, *MODEL_CHECKS],
        resources=resources,
        run_config=run_config,
        raise_on_error=False,
    )


def _client(store) -> MlflowClient:
    return MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)


@pytest.mark.timeout(180)
def test_failed_training_leaves_the_registry_untouched(tiny_dataset, mlflow_store, tmp_path, monkeypatch):
    client = _client(mlflow_store)
    champion = register_constant_model(client, MODEL_NAME, macro_f1=0.5, fingerprint="0" * 64)
    promote(client, MODEL_NAME, champion.version, "existing champion")

    real_train = tracking.train_classifier

    def train_then_crash(config, dataset_dir, *, on_epoch=None):
        def crash(record):
            on_epoch(record)
            raise RuntimeError("worker lost mid-training")

        return real_train(config, dataset_dir, on_epoch=crash)

    monkeypatch.setattr(tracking, "train_classifier", train_then_crash)
    result = _materialize(
        tiny_dataset, mlflow_store, tmp_path, {"epochs_head": 2, "epochs_finetune": 1, "batch_size": 16}
    )
    assert not result.success
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert materialized == {"fish_dataset"}
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert [str(v.version) for v in versions] == [str(champion.version)]
    assert str(get_champion(client, MODEL_NAME).version) == str(champion.version)
    runs = client.search_runs([client.get_experiment_by_name("fish-graph").experiment_id])
    failed = [r for r in runs if r.data.tags.get("dagster.asset") == "fish_classifier"]
    assert len(failed) == 1 and failed[0].info.status == "FAILED"
    assert failed[0].data.metrics["val_loss"] > 0  # it really was mid-training: epoch 1 was logged


def test_image_size_must_match_the_dataset(tiny_dataset, mlflow_store, tmp_path):
    result = _materialize(tiny_dataset, mlflow_store, tmp_path, {"image_size": 64})
    assert not result.success
    failure = result.failure_data_for_node("fish_classifier")
    assert "differs from the dataset's 32" in str(failure.error)


@pytest.mark.timeout(240)
def test_behavioural_checks_block_promotion_in_the_production_profile(tiny_dataset, mlflow_store, tmp_path):
    """One epoch of a tiny model answers generated non-fish images as fish: under the production
    profile that failing check is an error and nothing is registered or promoted."""
    config = {"variant": "B0", "weights": "none", "epochs_head": 1, "epochs_finetune": 0, "batch_size": 16}
    result = _materialize(tiny_dataset, mlflow_store, tmp_path, config, profile="production")
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    not_a_fish = checks["behaviour_not_a_fish"]
    assert not not_a_fish.passed and not_a_fish.severity == dg.AssetCheckSeverity.ERROR
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert "model_evaluation" in materialized and "production_model" not in materialized
    assert _client(mlflow_store).search_model_versions(f"name='{MODEL_NAME}'") == []


@pytest.mark.e2e
@pytest.mark.timeout(420)
def test_graph_learns_promotes_and_serves_the_same_answers(mlflow_store, tmp_path):
    """4 procedural species, B0 from scratch at 48 px: accuracy >= 0.8, promoted, same top-1 elsewhere."""
    images = synthetic_images(4, 60, seed=1, root=tmp_path / "raw")
    dataset_dir = write_parquet_dataset(tmp_path / "dataset", images, image_size=48)
    config = LEARNING_CONFIG
    result = _materialize(dataset_dir, mlflow_store, tmp_path, config)
    assert result.success
    evaluation = result.output_for_node("model_evaluation").evaluation
    names = ("accuracy", "macro_f1", "top3_accuracy", "n_images", "latency")
    scores = {name: getattr(evaluation, name) for name in names}
    print(f"learning test: {scores}")
    assert evaluation.accuracy >= 0.8, evaluation
    assert evaluation.macro_f1 >= 0.75 and evaluation.top3_accuracy >= evaluation.accuracy
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    names = ("flip", "brightness_contrast", "minimum_functionality", "not_a_fish")
    behaviour = {f"behaviour_{name}" for name in names}
    assert behaviour <= set(checks)  # measured and reported; they block only with block_on_behaviour
    assert all(checks[name].passed for name in set(checks) - behaviour), checks
    assert all(0.0 <= checks[name].metadata["rate"].value <= 1.0 for name in behaviour)

    classifier = result.output_for_node("fish_classifier")
    assert classifier.weights == "none" and classifier.variant == "B0" and classifier.epochs_run >= 1
    metadata = result.asset_materializations_for_node("fish_classifier")[0].metadata
    assert "data:image/png;base64," in metadata["training_curves"].value
    production = result.output_for_node("production_model")
    assert production.decision.promote and production.decision.label == "promoted"
    client = _client(mlflow_store)
    version = client.get_model_version(MODEL_NAME, production.version)
    assert version.tags[TAG_DECISION] == "promoted"
    run = client.get_run(classifier.run_id)
    assert run.data.metrics["test_accuracy"] == pytest.approx(evaluation.accuracy)
    assert run.data.tags["dagster.run_id"] == result.run_id

    # A fresh process loading models:/<name>@production gets species names and the same top-1.
    script = textwrap.dedent(
        f"""
        import json, mlflow, pandas as pd, pyarrow.parquet as pq
        wanted = {json.dumps([p["sha256"] for p in evaluation.predictions])}
        rows = {{}}
        for path in {dataset_dir.split_files("test")!r}:
            for row in pq.read_table(path, columns=["sha256", "image"]).to_pylist():
                rows[row["sha256"]] = row["image"]
        model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}@{PRODUCTION_ALIAS}")
        answer = model.predict(pd.DataFrame({{"image": [rows[s] for s in wanted]}}))
        print("RESULT" + json.dumps(list(answer["species"])))
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store.tracking_uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    fresh = json.loads(line.removeprefix("RESULT"))
    assert fresh == [p["predicted"] for p in evaluation.predictions]
    assert set(fresh) <= set(read_dataset_info(dataset_dir).labels)
