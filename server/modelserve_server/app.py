"""Run the server process: HTTP (uvicorn), optional gRPC, model loading, and graceful shutdown.

Why this sequence:

1. Bind the HTTP (and gRPC) ports *first*, so liveness answers while models load and a port conflict
   fails fast; readiness stays 503 until every model is loaded and warmed.
2. Signals are handled here, not by uvicorn, because SIGTERM must turn readiness to 503 *at once*
   while in-flight and queued requests still complete: we mark the service as draining, let uvicorn
   stop accepting connections (open keep-alive connections answer with ``Connection: close``, see
   :mod:`.protocol.rest.connection`), stop gRPC, and await the data plane going idle for at most
   ``--drain-seconds``. Then exit 0; or, when work was still unfinished at the deadline, answer it
   with a JSON 503 (UNAVAILABLE over gRPC), log how many requests were cut off, and exit
   :data:`EXIT_CUT_OFF` without waiting for a running batch (ONNX Runtime cannot be interrupted).
3. A start-up error (bad model, unavailable provider, port in use) is logged in one line and the
   process exits 1, so a pod never turns ready on a broken configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import signal
import socket
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import uvicorn

from modelserve_server.batching.scheduler import DEFAULT_INSTANCES
from modelserve_server.errors import StartupError
from modelserve_server.modelcheck import ModelInvalid, write_termination_message
from modelserve_server.protocol.rest.app import create_asgi
from modelserve_server.protocol.rest.connection import ConnectionLimits, protocol_class
from modelserve_server.repository import build_index
from modelserve_server.runtime.providers import ProviderPlan
from modelserve_server.service import InferenceService

log = logging.getLogger("modelserve_server")

GRPC_MODULE = "modelserve_server.protocol.grpc.server"
#: Exit code when the drain deadline cut off unfinished requests.
EXIT_CUT_OFF = 3
#: After the drain deadline: time for the 503 answers to reach the clients and connections to close.
CUT_OFF_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """The parsed ``modelserve serve`` command line."""

    models: list[str]
    model_repository: Path | None
    host: str
    http_port: int
    grpc_port: int
    max_batch_size: int
    max_batch_delay_ms: float
    intra_op_threads: int
    max_request_bytes: int
    drain_seconds: float
    instances: int = DEFAULT_INSTANCES  # batches of one model version that may run at once
    reuse_port: bool = False  # a worker of --workers N: the HTTP port is shared (SO_REUSEPORT)
    # Workers listen only once their models are loaded, so a shared port never hands a connection
    # to a worker that would answer 503 while another one already answers ready.
    listen_when_ready: bool = False


class GrpcHandle(Protocol):
    """What ``start_grpc_server`` returns (implemented in ``protocol/grpc/server.py``)."""

    async def stop(self, grace: float) -> None: ...


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: :func:`serve` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind the HTTP listening socket ourselves, so a port conflict is a clean StartupError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"--host {host}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # --workers N: every worker listens on the port; the kernel spreads connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


async def _start_grpc(
    service: InferenceService, host: str, port: int, max_request_bytes: int, reuse_port: bool
) -> GrpcHandle | None:
    try:
        module: Any = importlib.import_module(GRPC_MODULE)
    except ImportError as exc:
        raise StartupError(f"--grpc-port {port}: the gRPC front end is not available ({exc})") from exc
    # One request-size limit for both transports: --max-request-bytes caps gRPC messages too.
    handle: GrpcHandle = await module.start_grpc_server(
        service, host, port, max_message_bytes=max_request_bytes, reuse_port=reuse_port
    )
    log.info("gRPC listening on %s:%d", host, port)
    return handle


async def serve(options: ServeOptions, plan: ProviderPlan) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code (0 after a clean drain)."""
    loop = asyncio.get_running_loop()
    service = InferenceService(
        max_batch_size=options.max_batch_size,
        max_batch_delay_ms=options.max_batch_delay_ms,
        instances=options.instances,
    )
    app = create_asgi(service, max_request_bytes=options.max_request_bytes)
    try:
        limits = ConnectionLimits.from_env()
    except ValueError as exc:
        log.error("start-up failed: %s", exc)
        return 1
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    config = uvicorn.Config(
        app,
        http=protocol_class(limits, service.metrics),
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        # The data plane decides the drain deadline (and answers what it cuts off); uvicorn only
        # gets a backstop for connections that never finish.
        timeout_graceful_shutdown=math.ceil(options.drain_seconds + CUT_OFF_GRACE_S),
        timeout_keep_alive=30,
        backlog=2048,
    )
    server = _UvicornServer(config)
    grpc: GrpcHandle | None = None
    http_task: asyncio.Task[None] | None = None

    async def listen() -> asyncio.Task[None]:
        nonlocal grpc
        sock = bind_socket(options.host, options.http_port, reuse_port=options.reuse_port)
        task = loop.create_task(server.serve(sockets=[sock]))
        if options.grpc_port:
            grpc = await _start_grpc(
                service, options.host, options.grpc_port, options.max_request_bytes, options.reuse_port
            )
        return task

    try:
        if not options.listen_when_ready:
            http_task = await listen()
        where = "not yet listening (a worker)" if http_task is None else "HTTP listening on"
        log.info("%s %s:%d; loading models", where, options.host, options.http_port)
        load_task = loop.create_task(_load(service, options, plan))
        stop_task = loop.create_task(stop.wait())
        first = {load_task, stop_task} | ({http_task} if http_task else set())
        done, _ = await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if load_task in done:
            load_task.result()  # re-raise StartupError
            if http_task is None:  # a worker joins the shared port only now, ready
                http_task = await listen()
            done, _ = await asyncio.wait({stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
        else:
            load_task.cancel()
        if http_task in done and stop_task not in done:
            raise StartupError("the HTTP server stopped unexpectedly")
    except StartupError as exc:
        log.error("start-up failed: %s", exc)
        kind = "ModelInvalid" if isinstance(exc, ModelInvalid) else "StartupError"
        write_termination_message(f"{kind}: {exc}")
        server.should_exit = True
        if grpc is not None:
            await grpc.stop(0)
        service.close()
        return 1
    code = await _drain(service, server, http_task, grpc, options.drain_seconds)
    stop_task.cancel()
    return code


async def _load(service: InferenceService, options: ServeOptions, plan: ProviderPlan) -> None:
    loop = asyncio.get_running_loop()
    index = await loop.run_in_executor(
        service.executor, build_index, options.models, options.model_repository
    )
    await service.load(index, plan, intra_op_threads=options.intra_op_threads)


async def _drain(
    service: InferenceService,
    server: uvicorn.Server,
    http_task: asyncio.Task[None] | None,
    grpc: GrpcHandle | None,
    drain_seconds: float,
) -> int:
    """SIGTERM: not ready at once, stop accepting, let accepted work finish, then stop (exit code)."""
    started = time.monotonic()
    service.begin_drain()
    log.info("SIGTERM: draining (up to %.0fs)", drain_seconds)
    server.should_exit = True  # uvicorn closes its listeners and hands idle connections over
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(http_task)] if http_task else []
    if grpc is not None:
        waits.append(asyncio.ensure_future(grpc.stop(drain_seconds + CUT_OFF_GRACE_S)))
    cut = 0
    if not await service.drain(drain_seconds):
        cut = service.cut_off()
        log.error(
            "drain: cut off %d request(s) unfinished after --drain-seconds %g; they were answered 503",
            cut, drain_seconds,
        )
    _, pending = await asyncio.wait(waits, timeout=CUT_OFF_GRACE_S + 5) if waits else (set(), set())
    for task in pending:
        task.cancel()
    service.close()
    log.info("stopped after %.2fs", time.monotonic() - started)
    return EXIT_CUT_OFF if cut else 0
