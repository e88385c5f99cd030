"""``fish-platform export VERSION --format F DIR``: a registered version as a device bundle."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fish_platform_tests.serving.serving_helpers import Registry, register_tiny_model

CLI = os.path.join(os.path.dirname(sys.executable), "fish-platform")
LABELS = ["Bass", "Carp", "Trout"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-registry")
    registry = Registry(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri(), "fish-export")
    assert register_tiny_model(registry, LABELS, image_size=32) == "1"
    return registry


def _export(registry, *args):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "MLFLOW_REGISTRY_URI": registry.tracking_uri,
        "FISH_MODEL_NAME": registry.model_name,
    }
    return subprocess.run([CLI, "export", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("fmt", ["litert", "openvino", "onnx"])
def test_export_writes_a_bundle_that_answers_like_the_registered_model(registry, tmp_path, fmt):
    import mlflow

    from fish_platform.ml.export import load_exported, read_export

    done = _export(registry, "1", "--format", fmt, str(tmp_path / fmt))
    assert done.returncode == 0, done.stderr[-2000:]
    bundle = read_export(tmp_path / fmt)
    assert bundle.format == fmt and bundle.labels == LABELS and bundle.image_size == 32
    assert json.loads((tmp_path / fmt / "labels.json").read_text()) == LABELS
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    try:
        reference = mlflow.pyfunc.load_model(f"models:/{registry.model_name}/1").unwrap_python_model()
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    expected = reference.predict_arrays(images)
    answer = load_exported(tmp_path / fmt).predict_arrays(images.astype(np.float32))
    assert np.abs(answer - expected).max() <= 1e-3 and (answer.argmax(1) == expected.argmax(1)).all()


def test_export_of_a_missing_version_is_one_line_and_exit_2(registry, tmp_path):
    done = _export(registry, "9", "--format", "openvino", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nothing").exists()
