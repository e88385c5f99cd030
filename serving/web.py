"""HTTP edges of the service that BentoML's API layer does not cover (plain ASGI, no BentoML).

* :class:`RequestGuard`: runs before BentoML parses an upload. It answers 415 for a body that is
  not multipart, 413 for a body over the limit (before anything is written to disk), 400 when the
  image field is missing or is a text field (BentoML would otherwise treat such a text value as a
  URL to download, and answer a bad one with a 500), and ``GET /readyz`` with the model version.
  CORS (``FISH_CORS_ORIGINS``) wraps it, so error answers carry CORS headers too. Every answer gets
  the security headers (:data:`SECURITY_HEADERS`, a strict ``Content-Security-Policy`` with
  ``frame-ancestors 'none'``), every error the one body of :func:`error_body`, and BentoML's
  ``/docs.json`` is completed by :func:`complete_openapi` (each status code an API returns, the
  error body, the upload limits).
* :func:`build_frontend_app`: the page at ``/`` and its assets under ``/static/``; Bootstrap is
  served from ``frontend/node_modules/bootstrap/dist`` (``npm ci --prefix frontend``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from fish_platform.logs import log_event
from serving.config import ServingConfig, load_serving_config

log = logging.getLogger("serving.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]

INSTALL_HINT = "npm ci --prefix frontend"
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the image bytes
DRAIN_LIMIT = 64 * 1024 * 1024  # read (and drop) an oversize body up to this, so the client sees the 413
OPENAPI_PATH = "/docs.json"
# The page and the API: nothing inline, nothing from elsewhere, never framed. The preview and the
# heat map are blob: URLs; the favicon is a data: URL.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# BentoML's Swagger page (/docs) runs inline scripts: it is only kept from being framed.
DOCS_CSP = "frame-ancestors 'none'"
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def error_body(reason: str, message: str) -> dict[str, str]:
    """The one error shape of the service: ``{"error": <for humans>, "reason": <for code>}``."""
    return {"error": message, "reason": reason}


async def send_json(send: Send, status: int, payload: dict[str, Any], close: bool = False) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UploadRejected(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def check_multipart_fields(body: bytes, boundary: bytes, field: str, max_files: int) -> int:
    """Check that ``field`` occurs as 1..max_files *file* parts; return how many. Raises UploadRejected."""
    dispositions: list[bytes] = []
    header: dict[str, bytes] = {"field": b"", "value": b""}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        if header["field"].strip().lower() == b"content-disposition":
            dispositions.append(header["value"])
        header["field"], header["value"] = b"", b""

    parser = MultipartParser(
        boundary,
        callbacks={
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # noqa: BLE001 - python-multipart raises several types for bad framing
        raise UploadRejected(400, "bad_multipart", f"malformed multipart body: {exc}") from exc
    count = 0
    for disposition in dispositions:
        _, options = parse_options_header(disposition)
        if options.get(b"name", b"").decode("utf-8", "replace") != field:
            continue
        if b"filename" not in options:
            raise UploadRejected(
                400, "not_a_file", f"form field {field!r} must be a file upload, not a text value"
            )
        count += 1
    if count == 0:
        raise UploadRejected(400, "missing_file", f"no file in form field {field!r}")
    if count > max_files:
        raise UploadRejected(413, "too_many_files", f"{count} files in one request; the limit is {max_files}")
    return count


class RequestGuard:
    """ASGI middleware; BentoML instantiates it in the worker (so config is read at run time)."""

    def __init__(
        self,
        app: ASGIApp,
        readiness: Readiness | None = None,
        on_reject: Callable[[str], None] | None = None,
        config: ServingConfig | None = None,
    ) -> None:
        self.app = app
        self.config = config or load_serving_config()
        self.readiness = readiness
        self.on_reject = on_reject or (lambda reason: None)
        self.uploads: dict[str, tuple[str, int, int]] = {  # route -> (field, max files, body limit)
            "/predict": ("file", 1, self.config.max_upload_bytes + MULTIPART_SLACK),
            "/predict_batch": ("files", self.config.max_batch_files, self.config.max_request_bytes),
            "/explain": ("file", 1, self.config.max_upload_bytes + MULTIPART_SLACK),
        }
        self.entry: ASGIApp = self.guard
        if self.config.cors_origins:
            from starlette.middleware.cors import CORSMiddleware

            self.entry = CORSMiddleware(
                self.guard,
                allow_origins=list(self.config.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["*"],
                max_age=600,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.entry(scope, receive, send)

    async def guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        send = secured(send, DOCS_CSP if path == "/docs" else PAGE_CSP)
        if path == OPENAPI_PATH and method == "GET":
            send = rewrite_json(send, lambda spec: complete_openapi(spec, self.config))
        elif path in self.uploads or path == "/feedback":
            send = rewrite_json(send, uniform_error, errors_only=True)
        if path == "/readyz" and method in ("GET", "HEAD") and self.readiness is not None:
            ready, payload = await self.readiness()
            await send_json(send, 200 if ready else 503, payload)
            return
        if method == "POST" and path in self.uploads:
            try:
                receive = await self.buffer_upload(scope, receive, *self.uploads[path])
            except UploadRejected as exc:
                self.on_reject(exc.reason)
                log_event(
                    log, "request rejected", logging.INFO, path=path, reason=exc.reason, status=exc.status
                )
                await send_json(
                    send, exc.status, error_body(exc.reason, exc.message), close=exc.status == 413
                )
                return
        await self.app(scope, receive, send)

    async def buffer_upload(
        self, scope: Scope, receive: Receive, field: str, max_files: int, limit: int
    ) -> Receive:
        """Read the whole body (bounded), check it, and hand BentoML a replay of it."""
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        media_type, options = parse_options_header(headers.get(b"content-type", b""))
        if media_type.lower() != b"multipart/form-data" or not options.get(b"boundary"):
            raise UploadRejected(
                415,
                "unsupported_media_type",
                f"send the image as multipart/form-data in the field {field!r} "
                f"(got {media_type.decode('latin-1') or 'no content type'})",
            )
        declared = headers.get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > limit
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise UploadRejected(400, "client_disconnected", "the client went away mid-upload")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                too_large = True
            if not too_large:
                chunks.append(chunk)
            if not message.get("more_body", False) or size > DRAIN_LIMIT:
                break
        if too_large:
            raise UploadRejected(
                413,
                "too_large",
                f"upload over the limit of {self.config.max_upload_bytes:,} bytes per image",
            )
        body = b"".join(chunks)
        check_multipart_fields(body, options[b"boundary"], field, max_files)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


@functools.cache
def _frontend_dir() -> Path:
    return load_serving_config().frontend_dir


def vendor_dir(frontend_dir: Path) -> Path:
    return frontend_dir / "node_modules" / "bootstrap" / "dist"


def frontend_problem(frontend_dir: Path) -> str | None:
    """A sentence telling what to do when the page cannot be served completely, else None."""
    if not (frontend_dir / "index.html").is_file():
        return f"frontend not found at {frontend_dir} (set FISH_FRONTEND_DIR)"
    if not (vendor_dir(frontend_dir) / "css" / "bootstrap.min.css").is_file():
        return f"Bootstrap is not installed for the page: run `{INSTALL_HINT}` in the repository root"
    return None


def build_frontend_app(served_model: Callable[[], Awaitable[dict[str, Any]]]) -> Starlette:
    """Page, page assets and ``GET /model``; only these routes, so BentoML's own stay reachable."""

    async def index(_: Request) -> Response:
        page = _frontend_dir() / "index.html"
        if not page.is_file():
            return JSONResponse(error_body("frontend_missing", frontend_problem(_frontend_dir()) or ""), 503)
        return FileResponse(page, media_type="text/html", headers={"cache-control": "no-cache"})

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        path = _frontend_dir() / name
        if name not in ("app.js", "styles.css") or not path.is_file():
            return JSONResponse(error_body("not_found", f"no asset {name!r}"), 404)
        return FileResponse(path, headers={"cache-control": "no-cache"})

    async def vendor(request: Request) -> Response:
        root = vendor_dir(_frontend_dir()).resolve()
        if not root.is_dir():
            message = f"Bootstrap is not installed: run `{INSTALL_HINT}` in the repository root"
            return JSONResponse(error_body("frontend_assets_missing", message), 503)
        target = (root / request.path_params["path"]).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return JSONResponse(error_body("not_found", "no such asset"), 404)
        return FileResponse(target, headers={"cache-control": "public, max-age=86400"})

    async def model(_: Request) -> Response:
        served = await served_model()
        return JSONResponse(served, status_code=200 if served.get("loaded") else 503)

    return Starlette(
        routes=[
            Route("/", index, methods=["GET", "HEAD"]),
            Route("/model", model, methods=["GET"]),
            Route("/static/vendor/{path:path}", vendor, methods=["GET", "HEAD"]),
            Route("/static/{name}", asset, methods=["GET", "HEAD"]),
        ]
    )


