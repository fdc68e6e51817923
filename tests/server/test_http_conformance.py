"""V2 conformance over HTTP, driven by tritonclient.http (JSON and binary tensor data).

Every result is compared with the same model run in-process by ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from serverlib import RunningServer, ServerFactory, ort_run
from tritonclient.utils import InferenceServerException

ALL_TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES"]
NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
         "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
         "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}


def sample(datatype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values that exercise the type's range (negative, large, non-ASCII strings)."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    if datatype == "BYTES":
        words = [f"wört-{i}".encode() for i in range(count)]
        arr = np.empty(count, dtype=object)
        arr[:] = words
        return arr.reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    dt = np.dtype(NUMPY[datatype])
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)


@pytest.fixture(scope="module")
def client(v2_server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(v2_server.http_address, network_timeout=120.0)


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "modelserve"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(meta["extensions"])
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("nope")


def test_model_metadata_and_config(client: httpclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("multi")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["versions"] == ["1"]
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert inputs == {"a": ("INT32", [-1, 4]), "b": ("FP16", [-1, 4]), "c": ("INT64", [-1, 2]),
                      "d": ("BOOL", [-1, 3]), "s": ("BYTES", [-1, 2])}
    assert "CPUExecutionProvider" in meta["providers"]
    config = client.get_model_config("mlp")
    assert config["max_batch_size"] == 32
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [64]}]
    static = client.get_model_config("static")
    assert static["max_batch_size"] == 0
    assert static["input"][0]["dims"] == [4, 8]


@pytest.mark.parametrize("binary", [False, True])
def test_mlp_equals_onnxruntime(
    client: httpclient.InferenceServerClient, onnx_models: dict[str, Path], binary: bool
) -> None:
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    inp = httpclient.InferInput("x", [5, 64], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("y", binary_data=binary)
    result = client.infer("mlp", [inp], outputs=[out], request_id="req-1")
    expected = ort_run(onnx_models["mlp"], {"x": x})["y"]
    np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-5, atol=1e-6)
    response = result.get_response()
    assert response["id"] == "req-1"
    assert response["model_name"] == "mlp" and response["model_version"] == "1"
    assert "parameters" not in response


@pytest.mark.parametrize("binary", [False, True])
def test_multi_types_and_output_subset(
    client: httpclient.InferenceServerClient, onnx_models: dict[str, Path], binary: bool
) -> None:
    feeds = {
        "a": sample("INT32", (3, 4), 1), "b": sample("FP16", (3, 4), 2), "c": sample("INT64", (3, 2), 3),
        "d": sample("BOOL", (3, 3), 4), "s": sample("BYTES", (3, 2), 5),
    }
    dtypes = {"a": "INT32", "b": "FP16", "c": "INT64", "d": "BOOL", "s": "BYTES"}
    inputs = []
    for name, arr in feeds.items():
        inp = httpclient.InferInput(name, list(arr.shape), dtypes[name])
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    expected = ort_run(onnx_models["multi"], feeds)
    full = client.infer("multi", inputs)
    for name in ("a_times_2", "b_sum", "b_times_2", "c_neg", "d_not"):
        np.testing.assert_array_equal(full.as_numpy(name), expected[name])
    strings = full.as_numpy("s_out")
    assert [[v.decode() if isinstance(v, bytes) else v for v in row] for row in strings.tolist()] == \
        expected["s_out"].tolist()
    subset = client.infer(
        "multi", inputs,
        outputs=[httpclient.InferRequestedOutput("c_neg", binary_data=binary),
                 httpclient.InferRequestedOutput("a_times_2", binary_data=not binary)],
    )
    names = [o["name"] for o in subset.get_response()["outputs"]]
    assert names == ["c_neg", "a_times_2"]
    np.testing.assert_array_equal(subset.as_numpy("c_neg"), expected["c_neg"])
    np.testing.assert_array_equal(subset.as_numpy("a_times_2"), expected["a_times_2"])


@pytest.mark.parametrize("binary", [False, True])
def test_every_datatype_round_trips(client: httpclient.InferenceServerClient, binary: bool) -> None:
    inputs, outputs, feeds = [], [], {}
    for i, dt in enumerate(ALL_TYPES):
        arr = sample(dt, (2, 3), i)
        feeds[dt] = arr
        inp = httpclient.InferInput(f"in_{dt}", [2, 3], dt)
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
        outputs.append(httpclient.InferRequestedOutput(f"out_{dt}", binary_data=binary))
    result = client.infer("alltypes", inputs, outputs=outputs)
    for dt, arr in feeds.items():
        got = result.as_numpy(f"out_{dt}")
        assert got is not None, dt
        if dt == "BYTES":
            assert [v if isinstance(v, bytes) else v.encode() for v in got.ravel()] == list(arr.ravel())
        else:
            assert got.dtype == arr.dtype, dt
            np.testing.assert_array_equal(got, arr, err_msg=dt)


def test_static_first_dim_model(client: httpclient.InferenceServerClient) -> None:
    x = np.arange(32, dtype=np.float32).reshape(4, 8)
    inp = httpclient.InferInput("x", [4, 8], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("static", [inp]).as_numpy("y"), 3 * x)
    bad = httpclient.InferInput("x", [2, 8], "FP32")
    bad.set_data_from_numpy(x[:2])
    with pytest.raises(InferenceServerException, match=r"shape \[2, 8\]"):
        client.infer("static", [bad])


def test_nested_json_data_and_no_null_parameters(v2_server: RunningServer) -> None:
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 8],
                    "data": [[float(i * 8 + j) for j in range(8)] for i in range(4)]}],
        "outputs": [{"name": "y"}],
    }
    r = requests.post(f"{v2_server.url}/v2/models/static/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["outputs"][0]["data"] == [3.0 * i for i in range(32)]
    assert "parameters" not in doc and "id" not in doc
    assert "parameters" not in doc["outputs"][0]
    # No Content-Type at all, as tritonclient sends it: still JSON.
    raw = requests.Request("POST", f"{v2_server.url}/v2/models/static/infer", data=r.request.body).prepare()
    raw.headers.pop("Content-Type", None)
    assert requests.Session().send(raw, timeout=30).status_code == 200


def test_statistics_extension(client: httpclient.InferenceServerClient) -> None:
    x = np.zeros((1, 64), dtype=np.float32)
    inp = httpclient.InferInput("x", [1, 64], "FP32")
    inp.set_data_from_numpy(x)
    client.infer("mlp", [inp])
    stats = client.get_inference_statistics("mlp")["model_stats"]
    assert stats[0]["name"] == "mlp" and stats[0]["version"] == "1"
    assert stats[0]["inference_stats"]["success"]["count"] >= 1
    assert stats[0]["execution_count"] >= 1
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} == {"mlp", "multi", "alltypes", "static"}


def test_model_repository_versions(server_factory: ServerFactory, model_repository: Path) -> None:
    server = server_factory("--model-repository", str(model_repository))
    client = httpclient.InferenceServerClient(server.http_address)
    assert client.get_model_metadata("mlp")["versions"] == ["1", "2"]
    assert client.get_model_metadata("mlp", "1")["versions"] == ["1"]
    x = np.ones((1, 64), dtype=np.float32)
    inp = httpclient.InferInput("x", [1, 64], "FP32")
    inp.set_data_from_numpy(x)

    def y(version: str = "") -> Any:
        return client.infer("mlp", [inp], model_version=version).as_numpy("y")

    np.testing.assert_allclose(y("2") - y("1"), np.ones((1, 10)), rtol=1e-5)
    np.testing.assert_array_equal(y(), y("2"))  # the highest version is the default
    assert client.infer("mlp", [inp], model_version="1").get_response()["model_version"] == "1"
    r = requests.post(f"{server.url}/v2/models/mlp/versions/7/infer", json={"inputs": []}, timeout=30)
    assert r.status_code == 404 and "version" in r.json()["error"]
