"""``start_grpc_server`` in-process: message size limit, port conflicts, readiness before models load.

These run the real grpc.aio server over a real :class:`InferenceService` with no models loaded yet
(the state between start-up and readiness), talking to it over 127.0.0.1.
"""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from modelserve_server.errors import StartupError
from modelserve_server.protocol.grpc.generated import grpc_service_pb2 as pb
from modelserve_server.protocol.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from modelserve_server.protocol.grpc.server import start_grpc_server
from modelserve_server.service import InferenceService


def _request(raw_bytes: int) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b"\0" * raw_bytes])
    msg.inputs.add(name="x", datatype="FP32", shape=[raw_bytes // 4])
    return msg


async def test_limits_and_startup_state() -> None:
    service = InferenceService()
    server = await start_grpc_server(service, "127.0.0.1", 0, max_message_bytes=4096)
    try:
        assert server.port > 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ServerLive(pb.ServerLiveRequest(), timeout=30)).live
            assert not (await stub.ServerReady(pb.ServerReadyRequest(), timeout=30)).ready
            assert not (await stub.ModelReady(pb.ModelReadyRequest(name="mlp"), timeout=30)).ready
            meta = await stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=30)
            assert meta.name == "modelserve"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(_request(8192), timeout=30)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(_request(1024), timeout=30)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "'mlp'" in (info.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"), timeout=30)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            # Still serving after the errors.
            assert (await stub.ServerLive(pb.ServerLiveRequest(), timeout=30)).live
    finally:
        await server.stop(0)
        service.close()


async def test_port_in_use_is_a_startup_error() -> None:
    service = InferenceService()
    first = await start_grpc_server(service, "127.0.0.1", 0)
    try:
        with pytest.raises(StartupError, match=f"127.0.0.1:{first.port}"):
            await start_grpc_server(service, "127.0.0.1", first.port)
    finally:
        await first.stop(0)
        service.close()
