"""The REST inference hot path, as a raw ASGI front that answers ``POST .../infer`` itself.

Why bypass FastAPI for this one route: profiling under load showed routing over a dozen routes,
dependency solving and ``Request`` construction costing more per request than decoding, batching and
running a small model together. The FastAPI app still *declares* the infer routes (for the OpenAPI
schema, and as the code path when the app is used alone), and both paths call the same
:func:`infer_http`, so behaviour cannot drift: same limits, same codec, same error bodies.

Bodies of at least :data:`OFFLOAD_BYTES` are decompressed and decoded on the data plane's decode
threads, so a large body never holds the event loop; smaller ones (an MLP request) are decoded inline,
where a thread hop would cost more than the decode.

Everything that is not ``POST /v2/models/{m}[/versions/{v}]/infer`` goes to the FastAPI app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from modelserve_server.errors import ClientGone, ModelserveError, PayloadTooLarge, as_client_error
from modelserve_server.loaded import LoadedModel
from modelserve_server.protocol.rest.asgi import (
    BINARY_TYPE,
    JSON_TYPE,
    ASGIApp,
    Receive,
    Scope,
    Send,
    send_bytes,
    send_error,
)
from modelserve_server.protocol.rest.codec import (
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
)
from modelserve_server.protocol.rest.limits import check_declared_length, decompress, read_body
from modelserve_server.service import InferenceService
from modelserve_server.types import InferRequest
from modelserve_server.validation import signature_check

log = logging.getLogger(__name__)

PROTOCOL = "http"
#: Bodies at least this large are decoded off the event loop.
OFFLOAD_BYTES = 64 * 1024

_PREFIX = "/v2/models/"
_SUFFIX = "/infer"


def decode_body(
    model: LoadedModel, body: bytes, header_length: str | None, encoding: str | None, limit: int
) -> InferRequest:
    """Decompress and decode a request body for ``model`` (blocking; see :func:`infer_http`)."""
    if encoding and encoding.lower() != "identity":
        body = decompress(body, encoding.lower(), limit)
    length = parse_header_length(header_length, len(body))
    return decode_infer_request(
        body, length, model.name, model.version, check=signature_check(model.session)
    )


async def infer_http(
    service: InferenceService,
    model: str,
    version: str | None,
    read: Callable[[], Awaitable[bytes | None]],
    header_length: str | None,
    encoding: str | None,
    limit: int,
) -> tuple[bytes, int | None]:
    """One REST inference: returns (body, JSON header length if binary outputs follow).

    Raises :class:`ModelserveError` (:class:`ClientGone` when the client left while sending).
    """

    async def decode(loaded: LoadedModel) -> InferRequest:
        body = await read()
        if body is None:
            raise ClientGone("the client went away while sending the body")
        if len(body) >= OFFLOAD_BYTES:
            return await service.run_blocking(decode_body, loaded, body, header_length, encoding, limit)
        return decode_body(loaded, body, header_length, encoding, limit)

    return await service.serve(
        PROTOCOL, model, version, decode, lambda req, resp: encode_infer_response(resp, req)
    )


def parse_infer_path(path: str) -> tuple[str, str | None] | None:
    """``/v2/models/{m}/infer`` -> (m, None); ``.../versions/{v}/infer`` -> (m, v); else None."""
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    parts = path[len(_PREFIX) : -len(_SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return parts[0], parts[2]
    return None


class InferFastPath:
    """ASGI front: answers inference requests directly, passes everything else to ``app``."""

    def __init__(self, app: ASGIApp, service: InferenceService, max_request_bytes: int) -> None:
        self.app = app
        self.service = service
        self.limit = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        target = parse_infer_path(scope["path"])
        if target is None:
            await self.app(scope, receive, send)
            return
        model, version = target
        header_length = encoding = None
        headers = scope["headers"]
        for key, value in headers:
            if key == b"inference-header-content-length":
                header_length = value.decode("latin-1")
            elif key == b"content-encoding":
                encoding = value.decode("latin-1")
        limit = self.limit

        async def read() -> bytes | None:
            check_declared_length(headers, limit)
            return await read_body(receive, limit)

        try:
            out, json_length = await infer_http(
                self.service, model, version, read, header_length, encoding, limit
            )
        except ClientGone:
            return
        except Exception as exc:  # ModelserveError, or a bug (logged with its trace): answered as JSON
            error = as_client_error(exc)
            if not isinstance(exc, ModelserveError):
                log.exception("unhandled error on POST %s", scope["path"])
            elif error.http_status >= 500:
                log.error("POST %s -> %d: %s", scope["path"], error.http_status, error.message)
            await send_error(send, error.http_status, error.message, close=isinstance(exc, PayloadTooLarge))
            return
        if json_length is None:
            await send_bytes(send, 200, out, [JSON_TYPE])
        else:
            headers_out = [BINARY_TYPE, (b"inference-header-content-length", str(json_length).encode())]
            await send_bytes(send, 200, out, headers_out)