# --- response headers and bodies ------------------------------------------------------------------


def secured(send: Send, csp: str) -> Send:
    """``send`` that adds the security headers (and ``csp``) to a response that lacks them."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            extra = [(b"content-security-policy", csp.encode())] + list(SECURITY_HEADERS)
            headers += [(name, value) for name, value in extra if name not in present]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def rewrite_json(send: Send, change: Callable[[Any], Any], errors_only: bool = False) -> Send:
    """``send`` that buffers a JSON response (only a >= 400 one with ``errors_only``) and rewrites it."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            headers = {k.lower(): v for k, v in message.get("headers", [])}
            is_json = headers.get(b"content-type", b"").startswith(b"application/json")
            if is_json and (not errors_only or message.get("status", 200) >= 400):
                start = message
                return
        elif message["type"] == "http.response.body" and start is not None:
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            try:
                body = json.dumps(change(json.loads(b"".join(chunks)))).encode()
            except ValueError:
                body = b"".join(chunks)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return wrapped


def uniform_error(body: Any) -> Any:
    """BentoML's own 4xx bodies (``{"error": ...}``) in the service's one shape (adds ``reason``)."""
    if isinstance(body, dict) and "reason" not in body:
        return error_body("invalid_argument", str(body.get("error") or body.get("detail") or body))
    return body


ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "description": "Every error of the service: a sentence for people and a stable reason for code.",
    "required": ["error", "reason"],
    "properties": {
        "error": {"type": "string", "description": "what went wrong, for people"},
        "reason": {
            "type": "string",
            "description": "for code, e.g. too_large, not_an_image, corrupt, empty, missing_file, "
            "too_many_files, unsupported_media_type, unknown_species, model_not_loaded",
        },
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_UPLOAD_ERRORS = {
    "400": "bad input: missing or empty file, not an image, corrupt, malformed multipart",
    "413": "over the size limit (per image, or too many files)",
    "415": "not multipart/form-data",
    "503": "no model loaded yet, or the model process could not answer",
}
_READY = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "reason": {"type": "string"},
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "runtime": {"type": ["string", "null"]},
        "cache": {"type": "string", "enum": ["memory", "redis", "redis_unavailable"]},
        "cache_error": {"type": "string"},
    },
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _nullable_defaults(schema: dict[str, Any]) -> None:
    """BentoML flattens a response's ``X | None = None`` fields to plain ``X``: say they may be null."""
    for name, prop in schema.get("properties", {}).items():
        if isinstance(prop, dict) and "default" in prop and prop["default"] is None and "anyOf" not in prop:
            kept = {k: v for k, v in prop.items() if k not in ("default", "title")}
            schema["properties"][name] = {
                "anyOf": [kept, {"type": "null"}],
                "default": None,
                "title": prop.get("title", name),
            }


