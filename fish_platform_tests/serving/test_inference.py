"""Model holder: batching, top-3 from the model's own labels, atomic swap, failures keep serving."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fish_platform.contract import top_k
from serving.inference import AliasTarget, ModelHolder, ModelNotLoaded, fit_to_size

pytestmark = pytest.mark.timeout(60)


class FakeClassifier:
    """Stands in for FishClassifierModel; answers with a fixed preference per version."""

    def __init__(self, labels: list[str], image_size: int, favourite: int) -> None:
        self.labels = labels
        self.image_size = image_size
        self.metadata = {"variant": "B0", "weights": "none"}
        self.favourite = favourite
        self.batches: list[tuple[int, ...]] = []

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.uint8 and batch.shape[1:] == (self.image_size, self.image_size, 3)
        self.batches.append(batch.shape)
        probs = np.full((len(batch), len(self.labels)), 0.1 / (len(self.labels) - 1), np.float32)
        probs[:, self.favourite] = 0.9
        return probs


def image(size: int) -> np.ndarray:
    return np.zeros((size, size, 3), np.uint8)


def test_top_k_is_sorted_and_named():
    labels = ["a", "b", "c", "d"]
    result = top_k(np.array([0.1, 0.5, 0.15, 0.25]), labels)
    assert [r["species"] for r in result] == ["b", "d", "c"]
    assert [r["confidence"] for r in result] == [0.5, 0.25, 0.15]
    assert len(top_k(np.array([0.4, 0.6]), ["x", "y"])) == 2  # fewer classes than k


def test_fit_to_size_only_resizes_when_needed():
    same = image(32)
    assert fit_to_size(same, 32) is same
    assert fit_to_size(image(48), 32).shape == (32, 32, 3)


def test_holder_loads_alias_classifies_in_one_call_and_swaps():
    target = {"version": "1"}
    models = {"1": FakeClassifier(["x", "y", "z"], 32, 0), "2": FakeClassifier(["p", "q", "r", "s"], 48, 3)}
    swaps: list[tuple[str | None, str]] = []
    holder = ModelHolder(
        "fish",
        resolve=lambda: AliasTarget(target["version"]),
        load=lambda uri: models[uri.rsplit("/", 1)[1]],
        on_swap=lambda old, new: swaps.append((old.version if old else None, new.version)),
    )
    with pytest.raises(ModelNotLoaded):
        holder.classify([image(32)])
    assert holder.refresh() is True
    assert holder.refresh() is False  # same version: nothing to do

    results = holder.classify([image(32)] * 5)
    assert len(results) == 5 and models["1"].batches[-1] == (5, 32, 32, 3)  # one model call
    assert results[0]["top3"][0] == {"species": "x", "confidence": 0.9}
    assert results[0]["model_version"] == "1"

    target["version"] = "2"
    assert holder.refresh() is True
    # An image prepared for the previous model's size is still answered by the new one.
    results = holder.classify([image(32), image(48)])
    assert {r["model_version"] for r in results} == {"2"}
    assert results[0]["top3"][0]["species"] == "s"
    assert swaps == [(None, "1"), ("1", "2")]


def test_failed_load_keeps_serving_the_previous_version():
    target = {"version": "1"}
    good = FakeClassifier(["x", "y"], 32, 1)

    def load(uri: str):
        if uri.endswith("/2"):
            raise OSError("artifact store unreachable")
        return good

    holder = ModelHolder("fish", resolve=lambda: AliasTarget(target["version"]), load=load)
    holder.refresh()
    target["version"] = "2"
    assert holder.refresh() is False
    assert "artifact store unreachable" in (holder.last_error or "")
    assert holder.classify([image(32)])[0]["model_version"] == "1"


def test_registry_errors_and_missing_alias_do_not_raise():
    def broken():
        raise ConnectionError("registry down")

    holder = ModelHolder("fish", resolve=broken, load=lambda uri: None)
    assert holder.refresh() is False and "registry down" in (holder.last_error or "")
    holder = ModelHolder("fish", resolve=lambda: None, load=lambda uri: None)
    assert holder.refresh() is False and "production alias" in (holder.last_error or "")


def test_swap_during_classification_does_not_mix_models():
    """A batch keeps the model it started with, even if a swap lands while it runs."""
    started, release = threading.Event(), threading.Event()

    class SlowClassifier(FakeClassifier):
        def predict_arrays(self, batch):
            started.set()
            release.wait(5)
            return super().predict_arrays(batch)

    target = {"version": "1"}
    models = {"1": SlowClassifier(["x", "y"], 32, 0), "2": FakeClassifier(["x", "y"], 32, 1)}
    holder = ModelHolder(
        "fish",
        resolve=lambda: AliasTarget(target["version"]),
        load=lambda uri: models[uri.rsplit("/", 1)[1]],
        warmup_batch_sizes=(),
    )
    holder.refresh()
    out: list = []
    worker = threading.Thread(target=lambda: out.extend(holder.classify([image(32)] * 3)))
    worker.start()
    assert started.wait(5)
    target["version"] = "2"
    assert holder.refresh() is True
    release.set()
    worker.join(5)
    assert [r["model_version"] for r in out] == ["1", "1", "1"]
    assert holder.classify([image(32)])[0]["model_version"] == "2"


def test_polling_follows_the_alias():
    target = {"version": "1"}
    holder = ModelHolder(
        "fish",
        resolve=lambda: AliasTarget(target["version"]),
        load=lambda uri: FakeClassifier(["x", "y"], 32, 0),
    )
    holder.refresh()
    target["version"] = "7"
    holder.start_polling(0.05)
    try:
        for _ in range(100):
            if holder.info and holder.info.version == "7":
                break
            threading.Event().wait(0.05)
    finally:
        holder.stop()
    assert holder.info is not None and holder.info.version == "7"


def test_registry_loader_downloads_from_the_configured_registry_not_the_global_one(tmp_path):
    """The service is configured by FISH_DATA_DIR alone: MLflow's process-wide URIs point elsewhere."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from fish_platform.contract import model_version_uri as model_uri
    from fish_platform_tests.serving.serving_helpers import Registry, register_tiny_model
    from serving.inference import _default_loader, registry_loader

    registry = Registry(
        tracking_uri=f"sqlite:///{tmp_path / 'real.db'}",
        artifact_location=(tmp_path / "artifacts").as_uri(),
        model_name="fish-loader-test",
    )
    version = register_tiny_model(registry, ["Bass", "Trout"], image_size=32)
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    try:
        mlflow.set_tracking_uri(elsewhere)
        mlflow.set_registry_uri(elsewhere)
        with pytest.raises(MlflowException):
            _default_loader(model_uri(registry.model_name, version))
        classifier = registry_loader(registry.tracking_uri)(model_uri(registry.model_name, version))
        assert list(classifier.labels) == ["Bass", "Trout"] and classifier.image_size == 32
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def test_reloads_after_a_promotion_are_staggered_but_the_first_load_is_not():
    import random

    target = {"version": "1"}
    events: list[str] = []

    def load(uri: str):
        events.append(f"load {uri.rsplit('/', 1)[1]}")
        return FakeClassifier(["x", "y"], 32, 0)

    def wait(seconds: float) -> bool:
        events.append(f"wait {seconds:.3f}")
        return False  # not shutting down

    holder = ModelHolder(
        "fish",
        resolve=lambda: AliasTarget(target["version"]),
        load=load,
        reload_jitter_s=0.4,
        rng=random.Random(7),
        wait=wait,
    )
    assert holder.refresh() is True
    target["version"] = "2"
    assert holder.refresh() is True
    expected = random.Random(7).uniform(0.0, 0.4)
    assert events == ["load 1", f"wait {expected:.3f}", "load 2"]  # the first load is never delayed
    assert holder.refresh() is False and events[-1] == "load 2"  # same version: no wait, no load
    assert holder.classify([image(32)])[0]["model_version"] == "2"


