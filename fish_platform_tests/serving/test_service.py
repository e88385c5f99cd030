"""The running service (``bentoml serve``) with a real registry, real Redis and real tiny models.

One service process serves the session; the Redis outage and the promotion change shared state,
so they are the last tests of the last module that uses the service.
"""

from __future__ import annotations

import io
import re
import threading
import time

import httpx
import pytest
from PIL import Image

from fish_platform.imaging import sha256_hex
from fish_platform_tests.serving.serving_helpers import LABELS_V2, png_bytes, promote, register_tiny_model

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def predict(client: httpx.Client, data: bytes, name: str = "fish.png") -> httpx.Response:
    return client.post("/predict", files={"file": (name, data, "image/png")})


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def test_not_ready_until_a_model_is_promoted(service):
    before = service.before_model  # recorded by the fixture before version 1 existed
    assert before["livez"].status_code == 200
    assert before["readyz"].status_code == 503 and before["readyz"].json()["status"] == "not_ready"
    assert before["predict"].status_code == 503 and before["predict"].json()["reason"] == "model_not_loaded"
    with service.client() as client:  # and once promoted, it became ready by itself
        assert client.get("/readyz").status_code == 200


def test_predict_top3_with_species_from_the_model(service, fish_photo):
    with service.client() as client:
        response = predict(client, fish_photo.read_bytes(), fish_photo.name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == service.registry.model_name
    assert body["model_version"] == service.version
    assert len(body["top3"]) == 3
    assert {p["species"] for p in body["top3"]} <= set(service.versions[service.version])
    confidences = [p["confidence"] for p in body["top3"]]
    assert confidences == sorted(confidences, reverse=True) and all(0 <= c <= 1 for c in confidences)
    assert body["latency_ms"] > 0 and isinstance(body["cached"], bool)


def test_second_identical_request_is_a_redis_hit(service, redis_server):
    image = png_bytes(seed=101)
    with service.client() as client:
        first = predict(client, image)
        second = predict(client, image)
    assert first.status_code == second.status_code == 200
    assert first.json()["cached"] is False and second.json()["cached"] is True
    assert second.json()["top3"] == first.json()["top3"]
    assert second.json()["model_version"] == first.json()["model_version"]
    key = f"fish:pred:{service.registry.model_name}:{service.version}:{sha256_hex(image)}"
    assert redis_server.client().exists(key) == 1  # the answer lives in the real Redis


def test_predict_batch_answers_in_order_with_per_image_errors(service, fish_photo):
    good_a, good_b = fish_photo.read_bytes(), png_bytes(seed=202)
    files = [
        ("files", ("a.png", good_a, "image/png")),
        ("files", ("notes.txt", b"not an image at all", "text/plain")),
        ("files", ("b.png", good_b, "image/png")),
        ("files", ("cut.png", good_b[: len(good_b) // 2], "image/png")),
    ]
    with service.client() as client:
        response = client.post("/predict_batch", files=files)
        single_b = predict(client, good_b).json()
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [r["ok"] for r in results] == [True, False, True, False]
    assert results[1]["reason"] == "not_an_image" and results[3]["reason"] == "corrupt"
    assert results[2]["top3"] == single_b["top3"]


def test_concurrent_requests_are_batched(service):
    with service.client() as client:
        before = client.get("/metrics").text
    images = [png_bytes(seed=1000 + i) for i in range(24)]
    statuses: list[int] = []

    def send(data: bytes) -> None:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            statuses.append(predict(client, data).status_code)

    threads = [threading.Thread(target=send, args=(image,)) for image in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with service.client() as client:
        after = client.get("/metrics").text
    assert statuses == [200] * len(images)
    calls = metric_value(after, "fish_inference_batch_size_count") - metric_value(
        before, "fish_inference_batch_size_count"
    )
    batched = metric_value(after, "fish_inference_batch_size_sum") - metric_value(
        before, "fish_inference_batch_size_sum"
    )
    assert batched == len(images)
    assert calls < len(images), "adaptive batching never merged two requests into one model call"


def bomb_png() -> bytes:
    """60 megapixels in ~60 kB: over the 50 MP limit, under Pillow's own bomb threshold."""
    buffer = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("empty", 400, "empty"),
        ("text", 400, "not_an_image"),
        ("truncated", 400, "corrupt"),
        ("bomb", 400, "too_many_pixels"),
        ("oversize", 413, "too_large"),
        ("json", 415, "unsupported_media_type"),
        ("raw_text", 415, "unsupported_media_type"),
        ("text_field", 400, "not_a_file"),
        ("no_file", 400, "missing_file"),
    ],
)
@pytest.mark.parametrize("route", ["/predict", "/explain"])
def test_bad_input_is_a_4xx_json_error_and_service_keeps_serving(
    service, fish_photo, case, status, reason, route
):
    photo = fish_photo.read_bytes()
    requests = {
        "empty": {"files": {"file": ("e.png", b"", "image/png")}},
        "text": {"files": {"file": ("t.txt", b"hello fish", "text/plain")}},
        "truncated": {"files": {"file": ("t.png", photo[: len(photo) // 2], "image/png")}},
        "bomb": {"files": {"file": ("bomb.png", bomb_png(), "image/png")}},
        "oversize": {
            "files": {"file": ("big.png", b"\x89PNG" + b"0" * (10 * 1024 * 1024 + 10), "image/png")}
        },
        "json": {"json": {"file": "/etc/passwd"}},
        "raw_text": {"content": b"hello", "headers": {"content-type": "text/plain"}},
        "text_field": {"data": {"file": "http://example.com/fish.png"}, "files": {"x": ("x", b"1")}},
        "no_file": {"files": {"image": ("f.png", photo, "image/png")}},
    }
    with service.client() as client:
        response = client.post(route, **requests[case])
        assert response.status_code == status, response.text
        assert response.json()["reason"] == reason
        assert response.json()["error"]
        assert predict(client, photo).status_code == 200  # still serving


def test_probes_page_and_metrics(service):
    with service.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["model_version"] == service.version and ready.json()["cache"] == "redis"
        assert "cache_error" not in ready.json()
        model = client.get("/model").json()
        assert model["labels"] == list(service.versions[service.version]) and model["image_size"] == 32
        page = client.get("/")
        assert page.status_code == 200 and "Fish species" in page.text
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/vendor/css/bootstrap.min.css").status_code == 200
        assert client.get("/static/vendor/../../package.json").status_code == 404
        assert client.get("/docs.json").status_code == 200
        metrics = client.get("/metrics").text
    for name in (
        "bentoml_service_request_duration_seconds",
        "bentoml_service_request_total",
        "bentoml_service_request_in_progress",
        "fish_cache_events_total",
        "fish_predictions_total",
        "fish_inference_batch_size",
        "fish_invalid_requests_total",
    ):
        assert name in metrics, name
    assert metric_value(metrics, "fish_model_loaded") == 1
    assert metric_value(metrics, "fish_model_version_info", version=service.version) == 1
    assert metric_value(metrics, "fish_cache_events_total", event="hit") >= 1


def test_redis_outage_answers_uncached_then_heals(service, redis_server):
    image = png_bytes(seed=303)
    with service.client() as client:
        errors_before = metric_value(client.get("/metrics").text, "fish_cache_events_total", event="error")
        redis_server.stop()
        try:
            ready = client.get("/readyz")  # still ready (the cache is optional), and says the cache is down
            assert ready.status_code == 200 and ready.json()["cache"] == "redis_unavailable", ready.text
            assert "Connection" in ready.json()["cache_error"] or "Error" in ready.json()["cache_error"]
            for _ in range(2):
                response = predict(client, image)
                assert response.status_code == 200, response.text
                assert response.json()["cached"] is False
            errors_after = metric_value(client.get("/metrics").text, "fish_cache_events_total", event="error")
            assert errors_after > errors_before
        finally:
            redis_server.start()
        deadline = time.monotonic() + 30  # the breaker retries Redis after a couple of seconds
        cached = False
        while time.monotonic() < deadline and not cached:
            cached = predict(client, image).json()["cached"]
            time.sleep(0.5)
        assert cached, "the cache never came back after Redis restarted"
        assert client.get("/readyz").json()["cache"] == "redis"


def test_promotion_switches_version_without_restart(service, fish_photo):
    """Register v2 (other labels, 48 px), move the alias, keep sending: no failure, new version."""
    pid = service.process.pid
    old_version = service.version
    photo = fish_photo.read_bytes()
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            seed = 5000
            while not stop.is_set():
                seed += 1
                response = predict(client, png_bytes(seed))
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")

    new_version = register_tiny_model(service.registry, LABELS_V2, image_size=48, seed=1)
    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        promote(service.registry, new_version)
        service.versions[new_version] = LABELS_V2
        service.version = new_version
        deadline = time.monotonic() + 120
        seen = None
        with service.client() as client:
            while time.monotonic() < deadline:
                body = predict(client, photo).json()
                seen = body.get("model_version")
                if seen == new_version:
                    break
                time.sleep(0.5)
            assert seen == new_version, f"still serving {seen} after promoting {new_version}"
            assert {p["species"] for p in body["top3"]} <= set(LABELS_V2)  # labels from the new model
            assert body["cached"] is False  # the old version's cache entry is not reused
            assert client.get("/readyz").json()["model_version"] == new_version
            metrics = client.get("/metrics").text
    finally:
        stop.set()
        sender.join(60)
    assert failures == []
    assert service.process.pid == pid and service.process.poll() is None  # same process, no restart
    assert metric_value(metrics, "fish_model_version_info", version=new_version) == 1
    assert metric_value(metrics, "fish_model_version_info", version=old_version) == 0


def test_promotion_to_a_version_with_an_openvino_bundle_swaps_the_runtime(service, fish_photo):
    """FISH_RUNTIME=auto: a version logged with serving/openvino is served by OpenVINO, calibrated."""
    calibration = {
        "temperature": 1.5,
        "threshold": 0.999,
        "score_method": "max_probability",
        "ece_before": 0.1,
        "ece_after": 0.05,
    }
    new_version = register_tiny_model(
        service.registry, LABELS_V2, image_size=48, seed=3, bundles=("openvino",), calibration=calibration
    )
    promote(service.registry, new_version)
    service.versions[new_version] = LABELS_V2
    service.version = new_version
    deadline = time.monotonic() + 120
    with service.client() as client:
        while time.monotonic() < deadline and client.get("/model").json().get("model_version") != new_version:
            time.sleep(0.5)
        model = client.get("/model").json()
        assert model["model_version"] == new_version and model["runtime"] == "openvino"
        assert client.get("/readyz").json()["runtime"] == "openvino"
        body = predict(client, fish_photo.read_bytes()).json()
        assert body["model_version"] == new_version and {p["species"] for p in body["top3"]} <= set(LABELS_V2)
        # a threshold of 0.999 on the calibrated max probability: an untrained model is never that sure
        assert body["unknown"] is True and 0.0 < body["unknown_score"] < 0.999
        # The bundle carries the feature map and the head: maps on OpenVINO too, for any known species.
        explained = client.post(
            "/explain",
            files={"file": ("f.png", fish_photo.read_bytes(), "image/png")},
            data={"species": "Trout"},
        )
        assert explained.status_code == 200, explained.text
        assert (
            explained.headers["content-type"] == "image/png"
            and explained.headers["x-fish-species"] == "Trout"
        )
        assert explained.headers["x-model-version"] == new_version