def complete_openapi(spec: Any, config: ServingConfig) -> Any:
    """BentoML's generated document, with what it cannot know: each API's real status codes and error
    body, the required upload parts, the batch limits, the PNG of ``/explain`` and ``/readyz``'s answer."""
    if not isinstance(spec, dict) or "paths" not in spec:
        return spec
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    paths = spec["paths"]
    for path, extra in (
        ("/predict", {}),
        ("/predict_batch", {}),
        (
            "/explain",
            {
                "400": "bad input as for /predict, or unknown_species (a species the version does not know)",
            },
        ),
    ):
        operation = paths.get(path, {}).get("post")
        if operation is None:
            continue
        responses = {"200": operation["responses"]["200"]}
        for code, description in {**_UPLOAD_ERRORS, **extra}.items():
            responses[code] = _error_response(description)
        operation["responses"] = responses
        form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data", {})
        schema = form.get("schema", {})
        field = "files" if path == "/predict_batch" else "file"
        if field in schema.get("properties", {}):
            schema["required"] = sorted({*schema.get("required", []), field})
            operation["requestBody"]["required"] = True
        if path == "/predict_batch" and "files" in schema.get("properties", {}):
            schema["properties"]["files"].update({"minItems": 1, "maxItems": config.max_batch_files})
        if path == "/explain":
            operation["responses"]["200"] = {
                "description": "the photo (at most 512 px a side) with the heat map over it",
                "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            }
            form.pop("encoding", None)  # species is a plain text part, not JSON
    feedback = paths.get("/feedback", {}).get("post")
    if feedback is not None:
        kept = {"200": feedback["responses"]["200"]}
        for code, description in (
            ("400", "bad input"),
            ("404", "no such request"),
            ("422", "unknown species or comment too long"),
            ("503", "no model loaded, or nowhere to keep feedback"),
        ):
            kept[code] = _error_response(description)
        feedback["responses"] = kept
    for methods in paths.values():
        for operation in methods.values():
            ok = operation.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {})
            _nullable_defaults(ok.get("schema", {}))
    ready = paths.get("/readyz", {}).get("get")
    if ready is not None:
        body = {"application/json": {"schema": _READY}}
        ready["responses"] = {
            "200": {
                "description": "ready: the version served, its runtime and the cache's state",
                "content": body,
            },
            "503": {"description": "not ready: no model loaded yet", "content": body},
        }
    return spec
