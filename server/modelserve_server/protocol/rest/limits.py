"""What one HTTP request may make the server read: the body limit and request decompression.

Why here and once: uvicorn sets no body limit (a 100 MiB JSON body once took 1.35 GiB), so a declared
``Content-Length`` over ``--max-request-bytes`` is answered 413 before a byte of the body is read, and
a body without one (chunked) is counted while it streams and cut off at the limit. The inference fast
path and the middleware in front of the FastAPI app both use these functions, so the two routes to a
body cannot disagree.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from modelserve_server.errors import InvalidInput, PayloadTooLarge
from modelserve_server.parsing import ascii_uint
from modelserve_server.protocol.rest.asgi import ASGIApp, Message, Receive, Scope, Send, send_error


def check_declared_length(headers: Iterable[tuple[bytes, bytes]], limit: int) -> None:
    """Raise :class:`PayloadTooLarge` when ``Content-Length`` declares more than ``limit`` bytes."""
    for key, value in headers:
        if key == b"content-length":
            declared = ascii_uint(value, max_digits=40)
            if declared is not None and declared > limit:
                raise PayloadTooLarge(
                    f"request body of {declared} bytes exceeds --max-request-bytes {limit}"
                )
            return


def limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises :class:`PayloadTooLarge` once the body passes ``limit`` bytes."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"request body exceeds --max-request-bytes {limit}")
        return message

    return limited_receive


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body within ``limit`` (:class:`PayloadTooLarge` past it); None if the client left."""
    receive = limited(receive, limit)
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


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
    if not decoder.eof:
        raise InvalidInput(f"the {encoding} request body is truncated")
    if decoder.unused_data:
        # zlib stops after the first gzip member; a second one (or any trailing bytes) would be
        # ignored silently, so the client would be answered for a body it did not mean.
        raise InvalidInput(
            f"{len(decoder.unused_data)} bytes follow the end of the {encoding} stream "
            "(a second gzip member or trailing data): send one member"
        )
    return out


class BodyLimitMiddleware:
    """The body limit in front of the FastAPI app (the fast path applies it itself)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_declared_length(scope["headers"], self.max_bytes)
        except PayloadTooLarge as exc:
            await send_error(send, exc.http_status, exc.message, close=True)
            return
        await self.app(scope, limited(receive, self.max_bytes), send)