def test_a_calibrated_version_answers_calibrated_top3_and_flags_unknown_images():
    import numpy as np

    from fish_platform.ml.calibration import CalibrationRecord
    from serving.inference import ModelInfo, ServedModel

    record = CalibrationRecord(
        temperature=2.0, threshold=0.6, score_method="max_probability", ece_before=0.2, ece_after=0.05
    )
    info = ModelInfo(model_name="fish", version="7", image_size=8, labels=("Bass", "Trout", "Carp"))
    served = ServedModel(info, model=None, calibration=record)
    sure, unsure = np.array([0.96, 0.03, 0.01]), np.array([0.40, 0.35, 0.25])
    confident = served.answer(sure)
    assert confident["top3"][0]["species"] == "Bass" and not confident["unknown"]
    assert confident["top3"][0]["confidence"] < 0.96  # temperature 2 softens an over-confident answer
    doubtful = served.answer(unsure)
    assert doubtful["unknown"] and doubtful["unknown_score"] < 0.6
    assert doubtful["top3"][0]["species"] == "Bass"
    relaxed = ServedModel(info, model=None, calibration=record, unknown_threshold=0.1)
    assert not relaxed.answer(unsure)["unknown"]  # FISH_UNKNOWN_THRESHOLD overrides the fitted one
    raw = ServedModel(info, model=None).answer(sure)
    assert raw["unknown"] is False and raw["unknown_score"] is None and raw["top3"][0]["confidence"] == 0.96
    blank = served.answer(sure, blank=True)  # a featureless picture: unknown however sure the model is
    assert blank["unknown"] and blank["unknown_score"] > 0.6 and blank["top3"] == confident["top3"]


