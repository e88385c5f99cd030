"""Settings that move the platform between one machine and a cluster."""

import os

import pytest

from fish_platform.settings import load_settings


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("FISH_DATA_DIR", str(tmp_path / "scratch"))
    unset = ("FISH_DATA_URI", "FISH_SPARK_MASTER", "POD_NAME", "MLFLOW_TRACKING_URI")
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    return monkeypatch


def test_durable_state_defaults_to_the_data_dir_and_moves_to_s3_by_one_setting(env, tmp_path):
    local = load_settings()
    assert local.data_uri == str((tmp_path / "scratch").resolve()) and not local.durable_on_s3
    assert local.mlflow_tracking_uri == f"sqlite:///{tmp_path.resolve() / 'scratch' / 'mlflow' / 'mlflow.db'}"
    env.setenv("FISH_DATA_URI", "s3://fish-data/platform")
    env.setenv("FISH_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    try:
        cloud = load_settings()
        assert cloud.data_uri == "s3://fish-data/platform" and cloud.durable_on_s3
        assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"  # MLflow's S3 client follows
    finally:
        os.environ.pop("MLFLOW_S3_ENDPOINT_URL", None)  # set by the platform, not by monkeypatch


def test_executors_get_credentials_by_configuration_on_each_kind_of_cluster(env):
    settings = load_settings()
    assert settings.spark_conf("local[2]", "abcdef1234") == {}
    standalone = settings.spark_conf("spark://10.0.0.5:7077", "abcdef1234")
    assert standalone["spark.executorEnv.AWS_ACCESS_KEY_ID"] == "key-id"
    assert standalone["spark.executorEnv.AWS_SECRET_ACCESS_KEY"] == "secret"
    env.setenv("POD_NAME", "dagster-run-abcdef12-xyz")
    k8s = load_settings().spark_conf("k8s://https://kubernetes.default.svc", "ABCDEF1234-5678")
    assert k8s["spark.kubernetes.executor.podNamePrefix"] == "fish-abcdef12"  # one prefix per run
    assert k8s["spark.kubernetes.driver.pod.name"] == "dagster-run-abcdef12-xyz"  # executors owned by it
    assert not any("AWS_SECRET" in key for key in k8s)  # on Kubernetes the secret comes from secretKeyRef


def test_unknown_executor_is_refused(env):
    env.setenv("FISH_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="FISH_EXECUTOR"):
        load_settings()
