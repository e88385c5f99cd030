"""The ``challenger`` alias against a real MLflow sqlite registry: near misses, by hand, from a report.

The CLI runs as users run it (a ``fish-platform`` subprocess on the same sqlite file); the report
that ``promote --from-report`` reads is built by the real report code from constructed log rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest
from mlflow import MlflowClient

from fish_platform.contract import CHALLENGER_ALIAS, PRODUCTION_ALIAS
from fish_platform.monitoring.challenger import LATEST_REPORT, challenger_report
from fish_platform.registry import (
    TAG_CHALLENGER_REASON,
    TAG_DECISION,
    TAG_PREVIOUS,
    RegistryError,
    clear_challenger,
    get_champion,
    promote,
    register_and_review,
    set_challenger,
)
from fish_platform_tests.mlflow_helpers import Constant, register_constant_model
from fish_platform_tests.monitoring.challenger_helpers import shadowed

pytestmark = pytest.mark.timeout(120)
NAME = "fish-challenger-test"
SPLIT = "c" * 64
CLI = os.path.join(os.path.dirname(sys.executable), "fish-platform")


@pytest.fixture
def client(mlflow_store) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_store.tracking_uri, registry_uri=mlflow_store.tracking_uri)


def _alias(client: MlflowClient, alias: str) -> str | None:
    version = get_champion(client, NAME, alias)
    return None if version is None else str(version.version)


def _train_and_review(client: MlflowClient, f1: float, **margins: float):
    """What ``production_model`` does after evaluation: register a logged model and review it."""
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    return register_and_review(
        client,
        NAME,
        info.model_uri,
        run_id=run.info.run_id,
        model_id=info.model_id,
        macro_f1=f1,
        fingerprint=SPLIT,
        evaluate_champion=lambda uri: pytest.fail(f"re-evaluated {uri}"),
        **margins,
    )


def test_a_near_miss_becomes_the_challenger_and_a_clear_loss_does_not(client):
    first = _train_and_review(client, 0.80)
    assert first.decision.promote and first.challenger_version is None

    # margin 0.01, challenger_margin 0.02: gains down to -0.01 are near misses.
    near = _train_and_review(client, 0.795, margin=0.01, challenger_margin=0.02)
    assert not near.decision.promote
    assert (near.production_version, near.challenger_version) == (first.version, near.version)
    tags = client.get_model_version(NAME, near.version).tags
    assert tags[TAG_DECISION] == "kept_champion"
    assert tags[TAG_CHALLENGER_REASON].startswith("missed the promotion gate by at most 0.0200")

    far = _train_and_review(client, 0.70, margin=0.01, challenger_margin=0.02)
    assert far.challenger_version == near.version  # a clear loss leaves the challenger alone
    off = _train_and_review(client, 0.80, margin=0.01, challenger_margin=0.0)
    assert off.challenger_version == near.version  # challenger_margin 0: never automatic
    newer = _train_and_review(client, 0.805, margin=0.01, challenger_margin=0.02)
    assert newer.challenger_version == newer.version  # the newest near miss replaces the older one
    assert _alias(client, PRODUCTION_ALIAS) == first.version


def test_set_clear_and_promotion_of_the_challenger(client):
    v1, v2 = (str(register_constant_model(client, NAME).version) for _ in range(2))
    promote(client, NAME, v1, "first")
    with pytest.raises(RegistryError, match="cannot shadow itself"):
        set_challenger(client, NAME, v1, "by hand")
    with pytest.raises(RegistryError, match="no @challenger version to clear"):
        clear_challenger(client, NAME)
    assert set_challenger(client, NAME, v2, "by hand") is None
    assert clear_challenger(client, NAME) == v2 and _alias(client, CHALLENGER_ALIAS) is None

    set_challenger(client, NAME, v2, "by hand")
    promote(client, NAME, v2, "the challenger won")
    assert _alias(client, PRODUCTION_ALIAS) == v2
    assert _alias(client, CHALLENGER_ALIAS) is None  # a champion never shadows itself
    assert client.get_model_version(NAME, v2).tags[TAG_PREVIOUS] == v1


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def _one_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr


def _write_report(data_dir, champion: str, challenger: str, champion_right: int, challenger_right: int):
    predictions, feedback = shadowed(
        200,
        champion_right,
        challenger_right,
        champion_version=champion,
        challenger_version=challenger,
        model_name=NAME,
    )
    report = challenger_report(predictions, feedback).as_dict()
    path = data_dir / LATEST_REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    return report


def test_cli_challenger_and_promote_from_report_end_to_end(client, mlflow_store, tmp_path):
    versions = [str(register_constant_model(client, NAME).version) for _ in range(3)]
    v1, v2, v3 = versions
    promote(client, NAME, v1, "first")
    data_dir = tmp_path / "fish-data"
    env = {
        "MLFLOW_TRACKING_URI": mlflow_store.tracking_uri,
        "MLFLOW_REGISTRY_URI": mlflow_store.tracking_uri,
        "FISH_MODEL_NAME": NAME,
        "FISH_DATA_DIR": str(tmp_path),
        "FISH_DATA_URI": str(data_dir),
    }

    done = _cli(env, "challenger", "set", v2, "--reason", "operator wants a look")
    assert done.returncode == 0, done.stderr
    assert _alias(client, CHALLENGER_ALIAS) == v2
    assert client.get_model_version(NAME, v2).tags[TAG_CHALLENGER_REASON] == "operator wants a look"
    _one_error(_cli(env, "challenger", "set", v1), "cannot shadow itself")
    _one_error(_cli(env, "challenger", "set", "9"), f"{NAME} version 9 does not exist")

    _one_error(_cli(env, "promote", "--from-report"), "no challenger report at")
    _write_report(data_dir, v1, v2, champion_right=140, challenger_right=144)  # keep champion
    _one_error(_cli(env, "promote", "--from-report"), "recommends 'keep_champion'")
    _one_error(_cli(env, "promote", v2, "--from-report"), "not both")
    assert _alias(client, PRODUCTION_ALIAS) == v1

    report = _write_report(data_dir, v1, v2, champion_right=120, challenger_right=160)
    assert report["recommendation"] == "promote"
    done = _cli(env, "promote", "--from-report")
    assert done.returncode == 0, done.stderr
    assert f"version {v2} is now @{PRODUCTION_ALIAS}" in done.stdout
    assert (_alias(client, PRODUCTION_ALIAS), _alias(client, CHALLENGER_ALIAS)) == (v2, None)
    tags = client.get_model_version(NAME, v2).tags
    assert tags[TAG_DECISION] == "challenger_report" and tags[TAG_PREVIOUS] == v1
    assert tags["fish.promotion.reason"].startswith(f"challenger report of {report['generated_at']}")

    # The same report again (or one at another path) is stale: its champion is no longer production.
    stale = tmp_path / "elsewhere.json"
    stale.write_text(json.dumps({**report, "challenger_version": v3}))
    _one_error(_cli(env, "promote", "--from-report", str(stale)), f"but @production is now v{v2}")
    assert _alias(client, PRODUCTION_ALIAS) == v2

    done = _cli(env, "rollback")  # history is kept: rollback walks back over the report's promotion
    assert done.returncode == 0 and _alias(client, PRODUCTION_ALIAS) == v1, done.stderr
    set_challenger(client, NAME, v3, "next")
    done = _cli(env, "challenger", "clear")
    assert done.returncode == 0 and f"was version {v3}" in done.stdout, done.stderr
    _one_error(_cli(env, "challenger", "clear"), "no @challenger version to clear")
