"""The `fish-platform` console command, run as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

from fish_platform.data.store import LocalImageStore

CLI = [os.path.join(os.path.dirname(sys.executable), "fish-platform")]


def _run(*args, env=None, timeout=120):
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_sample_data_writes_kaggle_layout_and_says_synthetic(tmp_path):
    out = tmp_path / "s"
    result = _run(
        "sample-data",
        str(out),
        "--species",
        "3",
        "--per-species",
        "5",
        "--corrupt",
        "2",
        "--duplicates",
        "1",
        "--size",
        "64x48",
        "--seed",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC" in result.stdout
    images = list(LocalImageStore(out).list_images())
    assert len(images) == 3 * 5 + 2 + 1
    assert len({i.species for i in images}) == 3
    assert "synthetic" in (out / "README.txt").read_text().lower()


def test_sample_data_rejects_a_bad_size(tmp_path):
    result = _run("sample-data", str(tmp_path / "s"), "--size", "big")
    assert result.returncode == 2 and "WxH" not in result.stdout
    assert "size must look like" in result.stderr


def test_download_kaggle_without_credentials_is_one_clear_line_and_exit_2(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "KAGGLE_USERNAME": "",
        "KAGGLE_KEY": "",
        "KAGGLE_API_TOKEN": "",
        "KAGGLE_CONFIG_DIR": str(home / ".kaggle"),
    }
    result = _run("download-kaggle", str(tmp_path / "k"), env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "KAGGLE" in lines[0]
    assert not Path(tmp_path / "k").exists() or not any(Path(tmp_path / "k").iterdir())


def test_doctor_reports_java(tmp_path):
    result = _run("doctor", env={"FISH_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0 and "java:" in result.stdout


def test_promote_and_rollback_move_the_alias_with_records(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from fish_platform.registry import PRODUCTION_ALIAS, TAG_DECISION, TAG_REASON

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("cli", artifact_location=(tmp_path / "artifacts").as_uri())
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        for _ in range(2):
            with mlflow.start_run(experiment_id=experiment):
                info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
            mlflow.register_model(info.model_uri, "fish-cli")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
        "FISH_MODEL_NAME": "fish-cli",
        "FISH_DATA_DIR": str(tmp_path),
    }

    for version in ("1", "2"):
        done = _run("promote", version, "--reason", f"operator chose v{version}", env=env)
        assert done.returncode == 0, done.stderr
        assert client.get_model_version_by_alias("fish-cli", PRODUCTION_ALIAS).version in (
            version,
            int(version),
        )
    tags = client.get_model_version("fish-cli", "2").tags
    assert tags[TAG_DECISION] == "manual" and tags[TAG_REASON] == "operator chose v2"

    done = _run("rollback", env=env)
    assert done.returncode == 0, done.stderr
    assert "version 1" in done.stdout
    assert str(client.get_model_version_by_alias("fish-cli", PRODUCTION_ALIAS).version) == "1"

    missing = _run("promote", "9", env=env)
    assert missing.returncode != 0
    assert str(client.get_model_version_by_alias("fish-cli", PRODUCTION_ALIAS).version) == "1"
