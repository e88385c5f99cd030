"""The request path without BentoML: upload checks, cache policy and model failures (serving.predictor)."""

import asyncio
import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image

from fish_platform.settings import load_settings
from serving.cache import InProcessLRUCache
from serving.predictor import ImageRejected, ModelAnswer, ModelUnavailable, Predictor, PreparedImage

MODEL = {"model_name": "fish", "model_version": "3", "image_size": 16}


def _png(path, color=(200, 40, 40), size=(40, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


class FakeModelProcess:
    """Stands in for the other process only: records calls, answers with a chosen version."""

    def __init__(self, version="3", error=None):
        self.calls: list[int] = []
        self.version, self.error = version, error

    async def __call__(self, images):
        self.calls.append(len(images))
        if self.error is not None:
            raise self.error
        assert all(image.shape == (16, 16, 3) and image.dtype == np.uint8 for image in images)
        top3 = [{"species": "Bass", "confidence": 1.0}]
        return [{"model_name": "fish", "model_version": self.version, "top3": top3} for _ in images]


@pytest.fixture
def config(monkeypatch, tmp_path):
    monkeypatch.setenv("FISH_DATA_DIR", str(tmp_path / "data"))
    return dataclasses.replace(load_settings().serving, max_upload_bytes=10_000)


def _predictor(config, model, stale=None):
    return Predictor(config, InProcessLRUCache(max_items=10, ttl_seconds=60), model, stale or (lambda: None))


@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [(b"", 400, "empty"), (b"x" * 10_001, 413, "too_large"), (b"not an image at all", 400, "not_an_image")],
)
def test_bad_uploads_are_rejected_with_a_status_and_reason(config, tmp_path, content, status, reason):
    path = tmp_path / "upload"
    path.write_bytes(content)
    model = FakeModelProcess()
    with pytest.raises(ImageRejected) as raised:
        asyncio.run(_predictor(config, model).prepare(path, MODEL))
    assert (raised.value.status, raised.value.reason) == (status, reason) and raised.value.message
    assert model.calls == []


def test_a_second_request_for_the_same_image_is_answered_from_the_cache(config, tmp_path):
    model = FakeModelProcess()
    predictor = _predictor(config, model)
    path = _png(tmp_path / "fish.png")

    async def twice():
        first = await predictor.prepare(path, MODEL)
        await predictor.answer([first], MODEL)
        second = await predictor.prepare(path, MODEL)
        await predictor.answer([second], MODEL)
        return first, second

    first, second = asyncio.run(twice())
    assert not first.cached and second.cached and second.answer == first.answer
    assert model.calls == [1]


def test_an_answer_from_another_version_is_not_cached_and_the_view_is_refreshed(config, tmp_path):
    stale: list[bool] = []
    model = FakeModelProcess(version="4")  # promoted while the request was on its way
    predictor = _predictor(config, model, lambda: stale.append(True))
    path = _png(tmp_path / "fish.png")

    async def run():
        image = await predictor.prepare(path, MODEL)
        await predictor.answer([image], MODEL)
        return image, await predictor.prepare(path, MODEL)

    image, again = asyncio.run(run())
    assert image.answer["model_version"] == "4" and stale == [True]
    assert not again.cached


def test_batch_preparation_keeps_rejections_in_place(config, tmp_path):
    good = _png(tmp_path / "good.png")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    prepared = asyncio.run(_predictor(config, FakeModelProcess()).prepare_all([good, empty, good], MODEL))
    assert [type(p) for p in prepared] == [PreparedImage, ImageRejected, PreparedImage]


class ServiceUnavailable(Exception):
    error_code = 503  # what BentoML's client raises when the model process answers 503


@pytest.mark.parametrize(
    ("error", "reason"),
    [(ServiceUnavailable("no model"), "model_not_loaded"), (ConnectionError("reset"), "model_unavailable")],
)
def test_a_failed_model_call_is_a_typed_error_and_nothing_is_cached(config, tmp_path, error, reason):
    predictor = _predictor(config, FakeModelProcess(error=error))
    path = _png(tmp_path / "fish.png")

    async def run():
        image = await predictor.prepare(path, MODEL)
        with pytest.raises(ModelUnavailable) as raised:
            await predictor.answer([image], MODEL)
        return raised.value, await predictor.prepare(path, MODEL)

    failure, again = asyncio.run(run())
    assert failure.reason == reason and not again.cached


def test_the_embedding_crosses_as_an_attribute_and_is_never_cached(config, tmp_path):
    embedding = np.arange(4, dtype=np.float32)

    async def model(images):
        top3 = [{"species": "Bass", "confidence": 1.0}]
        answer = ModelAnswer({"model_name": "fish", "model_version": "3", "top3": top3})
        answer.embedding = embedding
        return [answer.to_wire() for _ in images]  # what FishModel.classify sends

    cache = InProcessLRUCache(max_items=10, ttl_seconds=60)
    predictor = Predictor(config, cache, model)

    async def scenario():
        image = await predictor.prepare(_png(tmp_path / "a.png"), MODEL)
        await predictor.answer([image], MODEL)
        again = await predictor.prepare(tmp_path / "a.png", MODEL)
        return image, again

    image, again = asyncio.run(scenario())
    assert isinstance(image.answer, ModelAnswer) and "embedding" not in image.answer
    np.testing.assert_array_equal(getattr(image.answer, "embedding", None), embedding)
    json.dumps(image.answer)  # what the Redis cache does with it
    assert again.cached and isinstance(again.answer, ModelAnswer) and again.answer.embedding is None
    assert "embedding" not in again.answer


def test_explain_checks_like_predict_and_caches_per_species(config, tmp_path):
    calls: list[str | None] = []

    async def explain(array, species):
        calls.append(species)
        assert array.shape == (16, 16, 3) and array.dtype == np.uint8
        return {"model_version": "3", "species": species or "Bass", "cam": np.eye(4, dtype=np.float32)}

    model = {**MODEL, "labels": ["Bass", "Gilt_Head_Bream"]}
    predictor = Predictor(
        config, InProcessLRUCache(max_items=10, ttl_seconds=60), FakeModelProcess(), explain_model=explain
    )
    photo = _png(tmp_path / "p.png", size=(40, 30))

    async def scenario():
        first = await predictor.explain(photo, model, None)
        second = await predictor.explain(photo, model, None)
        third = await predictor.explain(photo, model, "gilt head bream")  # as the page shows names
        return first, second, third

    (png, meta), (png2, meta2), (_, meta3) = asyncio.run(scenario())
    assert Image.open(io.BytesIO(png)).size == (40, 30) and png2 == png
    assert (meta["cached"], meta2["cached"], meta3["cached"]) == (False, True, False)
    assert meta3["species"] == "Gilt_Head_Bream" and calls == [None, "Gilt_Head_Bream"]
    with pytest.raises(ImageRejected) as raised:
        asyncio.run(predictor.explain(photo, model, "Nemo"))
    assert (raised.value.status, raised.value.reason) == (400, "unknown_species")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ImageRejected) as raised:
        asyncio.run(predictor.explain(tmp_path / "empty", model, None))
    assert (raised.value.status, raised.value.reason) == (400, "empty")
