"""The Open Inference Protocol (V2) over HTTP: a FastAPI app over :class:`InferenceService`.

Why it looks the way it does:

* Inference requests are normally answered by :class:`~.fastpath.InferFastPath` in front of this
  app (see :func:`create_asgi`); the infer routes here document the API and share its code.
* Handlers return ready-made ``Response`` objects (orjson bytes) instead of letting FastAPI validate
  and serialise models: the pydantic schemas in :mod:`.schemas` only document the API.
* The request-size limit is :mod:`.limits` (one implementation for this app and the fast path).
* Every error leaves through one exception handler that writes ``{"error": ...}`` with the status
  from :mod:`modelserve_server.errors`; FastAPI's own 422 becomes a 400. A 500 is logged as a bug.
* Triton's model-configuration and statistics extensions (``/config``, ``/stats``) are served so that
  ``perf_analyzer`` and ``tritonclient`` work unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from modelserve_contract import LIVE_PATH, METRICS_PATH, READY_PATH
from modelserve_server import __version__
from modelserve_server.errors import ModelserveError, PayloadTooLarge, as_client_error
from modelserve_server.protocol.rest import schemas
from modelserve_server.protocol.rest.asgi import ASGIApp, error_body
from modelserve_server.protocol.rest.codec import HEADER_LENGTH
from modelserve_server.protocol.rest.fastpath import InferFastPath, infer_http
from modelserve_server.protocol.rest.limits import BodyLimitMiddleware
from modelserve_server.service import InferenceService

log = logging.getLogger(__name__)

JSON = "application/json"

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorResponse, "description": "malformed request"},
    404: {"model": schemas.ErrorResponse, "description": "unknown model or version"},
    503: {"model": schemas.ErrorResponse, "description": "not ready (loading or draining)"},
}

#: 200 with an empty body (health and readiness), documented as such.
_EMPTY_200: dict[int | str, dict[str, Any]] = {200: {"description": "yes (empty body)", "content": {}}}


def _json(content: object, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=JSON)


def error_response(status: int, message: str, *, close: bool = False) -> Response:
    """``{"error": message}`` with ``status``; ``close`` asks the client to drop the connection."""
    headers = {"Connection": "close"} if close else None
    return Response(error_body(message), status_code=status, media_type=JSON, headers=headers)


def create_app(service: InferenceService, *, max_request_bytes: int = 64 << 20) -> FastAPI:
    """Build the FastAPI app serving V2 over ``service``."""
    app = FastAPI(
        title="modelserve",
        version=__version__,
        description="Open Inference Protocol (V2) on ONNX Runtime, with Triton's binary tensor data, "
        "model configuration and statistics extensions.",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_request_bytes)
    app.state.service = service

    @app.exception_handler(ModelserveError)
    async def _modelserve_error(request: Request, exc: ModelserveError) -> Response:
        if exc.http_status >= 500:
            log.error("%s %s -> %d: %s", request.method, request.url.path, exc.http_status, exc.message)
        return error_response(exc.http_status, exc.message, close=isinstance(exc, PayloadTooLarge))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, f"invalid request: {exc.errors()}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = error_response(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on 405
        return response

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(request: Request, exc: ClientDisconnect) -> Response:
        return error_response(400, "client disconnected while sending the body", close=True)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        error = as_client_error(exc)
        return error_response(error.http_status, error.message)

    # -- health and server metadata --------------------------------------------------------------

    @app.get(LIVE_PATH, response_class=Response, responses=_EMPTY_200, tags=["health"])
    async def live() -> Response:
        if service.live():
            return Response(status_code=200)
        return error_response(503, "not live")

    @app.get(
        READY_PATH, response_class=Response, responses={**_EMPTY_200, 503: _ERRORS[503]},
        tags=["health"],
    )
    async def ready() -> Response:
        if service.ready():
            return Response(status_code=200)
        return error_response(503, "not ready")

    @app.get("/v2", response_model=schemas.ServerMetadata, tags=["metadata"])
    async def server_metadata() -> Response:
        return _json(service.server_metadata())

    @app.get(METRICS_PATH, response_class=Response, tags=["metrics"],
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.post("/v2/repository/index", response_model=list[schemas.RepositoryModel], tags=["metadata"])
    async def repository_index() -> Response:
        entries = []
        for name in service.model_names():
            for version in service.versions(name):
                state = "READY" if service.model_ready(name, version) else "UNAVAILABLE"
                entries.append({"name": name, "version": version, "state": state})
        return _json(entries)

    # -- statistics (before /v2/models/{model_name}, which would otherwise match "stats") ----------

    @app.get("/v2/models/stats", response_model=schemas.ModelStatistics, tags=["statistics"])
    async def all_stats() -> Response:
        return _json(service.model_stats())

    # -- per model, unversioned and versioned ------------------------------------------------------

    def model_routes(prefix: str, versioned: bool) -> None:
        tag = "model (versioned)" if versioned else "model"

        async def metadata(model_name: str, model_version: str | None = None) -> Response:
            return _json(service.model_metadata(model_name, model_version))

        async def model_ready(model_name: str, model_version: str | None = None) -> Response:
            if service.model_ready(model_name, model_version):
                return Response(status_code=200)
            return error_response(503, f"model {model_name!r} is not ready")

        async def config(model_name: str, model_version: str | None = None) -> Response:
            return _json(service.model_config(model_name, model_version))

        async def stats(model_name: str, model_version: str | None = None) -> Response:
            return _json(service.model_stats(model_name, model_version))

        async def infer(request: Request, model_name: str, model_version: str | None = None) -> Response:
            # Normally answered by InferFastPath before FastAPI routing; same code either way.
            async def read() -> bytes | None:
                try:
                    return await request.body()
                except ClientDisconnect:
                    return None

            out, json_length = await infer_http(
                service, model_name, model_version, read, request.headers.get(HEADER_LENGTH),
                request.headers.get("content-encoding"), max_request_bytes,
            )
            if json_length is None:
                return Response(out, media_type=JSON)
            return Response(
                out, media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(json_length)},
            )

        errors: dict[int | str, dict[str, Any]] = {404: _ERRORS[404], 503: _ERRORS[503]}
        app.get(prefix, response_model=schemas.ModelMetadata, responses=errors, tags=[tag])(metadata)
        app.get(f"{prefix}/ready", response_class=Response, responses={**_EMPTY_200, **errors}, tags=[tag])(
            model_ready
        )
        app.get(f"{prefix}/config", response_model=schemas.ModelConfig, responses=errors, tags=[tag])(config)
        app.get(
            f"{prefix}/stats", response_model=schemas.ModelStatistics, responses=errors, tags=[tag]
        )(stats)
        app.post(
            f"{prefix}/infer",
            response_model=schemas.InferenceResponse,
            tags=[tag],
            responses={
                200: {
                    "description": "JSON, or with Inference-Header-Content-Length a JSON header followed by "
                    "binary output tensors",
                    "content": {"application/octet-stream": {}},
                },
                **_ERRORS,
                413: {"model": schemas.ErrorResponse, "description": "body over --max-request-bytes"},
            },
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": schemas.InferenceRequest.model_json_schema(
                            ref_template="#/components/schemas/{model}")},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "parameters": [{
                    "name": "Inference-Header-Content-Length",
                    "in": "header",
                    "required": False,
                    "description": "length of the JSON header when binary tensor data follows it",
                    "schema": {"type": "string"},
                }],
            },
        )(infer)

    model_routes("/v2/models/{model_name}", versioned=False)
    model_routes("/v2/models/{model_name}/versions/{model_version}", versioned=True)
    _register_schemas(app, service)
    return app


def _register_schemas(app: FastAPI, service: InferenceService) -> None:
    """Finish the OpenAPI schema: request-body components, and served models as parameter examples.

    The examples let schema-driven tools (schemathesis) reach real models instead of only 404s.
    """
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        full = schemas.InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in full.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault("InferenceRequest", full)
        names = service.model_names()
        examples = {"model_name": names[0]} if names else {}
        if names:
            examples["model_version"] = service.versions(names[0])[-1]
        for path in schema.get("paths", {}).values():
            body = path.get("post", {}).get("requestBody", {}).get("content", {}).get(JSON)
            if body is not None and "$defs" in body.get("schema", {}):
                body["schema"] = {"$ref": "#/components/schemas/InferenceRequest"}
            for operation in path.values():
                for param in operation.get("parameters", []):
                    if param.get("in") == "path" and param.get("name") in examples:
                        param["example"] = examples[param["name"]]
        # FastAPI caches the schema in app.openapi_schema; keep it only once the models are known.
        app.openapi_schema = schema if names else None
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_asgi(service: InferenceService, *, max_request_bytes: int = 64 << 20) -> ASGIApp:
    """What uvicorn serves: the inference fast path in front of the FastAPI app."""
    app = create_app(service, max_request_bytes=max_request_bytes)
    return InferFastPath(app, service, max_request_bytes)