def test_a_batch_answers_plain_pictures_unknown_however_sure_the_model_is():
    """classify_batch runs the featureless check on the uint8 batch it sends to the model: a plain
    picture (and one whose channels barely vary) is unknown, photos in the same batch are not."""
    from fish_platform.ml.calibration import CalibrationRecord
    from serving.inference import ModelInfo, ServedModel, classify_batch

    record = CalibrationRecord(
        temperature=1.0, threshold=0.5, score_method="max_probability", ece_before=0.1, ece_after=0.05
    )
    model = FakeClassifier(["Bass", "Trout", "Carp"], 16, 0)  # 0.9 Bass for every image
    served = ServedModel(ModelInfo("fish", "3", 16, tuple(model.labels)), model=model, calibration=record)
    rng = np.random.default_rng(1)
    plain = np.full((16, 16, 3), (90, 140, 200), np.uint8)
    speckled = np.clip(plain + rng.normal(0, 1.5, plain.shape), 0, 255).astype(np.uint8)
    photo = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)  # another size: resized to 16 first
    answers = classify_batch(served, [photo, plain, speckled, photo])
    assert model.batches == [(4, 16, 16, 3)]
    assert [a["unknown"] for a in answers] == [False, True, True, False]
    assert {a["top3"][0]["species"] for a in answers} == {"Bass"}


def test_a_vim_version_judges_unknown_from_the_embedding_and_falls_back_without_one():
    import numpy as np

    from fish_platform.ml.calibration import FeatureSpace, fit_calibration
    from serving.inference import ModelInfo, ServedModel

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 3)))[0]  # known embeddings live in 3 of 16 dimensions
    labels = rng.integers(0, 3, 300)
    known = (np.eye(3)[labels] * 4 + rng.normal(0, 0.3, (300, 3))) @ basis.T
    kernel, bias = basis.copy(), np.zeros(3)  # the head reads the subspace only
    space = FeatureSpace.fit(known[:200], kernel, bias, dimension=3)
    logits = space.logits(known[200:])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    record = fit_calibration(
        probabilities, labels[200:], score_method="vim", embeddings=known[200:], space=space
    )
    info = ModelInfo(model_name="fish", version="9", image_size=8, labels=("Bass", "Trout", "Carp"))
    served = ServedModel(info, model=None, calibration=record)

    outside = np.linalg.qr(np.concatenate([basis, rng.normal(size=(16, 1))], axis=1))[0][:, -1]
    typical = known[200]
    stranger = typical + 6.0 * outside  # the same logits, far outside the known subspace
    sure = probabilities[0].astype(np.float32)
    assert served.answer(sure, typical.astype(np.float32))["unknown"] is False
    answered = served.answer(sure, stranger.astype(np.float32))
    assert answered["unknown"] is True and answered["unknown_score"] < record.threshold
    assert answered["top3"] == served.answer(sure, typical.astype(np.float32))["top3"]
    # No embedding (a runtime without the feature map): the max-probability score at its own threshold.
    fallback = served.answer(sure)
    assert fallback["unknown"] is False
    assert fallback["unknown_score"] == round(float(record.calibrate(sure[None]).max()), 6)
