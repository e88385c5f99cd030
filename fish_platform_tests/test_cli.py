"""The `fish-platform` console command, run as a user runs it."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fish_platform.data.store import LocalImageStore
from fish_platform.registry import promote
from fish_platform_tests.mlflow_helpers import register_constant_model

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


@dataclass(frozen=True)
class CliRegistry:
    client: Any
    uri: str
    env: dict[str, str]

    def champion(self) -> str | None:
        """The version @production points to, as a string."""
        from fish_platform.registry import get_champion

        champion = get_champion(self.client, "fish-cli")
        return None if champion is None else str(champion.version)


@pytest.fixture
def cli_registry(tmp_path) -> CliRegistry:
    """A sqlite registry holding versions 1 and 2 of ``fish-cli`` (no alias yet), and the CLI's env."""
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("cli", artifact_location=(tmp_path / "artifacts").as_uri())
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        for _ in range(2):
            register_constant_model(client, "fish-cli", experiment_id=experiment)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
        "FISH_MODEL_NAME": "fish-cli",
        "FISH_DATA_DIR": str(tmp_path),
    }
    return CliRegistry(client, uri, env)


def _assert_one_error_line(result, message: str) -> None:
    """Exit 2 and stderr is the one line ``error: <message>``, no traceback (as download-kaggle)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {message}"], result.stderr


def test_promote_and_rollback_move_the_alias_with_records(cli_registry):
    from fish_platform.registry import PRODUCTION_ALIAS, TAG_DECISION, TAG_REASON

    client, env = cli_registry.client, cli_registry.env
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
    _assert_one_error_line(
        missing, f"fish-cli version 9 does not exist in the registry at {cli_registry.uri}"
    )
    assert str(client.get_model_version_by_alias("fish-cli", PRODUCTION_ALIAS).version) == "1"


def _no_champion(client) -> None:
    pass


def _first_champion(client) -> None:
    promote(client, "fish-cli", "1", "first model")


def _previous_champion_deleted(client) -> None:
    promote(client, "fish-cli", "1", "first model")
    promote(client, "fish-cli", "2", "second model")
    client.delete_model_version("fish-cli", "1")


@pytest.mark.parametrize(
    ("history", "champion", "message"),
    [
        (_no_champion, None, "fish-cli has no @production version to roll back"),
        (_first_champion, "1", "fish-cli v1 replaced no earlier champion; nothing to roll back to"),
        (_previous_champion_deleted, "2", "previous champion v1 of fish-cli no longer exists"),
    ],
    ids=["no-champion", "first-champion", "previous-champion-deleted"],
)
def test_rollback_that_cannot_be_done_is_one_clear_line_and_exit_2(cli_registry, history, champion, message):
    history(cli_registry.client)
    _assert_one_error_line(_run("rollback", env=cli_registry.env), message)
    assert cli_registry.champion() == champion


def test_an_mlflow_error_is_one_line_with_mlflow_s_message_and_exit_2(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # create the tables now: MLflow logs it on stderr
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": "bogus://registry",
        "FISH_DATA_DIR": str(tmp_path),
    }
    result = _run("rollback", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "'bogus://registry'" in lines[0]  # MLflow's own message, which names the URI
