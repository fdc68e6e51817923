"""ASGI types and the one way an HTTP answer is written, errors included.

Why one module: the error body (``{"error": message}`` as JSON) and the ``Connection: close`` rule
were written in several places with two formats; the fast path and the FastAPI app now both send
through :func:`send_bytes` / :func:`error_body`, and the text of a 500 comes from
:func:`modelserve_server.errors.as_client_error`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPE = (b"content-type", b"application/json")
BINARY_TYPE = (b"content-type", b"application/octet-stream")


def error_body(message: str) -> bytes:
    """The body of every non-2xx answer."""
    return orjson.dumps({"error": message})


async def send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], *, close: bool = False
) -> None:
    """Send a complete response; ``close`` asks the client to drop the connection."""
    all_headers = [*headers, (b"content-length", str(len(body)).encode())]
    if close:
        all_headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, message: str, *, close: bool = False) -> None:
    """An ``{"error": message}`` answer with ``status``."""
    await send_bytes(send, status, error_body(message), [JSON_TYPE], close=close)
