"""The production topology, proven on one machine with the real engines.

Runs share nothing but PostgreSQL (Dagster's instance, MLflow's backend store) and an S3 server on
loopback (raw images, Dagster IO, the manifest, dataset versions, MLflow artifacts). The dataset job
runs on a real Spark standalone cluster (one master, two workers: separate JVMs). The real
``dagster-daemon`` runs the sensor and the run queue; every run is launched in its own process by the
code server, and the scratch directory (``FISH_DATA_DIR``) is deleted after every run, so nothing a
later step needs can come from a local disk. Only settings differ from ``make demo``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import dagster as dg
import httpx
import pytest
import yaml
from mlflow import MlflowClient

from fish_platform.data.layout import PlatformLayout
from fish_platform.ml.input import split_fingerprint
from fish_platform.registry import PRODUCTION_ALIAS, TAG_FINGERPRINT
from fish_platform_tests.deploy.test_deploy_postgres import dagster_yaml
from fish_platform_tests.deploy.topology import (
    BIN,
    DagsterDeployment,
    SparkCluster,
    copy_logs,
    free_port,
    start,
    stop,
)
from fish_platform_tests.helpers import COLORS, LEARNING_CONFIG, REPO_ROOT, write_image

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

MODEL_NAME = "fish-topology"
DATA_URI = "s3://fish-data/platform"
RAW_URI = "s3://fish-raw/incoming"
TEST_OUTPUT = REPO_ROOT / "test-output" / "topology"
# The sensor's runs execute their steps in the run's own process (each run is still a new process,
# launched by the code server): it saves the per-step TensorFlow imports. The retrain job below uses
# Dagster's default multiprocess executor, so its steps hand outputs to each other through S3.
RUN_CONFIG = {
    "execution": {"config": {"in_process": {}}},
    "ops": {
        "fish_dataset": {"config": {"image_size": 32}},
        "fish_classifier": {"config": {"variant": "B0", "weights": "none", **LEARNING_CONFIG}},
        "model_evaluation": {"config": {"latency_calls": 3}},
    }
}


def _colour_fish(root: Path, per_species: int, seed: int) -> Path:
    """Noisy one-colour images per species (what B0 from scratch learns in seconds at 32 px)."""
    for s_index, (species, color) in enumerate(COLORS.items()):
        for i in range(per_species):
            size = (40 + i % 7, 36 + i % 5)
            write_image(
                root / species / f"{seed}-{i:03d}.png", color, size, seed=seed * 10_000 + 100 * s_index + i
            )
    return root


def _upload(client, root: Path, prefix: str) -> set[str]:
    """Upload a Kaggle-layout folder; returns the sha256 of every file sent."""
    hashes = set()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "fish-raw", f"{prefix}/{path.relative_to(root).as_posix()}")
            hashes.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return hashes


def _clean_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("FISH_", "MLFLOW_", "DAGSTER_", "REDIS_"))
    }


def _split_of(version) -> dict[str, str]:
    rows = version.read_all(["sha256", "split"])
    return dict(zip(rows["sha256"], rows["split"], strict=True))


def _wipe(scratch: Path) -> None:
    """What a run pod's end does to its emptyDir: the next run starts with nothing local."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)


