"""The gRPC front end: ``inference.GRPCInferenceService`` on grpc.aio, over :class:`InferenceService`.

Why a thin servicer: everything a request means (validation against the model, batching, metrics,
readiness while draining) lives in the transport-independent service, so REST and gRPC answer the
same way. This module only decodes messages (:mod:`.codec`), calls the service, and turns
:class:`~modelserve_server.errors.ModelserveError` into the gRPC status named by its ``grpc_code``
(errors.py is the one place that decides codes). Any other exception is a bug and becomes INTERNAL,
logged with its traceback; the server keeps serving.

It runs on the same event loop as the HTTP server (grpc.aio), so inference is awaited exactly as the
REST path awaits it and never blocks the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from modelserve_server.errors import ModelNotFound, ModelserveError, StartupError, as_client_error
from modelserve_server.loaded import LoadedModel
from modelserve_server.protocol.grpc.codec import decode_request, encode_response, from_triton_json
from modelserve_server.protocol.grpc.generated import grpc_service_pb2 as pb
from modelserve_server.protocol.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from modelserve_server.service import InferenceService
from modelserve_server.types import InferRequest
from modelserve_server.validation import signature_check

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "GrpcServer", "rpc", "start_grpc_server"]

log = logging.getLogger(__name__)

PROTOCOL = "grpc"
#: Same default as ``serve --max-request-bytes``: the largest request message accepted.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

R = TypeVar("R")
#: Messages at least this large are decoded on the data plane's decode threads (as REST bodies are).
OFFLOAD_BYTES = 64 * 1024


def rpc(method: Callable[[Any, Any, Any], Awaitable[R]]) -> Callable[[Any, Any, Any], Awaitable[R]]:
    """End the RPC with the status its error maps to (errors.py decides the codes).

    A :class:`ModelserveError` becomes the gRPC status named by its ``grpc_code``; anything else is a
    bug, logged with its traceback, and becomes INTERNAL with the text of
    :func:`~modelserve_server.errors.as_client_error`. The server keeps serving either way.
    """

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Any) -> R:
        try:
            return await method(self, request, context)
        except Exception as exc:
            if not isinstance(exc, ModelserveError):
                log.exception("gRPC %s failed with an unexpected error", method.__name__)
            error = as_client_error(exc)
            await context.abort(grpc.StatusCode[error.grpc_code], error.message)
            raise  # context.abort raises; this is never reached

    return wrapper


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol RPCs, each delegating to the :class:`InferenceService`."""

    def __init__(self, service: InferenceService) -> None:
        self._service = service

    @rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._service.live())

    @rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._service.ready())

    @rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        # Like Triton: an unknown model is simply not ready (tritonclient's is_model_ready -> False).
        try:
            ready = self._service.model_ready(request.name, request.version or None)
        except ModelNotFound:
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    @rpc
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        meta = self._service.server_metadata()
        return pb.ServerMetadataResponse(
            name=str(meta.get("name", "")),
            version=str(meta.get("version", "")),
            extensions=[str(e) for e in meta.get("extensions", [])],
        )

    @rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        meta = self._service.model_metadata(request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=str(meta.get("name", request.name)),
            versions=[str(v) for v in meta.get("versions", [])],
            platform=str(meta.get("platform", "")),
            inputs=[_tensor_metadata(t) for t in meta.get("inputs", [])],
            outputs=[_tensor_metadata(t) for t in meta.get("outputs", [])],
        )

    @rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await self._infer(request)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Run every request of the stream concurrently (so they can share batches) and answer each
        as it finishes; a failing request answers with ``error_message`` and the stream goes on."""
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                response = pb.ModelStreamInferResponse(infer_response=await self._infer(request))
            except Exception as exc:
                if not isinstance(exc, ModelserveError):
                    log.exception("gRPC stream request failed with an unexpected error", exc_info=exc)
                failed = pb.ModelInferResponse(
                    model_name=request.model_name, model_version=request.model_version, id=request.id
                )
                response = pb.ModelStreamInferResponse(
                    error_message=as_client_error(exc).message, infer_response=failed
                )
            await answers.put(response)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.create_task(answer(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:
                    await asyncio.wait(set(running))
            finally:
                answers.put_nowait(None)  # end the response stream, also when reading failed

        reader = asyncio.create_task(read())
        try:
            while (item := await answers.get()) is not None:
                yield item
            await reader  # surface a failure of the request stream itself
        finally:
            for task in (reader, *running):
                task.cancel()

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """One inference request through the data plane; raises what the RPC must report.

        The model is resolved first (so an unknown model is NOT_FOUND even when the tensors are
        malformed too), then the message is decoded against its signature.
        """

        async def decode(model: LoadedModel) -> InferRequest:
            check = signature_check(model.session)
            if request.ByteSize() >= OFFLOAD_BYTES:  # a large message is decoded off the event loop
                return await self._service.run_blocking(decode_request, request, check)
            return decode_request(request, check)

        return await self._service.serve(
            PROTOCOL, request.model_name, request.model_version or None, decode,
            lambda _, resp: encode_response(resp),
        )

    @rpc
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        config = self._service.model_config(request.name, request.version or None)
        return pb.ModelConfigResponse(config=from_triton_json(config, pb.ModelConfig()))

    @rpc
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        stats = self._service.model_stats(request.name or None, request.version or None)
        return from_triton_json(stats, pb.ModelStatisticsResponse())


def _tensor_metadata(tensor: dict[str, Any]) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=str(tensor["name"]),
        datatype=str(tensor["datatype"]),
        shape=[int(d) for d in tensor["shape"]],
    )


class GrpcServer:
    """A started gRPC server: ``port`` is the bound port; ``await stop(grace)`` shuts it down."""

    def __init__(self, server: grpc.aio.Server, host: str, port: int) -> None:
        self._server = server
        self.host = host
        self.port = port

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs at once; let RPCs in flight finish for up to ``grace`` seconds."""
        await self._server.stop(grace)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def start_grpc_server(
    service: InferenceService,
    host: str,
    port: int,
    *,
    max_message_bytes: int | None = None,
    reuse_port: bool = False,
) -> GrpcServer:
    """Bind ``host:port`` and start serving ``inference.GRPCInferenceService``.

    ``max_message_bytes`` caps an incoming message (pass ``--max-request-bytes``); responses are not
    capped, as a model's output may legitimately be larger than its input. A port that cannot be
    bound is a :class:`StartupError`. Port 0 binds a free port (see ``GrpcServer.port``).
    ``reuse_port``: a worker of ``--workers N`` shares the port with the other workers.
    """
    limit = DEFAULT_MAX_MESSAGE_BYTES if max_message_bytes is None else int(max_message_bytes)
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", -1),
        # gRPC sets SO_REUSEPORT by default: a second server on a taken port would start silently.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    server = grpc.aio.server(options=options)
    # The generated registration function is untyped.
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service), server)  # type: ignore[no-untyped-call]
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise StartupError(f"--grpc-port: cannot listen on {address}: {exc}") from exc
    if not bound:
        raise StartupError(f"--grpc-port: cannot listen on {address}")
    await server.start()
    log.debug("gRPC (inference.GRPCInferenceService) bound to %s", f"{host}:{bound}")
    return GrpcServer(server, host, bound)
