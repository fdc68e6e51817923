"""Dynamic batching in a real server: concurrent requests give the same answers as one by one, the
batch-size histogram shows batches larger than one, and shapes that differ are never mixed.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from serverlib import RunningServer, ServerFactory, _save, ort_run


def build_dynamic(path: Path) -> Path:
    """x FP32 [N, M] -> y = 2x: the second dimension varies between requests."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])],
        [two],
    )
    return _save(graph, path)


def histogram(server: RunningServer, model: str) -> dict[str, float]:
    """``modelserve_batch_size`` buckets of ``model``: {"1.0": count, ..., "count": n, "sum": s}."""
    text = server.metrics()
    out: dict[str, float] = {}
    for le, value in re.findall(
        rf'modelserve_batch_size_bucket{{le="([^"]+)",model="{model}",version="1"}} (\S+)', text
    ):
        out[le] = float(value)
    for kind in ("count", "sum"):
        match = re.search(rf'modelserve_batch_size_{kind}{{model="{model}",version="1"}} (\S+)', text)
        assert match, text
        out[kind] = float(match.group(1))
    return out


def infer(client: httpclient.InferenceServerClient, model: str, x: np.ndarray, binary: bool) -> np.ndarray:
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)])
    out = result.as_numpy("y")
    assert out is not None
    return out


@pytest.mark.slow
def test_concurrent_requests_equal_one_by_one(
    server_factory: ServerFactory, onnx_models: dict[str, Path], tmp_path: Path
) -> None:
    check_batching_equivalence(server_factory, onnx_models, tmp_path)


def check_batching_equivalence(
    server_factory: ServerFactory, onnx_models: dict[str, Path], tmp_path: Path, *extra: str
) -> None:
    """The batching-equivalence scenario; ``extra``: more ``serve`` arguments (test_workers.py runs
    it with ``--workers 2``, where the histogram is the sum over the workers)."""
    dynamic = build_dynamic(tmp_path / "dynamic.onnx")
    server = server_factory(
        "--model", f"slow={onnx_models['slow']}", "--model", f"dynamic={dynamic}",
        "--max-batch-size", "16", "--max-batch-delay-ms", "20", *extra,
    )
    rng = np.random.default_rng(7)
    # One row per request: a batch of more than one row in the histogram is a batch of requests.
    requests_ = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(48)]
    expected = [ort_run(onnx_models["slow"], {"x": x})["y"] for x in requests_]

    def call(i: int) -> np.ndarray:
        client = httpclient.InferenceServerClient(server.http_address, network_timeout=300)
        return infer(client, "slow", requests_[i], binary=i % 2 == 0)

    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(call, range(len(requests_))))
    one_client = httpclient.InferenceServerClient(server.http_address, network_timeout=300)
    one_by_one = [infer(one_client, "slow", x, binary=True) for x in requests_[:8]]
    for got, want in zip(concurrent, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for got, want in zip(one_by_one, concurrent[:8], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    hist = histogram(server, "slow")
    rows = sum(x.shape[0] for x in requests_) + sum(x.shape[0] for x in requests_[:8])
    assert hist["sum"] == rows  # every row was counted in exactly one batch
    assert hist["count"] < len(requests_) + 8  # fewer executions than requests ...
    assert hist["1.0"] < hist["count"]  # ... because some batches held more than one row

    # Requests whose second dimension differs are batched separately and still answered right.
    shapes = [(1, 3), (2, 5), (1, 3), (3, 7), (2, 5), (1, 1)] * 4

    def call_dynamic(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        client = httpclient.InferenceServerClient(server.http_address, network_timeout=300)
        x = rng.standard_normal(shape).astype(np.float32)
        return x, infer(client, "dynamic", x, binary=True)

    with ThreadPoolExecutor(12) as pool:
        for x, y in pool.map(call_dynamic, shapes):
            np.testing.assert_array_equal(y, 2 * x)


@pytest.mark.slow
def test_batching_equivalence_with_two_instances(
    server_factory: ServerFactory, onnx_models: dict[str, Path], tmp_path: Path
) -> None:
    """Two batches of a model in flight at once (``--instances 2``): same answers, every row counted once."""
    check_batching_equivalence(
        server_factory, onnx_models, tmp_path, "--instances", "2", "--intra-op-threads", "1"
    )


def test_static_model_is_never_batched(v2_server: RunningServer) -> None:
    x = np.ones((4, 8), dtype=np.float32)

    def call(_: int) -> np.ndarray:
        client = httpclient.InferenceServerClient(v2_server.http_address, network_timeout=120)
        return infer(client, "static", x, binary=True)

    before = histogram(v2_server, "static")
    with ThreadPoolExecutor(8) as pool:
        for y in pool.map(call, range(16)):
            np.testing.assert_array_equal(y, 3 * x)
    after = histogram(v2_server, "static")
    assert after["count"] - before["count"] == 16
    assert after["1.0"] - before["1.0"] == 16  # every execution was a batch of one request
