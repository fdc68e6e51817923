"""gRPC conformance: ``tritonclient.grpc`` against a real ``modelserve serve`` process.

Results are compared with in-process ONNX Runtime on the same model files. Errors must come back
with the right status code, and the server must keep serving after each of them.
"""

from __future__ import annotations

import functools
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from serverlib import RunningServer, ServerFactory
from tritonclient.utils import InferenceServerException

from modelserve_server.protocol.grpc.generated import grpc_service_pb2 as pb
from modelserve_server.protocol.grpc.generated import grpc_service_pb2_grpc as pb_grpc

RNG = np.random.default_rng(42)
#: conftest's ``ort_run`` fixture: in-process ONNX Runtime, the reference.
OrtRun = Callable[..., dict[str, np.ndarray]]


@pytest.fixture(scope="module")
def client(v2_server: RunningServer) -> Iterator[Any]:
    c = tgrpc.InferenceServerClient(v2_server.grpc_address)
    yield c
    c.close()


def _inputs(arrays: dict[str, np.ndarray]) -> list[Any]:
    items = []
    for name, array in arrays.items():
        item = tgrpc.InferInput(name, list(array.shape), tgrpc.np_to_triton_dtype(array.dtype))
        item.set_data_from_numpy(array)
        items.append(item)
    return items


def _infer(client: Any, model: str, arrays: dict[str, np.ndarray], outputs: list[str] | None = None) -> Any:
    requested = [tgrpc.InferRequestedOutput(n) for n in outputs] if outputs else None
    return client.infer(model, _inputs(arrays), outputs=requested)


def _status(info: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(info.value.status())


def _assert_serves(client: Any) -> None:
    x = RNG.standard_normal((2, 64)).astype(np.float32)
    assert _infer(client, "mlp", {"x": x}).as_numpy("y").shape == (2, 10)


# ---------------------------------------------------------------------------------------------
# Health and metadata


def test_health_and_server_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "modelserve"
    assert meta.version
    assert "binary_tensor_data" in meta.extensions


def test_model_ready(client: Any) -> None:
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready("mlp", "99")


def test_model_metadata(client: Any) -> None:
    meta = client.get_model_metadata("mlp")
    assert meta.name == "mlp"
    assert list(meta.versions) == ["1"]
    assert meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 64])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("y", "FP32", [-1, 10])]
    multi = client.get_model_metadata("multi", as_json=True)
    assert {t["name"]: t["datatype"] for t in multi["inputs"]} == {
        "a": "INT32",
        "b": "FP16",
        "c": "INT64",
        "d": "BOOL",
        "s": "BYTES",
    }
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no-such-model")
    assert _status(info) == "StatusCode.NOT_FOUND"


def test_model_config_and_statistics(client: Any) -> None:
    config = client.get_model_config("mlp").config
    assert config.name == "mlp"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size > 0
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [64])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("y", [10])]
    assert tgrpc.model_config_pb2.DataType.Name(config.input[0].data_type) == "TYPE_FP32"
    # The provider report reaches gRPC clients too (ModelMetadataResponse has no parameters field
    # in the published protocol; the model configuration's parameters map does).
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["execution_provider"] == "CPUExecutionProvider"
    assert params["provider_fallback"] == "false"
    expected = {"providers", "execution_providers", "requested_providers", "provider_fallback_reason"}
    assert expected <= set(params)
    static = client.get_model_config("static").config
    assert static.max_batch_size == 0
    assert [list(i.dims) for i in static.input] == [[4, 8]]
    _assert_serves(client)
    stats = client.get_inference_statistics("mlp").model_stats
    assert [s.name for s in stats] == ["mlp"]
    assert stats[0].inference_count >= 2
    assert stats[0].inference_stats.success.count >= 1
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config("no-such-model")
    assert _status(info) == "StatusCode.NOT_FOUND"


# ---------------------------------------------------------------------------------------------
# Inference equals in-process ONNX Runtime


