"""The REST inference hot path, as a raw ASGI front that answers ``POST .../infer`` itself.

Why bypass FastAPI for this one route: profiling under load showed routing over a dozen routes,
dependency solving and ``Request`` construction costing more per request than decoding, batching and
running a small model together. The FastAPI app still *declares* the infer routes (for the OpenAPI
schema, and as the code path when the app is used alone), and both paths call the same
:func:`run_infer`, so behaviour cannot drift: same limits, same codec, same error bodies.

Everything that is not ``POST /v2/models/{m}[/versions/{v}]/infer`` goes to the FastAPI app.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from modelserve_server.errors import InvalidInput, ModelserveError, PayloadTooLarge
from modelserve_server.protocol.codec import (
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
)
from modelserve_server.service import InferenceService

log = logging.getLogger(__name__)

PROTOCOL = "http"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PREFIX = "/v2/models/"
_SUFFIX = "/infer"
_JSON_TYPE = [(b"content-type", b"application/json")]
_BINARY_TYPE = (b"content-type", b"application/octet-stream")


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` (tritonclient's request compression), within ``limit``."""
    wbits = {"gzip": 31, "deflate": 15}.get(encoding)
    if wbits is None:
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r} (use gzip or deflate)")
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"cannot decompress the {encoding} request body: {exc}") from None
    if len(out) > limit or decoder.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body exceeds --max-request-bytes {limit}")
    return out


async def run_infer(
    service: InferenceService,
    model: str,
    version: str | None,
    body: bytes,
    header_length: str | None,
    encoding: str | None,
    limit: int,
) -> tuple[bytes, int | None]:
    """Resolve, decode, infer, encode. Returns (body, JSON header length if binary outputs follow).

    Raises :class:`ModelserveError`; failures before :meth:`InferenceService.infer` are counted here.
    """
    try:
        service.check_model(model, version)
        if encoding and encoding.lower() != "identity":
            body = decompress(body, encoding.lower(), limit)
        length = parse_header_length(header_length, len(body))
        req = decode_infer_request(body, length, model, version)
    except ModelserveError as exc:
        service.record_error(model, version, PROTOCOL, exc)
        raise
    resp = await service.infer(req, PROTOCOL)
    return encode_infer_response(resp, req)


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
        content_length = header_length = encoding = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                content_length = value
            elif key == b"inference-header-content-length":
                header_length = value.decode("latin-1")
            elif key == b"content-encoding":
                encoding = value.decode("latin-1")
        try:
            body = await self._read_body(receive, content_length)
            if body is None:  # the client went away
                return
            out, json_length = await run_infer(
                self.service, model, version, body, header_length, encoding, self.limit
            )
        except ModelserveError as exc:
            if isinstance(exc, PayloadTooLarge):
                self.service.record_error(model, version, PROTOCOL, exc)
            elif exc.http_status >= 500:
                log.error("POST %s -> %d: %s", scope["path"], exc.http_status, exc.message)
            await _send(send, exc.http_status, orjson.dumps({"error": exc.message}), _JSON_TYPE,
                        close=isinstance(exc, PayloadTooLarge))
            return
        except Exception as exc:  # a bug: answer 500 with a message and log the trace
            log.exception("unhandled error on POST %s", scope["path"])
            message = orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})
            await _send(send, 500, message, _JSON_TYPE)
            return
        if json_length is None:
            await _send(send, 200, out, _JSON_TYPE)
        else:
            headers = [_BINARY_TYPE, (b"inference-header-content-length", str(json_length).encode())]
            await _send(send, 200, out, headers)

    async def _read_body(self, receive: Receive, content_length: bytes | None) -> bytes | None:
        """The whole body, refusing more than the limit before reading it (declared) or while (chunked)."""
        limit = self.limit
        if content_length is not None and content_length.isdigit() and int(content_length) > limit:
            raise PayloadTooLarge(
                f"request body of {int(content_length)} bytes exceeds --max-request-bytes {limit}"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds --max-request-bytes {limit}")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)


async def _send(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], *, close: bool = False
) -> None:
    all_headers = [*headers, (b"content-length", str(len(body)).encode())]
    if close:
        all_headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