def test_runs_that_share_only_postgres_and_s3(postgres_server, s3_endpoint, tmp_path):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for bucket in ("fish-raw", "fish-data"):
        s3.create_bucket(Bucket=bucket)
    first_images = _colour_fish(tmp_path / "batch1", per_species=50, seed=1)
    photo = next(iter(sorted(first_images.rglob("*.png"))))
    (first_images / "Trout" / "truncated.png").write_bytes(photo.read_bytes()[:200])
    (first_images / "Shrimp" / "copy.png").write_bytes(photo.read_bytes())
    _upload(s3, first_images, "incoming")

    spark = SparkCluster(tmp_path / "spark")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    run_config_file = tmp_path / "run_config.yaml"
    run_config_file.write_text(yaml.safe_dump(RUN_CONFIG))
    mlflow_uri = postgres_server.create_database("mlflow_topology")
    postgres_server.create_database("dagster_topology")
    env = {
        **_clean_env(),
        "FISH_RAW_URI": RAW_URI,
        "FISH_DATA_URI": DATA_URI,
        "FISH_S3_ENDPOINT_URL": s3_endpoint,
        "FISH_SPARK_MASTER": spark.master_url,
        "FISH_DATA_DIR": str(scratch),
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "FISH_MODEL_NAME": MODEL_NAME,
        "FISH_SENSOR_INTERVAL_SECONDS": "5",
        "FISH_SENSOR_QUIET_SECONDS": "0",
        "FISH_RUN_CONFIG": str(run_config_file),
        "FISH_EXECUTOR": "multiprocess",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    deployment = DagsterDeployment(tmp_path / "dagster_home", env, tmp_path / "logs")
    deployment.write_instance(dagster_yaml(postgres_server, "dagster_topology"))
    with deployment.instance():  # migrate the schema once, before three processes race to do it
        pass
    layout = PlatformLayout(DATA_URI, s3_endpoint)
    mlflow = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    service = None
    try:
        spark.start()
        deployment.start()

        # 1. The sensor sees the uploaded images and launches exactly one run of the whole graph.
        first_runs = deployment.wait_for_runs(1, "fish_pipeline", 900)
        assert [r.status for r in first_runs] == [dg.DagsterRunStatus.SUCCESS], deployment.failures(
            first_runs[0].run_id
        )
        _wipe(scratch)
        champion = mlflow.get_model_version_by_alias(MODEL_NAME, PRODUCTION_ALIAS)
        assert str(champion.version) == "1"
        artifacts = s3.list_objects_v2(Bucket="fish-data", Prefix="platform/mlflow/artifacts/")["Contents"]
        assert any(obj["Key"].endswith("model.keras") for obj in artifacts)
        apps = spark.applications()
        assert [app["name"] for app in apps] == ["fish-platform"], "the dataset job never reached the cluster"
        first = layout.current_version()
        assert first is not None and first.uri.startswith(f"{DATA_URI}/dataset/versions/")
        first_splits = _split_of(first)
        first_test = {sha for sha, split in first_splits.items() if split == "test"}
        assert [q["reason"] for q in first.quarantine()] == ["corrupt"]
        assert [d["uri"].rsplit("/", 1)[-1] for d in first.duplicates()] == ["copy.png"]
        evaluation = mlflow.get_run(champion.run_id).data.metrics
        print(f"topology: version 1 test accuracy {evaluation['test_accuracy']:.3f}")
        assert evaluation["test_accuracy"] >= 0.8

        # 2. The service, configured only with the tracking URI and S3 settings, answers from v1.
        port = free_port()
        service_env = {
            **_clean_env(),
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "FISH_S3_ENDPOINT_URL": s3_endpoint,
            "FISH_MODEL_NAME": MODEL_NAME,
            "FISH_DATA_DIR": str(tmp_path / "service-scratch"),
            "BENTOML_HOME": str(tmp_path / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        service_log = tmp_path / "logs" / "service.log"
        service = start(
            [str(BIN / "bentoml"), "serve", "serving.service:FishService", "--port", str(port)],
            service_env,
            service_log,
        )
        answer = _predict_when_ready(f"http://127.0.0.1:{port}", photo.read_bytes(), service, service_log)
        assert str(answer["model_version"]) == "1" and len(answer["top3"]) == 3
        stop(service)

        # 3. More images arrive: exactly one more run, old images keep their split, the challenger is
        #    scored on the champion's test images plus new ones only.
        new_hashes = _upload(s3, _colour_fish(tmp_path / "batch2", per_species=10, seed=2), "incoming/more")
        runs = deployment.wait_for_runs(2, "fish_pipeline", 900)
        assert len(runs) == 2 and runs[1].status == dg.DagsterRunStatus.SUCCESS, deployment.failures(
            runs[1].run_id
        )
        _wipe(scratch)
        second = layout.current_version()
        assert second.uri != first.uri
        second_splits = _split_of(second)
        assert all(second_splits[sha] == split for sha, split in first_splits.items())
        second_test = {sha for sha, split in second_splits.items() if split == "test"}
        assert first_test < second_test and second_test - first_test <= new_hashes
        challenger = mlflow.get_model_version(MODEL_NAME, "2")
        assert challenger.tags[TAG_FINGERPRINT] == split_fingerprint(second, "test")
        with deployment.instance() as instance:
            decision = instance.get_latest_materialization_event(dg.AssetKey("production_model"))
            metadata = decision.asset_materialization.metadata
        assert metadata["registered_version"].value == "2"
        assert metadata["champion_version"].value == "1"  # the champion was re-scored on the same test set

        # 4. The retrain job alone, in a fresh process with a fresh scratch directory: it reads the
        #    dataset version from S3 through the IO manager and trains.
        retrain_config = tmp_path / "retrain.yaml"
        retrain_ops = {k: v for k, v in RUN_CONFIG["ops"].items() if k != "fish_dataset"}
        retrain_config.write_text(yaml.safe_dump({"ops": retrain_ops}))
        fresh_scratch = tmp_path / "retrain-scratch"
        done = subprocess.run(
            [
                str(BIN / "dagster"),
                "job",
                "execute",
                "-m",
                "fish_platform.definitions",
                "-j",
                "retrain",
                "-c",
                str(retrain_config),
            ],
            env={**env, "DAGSTER_HOME": str(deployment.home), "FISH_DATA_DIR": str(fresh_scratch)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        retrained = mlflow.get_model_version(MODEL_NAME, "3")
        assert retrained.tags[TAG_FINGERPRINT] == split_fingerprint(second, "test")
        # Nothing durable went to the retrain's local scratch: only what the run itself made there.
        leftovers = [p for p in fresh_scratch.rglob("*") if p.is_file()] if fresh_scratch.exists() else []
        assert not [p for p in leftovers if p.suffix in (".parquet", ".json", ".keras", ".db")], leftovers
        assert len(deployment.runs("fish_pipeline")) == 2  # the retrain launched no pipeline run
    finally:
        stop(service)
        deployment.stop()
        spark.stop()
        copy_logs(tmp_path / "logs", TEST_OUTPUT)
        copy_logs(tmp_path / "spark", TEST_OUTPUT)


def _predict_when_ready(url: str, image: bytes, process, log: Path, seconds: float = 300) -> dict:
    import time

    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"service exited:\n{log.read_text()[-4000:]}")
            try:
                if client.get("/readyz").status_code == 200:
                    answer = client.post("/predict", files={"file": ("fish.png", image, "image/png")})
                    assert answer.status_code == 200, answer.text
                    return answer.json()
            except httpx.HTTPError:
                pass
            time.sleep(1)
    raise TimeoutError(f"the service never became ready:\n{log.read_text()[-4000:]}")
