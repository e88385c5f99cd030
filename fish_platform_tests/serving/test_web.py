"""The request guard in front of BentoML's parsing, on a stand-in app (no service process)."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from serving.config import load_serving_config
from serving.web import RequestGuard, complete_openapi

pytestmark = pytest.mark.timeout(30)


async def echo_app(scope, receive, send):
    """Stands in for BentoML: reads the (replayed) body and answers with its size."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    payload = str(len(body)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": payload})


async def ready():
    return True, {"status": "ready", "model_version": "9"}


def call(method: str, path: str, cors: tuple[str, ...] = (), **kwargs) -> httpx.Response:
    config = dataclasses.replace(
        load_serving_config(), max_upload_bytes=1000, max_batch_files=2, cors_origins=cors
    )
    rejected: list[str] = []
    guard = RequestGuard(echo_app, readiness=ready, on_reject=rejected.append, config=config)

    async def go():
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    response = asyncio.run(go())
    response.rejected = rejected  # type: ignore[attr-defined]
    return response


def test_a_file_upload_passes_through_with_its_body():
    response = call("POST", "/predict", files={"file": ("a.png", b"x" * 100, "image/png")})
    assert response.status_code == 200 and int(response.text) > 100


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"json": {"file": "x"}}, 415, "unsupported_media_type"),
        ({"content": b"\x89PNG", "headers": {"content-type": "image/png"}}, 415, "unsupported_media_type"),
        ({"files": {"file": ("a.png", b"x" * 70_000, "image/png")}}, 413, "too_large"),
        ({"files": {"other": ("a.png", b"x", "image/png")}}, 400, "missing_file"),
        ({"data": {"file": "http://example.org/fish.png"}, "files": {"x": ("b", b"1")}}, 400, "not_a_file"),
        # Truncated framing: no complete part, so no file.
        (
            {"content": b"--zz\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=zz"}},
            400,
            "missing_file",
        ),
    ],
)
def test_bad_uploads_are_answered_before_bentoml(kwargs, status, reason):
    response = call("POST", "/predict", **kwargs)
    assert response.status_code == status
    assert response.json()["reason"] == reason and response.json()["error"]
    assert response.rejected == [reason]


def test_batch_limits():
    files = [("files", (f"{i}.png", b"x", "image/png")) for i in range(3)]
    response = call("POST", "/predict_batch", files=files)
    assert response.status_code == 413 and response.json()["reason"] == "too_many_files"
    assert call("POST", "/predict_batch", files=files[:2]).status_code == 200


def test_readyz_reports_the_version_and_other_paths_pass():
    response = call("GET", "/readyz")
    assert response.status_code == 200 and response.json()["model_version"] == "9"
    assert call("GET", "/anything").status_code == 200


def test_cors_only_when_configured():
    headers = {"origin": "http://example.org", "access-control-request-method": "POST"}
    assert "access-control-allow-origin" not in call("OPTIONS", "/predict", headers=headers).headers
    allowed = call("OPTIONS", "/predict", cors=("http://example.org",), headers=headers)
    assert allowed.headers["access-control-allow-origin"] == "http://example.org"
    rejected = call(
        "POST", "/predict", cors=("http://example.org",), json={}, headers={"origin": "http://example.org"}
    )
    assert rejected.status_code == 415
    assert rejected.headers["access-control-allow-origin"] == "http://example.org"


def test_explain_gets_the_upload_checks_and_every_answer_the_security_headers():
    assert call("POST", "/explain", json={"file": "x"}).json()["reason"] == "unsupported_media_type"
    ok = call("POST", "/explain", files={"file": ("a.png", b"x", "image/png")}, data={"species": "Trout"})
    assert ok.status_code == 200  # a text part beside the file is fine (species)
    for response in (ok, call("GET", "/readyz"), call("POST", "/predict", json={})):
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"


def test_bentoml_errors_get_the_one_error_shape():
    async def bentoml_400(scope, receive, send):
        body = b'{"error": "invalid species"}'
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"28")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    guard = RequestGuard(bentoml_400, config=load_serving_config())

    async def go():
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/explain", files={"file": ("a.png", b"x", "image/png")})

    response = asyncio.run(go())
    assert response.status_code == 400
    assert response.json() == {"error": "invalid species", "reason": "invalid_argument"}


def test_complete_openapi_documents_codes_limits_and_nullable_fields():
    spec = {
        "paths": {
            "/predict_batch": {
                "post": {
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "properties": {
                                            "request_id": {
                                                "type": "string",
                                                "default": None,
                                                "title": "Request Id",
                                            }
                                        },
                                    }
                                }
                            }
                        },
                        "404": {},
                        "500": {},
                    },
                    "requestBody": {
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "properties": {
                                        "files": {
                                            "type": "array",
                                            "items": {"type": "string", "format": "binary"},
                                        }
                                    },
                                }
                            }
                        }
                    },
                }
            },
        },
        "components": {"schemas": {}},
    }
    config = dataclasses.replace(load_serving_config(), max_batch_files=7)
    done = complete_openapi(spec, config)["paths"]["/predict_batch"]["post"]
    assert set(done["responses"]) == {"200", "400", "413", "415", "503"}
    form = done["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["files"] and done["requestBody"]["required"] is True
    assert (form["properties"]["files"]["minItems"], form["properties"]["files"]["maxItems"]) == (1, 7)
    request_id = done["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["request_id"]
    assert {"type": "null"} in request_id["anyOf"]
