"""Per-connection limits uvicorn does not set: header size and count, header and body read timeouts,
open connections per process, and a clean keep-alive hand-over at SIGTERM.

Why a protocol subclass: uvicorn's httptools protocol reads a request head of any size (a 256 MiB
header was read for 298 s and stalled health checks), never times out a slow head or body (200
slowloris connections were held for 45 s), accepts connections without bound, and at shutdown closes
idle keep-alive connections at once, so a request the client had just sent on one was lost. These
are decisions about bytes on a socket, so they are made where the bytes arrive, before any ASGI
application runs. Refusals are JSON like every other error (:func:`.asgi.error_body`).

* Head: more than ``max_header_bytes`` before the head is complete, or more than ``max_headers``
  header fields -> 431 and close.
* Time: a head not complete within ``header_timeout_s`` of its first byte (or of the connection
  opening) -> 408 and close; a body not complete within ``body_timeout_s`` of its head -> 408.
* Connections: beyond ``max_connections`` open ones -> 503 at once and close. The count is the
  ``modelserve_http_open_connections`` gauge; refusals count in ``modelserve_http_rejected_total``.
* Age: the first response after a connection is ``max_connection_age_s`` old carries
  ``Connection: close``, so keep-alive clients reconnect and kube-proxy spreads them again: after a
  scale-up the new pods take traffic within that time (as gRPC's MAX_CONNECTION_AGE does), instead
  of every long-lived connection staying on the pods that existed when it opened.
* SIGTERM: an idle keep-alive connection stays open for ``drain_idle_s`` so that a request already
  on its way is answered (with ``Connection: close``); in-flight requests are answered with
  ``Connection: close`` (uvicorn's own rule).
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelserve_server.metrics import Metrics
from modelserve_server.parsing import ascii_uint
from modelserve_server.protocol.rest.asgi import error_body

_DECIMAL = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?", re.ASCII)
_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits above; :meth:`from_env` reads ``MODELSERVE_HTTP_<FIELD>`` overrides (README)."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 1024
    drain_idle_s: float = 2.0
    max_connection_age_s: float = 30.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ConnectionLimits:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(f"MODELSERVE_HTTP_{field.name.upper()}")
            if raw is None:
                continue
            value: float | None
            if field.type in ("int", int):
                value = ascii_uint(raw)
            else:
                value = float(raw) if _DECIMAL.fullmatch(raw) else None
            if value is None or value <= 0:
                raise ValueError(f"MODELSERVE_HTTP_{field.name.upper()}={raw!r}: not a positive number")
            values[field.name] = value
        return cls(**values)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a connection that was answered already."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionLimits` (configure with :func:`protocol_class`)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    metrics: ClassVar[Metrics | None] = None
    open_connections: ClassVar[int] = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._refused = False
        self._draining = False
        self._timer: asyncio.TimerHandle | None = None
        self._born = 0.0

    # -- connection life ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._born = self.loop.time()
        cls = type(self)
        cls.open_connections += 1
        self._gauge()
        if cls.open_connections > self.limits.max_connections:
            self._refuse(503, "too many open connections; retry later", "connection_limit")
            return
        self._arm(self.limits.header_timeout_s, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        type(self).open_connections -= 1
        self._gauge()
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            if self._head_bytes == 0 and self._timer is None:
                self._arm(self.limits.header_timeout_s, self._head_timeout)
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if not self._refused:  # a malformed request (ours raise _Refused inside a callback)
                self._refuse(400, "invalid HTTP request", "malformed")
            return
        if not self._refused and self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"request head over {self.limits.max_header_bytes} bytes", "header_too_large")

    # -- parser callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(431, f"more than {self.limits.max_headers} header fields", "header_too_large")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()
        old = self.loop.time() - self._born >= self.limits.max_connection_age_s
        if (self._draining or old) and self.cycle is not None:
            self.cycle.keep_alive = False
        if self.cycle is not None and self.cycle.more_body:
            self._arm(self.limits.body_timeout_s, self._body_timeout)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._draining and not self.transport.is_closing():
            self._arm(self.limits.drain_idle_s, self._close_if_idle)

    # -- shutdown ----------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """SIGTERM: keep an idle connection briefly for a request already sent; close after it."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            if self._head_bytes == 0:
                self._arm(self.limits.drain_idle_s, self._close_if_idle)
            # else: a request head is arriving; on_headers_complete marks it Connection: close
        else:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        self._timer = None
        idle = (self.cycle is None or self.cycle.response_complete) and self._head_bytes == 0
        if idle and not self.transport.is_closing():
            self.transport.close()

    # -- internals ---------------------------------------------------------------------------------

    def _head_timeout(self) -> None:
        self._timer = None
        if self._in_head and not self.transport.is_closing():
            if self._head_bytes:
                self._refuse(408, f"request head not received within {self.limits.header_timeout_s:g}s",
                             "header_timeout")  # fmt: skip
            else:
                self.transport.close()  # an idle connection that never sent a request

    def _body_timeout(self) -> None:
        self._timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_started:
            return
        cycle.disconnected = True  # the application's receive() sees a disconnect and gives up
        cycle.message_event.set()
        self._refuse(408, f"request body not received within {self.limits.body_timeout_s:g}s", "body_timeout")

    def _refuse(self, status: int, message: str, reason: str) -> None:
        self._refused = True
        self._disarm()
        if self.metrics is not None:
            self.metrics.http_rejected.labels(reason).inc()
        body = error_body(message)
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
        )
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.http_open_connections.set(type(self).open_connections)


def protocol_class(limits: ConnectionLimits, metrics: Metrics) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` subclass bound to ``limits`` and ``metrics`` (uvicorn's ``http=``)."""
    return type(
        "ModelserveHttpProtocol",
        (GuardedProtocol,),
        {"limits": limits, "metrics": metrics, "open_connections": 0},
    )


__all__ = ["ConnectionLimits", "GuardedProtocol", "protocol_class"]
