"""The production profile's stores on a real PostgreSQL server.

On the cluster, Dagster (dagster-postgres, through the Helm chart's ``postgresql`` values) and the
MLflow tracking server (``--backend-store-uri postgresql://...``) keep their state in PostgreSQL.
These tests run both against a real server (fixture ``postgres_server`` in conftest.py) the way the
cluster does, so a schema migration or driver problem shows here, not after a deploy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.timeout(300)


def dagster_yaml(server, database: str) -> dict:
    """The instance config the Helm chart writes (storage: postgres), pointed at the test server.

    ``scheme`` is ``postgresql.postgresqlScheme`` of k8s/dagster/values.yaml: with SQLAlchemy 2.1 the
    default ``postgresql`` would need psycopg 3, which the platform does not install.
    """
    return {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": server.user,
                    "password": server.password,
                    "hostname": server.host,
                    "db_name": database,
                    "port": server.port,
                    "scheme": "postgresql+psycopg2",
                }
            }
        },
        "telemetry": {"enabled": False},
    }


def test_dagster_instance_on_postgres_records_runs_and_materializations(postgres_server, tmp_path: Path):
    import dagster as dg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    postgres_server.create_database("dagster_test")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml(postgres_server, "dagster_test")))

    @dg.asset
    def fish_counts() -> dict:
        return {"salmon": 3, "trout": 2}

    @dg.asset
    def fish_total(fish_counts: dict) -> int:
        return sum(fish_counts.values())

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)

        result = dg.materialize([fish_counts, fish_total], instance=instance)
        assert result.success
        assert result.output_for_node("fish_total") == 5

    # A second process (webserver, daemon, next run pod) sees the same history.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert [run.run_id for run in runs] == [result.run_id]
        assert runs[0].status == dg.DagsterRunStatus.SUCCESS
        materialization = instance.get_latest_materialization_event(dg.AssetKey("fish_total"))
        assert materialization is not None and materialization.run_id == result.run_id


def test_mlflow_tracking_and_registry_on_postgres(postgres_server, tmp_path: Path):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    url = postgres_server.create_database("mlflow_test")
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    assert isinstance(client._tracking_client.store, SqlAlchemyStore)

    experiment_id = client.create_experiment(
        "fish-classifier", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    run = client.create_run(experiment_id, tags={"dagster/run_id": "test-run"})
    client.log_param(run.info.run_id, "model_variant", "B4")
    client.log_metric(run.info.run_id, "val_accuracy", 0.91)
    client.set_terminated(run.info.run_id)

    model_name = "fish-classifier"
    client.create_registered_model(model_name)
    version = client.create_model_version(
        model_name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(model_name, "production", version.version)

    # A fresh client (the serving pod) resolves the alias the same way models:/<name>@production does.
    fresh = MlflowClient(tracking_uri=url, registry_uri=url)
    promoted = fresh.get_model_version_by_alias(model_name, "production")
    assert str(promoted.version) == str(version.version) == "1"
    assert promoted.run_id == run.info.run_id
    stored = fresh.get_run(run.info.run_id)
    assert stored.data.params["model_variant"] == "B4"
    assert stored.data.metrics["val_accuracy"] == pytest.approx(0.91)
    assert stored.info.status == "FINISHED"
    assert mlflow.get_tracking_uri() != url  # nothing leaked into the global mlflow state
