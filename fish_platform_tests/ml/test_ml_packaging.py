"""The logged pyfunc model: species names out, the same answer in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import mlflow
import numpy as np
import pandas as pd
import pytest

from fish_platform.ml.model import build_model
from fish_platform.ml.packaging import FishClassifierModel, load_classifier, log_classifier
from fish_platform_tests.ml.ml_helpers import png_bytes

pytestmark = pytest.mark.timeout(120)

LABELS = ["Sea Bass", "Shrimp", "Trout"]
COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 30), (20, 20, 20), (240, 240, 240)]


def _decisive_model(image_size: int):
    """An untrained model with a scaled-up head, so its top-1 is not a near tie between classes."""
    model, weights = build_model(len(LABELS), image_size, "B0", "none")
    dense = model.get_layer("species")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 200.0, bias])
    return model, weights


def test_round_trip_in_fresh_process(mlflow_store, tmp_path):
    model, weights = _decisive_model(32)
    images = [png_bytes(color, seed=i) for i, color in enumerate(COLORS)]
    with mlflow.start_run():
        info = log_classifier(
            model,
            LABELS,
            32,
            "B0",
            weights.description,
            registered_model_name="fish-test",
            example_images=images[:1],
        )
    assert info.registered_model_version == 1

    in_process = mlflow.pyfunc.load_model("models:/fish-test/1")
    answer = in_process.predict(pd.DataFrame({"image": images}))
    assert list(answer.columns) == ["species", "confidence", "top3"]
    assert set(answer["species"]) <= set(LABELS)
    top3 = json.loads(answer["top3"][0])
    assert [entry["species"] for entry in top3][0] == answer["species"][0]
    assert len(top3) == 3 and sorted(e["species"] for e in top3) == sorted(LABELS)

    unwrapped = in_process.unwrap_python_model()
    assert isinstance(unwrapped, FishClassifierModel)
    assert unwrapped.labels == LABELS and unwrapped.image_size == 32
    assert unwrapped.metadata["weights"] == "none" and unwrapped.metadata["variant"] == "B0"
    probabilities = unwrapped.predict_arrays(unwrapped.decode(images))
    assert probabilities.shape == (len(images), 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # The same model called directly through Keras agrees with the compiled forward pass.
    direct = model(unwrapped.decode(images).astype("float32"), training=False).numpy()
    np.testing.assert_allclose(probabilities, direct, atol=1e-5)

    images_path = tmp_path / "images.json"
    images_path.write_text(json.dumps([image.hex() for image in images]))
    script = textwrap.dedent(
        f"""
        import json, mlflow, numpy as np, pandas as pd
        from fish_platform.ml.packaging import load_classifier
        images = [bytes.fromhex(h) for h in json.load(open({str(images_path)!r}))]
        model = mlflow.pyfunc.load_model("models:/fish-test/1")
        species = list(model.predict(pd.DataFrame({{"image": images}}))["species"])
        wrapped = load_classifier("models:/fish-test/1")
        assert wrapped.predict_arrays(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 3)
        print("RESULT" + json.dumps(species))
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store.tracking_uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    assert json.loads(line.removeprefix("RESULT")) == list(answer["species"])


def test_predict_arrays_validates_input(mlflow_store):
    model, weights = build_model(2, 32, "B0", "none")
    with mlflow.start_run():
        info = log_classifier(model, ["a", "b"], 32, "B0", weights.description)
    wrapped = load_classifier(info.model_uri)
    assert wrapped.predict_arrays(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 2)
    assert wrapped.predict_arrays(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 2)
    with pytest.raises(ValueError, match="shape"):
        wrapped.predict_arrays(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        wrapped.predict_arrays(np.zeros((1, 32, 32, 3), np.float32))


def test_log_classifier_needs_a_run_and_matching_labels(mlflow_store):
    model, weights = build_model(2, 32, "B0", "none")
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_classifier(model, ["a", "b"], 32, "B0", weights.description)
    with mlflow.start_run(), pytest.raises(ValueError, match="labels"):
        log_classifier(model, ["a", "b", "c"], 32, "B0", weights.description)
