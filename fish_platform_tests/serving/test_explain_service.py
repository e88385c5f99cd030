"""``POST /explain`` and the response headers on the running service (real registry, Redis, BentoML).

Bad input on /explain is checked beside /predict's in test_service (the same cases, the same 4xx);
whether the maps point at the fish is test_explain_maps (a trained model; the served one is untrained).
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from fish_platform_tests.serving.serving_helpers import png_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def explain(client, data: bytes, species: str | None = None):
    form = {"species": species} if species is not None else None
    return client.post("/explain", files={"file": ("fish.png", data, "image/png")}, data=form)


def test_explain_draws_the_map_over_the_photo_and_caches_it(service):
    labels = service.versions[service.version]
    photo = png_bytes(seed=404, size=(160, 120))
    with service.client() as client:
        first = explain(client, photo)
        assert first.status_code == 200, first.text
        assert first.headers["content-type"] == "image/png"
        assert first.headers["x-model-version"] == service.version and first.headers["x-cached"] == "false"
        top1 = client.post("/predict", files={"file": ("f.png", photo, "image/png")}).json()["top3"][0]
        assert first.headers["x-fish-species"] == top1["species"]  # the default: the top-1
        drawn = Image.open(io.BytesIO(first.content))
        assert drawn.format == "PNG" and drawn.size == (160, 120)  # the photo's own size (under 512 px)
        assert drawn.tobytes() != Image.open(io.BytesIO(photo)).convert("RGB").tobytes()  # heat blended in

        again = explain(client, photo)
        assert again.headers["x-cached"] == "true" and again.content == first.content
        other = labels[-1] if labels[-1] != top1["species"] else labels[0]
        chosen = explain(client, photo, other)
        assert chosen.status_code == 200 and chosen.headers["x-fish-species"] == other
        assert chosen.headers["x-cached"] == "false"  # the species is part of the key
        # as the page shows the names: spaces for underscores
        spaced = explain(client, photo, other.replace("_", " "))
        assert spaced.status_code == 200 and spaced.headers["x-fish-species"] == other

        big = explain(client, png_bytes(seed=405, size=(1400, 700)))
        assert Image.open(io.BytesIO(big.content)).size == (512, 256)  # bounded, aspect ratio kept


def test_unknown_species_is_a_400_with_a_reason(service):
    with service.client() as client:
        response = explain(client, png_bytes(seed=406), "Nemo")
        assert response.status_code == 400
        body = response.json()
        assert body["reason"] == "unknown_species" and "Nemo" in body["error"]


def test_security_headers_on_the_page_and_the_api(service):
    with service.client() as client:
        answers = {
            "page": client.get("/"),
            "script": client.get("/static/app.js"),
            "predict": client.post("/predict", files={"file": ("f.png", png_bytes(seed=407), "image/png")}),
            "error": client.post("/predict", content=b"x", headers={"content-type": "text/plain"}),
            "explain": explain(client, png_bytes(seed=407)),
            "readyz": client.get("/readyz"),
            "model": client.get("/model"),
        }
        for name, response in answers.items():
            csp = response.headers.get("content-security-policy", "")
            assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, name
            assert "'unsafe-inline'" not in csp, name
            assert response.headers.get("x-content-type-options") == "nosniff", name
        assert answers["error"].status_code == 415
        docs = client.get("/docs")
        assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


def test_openapi_documents_status_codes_errors_and_limits(service):
    with service.client() as client:
        spec = client.get("/docs.json").json()
    assert spec["components"]["schemas"]["Error"]["required"] == ["error", "reason"]
    for path in ("/predict", "/predict_batch", "/explain"):
        operation = spec["paths"][path]["post"]
        assert {"200", "400", "413", "415", "503"} <= set(operation["responses"]), path
        assert "500" not in operation["responses"], path
        error = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Error"}
        form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert ("files" if path == "/predict_batch" else "file") in form["required"]
    files = spec["paths"]["/predict_batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert files["schema"]["properties"]["files"]["minItems"] == 1
    assert files["schema"]["properties"]["files"]["maxItems"] == 32  # FISH_MAX_BATCH_FILES' default
    assert "image/png" in spec["paths"]["/explain"]["post"]["responses"]["200"]["content"]
    assert set(spec["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}