def test_fp32_mlp(client: Any, onnx_models: dict[str, Path], ort_run: OrtRun) -> None:
    x = RNG.standard_normal((5, 64)).astype(np.float32)
    result = client.infer("mlp", _inputs({"x": x}), request_id="req-1")
    expected = ort_run(onnx_models["mlp"], {"x": x})["y"]
    got = result.as_numpy("y")
    assert got.dtype == np.float32 and got.shape == (5, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("mlp", "1", "req-1")


def _multi_inputs(n: int) -> dict[str, np.ndarray]:
    return {
        "a": RNG.integers(-1000, 1000, (n, 4), dtype=np.int32),
        "b": RNG.standard_normal((n, 4)).astype(np.float16),
        "c": RNG.integers(-(2**40), 2**40, (n, 2), dtype=np.int64),
        "d": RNG.integers(0, 2, (n, 3)).astype(bool),
        "s": np.array([[f"row{i}-é".encode(), b""] for i in range(n)], dtype=object),
    }


def test_multi_types(client: Any, onnx_models: dict[str, Path], ort_run: OrtRun) -> None:
    arrays = _multi_inputs(3)
    result = _infer(client, "multi", arrays)
    expected = ort_run(onnx_models["multi"], arrays)
    for name, want in expected.items():
        got = result.as_numpy(name)
        assert got is not None, name
        assert got.shape == want.shape, name
        if want.dtype == object:
            assert got.tolist() == [[e.encode() for e in row] for row in want.tolist()], name
        else:
            assert got.dtype == want.dtype, name
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_every_datatype_round_trips(client: Any) -> None:
    arrays: dict[str, np.ndarray] = {}
    for dtype in ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"):
        info = np.iinfo(dtype)
        arrays[dtype] = np.array([[info.min, info.max, 7], [1, 0, 2]], dtype=dtype)
    arrays["float16"] = np.array([[0.5, -65504, 1e-3], [0, 1, 2]], dtype=np.float16)
    arrays["float32"] = np.array([[1e38, -1e-38, 3.25], [0, 1, 2]], dtype=np.float32)
    arrays["float64"] = np.array([[1e308, -5e-324, 3.25], [0, 1, 2]], dtype=np.float64)
    arrays["bool"] = np.array([[True, False, True], [False, False, True]])
    # ONNX string tensors hold text: the server refuses non-UTF-8 bytes (a clean INVALID_ARGUMENT).
    arrays["bytes"] = np.array([[b"", b"\x00\x7f", "ü€".encode()], [b"a" * 1000, b"b", b"c"]], dtype=object)
    named = {f"in_{tgrpc.np_to_triton_dtype(a.dtype)}": a for a in arrays.values()}
    result = _infer(client, "alltypes", named)
    for name, array in named.items():
        got = result.as_numpy(name.replace("in_", "out_"))
        assert got is not None, name
        if array.dtype == object:
            assert got.tolist() == array.tolist(), name
        else:
            assert got.dtype == array.dtype, name
            np.testing.assert_array_equal(got, array, err_msg=name)


def test_requested_output_subset(client: Any, onnx_models: dict[str, Path], ort_run: OrtRun) -> None:
    arrays = _multi_inputs(2)
    result = _infer(client, "multi", arrays, outputs=["c_neg", "a_times_2"])
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["c_neg", "a_times_2"]
    assert result.as_numpy("d_not") is None
    expected = ort_run(onnx_models["multi"], arrays, ["c_neg", "a_times_2"])
    np.testing.assert_array_equal(result.as_numpy("c_neg"), expected["c_neg"])
    np.testing.assert_array_equal(result.as_numpy("a_times_2"), expected["a_times_2"])


def test_typed_contents_accepted(
    v2_server: RunningServer, onnx_models: dict[str, Path], ort_run: OrtRun
) -> None:
    """Clients other than tritonclient may send typed ``contents``; the answer is still raw."""
    x = RNG.standard_normal((2, 64)).astype(np.float32)
    request = pb.ModelInferRequest(model_name="mlp", id="typed")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 64]).contents.fp32_contents.extend(
        x.ravel().tolist()
    )
    with grpc.insecure_channel(v2_server.grpc_address) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert response.id == "typed"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("y", "FP32", [2, 10])]
    got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 10)
    np.testing.assert_allclose(got, ort_run(onnx_models["mlp"], {"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_concurrent_requests(client: Any, onnx_models: dict[str, Path], ort_run: OrtRun) -> None:
    xs = [RNG.standard_normal((1 + i % 3, 64)).astype(np.float32) for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: _infer(client, "mlp", {"x": x}).as_numpy("y"), xs))
    for x, got in zip(xs, results, strict=True):
        np.testing.assert_allclose(got, ort_run(onnx_models["mlp"], {"x": x})["y"], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Errors: right code, and the server keeps serving


def _bad_dtype() -> list[Any]:
    item = tgrpc.InferInput("x", [1, 64], "FP64")
    item.set_data_from_numpy(np.zeros((1, 64)))
    return [item]


def _raw(name: str, shape: list[int], datatype: str, raw: bytes) -> list[Any]:
    item = tgrpc.InferInput(name, shape, datatype)
    item._raw_content = raw  # exactly these bytes on the wire
    return [item]


INVALID = "INVALID_ARGUMENT"
ERRORS: dict[str, tuple[str, Any, str, str]] = {
    # case: (model, inputs, status code, a fragment the message must contain)
    "unknown model": (
        "no-such-model",
        lambda: _inputs({"x": np.zeros((1, 64), np.float32)}),
        "NOT_FOUND",
        "'no-such-model'",
    ),
    "bad shape": ("mlp", lambda: _inputs({"x": np.zeros((1, 63), np.float32)}), INVALID, "'x'"),
    "bad rank": ("mlp", lambda: _inputs({"x": np.zeros((64,), np.float32)}), INVALID, "'x'"),
    "bad dtype": ("mlp", _bad_dtype, INVALID, "FP64"),
    "unknown input": (
        "mlp",
        lambda: _inputs({"z": np.zeros((1, 64), np.float32)}),
        INVALID,
        "'z'",
    ),
    "static dim": (
        "static",
        lambda: _inputs({"x": np.zeros((3, 8), np.float32)}),
        INVALID,
        "[4, 8]",
    ),
    "short raw": ("mlp", lambda: _raw("x", [2, 64], "FP32", b"\0" * 12), INVALID, "12 bytes"),
    "absurd shape": ("mlp", lambda: _raw("x", [10**12, 64], "FP32", b"\0" * 256), INVALID, "'x'"),
    "bad bytes": ("multi", lambda: _raw("s", [1, 2], "BYTES", b"\x09\0\0\0ab"), INVALID, "'s'"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_have_the_right_code(client: Any, case: str) -> None:
    model, make_inputs, code, fragment = ERRORS[case]
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, make_inputs())
    assert _status(info) == f"StatusCode.{code}", info.value.message()
    assert fragment in info.value.message()
    _assert_serves(client)


def test_unknown_output_and_version(client: Any) -> None:
    x = {"x": np.zeros((1, 64), np.float32)}
    with pytest.raises(InferenceServerException) as info:
        _infer(client, "mlp", x, outputs=["nope"])
    assert _status(info) == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", _inputs(x), model_version="7")
    assert _status(info) == "StatusCode.NOT_FOUND"
    _assert_serves(client)


def test_string_input_not_utf8(client: Any) -> None:
    arrays = _multi_inputs(1)
    del arrays["s"]
    bad = _raw("s", [1, 2], "BYTES", b"\x01\0\0\0\xff" + b"\x01\0\0\0a")
    with pytest.raises(InferenceServerException) as info:
        client.infer("multi", _inputs(arrays) + bad)
    assert _status(info) == "StatusCode.INVALID_ARGUMENT"
    assert "'s'" in info.value.message() and "UTF-8" in info.value.message()
    _assert_serves(client)


# ---------------------------------------------------------------------------------------------
# Versions and shutdown, each on a server of its own


@pytest.mark.slow
def test_model_repository_versions(
    server_factory: ServerFactory, model_repository: Path, ort_run: OrtRun
) -> None:
    server = server_factory("--model-repository", str(model_repository), grpc=True)
    c = tgrpc.InferenceServerClient(server.grpc_address)
    try:
        assert list(c.get_model_metadata("mlp").versions) == ["1", "2"]
        assert c.is_model_ready("mlp", "1") and c.is_model_ready("mlp", "2")
        x = RNG.standard_normal((3, 64)).astype(np.float32)
        for version in ("1", "2"):
            result = c.infer("mlp", _inputs({"x": x}), model_version=version)
            assert result.get_response().model_version == version
            expected = ort_run(model_repository / "mlp" / version / "model.onnx", {"x": x})["y"]
            np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-5, atol=1e-6)
        assert c.infer("mlp", _inputs({"x": x})).get_response().model_version == "2"  # the highest
    finally:
        c.close()


def _inflight(server: RunningServer, model: str) -> float:
    for line in server.metrics().splitlines():
        if line.startswith("modelserve_inflight_requests{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
def test_sigterm_completes_grpc_requests_in_flight(
    server_factory: ServerFactory, onnx_models: dict[str, Path], ort_run: OrtRun
) -> None:
    # One request per batch: the queue is still full when SIGTERM arrives.
    server = server_factory(
        "--model", f"slow={onnx_models['slow']}", "--max-batch-size", "1", "--drain-seconds", "120", grpc=True
    )
    c = tgrpc.InferenceServerClient(server.grpc_address)
    xs = [RNG.standard_normal((16, 256)).astype(np.float32) for _ in range(8)]
    results: dict[int, Any] = {}
    done = threading.Event()

    def callback(index: int, result: Any, error: Any) -> None:
        results[index] = error if error is not None else result.as_numpy("y")
        if len(results) == len(xs):
            done.set()

    try:
        for i, x in enumerate(xs):
            c.async_infer("slow", _inputs({"x": x}), functools.partial(callback, i), client_timeout=120)
        deadline = time.monotonic() + 60
        while _inflight(server, "slow") + len(results) < len(xs):  # every request accepted
            assert time.monotonic() < deadline, "the server never accepted every request"
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        assert done.wait(120), f"only {len(results)} of {len(xs)} answered"
        assert server.process.wait(120) == 0, server.logs()
    finally:
        c.close()
    for i, x in enumerate(xs):
        assert isinstance(results[i], np.ndarray), f"request {i} failed: {results[i]}"
        np.testing.assert_allclose(
            results[i], ort_run(onnx_models["slow"], {"x": x})["y"], rtol=1e-4, atol=1e-5
        )


# ---------------------------------------------------------------------------------------------
# Streaming and metrics


def test_stream_infer(client: Any, onnx_models: dict[str, Path], ort_run: OrtRun) -> None:
    """Triton's bidirectional stream: every request answered, failures inline, the stream goes on."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    xs = {f"ok-{i}": RNG.standard_normal((1 + i % 2, 64)).astype(np.float32) for i in range(6)}
    try:
        for request_id, x in list(xs.items())[:3]:
            client.async_stream_infer("mlp", _inputs({"x": x}), request_id=request_id)
        client.async_stream_infer("mlp", _inputs({"x": np.zeros((1, 63), np.float32)}), request_id="bad")
        client.async_stream_infer("no-such-model", _inputs({"x": xs["ok-0"]}), request_id="unknown")
        for request_id, x in list(xs.items())[3:]:
            client.async_stream_infer("mlp", _inputs({"x": x}), request_id=request_id)
        got = [answers.get(timeout=60) for _ in range(len(xs) + 2)]
    finally:
        client.stop_stream()
    errors = sorted(str(error.message()) for result, error in got if error is not None)
    assert len(errors) == 2
    assert "'x'" in errors[0] and "unknown model 'no-such-model'" in errors[1]
    results = {result.get_response().id: result for result, error in got if error is None}
    assert sorted(results) == sorted(xs)
    for request_id, x in xs.items():
        expected = ort_run(onnx_models["mlp"], {"x": x})["y"]
        np.testing.assert_allclose(results[request_id].as_numpy("y"), expected, rtol=1e-5, atol=1e-6)


def _counter(server: RunningServer, name: str, **labels: str) -> float:
    total = 0.0
    for line in server.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_grpc_requests_in_metrics(v2_server: RunningServer, client: Any) -> None:
    ok = {"model": "mlp", "protocol": "grpc", "code": "200"}
    bad = {"model": "mlp", "protocol": "grpc", "code": "400"}
    before = (
        _counter(v2_server, "modelserve_requests_total", **ok),
        _counter(v2_server, "modelserve_requests_total", **bad),
        _counter(v2_server, "modelserve_unknown_model_requests_total", protocol="grpc"),
    )
    _assert_serves(client)
    with pytest.raises(InferenceServerException):
        client.infer("mlp", _raw("x", [2, 64], "FP32", b"\0" * 12))  # rejected while decoding
    with pytest.raises(InferenceServerException):
        client.infer("never-served", _inputs({"x": np.zeros((1, 64), np.float32)}))
    after = (
        _counter(v2_server, "modelserve_requests_total", **ok),
        _counter(v2_server, "modelserve_requests_total", **bad),
        _counter(v2_server, "modelserve_unknown_model_requests_total", protocol="grpc"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    assert 'model="never-served"' not in v2_server.metrics()


def test_gzip_compressed_request(client: Any, onnx_models: dict[str, Path], ort_run: OrtRun) -> None:
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    result = client.infer("mlp", _inputs({"x": x}), compression_algorithm="gzip")
    expected = ort_run(onnx_models["mlp"], {"x": x})["y"]
    np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-5, atol=1e-6)


def test_max_request_bytes_caps_grpc_messages_too(
    server_factory: ServerFactory, onnx_models: dict[str, Path]
) -> None:
    """``--max-request-bytes`` is one limit for both transports: an oversized gRPC message is
    refused with RESOURCE_EXHAUSTED, a small one is served, and the server stays up."""
    server = server_factory(
        "--model", f"mlp={onnx_models['mlp']}", "--max-request-bytes", "65536", grpc=True
    )
    grpc_client = tgrpc.InferenceServerClient(server.grpc_address)

    def infer(rows: int) -> Any:
        tensor = tgrpc.InferInput("x", [rows, 64], "FP32")
        tensor.set_data_from_numpy(np.ones((rows, 64), dtype=np.float32))
        return grpc_client.infer("mlp", [tensor])

    with pytest.raises(InferenceServerException) as info:
        infer(1024)  # 256 KiB of tensor data
    assert "RESOURCE_EXHAUSTED" in str(info.value.status())
    assert infer(4).as_numpy(grpc_client.get_model_metadata("mlp").outputs[0].name).shape[0] == 4
    assert grpc_client.is_server_live()
