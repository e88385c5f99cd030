"""The production profile for real: the whole graph on PostgreSQL and S3, promotion included.

Dagster's instance (dagster-postgres) and MLflow's backend store live on a real PostgreSQL
server; raw images and MLflow artifacts live on an S3-compatible server on loopback. Only the
settings differ from the embedded demo: the code is the same.
"""

import boto3
import dagster as dg
import pytest
import yaml
from mlflow import MlflowClient

from fish_platform.assets.data import DATA_ASSETS, DATA_CHECKS
from fish_platform.assets.model import MODEL_ASSETS, MODEL_CHECKS
from fish_platform.data.synthetic import generate_dataset
from fish_platform.registry import PRODUCTION_ALIAS
from fish_platform.resources import MlflowResource
from fish_platform_tests.deploy.test_deploy_postgres import dagster_yaml
from fish_platform_tests.helpers import LEARNING_CONFIG, dagster_resources

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MODEL_NAME = "fish-classifier-prod-test"


@pytest.fixture
def raw_bucket(s3_endpoint, tmp_path):
    """Synthetic fish uploaded to s3://fish-raw/incoming in the Kaggle layout."""
    summary = generate_dataset(tmp_path / "src", species=4, per_species=60, corrupt=1, duplicates=1, seed=1)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for bucket in ("fish-raw", "fish-models"):
        client.create_bucket(Bucket=bucket)
    for path in summary.out_dir.rglob("*"):
        if path.is_file():
            client.upload_file(
                str(path), "fish-raw", f"incoming/{path.relative_to(summary.out_dir).as_posix()}"
            )
    return "s3://fish-raw/incoming"


def test_whole_graph_on_postgres_and_s3_learns_and_promotes(
    spark, postgres_server, s3_endpoint, raw_bucket, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    tracking_uri = postgres_server.create_database("mlflow_prod")
    postgres_server.create_database("dagster_prod")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml(postgres_server, "dagster_prod")))

    resources = dagster_resources(raw_bucket, tmp_path / "fish-data", s3_endpoint_url=s3_endpoint)
    resources["mlflow"] = MlflowResource(
        tracking_uri=tracking_uri,
        experiment_name="fish-prod",
        model_name=MODEL_NAME,
        artifact_location="s3://fish-models/mlflow",
    )
    run_config = {
        "ops": {
            "fish_dataset": {"config": {"image_size": 48}},
            # B0 from scratch at 48 px: what two CPU cores can train in a test (the production
            # profile's B4 at 380 px with ImageNet weights needs a GPU and the internet).
            "fish_classifier": {"config": {"variant": "B0", "weights": "none", **LEARNING_CONFIG}},
            "model_evaluation": {"config": {"latency_calls": 3}},
        }
    }
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize(
            [*DATA_ASSETS, *DATA_CHECKS, *MODEL_ASSETS, *MODEL_CHECKS],
            resources=resources,
            run_config=run_config,
            instance=instance,
        )
        assert result.success
        dataset = result.asset_materializations_for_node("fish_dataset")[0].metadata
        assert dataset["quarantined"].value == 1 and dataset["duplicates_dropped"].value == 1
        evaluation = result.output_for_node("model_evaluation")
        print(f"production profile: accuracy {evaluation['accuracy']:.3f}, F1 {evaluation['macro_f1']:.3f}")
        assert evaluation["accuracy"] >= 0.8
        assert result.output_for_node("production_model")["decision"] == "promoted"

    # Another process (webserver, daemon) sees the run and the materializations in PostgreSQL.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(dg.AssetKey("production_model")) is not None

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion = client.get_model_version_by_alias(MODEL_NAME, PRODUCTION_ALIAS)
    assert champion.version == "1" or str(champion.version) == "1"
    objects = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket="fish-models", Prefix="mlflow/"
    )
    keys = [obj["Key"] for obj in objects.get("Contents", [])]
    assert any(key.endswith("model.keras") for key in keys), keys[:20]
    assert any(key.endswith(".png") for key in keys)  # training curves and confusion matrix
